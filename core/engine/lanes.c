/* engine/lanes.c - lanes: one per assigned partition, its messages in
 * offset order. Ordering (partition, key, none) decides what a waiting
 * message holds back; the offset advances over finished messages only;
 * once the in-flight budget is spent, consuming waits, and if that lasts,
 * partitions pause as they deliver; a rewind drops lanes and seeks back. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ops/log.h"


kr_lane_t **kr_lane_slot(kr_group_t *g, const char *topic, int32_t partition)
{
    kr_lane_t **slot = &g->buckets[kr_hash_partition(topic, partition) % LANE_BUCKETS];
    while (*slot && ((*slot)->partition != partition || strcmp((*slot)->topic, topic)))
        slot = &(*slot)->hnext;
    return slot;
}

kr_lane_t *kr_lane_get(kr_group_t *g, const char *topic, int32_t partition)
{
    kr_lane_t **slot = kr_lane_slot(g, topic, partition);
    if (!*slot) {
        kr_lane_t *lane = xcalloc(1, sizeof(*lane));
        lane->group = g;
        lane->topic = strdup(topic);
        lane->partition = partition;
        lane->next_offset = -1;
        *slot = lane;
    }
    return *slot;
}

/* The rule: a message below what the lane has taken in (or below the
 * group's committed offset, for a lane just assigned) is one librdkafka
 * fetched again - unless the partition's log now ends before that point,
 * which means the log itself went back (a topic deleted and created
 * again, a truncation) and its messages are new. `high` is the last known
 * high watermark, -1 when unknown: then the message is taken in, so a
 * doubt costs a duplicate, never a loss. */
static int is_refetch(int64_t next_offset, int64_t offset, int64_t high)
{
    return next_offset >= 0 && offset < next_offset && high >= next_offset;
}

/* librdkafka 2.0.2 (Debian 12's) can deliver a partition's messages again:
 * after a cooperative rebalance gives a member back a partition it had
 * before, it may fetch from where its earlier assignment started
 * (librdkafka #4636, fixed in 2.4), and a fetch answered during an offset
 * validation restarts too (#4261, fixed in 2.1.1). Handling those again
 * would repeat their outputs with no crash or failure to excuse it, so the
 * lane skips them. Returns 1 when rkm is skipped (the caller destroys it). */
static int lane_refetched(kr_dispatch_t *d, kr_lane_t *lane, const rd_kafka_message_t *rkm)
{
    int64_t high = -1;
    if (lane->next_offset >= 0 && rkm->offset < lane->next_offset && lane->group->c)
        high = kr_consumer_high_watermark(lane->group->c, lane->topic, lane->partition);
    if (is_refetch(lane->next_offset, rkm->offset, high)) {
        if (!lane->refetched++)
            kr_warn("dispatch", "group=%s %s[%d]: librdkafka delivered offset %lld again "
                                "(taken in or committed up to %lld): skipping what was seen",
                    lane->group->name, lane->topic, (int)lane->partition,
                    (long long)rkm->offset, (long long)lane->next_offset);
        d->refetched++;
        return 1;
    }
    if (lane->refetched)
        kr_warn("dispatch", "group=%s %s[%d]: skipped %zu message(s) delivered again; going on "
                            "at offset %lld",
                lane->group->name, lane->topic, (int)lane->partition, lane->refetched,
                (long long)rkm->offset);
    else if (lane->next_offset >= 0 && rkm->offset < lane->next_offset)
        kr_warn("dispatch", "group=%s %s[%d]: the log went back from offset %lld to %lld (high "
                            "watermark %lld: topic created again or truncated); taking it in",
                lane->group->name, lane->topic, (int)lane->partition,
                (long long)lane->next_offset, (long long)rkm->offset, (long long)high);
    lane->refetched = 0;
    lane->next_offset = rkm->offset + 1;
    return 0;
}

/* Stores the offset after the longest run of finished messages at the
 * head of the lane: never past a message that is not done. */
