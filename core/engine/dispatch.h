/* dispatch.h - from consumed messages to handler runs to committed offsets.
 * Each assigned partition is a lane: its messages are handled in offset
 * order (a retrying message holds its lane, not the others), outputs are
 * produced as soon as a handler succeeds, and the lane's offset advances
 * only over messages whose every output has a successful delivery report.
 * Implemented in engine/ (one file per concern; engine/internal.h says
 * which and who owns what). */
#ifndef KR_DISPATCH_H
#define KR_DISPATCH_H

#include <librdkafka/rdkafka.h>

#include "config/config.h"
#include "kafka/consumer.h"
#include "kafka/producer.h"
#include "kafka/requester.h"
#include "runtime/generation.h"
#include "runtime/pool.h"

typedef struct kr_dispatch kr_dispatch_t;
typedef struct kr_group kr_group_t;

/* The default in-flight budget: bytes of consumed messages (key, value and
 * about 512 bytes of bookkeeping each) held before consuming waits. */
#define KR_DISPATCH_BUDGET ((size_t)64 << 20)
/* How long consuming may wait for a spent budget before partitions pause
 * instead (polling serves rebalances and keeps the group membership). */
#define KR_BUDGET_HOLD_MS 500

/* The engine lock. Every call below is made with it held (the router's
 * loop holds it but while it sleeps, a worker's pass takes it), except
 * kr_dispatch_new, kr_dispatch_free and kr_dispatch_pass, which takes it
 * itself. The callbacks librdkafka makes into the engine (delivery
 * reports, rebalance hooks) run inside those calls. */
void kr_dispatch_lock(kr_dispatch_t *d);
void kr_dispatch_unlock(kr_dispatch_t *d);
/* kr_pool_pass_fn (ctx = kr_dispatch_t *): the pass of an idle worker
 * thread (engine/pass.c). */
int kr_dispatch_pass(void *d, int worker);
/* The router's share of consuming: a batch from each group's own queue
 * (rebalance events, and a partition's messages should its forward have
 * failed), and a batch from the queue of each worker that has not passed
 * for 100 ms because it runs a long job, so one slow handler does not
 * hold up messages that other threads can run (`ordering: key`/`none`,
 * other routes). Each returns how many messages it took. */
size_t kr_dispatch_take_unforwarded(kr_dispatch_t *d);
size_t kr_dispatch_cover(kr_dispatch_t *d);

/* Takes over the caller's reference to the first generation. `budget`:
 * in-flight bytes before consuming waits (0: KR_DISPATCH_BUDGET). */
kr_dispatch_t *kr_dispatch_new(kr_gen_t *gen, size_t budget);
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

/* The assign hook for kr_consumer_hooks_t (ctx = kr_group_t *): `parts`
 * carries the group's committed offsets (RD_KAFKA_OFFSET_INVALID when
 * none or unknown). */
void kr_dispatch_assigned(void *g, const rd_kafka_topic_partition_list_t *parts);
/* The revoke hook for kr_consumer_hooks_t (ctx = kr_group_t *): commits
 * what is done (unless lost), then drops the partitions' lanes. */
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

/* Whether the router may take messages from the consumers now: 0 while
 * the in-flight budget is spent, for up to KR_BUDGET_HOLD_MS; after that 1
 * again, and partitions pause as they deliver (see engine/lanes.c). */
int kr_dispatch_may_consume(kr_dispatch_t *d);
/* The default of each group consumer's queued.max.messages.kbytes: what
 * librdkafka fetches ahead into each worker thread's queue, that queue's
 * share of the in-flight budget (the budget over groups x workers; at
 * least 1 MiB, at most librdkafka's own 64 MiB), so --max-inflight bounds
 * both. */
size_t kr_dispatch_prefetch_kb(const kr_dispatch_t *d);
/* Takes ownership of a consumed message and runs what it can now. */
void kr_dispatch_message(kr_group_t *g, rd_kafka_message_t *rkm);
/* Runs due retries, sends requests whose reply partition became known,
 * times out requests and hands the offsets advanced since the last call
 * to librdkafka. Returns ms until the next deadline, or -1. */
int kr_dispatch_tick(kr_dispatch_t *d);
/* Non-zero when the producer failed an output (not the record's fault):
 * the router then calls kr_dispatch_rewind, after replacing a fatal
 * producer. */
int kr_dispatch_rewind_wanted(const kr_dispatch_t *d);
/* Sends every partition with unstored messages back to its first one
 * (seek) and forgets the rest of it: those inputs are handled again. */
void kr_dispatch_rewind(kr_dispatch_t *d);
/* Messages consumed and not yet committable (the drain timeout's log). */
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
