/* engine/pass.c - the engine lock, and a worker thread's pass: the part
 * of the router's loop an idle worker runs for the partitions it owns.
 *
 * Each assigned partition is forwarded to the queue of one worker thread
 * (kr_consumer_forward, from the assign hook): the same thread whose VMs
 * run the partition's messages under `ordering: partition`. When that
 * thread runs out of queued runs it takes the engine lock and, on its own
 * thread: acts on finished runs (outputs, replies, the DLQ), takes the next
 * batch of its partitions' messages, hands their runs out, serves
 * delivery reports and stores offsets. So a message is consumed,
 * run and produced on one thread, without the hand-over to the router and
 * back. `ordering: key` and `none` still send a run to whichever thread the
 * key or the round robin picks.
 *
 * The router thread keeps what must be single (rebalances, whose hooks
 * commit and drop lanes, reloads, the admin endpoint, signals, timers,
 * replies to kroute.request), takes the messages of a worker held up by a
 * long run (kr_dispatch_cover) and of a partition whose forward failed,
 * and does the rest of a pass's work for all of them, under the same
 * lock, which it lets go while it sleeps. What the router waits for while it holds the lock (the
 * delivery reports of a revoke) never needs a worker; before it drains at
 * shutdown, which waits for the runs in progress, it takes the pass away
 * from the workers (kr_pool_set_pass). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"

/* Messages a pass takes from one group's queue: then its runs come first. */
#define PASS_BATCH 64
/* How often the router forwards every assigned partition again (see
 * kr_dispatch_reforward). */
#define REFORWARD_MS 1000
/* A worker that has not passed for this long is running a long job: the
 * router takes its partitions' messages meanwhile (kr_dispatch_cover). */
#define COVER_MS 100

void kr_dispatch_lock(kr_dispatch_t *d)
{
    pthread_mutex_lock(&d->mu);
}

void kr_dispatch_unlock(kr_dispatch_t *d)
{
    pthread_mutex_unlock(&d->mu);
}

int kr_dispatch_partition_worker(const kr_dispatch_t *d, const char *topic, int32_t partition)
{
    return kr_partition_worker(topic, partition, d->gen->worker_cnt);
}

void kr_dispatch_flush_stores(kr_dispatch_t *d)
{
    kr_lane_budget_check(d); /* also when orphans, not lanes, freed the bytes */
    for (size_t i = 0; i < d->group_cnt; i++)
        if (d->groups[i]->c)
            kr_consumer_flush_stores(d->groups[i]->c);
}

/* Takes one batch from each group's queue for `worker` (-1: the
 * consumer's own queue, where rebalance events and the messages of a
 * partition not forwarded arrive) and hands their runs out; counted as
 * taken by thread `by` (the worker's index, or d->router_slot).
 * Returns how many. */
static size_t take(kr_dispatch_t *d, int worker, int by)
{
    rd_kafka_message_t *rkms[PASS_BATCH];
    size_t got = 0;
    for (size_t i = 0; i < d->group_cnt && kr_dispatch_may_consume(d); i++) {
        kr_group_t *g = d->groups[i];
        if (!g->c)
            continue;
        ssize_t n = worker < 0 ? kr_consumer_poll(g->c, 0, rkms, PASS_BATCH)
                               : kr_consumer_poll_worker(g->c, worker, rkms, PASS_BATCH);
        for (ssize_t j = 0; j < n; j++)
            kr_dispatch_message(g, rkms[j]);
        got += n > 0 ? (size_t)n : 0;
    }
    d->taken[by] += got;
    kr_dispatch_flush_jobs(d); /* one hand-over per thread per batch */
    return got;
}

int kr_dispatch_pass(void *ctx, int worker)
{
    kr_dispatch_t *d = ctx;
    pthread_mutex_lock(&d->mu);
    size_t did = 0;
    if (!d->draining && !d->fatal && !d->rewind) {
        did += kr_runs_finished(d, kr_pool_finished_by(d->pool, worker));
        did += take(d, worker, worker);
        if (d->p)
            kr_producer_poll(d->p, 0);
        kr_dispatch_flush_jobs(d);
        kr_dispatch_flush_stores(d);
    }
    pthread_mutex_unlock(&d->mu);
    return did > 0;
}

size_t kr_dispatch_take_unforwarded(kr_dispatch_t *d)
{
    return take(d, -1, d->router_slot);
}

size_t kr_dispatch_cover(kr_dispatch_t *d)
{
    size_t got = 0;
    int64_t now = kr_clock_ms();
    for (int w = 0; w < d->router_slot; w++)
        if (now - kr_pool_passed_ms(d->pool, w) > COVER_MS)
            got += take(d, w, d->router_slot);
    return got;
}

/* librdkafka drops a partition's forward when its fetch stops. Should the
 * stop of a revoke be served only after the next assignment of the same
 * partition forwarded it again, its messages would wait in the partition's
 * own queue; forwarding again moves them, in order, to the worker. Lanes
 * are the assigned partitions (and, briefly, ones a revoke left). */
void kr_dispatch_reforward(kr_dispatch_t *d, int64_t now)
{
    if (now < d->reforward_at)
        return;
    d->reforward_at = now + REFORWARD_MS;
    for (size_t gi = 0; gi < d->group_cnt; gi++) {
        kr_group_t *g = d->groups[gi];
        if (!g->c)
            continue;
        for (size_t b = 0; b < LANE_BUCKETS; b++)
            for (kr_lane_t *lane = g->buckets[b]; lane; lane = lane->hnext)
                if (lane->forwarded)
                    kr_consumer_forward(g->c, lane->topic, lane->partition,
                                        kr_dispatch_partition_worker(d, lane->topic,
                                                                     lane->partition));
    }
}