void kr_lane_advance(kr_dispatch_t *d, kr_lane_t *lane)
{
    /* after a fatal error nothing more is stored: a DLQ copy refused
     * synchronously would otherwise let its input's offset through */
    if (d->fatal)
        return;
    int64_t next = -1;
    while (lane->head && lane->head->handled && lane->head->pending == 0) {
        kr_inmsg_t *m = lane->head;
        next = m->rkm->offset + 1;
        lane->head = m->next;
        if (!lane->head)
            lane->tail = NULL;
        lane->queued--;
        kr_inmsg_free(d, m);
    }
    if (next >= 0 && lane->group->c)
        kr_consumer_store(lane->group->c, lane->topic, lane->partition, next);
    kr_lane_budget_check(d);
}

/* One budget for the whole process rather than a mark per partition: the
 * memory held stays bounded however many partitions are assigned, and a
 * hot partition may use what idle ones leave. Spent, the router stops
 * taking messages from the consumer (kr_dispatch_may_consume): librdkafka
 * stops fetching once its own queue is full, and nothing it fetched is
 * wasted. Polling is also what serves rebalances and keeps the member in
 * its group (max.poll.interval.ms), so that lasts at most
 * KR_BUDGET_HOLD_MS: a budget still spent after that (a lane blocked by a
 * retry backoff or a kroute.request) means pausing instead. Polling then
 * goes on and each partition pauses when it next delivers (librdkafka
 * drops what it had prefetched for it and fetches again from the paused
 * position on resume, so nothing is skipped or repeated); at half the
 * budget every paused partition resumes. Pausing is kept for that case
 * because each pause costs a refetch: a backlog drained with pauses alone
 * went at less than half the rate. */
int kr_dispatch_may_consume(kr_dispatch_t *d)
{
    if (d->inflight_bytes < d->budget) {
        d->held_since = 0;
        return 1;
    }
    int64_t now = kr_clock_ms();
    if (!d->held_since) {
        d->held_since = now;
        if (!d->holds++) /* once: under a long backlog this repeats every few ms */
            kr_info("dispatch", "in-flight budget of %zu bytes spent (%zu messages): consuming "
                                "waits for handlers to catch up; past %d ms, partitions pause "
                                "as they deliver until half of it is free (counted in "
                                "kroute_partition_pauses_total)",
                    d->budget, d->inflight, KR_BUDGET_HOLD_MS);
    }
    if (now - d->held_since < KR_BUDGET_HOLD_MS)
        return 0;
    d->budget_spent = 1; /* polling again, pausing what delivers */
    return 1;
}

/* While consuming waits, librdkafka goes on fetching until its own queue
 * is full, and that queue (with the fetch buffers its messages keep alive)
 * weighs as much as the budget: a smaller budget alone barely lowered the
 * peak RSS of a backlog drain (spec/bench/README.md). So the queues get the
 * budget's size, shared by the queues: each group has its own consumer,
 * and each of its worker threads a queue of its own (engine/pass.c), which
 * librdkafka fills up to the limit on its own. The share is at most
 * librdkafka's own 64 MiB: the default budget keeps that for one group
 * and one worker (a quarter of it drained 0.79x as fast). A group added
 * by a reload gets the share of the groups then. */
size_t kr_dispatch_prefetch_kb(const kr_dispatch_t *d)
{
    size_t queues = (d->group_cnt ? d->group_cnt : 1) * (size_t)d->gen->worker_cnt;
    size_t kb = d->budget / 1024 / queues;
    return kb < 1024 ? 1024 : kb > 65536 ? 65536 : kb;
}

static void budget_pause(kr_dispatch_t *d, kr_lane_t *lane)
{
    kr_group_t *g = lane->group;
    if (lane->paused || !g->c || !d->budget_spent || d->inflight_bytes < d->budget)
        return;
    d->pauses++;
    /* fetching stops for this partition only; polling goes on, so the
     * group never sees kroute as stuck (max.poll.interval.ms) */
    kr_consumer_pause(g->c, lane->topic, lane->partition, 1);
    lane->paused = 1;
    kr_debug("dispatch", "group=%s topic=%s partition=%d paused: %zu messages queued",
             g->name, lane->topic, (int)lane->partition, lane->queued);
}

