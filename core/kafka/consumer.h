/* consumer.h - one high-level consumer per consumer group.
 * Offsets are never stored automatically: the dispatcher stores an offset
 * once its message is fully done, and librdkafka's auto-commit (plus a
 * synchronous commit on revoke and close) commits what was stored. */
#ifndef KR_CONSUMER_H
#define KR_CONSUMER_H

#include <librdkafka/rdkafka.h>

#include "buf.h"
#include "config/config.h"

typedef struct kr_consumer kr_consumer_t;

/* Rebalance hooks, called from kr_consumer_poll on the polling thread
 * before librdkafka's (incremental) assign/unassign is applied. With
 * `committed` set, `assigned` gets the partitions with the group's
 * committed offsets (INVALID when none or unknown: one round trip to the
 * coordinator per rebalance); `lost` is set when the partitions were lost
 * (no commit possible). */
typedef struct kr_consumer_hooks {
    void (*assigned)(void *ctx, const rd_kafka_topic_partition_list_t *parts);
    void (*revoked)(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost);
    void *ctx;
    int committed;
} kr_consumer_hooks_t;

/* `prefetch_kb` is the default of queued.max.messages.kbytes, what
 * librdkafka may hold fetched ahead (0: librdkafka's own, 64 MiB); `props`
 * (the route file's) override it and every other default. */
kr_consumer_t *kr_consumer_new(const char *brokers, const char *group, const kr_props_t *props,
                               size_t prefetch_kb, const kr_consumer_hooks_t *hooks,
                               char *errstr, size_t errsize);
/* Subscribes to exact names and ^regexes; none unsubscribes. */
int kr_consumer_subscribe(kr_consumer_t *c, const char *const *topics, size_t cnt,
                          char *errstr, size_t errsize);
/* Up to `max` messages (errors included: check rkm->err). */
ssize_t kr_consumer_poll(kr_consumer_t *c, int timeout_ms, rd_kafka_message_t **rkms,
                         size_t max);
/* Called from a librdkafka thread when worker `worker`'s queue gets
 * messages after it was last polled: must only signal (no librdkafka call). */
typedef void kr_consumer_wake_fn(void *ctx, int worker);
/* Gives each of `n` worker threads a queue of its own: the partitions
 * forwarded to it (kr_consumer_forward) deliver there instead of to the
 * consumer queue, which keeps rebalances, errors and whatever was not
 * forwarded. `wake(ctx, i)` is called when queue i stops being empty. */
void kr_consumer_split(kr_consumer_t *c, int n, kr_consumer_wake_fn *wake, void *ctx);
/* Sends the partition's messages to worker `worker`'s queue from now on
 * (a no-op without kr_consumer_split). Called before the partition is
 * assigned, so its first message already goes there; librdkafka drops the
 * forward when the partition's fetch stops (a revoke), and keeps one set
 * here over its own when the fetch starts again. */
void kr_consumer_forward(kr_consumer_t *c, const char *topic, int32_t partition, int worker);
/* Up to `max` messages of the partitions forwarded to worker `worker`,
 * without waiting (errors included: check rkm->err). */
ssize_t kr_consumer_poll_worker(kr_consumer_t *c, int worker, rd_kafka_message_t **rkms,
                                size_t max);
/* Wakes `fd` (writes one byte) when messages or events arrive. */
void kr_consumer_wake_fd(kr_consumer_t *c, int fd);
/* Stores `offset` (the next offset to read) for commit: kept until
 * kr_consumer_flush_stores (or a commit) hands it to librdkafka. */
void kr_consumer_store(kr_consumer_t *c, const char *topic, int32_t partition, int64_t offset);
/* Hands the offsets stored since the last flush to librdkafka, whose
 * auto-commit commits them; the event loop calls it once per pass. */
void kr_consumer_flush_stores(kr_consumer_t *c);
/* Synchronous commit of everything stored (flushed first). */
void kr_consumer_commit(kr_consumer_t *c);
/* The partition's last known high watermark (from fetch responses; no
 * broker round trip), or -1 when none is known yet. */
int64_t kr_consumer_high_watermark(kr_consumer_t *c, const char *topic, int32_t partition);
void kr_consumer_pause(kr_consumer_t *c, const char *topic, int32_t partition, int pause);
/* Moves the fetch position of assigned partitions to each element's offset:
 * messages already fetched past it are discarded and fetched again.
 * Returns 0, or -1 (logged) when a partition could not be moved. */
int kr_consumer_seek(kr_consumer_t *c, const rd_kafka_topic_partition_list_t *to);
/* The distinct topics of the current assignment (caller frees each and
 * the array). */
char **kr_consumer_assigned_topics(kr_consumer_t *c, size_t *cnt);
/* Appends kroute_consumer_lag (high watermark - committed) and
 * kroute_committed_offset samples for every assigned partition. */
void kr_consumer_render_partitions(kr_consumer_t *c, kr_buf_t *lag, kr_buf_t *committed);
/* Commits, leaves the group (revoke hooks run) and frees. */
void kr_consumer_close(kr_consumer_t *c);

#endif
