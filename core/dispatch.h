/* dispatch.h - from consumed messages to handler runs to committed offsets.
 * Each assigned partition is a lane: its messages are handled in offset
 * order (a retrying message holds its lane, not the others), outputs are
 * produced as soon as a handler succeeds, and the lane's offset advances
 * only over messages whose every output has a successful delivery report. */
#ifndef KR_DISPATCH_H
#define KR_DISPATCH_H

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "consumer.h"
#include "producer.h"
#include "requester.h"
#include "generation.h"
#include "pool.h"

typedef struct kr_dispatch kr_dispatch_t;
typedef struct kr_group kr_group_t;

/* Takes over the caller's reference to the first generation. */
kr_dispatch_t *kr_dispatch_new(kr_gen_t *gen);
/* The live generation. */
kr_gen_t *kr_dispatch_gen(const kr_dispatch_t *d);
/* Makes `gen` live (taking over the caller's reference): messages that
 * have not started run on it; started ones finish on theirs. Refreshes
 * every existing group's routes; the groups whose subscription set
 * changed are put in changed[] (room for every group). Groups the new
 * generation needs but that do not exist yet are made by kr_dispatch_group. */
int kr_dispatch_swap(kr_dispatch_t *d, kr_gen_t *gen, kr_group_t **changed, size_t *changed_cnt);
/* Forgets a group whose consumer was closed (its lanes are gone). */
void kr_dispatch_group_remove(kr_dispatch_t *d, kr_group_t *g);
size_t kr_dispatch_group_count(const kr_dispatch_t *d);
kr_group_t *kr_dispatch_group_at(const kr_dispatch_t *d, size_t i);
kr_consumer_t *kr_group_consumer(const kr_group_t *g);
/* Routes of the live generation in the group (0: the group is unused). */
size_t kr_group_route_count(const kr_group_t *g);
void kr_dispatch_set_producer(kr_dispatch_t *d, kr_producer_t *p);
/* The group that serves `group` (created on first call) and its routes. */
kr_group_t *kr_dispatch_group(kr_dispatch_t *d, const char *group);
void kr_group_set_consumer(kr_group_t *g, kr_consumer_t *c);
/* Subscription strings (exact names, ^regexes) of the group's routes. */
const char *const *kr_group_subscriptions(kr_group_t *g, size_t *cnt);
const char *kr_group_name(const kr_group_t *g);

/* Hooks for kr_consumer_hooks_t (ctx = kr_group_t *). */
void kr_dispatch_assigned(void *g, const rd_kafka_topic_partition_list_t *parts);
void kr_dispatch_revoked(void *g, const rd_kafka_topic_partition_list_t *parts, int lost);
/* kr_delivery_cb_t (ctx = kr_dispatch_t *). */
void kr_dispatch_delivered(void *d, void *msg_opaque, rd_kafka_resp_err_t err);

/* The requester that sends kroute.request calls (NULL: none declared). */
void kr_dispatch_set_requester(kr_dispatch_t *d, kr_requester_t *rq);
/* Appends the Prometheus text of every route's counters and handler
 * latency, each assigned partition's lag and committed offset, and each
 * worker thread's Lua memory. */
void kr_dispatch_render_metrics(kr_dispatch_t *d, kr_buf_t *out);
/* The worker threads that run handlers (required before any message). */
void kr_dispatch_set_pool(kr_dispatch_t *d, kr_pool_t *pool);
/* Hands the runs queued so far to the pool. Runs are batched per thread
 * until then (or BATCH_MAX): the router loop calls this once per turn,
 * after it has dispatched what it polled. */
void kr_dispatch_flush_jobs(kr_dispatch_t *d);
/* Acts on handler runs the pool finished; returns how many. */
size_t kr_dispatch_poll_jobs(kr_dispatch_t *d);
/* Reads replies and resumes the handlers waiting for them. */
size_t kr_dispatch_poll_replies(kr_dispatch_t *d);

/* Takes ownership of a consumed message and runs what it can now. */
void kr_dispatch_message(kr_group_t *g, rd_kafka_message_t *rkm);
/* Runs due retries, sends requests whose reply partition became known and
 * times out requests. Returns ms until the next deadline, or -1. */
int kr_dispatch_tick(kr_dispatch_t *d);
/* Messages consumed but not yet committed-ready. */
/* Non-zero when the producer failed an output (not the record's fault):
 * the router then calls kr_dispatch_rewind, after replacing a fatal
 * producer. */
int kr_dispatch_rewind_wanted(const kr_dispatch_t *d);
/* Sends every partition with unstored messages back to its first one
 * (seek) and forgets the rest of it: those inputs are handled again. */
void kr_dispatch_rewind(kr_dispatch_t *d);
size_t kr_dispatch_inflight(const kr_dispatch_t *d);
/* Stops handling: drops messages not yet handled (they were not
 * committed, so they are redelivered) and waits up to timeout_ms for the
 * outputs of handled ones. Returns the number of outputs still undelivered. */
int kr_dispatch_drain(kr_dispatch_t *d, int timeout_ms);
/* Non-zero when at-least-once can no longer be kept (a DLQ copy could not
 * be delivered for a reason other than its size, or the producer hit a
 * fatal error): stop and exit non-zero. */
int kr_dispatch_fatal(const kr_dispatch_t *d);
/* Stops storing offsets for good (the producer failed fatally): only
 * what was delivered before stays committed. */
void kr_dispatch_set_fatal(kr_dispatch_t *d);
void kr_dispatch_free(kr_dispatch_t *d);

#endif