void kr_lane_budget_check(kr_dispatch_t *d)
{
    if (!d->budget_spent || d->inflight_bytes > d->budget / 2)
        return;
    d->budget_spent = 0;
    d->held_since = 0;
    size_t resumed = 0;
    for (size_t gi = 0; gi < d->group_cnt; gi++) {
        kr_group_t *g = d->groups[gi];
        for (size_t b = 0; b < LANE_BUCKETS; b++)
            for (kr_lane_t *lane = g->buckets[b]; lane; lane = lane->hnext) {
                if (!lane->paused)
                    continue;
                if (g->c)
                    kr_consumer_pause(g->c, lane->topic, lane->partition, 0);
                lane->paused = 0;
                resumed++;
            }
    }
    kr_debug("dispatch", "in-flight bytes %zu: %zu partition(s) resumed", d->inflight_bytes,
             resumed);
}

#define KEY_BITS 4096 /* key slots: a collision only makes an unrelated
                        key wait, never breaks order */

/* Sets the lane's ordering; for `key`, counts its unhandled messages per
 * key slot (kept up to date as messages come and are handled). */
static void lane_set_ordering(kr_lane_t *lane, kr_ordering_t ordering)
{
    lane->ordering = ordering;
    if (ordering != KR_ORDER_KEY)
        return;
    if (!lane->key_cnt)
        lane->key_cnt = xcalloc(KEY_BITS, sizeof(*lane->key_cnt));
    else
        memset(lane->key_cnt, 0, KEY_BITS * sizeof(*lane->key_cnt));
    for (kr_inmsg_t *m = lane->todo; m; m = m->tnext)
        lane->key_cnt[m->key_hash % KEY_BITS]++;
}

/* m is handled: out of the todo list (prev is the one before it). */
static void todo_remove(kr_lane_t *lane, kr_inmsg_t *prev, kr_inmsg_t *m)
{
    m->handled = 1;
    if (prev)
        prev->tnext = m->tnext;
    else
        lane->todo = m->tnext;
    if (lane->todo_tail == m)
        lane->todo_tail = prev;
    m->tnext = NULL;
    if (lane->key_cnt && lane->ordering == KR_ORDER_KEY)
        lane->key_cnt[m->key_hash % KEY_BITS]--;
}

/* Handles the lane's unhandled messages in offset order. One that waits
 * (for a retry or a reply) holds back what must stay behind it: the rest
 * of the partition (ordering: partition), later messages of its key
 * (ordering: key), or nothing (ordering: none). */
void kr_lane_pump(kr_dispatch_t *d, kr_lane_t *lane)
{
    uint64_t blocked[KEY_BITS / 64];
    int any_blocked = 0;
    if (d->draining)
        return;
    kr_inmsg_t *prev = NULL, *m = lane->todo;
    while (m && !d->fatal) {
        kr_inmsg_t *next = m->tnext;
        uint32_t bit = m->key_hash % KEY_BITS;
        int held = any_blocked && (blocked[bit / 64] >> (bit % 64) & 1);
        if (!held && !m->waiting && !m->retry_at_ms && !m->running) {
            m->pending++; /* hold: delivery reports served while producing must
                             not finish m before all its outputs are queued */
            int waiting = kr_runs_next(d, m);
            if (!waiting)
                todo_remove(lane, prev, m);
            m->pending--;
            if (!waiting) {
                /* an output refused synchronously: DLQ it now (this frees
                 * only handled messages, never prev or next) */
                if (m->delivery_error)
                    kr_inmsg_settle(d, m);
                m = next;
                continue;
            }
        }
        /* in a batch not yet handed over: what follows it (in the
         * partition, or of its key) may join that batch, which runs in
         * order and stops at a failure */
        if (m->running && m->unflushed) {
            prev = m;
            m = next;
            continue;
        }
        /* m stays unhandled: it holds back what must keep its order */
        if (lane->ordering == KR_ORDER_PARTITION)
            break;
        if (lane->ordering == KR_ORDER_KEY) {
            if (!any_blocked)
                memset(blocked, 0, sizeof(blocked));
            any_blocked = 1;
            blocked[bit / 64] |= (uint64_t)1 << (bit % 64);
        }
        prev = m;
        m = next;
    }
    kr_lane_advance(d, lane);
}

void kr_dispatch_message(kr_group_t *g, rd_kafka_message_t *rkm)
{
    kr_dispatch_t *d = g->d;
    if (rkm->err) {
        if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kr_warn("consumer", "group=%s topic=%s: %s", g->name,
                    rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-",
                    rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        return;
    }
    const topic_routes_t *tr = kr_group_routes_for(g, rd_kafka_topic_name(rkm->rkt));
    kr_lane_t *lane = kr_lane_get(g, tr->topic, rkm->partition);
    if (lane_refetched(d, lane, rkm)) {
        rd_kafka_message_destroy(rkm);
        return;
    }
    kr_inmsg_t *m = kr_inmsg_new(g, rkm);
    if (lane->ordering != tr->ordering || (tr->ordering == KR_ORDER_KEY && !lane->key_cnt))
        lane_set_ordering(lane, tr->ordering);
    m->lane = lane;
    kr_inmsg_t *before = lane->todo_tail;
    if (lane->tail)
        lane->tail->next = m;
    else
        lane->head = m;
    lane->tail = m;
    if (lane->todo_tail)
        lane->todo_tail->tnext = m;
    else
        lane->todo = m;
    lane->todo_tail = m;
    lane->queued++;
    budget_pause(d, lane);
    if (lane->ordering == KR_ORDER_PARTITION) {
        kr_lane_pump(d, lane);
        return;
    }
    /* key and none: only the new message can have become runnable, so
     * do not rescan the lane (it may hold thousands): run m if nothing
     * of its key is ahead of it, else it waits for that to finish */
    if (lane->ordering == KR_ORDER_KEY && lane->key_cnt[m->key_hash % KEY_BITS]++)
        return;
    m->pending++;
    int waiting = kr_runs_next(d, m);
    if (!waiting)
        todo_remove(lane, before, m);
    m->pending--;
    if (!waiting && m->delivery_error)
        kr_inmsg_settle(d, m);
    kr_lane_advance(d, lane);
}

/* Detaches the lane's messages: none of them is stored (so the unfinished
 * are redelivered to the next owner); a run waiting for a reply is
 * dropped; messages with outputs still in flight become orphans, freed by
 * their last delivery report. */
void kr_lane_drop(kr_dispatch_t *d, kr_lane_t *lane)
{
    kr_inmsg_t *m = lane->head;
    while (m) {
        kr_inmsg_t *next = m->next;
        kr_inmsg_set_retry(d, m, 0);
        m->lane = NULL;
        m->next = NULL;
        kr_inmsg_drop_run(d, m);
        kr_inmsg_release(d, m);
        m = next;
    }
    free(lane->key_cnt);
    free(lane->topic);
    free(lane);
}

/* Every lane with messages not yet stored goes back to its first one: the
 * lane is dropped (as on a revoke, but the partition stays ours) and its
 * consumer seeks there, so those inputs are fetched and handled again in
 * offset order. Their outputs that did land are produced twice
 * (at-least-once); none is skipped, and a key's outputs keep their order. */
void kr_dispatch_rewind(kr_dispatch_t *d)
{
    size_t lanes = 0;
    for (size_t gi = 0; gi < d->group_cnt; gi++) {
        kr_group_t *g = d->groups[gi];
        rd_kafka_topic_partition_list_t *to = rd_kafka_topic_partition_list_new(8);
        for (size_t b = 0; b < LANE_BUCKETS; b++) {
            kr_lane_t **slot = &g->buckets[b];
            while (*slot) {
                kr_lane_t *lane = *slot;
                if (!lane->head) {
                    slot = &lane->hnext;
                    continue;
                }
                rd_kafka_topic_partition_list_add(to, lane->topic, lane->partition)->offset =
                    lane->head->rkm->offset;
                if (lane->paused && g->c)
                    kr_consumer_pause(g->c, lane->topic, lane->partition, 0);
                *slot = lane->hnext;
                kr_lane_drop(d, lane);
                lanes++;
            }
        }
        if (g->c && to->cnt && kr_consumer_seek(g->c, to) < 0) {
            /* what was dropped would be skipped by the next stored offset:
             * stop storing and exit, the committed offsets are still right */
            kr_error("dispatch", "group=%s: cannot go back to the unfinished inputs, stopping",
                     g->name);
            d->fatal = 1;
        }
        rd_kafka_topic_partition_list_destroy(to);
    }
    d->rewind = 0;
    d->rewinds++;
    kr_warn("dispatch", "rewound %zu partition(s) to their first unfinished input", lanes);
}
