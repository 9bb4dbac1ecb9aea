/* engine/dispatch.c - the dispatcher itself (see dispatch.h): made, fed
 * a producer, a pool and a requester, swapped to a new generation, drained
 * and freed; its own metrics (lag, memory, in flight, rewinds). What
 * happens to a message is in the other engine/ files: inmsg.c (its life
 * and its one free), lanes.c (order and offsets), runs.c (handler runs),
 * outputs.c (records, the DLQ, delivery reports), groups.c (consumer
 * groups and rebalances), pass.c (the engine lock and the workers'
 * passes). One thread at a time: every function here runs under the
 * engine lock, on the router's loop or in a worker's pass, and so do the
 * delivery and rebalance callbacks, which librdkafka only fires from our
 * own poll calls. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "ops/metrics.h"
#include "runtime/vm.h"

/* Points each route of gen at its stats (kept by name across reloads). */
static void bind_stats(kr_dispatch_t *d, kr_gen_t *gen)
{
    gen->stats = kr_gen_alloc(gen, gen->cfg->route_cnt * sizeof(*gen->stats));
    for (size_t i = 0; i < gen->cfg->route_cnt; i++)
        gen->stats[i] = kr_metrics_route(&d->metrics, gen->cfg->routes[i].name);
}

#define SPARES_MAX 32768

/* A run parked on the free list is emptied for the next message; it is
 * freed with whatever record memory it kept (the list's drop). */
static void drop_run(void *run)
{
    kr_run_clear(run);
}

kr_dispatch_t *kr_dispatch_new(kr_gen_t *gen, size_t budget)
{
    kr_dispatch_t *d = xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    d->gen = gen;
    d->budget = budget ? budget : KR_DISPATCH_BUDGET;
    /* as many as a busy moment has in flight; beyond, malloc and free */
    d->spare_msgs = KR_SPARES(kr_inmsg_t, SPARES_MAX);
    d->spare_outs = KR_SPARES(kr_out_t, SPARES_MAX);
    d->spare_runs = KR_SPARES_KEEPING(kr_run_t, SPARES_MAX, drop_run);
    bind_stats(d, gen);
    return d;
}

void kr_dispatch_render_metrics(kr_dispatch_t *d, kr_buf_t *out)
{
    kr_metrics_render_routes(&d->metrics, out);
    kr_buf_t lag = {0}, committed = {0};
    for (size_t i = 0; i < d->group_cnt; i++)
        if (d->groups[i]->c)
            kr_consumer_render_partitions(d->groups[i]->c, &lag, &committed);
    kr_metrics_family(out, "kroute_consumer_lag", "gauge",
                      "High watermark minus committed offset, per assigned partition");
    kr_buf_add(out, lag.data ? lag.data : "", lag.len);
    kr_metrics_family(out, "kroute_committed_offset", "gauge",
                      "Last committed offset, per assigned partition");
    kr_buf_add(out, committed.data ? committed.data : "", committed.len);
    kr_buf_free(&lag);
    kr_buf_free(&committed);
    kr_metrics_family(out, "kroute_lua_memory_bytes", "gauge",
                      "Lua memory of each worker thread's VMs (live generation)");
    for (int w = 0; w < d->gen->worker_cnt; w++) {
        size_t bytes = 0;
        const kr_worker_t *wk = d->gen->workers[w];
        for (size_t i = 0; i < wk->vm_cnt; i++)
            bytes += kr_vm_memory(wk->vms[i]);
        char worker[16];
        snprintf(worker, sizeof(worker), "%d", w);
        kr_metric_label_t label = {"worker", worker};
        kr_metrics_sample_int(out, "kroute_lua_memory_bytes", &label, 1, (long long)bytes);
    }
    kr_metrics_family(out, "kroute_messages_taken_total", "counter",
                      "Messages consumed, by the thread that took them from librdkafka "
                      "(kr-worker-N: its own partitions; kroute: the router, for a "
                      "worker busy with a long run)");
    for (int w = 0; w <= d->router_slot && d->taken; w++) {
        char thread[24];
        if (w < d->router_slot)
            kr_pool_thread_name(w, thread, sizeof(thread));
        else
            snprintf(thread, sizeof(thread), "kroute");
        kr_metric_label_t label = {"thread", thread};
        kr_metrics_sample_int(out, "kroute_messages_taken_total", &label, 1,
                              (long long)d->taken[w]);
    }
    kr_metrics_single(out, "kroute_messages_inflight", "gauge",
                      "Messages consumed and not yet committable", (double)d->inflight);
    kr_metrics_single(out, "kroute_inflight_bytes", "gauge",
                      "Bytes the in-flight messages count against the budget (--max-inflight)",
                      (double)d->inflight_bytes);
    kr_metrics_single(out, "kroute_inflight_budget_bytes", "gauge",
                      "The in-flight budget: partitions pause while it is spent",
                      (double)d->budget);
    kr_metrics_single(out, "kroute_partition_pauses_total", "counter",
                      "Partitions paused because the in-flight budget was spent",
                      (double)d->pauses);
    kr_metrics_single(out, "kroute_refetched_skipped_total", "counter",
                      "Messages librdkafka delivered again below what a partition had "
                      "taken in or committed, skipped rather than handled twice",
                      (double)d->refetched);
    kr_metrics_single(out, "kroute_rewinds_total", "counter",
                      "Times partitions went back to their first unfinished input because "
                      "the producer failed outputs (lost idempotence state, replaced producer)",
                      (double)d->rewinds);
}

kr_gen_t *kr_dispatch_gen(const kr_dispatch_t *d)
{
    return d->gen;
}

void kr_dispatch_set_producer(kr_dispatch_t *d, kr_producer_t *p)
{
    d->p = p;
}

int kr_dispatch_swap(kr_dispatch_t *d, kr_gen_t *gen, kr_group_t **changed, size_t *changed_cnt)
{
    kr_gen_t *old = d->gen;
    d->gen = gen;
    bind_stats(d, gen);
    *changed_cnt = 0;
    for (size_t i = 0; i < d->group_cnt; i++)
        if (kr_group_refresh(d->groups[i]))
            changed[(*changed_cnt)++] = d->groups[i];
    kr_gen_unref(old);
    return 0;
}

void kr_dispatch_set_requester(kr_dispatch_t *d, kr_requester_t *rq)
{
    d->rq = rq;
}

void kr_dispatch_set_pool(kr_dispatch_t *d, kr_pool_t *pool)
{
    d->pool = pool;
    int n = kr_pool_threads(pool);
    d->batch_head = xcalloc((size_t)n, sizeof(*d->batch_head));
    d->batch_tail = xcalloc((size_t)n, sizeof(*d->batch_tail));
    d->batch_len = xcalloc((size_t)n, sizeof(*d->batch_len));
    d->taken = xcalloc((size_t)n + 1, sizeof(*d->taken));
    d->router_slot = n;
}

int kr_dispatch_rewind_wanted(const kr_dispatch_t *d)
{
    return d->rewind && !d->draining && !d->fatal;
}

size_t kr_dispatch_inflight(const kr_dispatch_t *d)
{
    return d->inflight;
}

int kr_dispatch_drain(kr_dispatch_t *d, int timeout_ms)
{
    /* stop handling: unhandled messages stay uncommitted */
    d->draining = 1;
    for (size_t gi = 0; gi < d->group_cnt; gi++)
        for (size_t b = 0; b < LANE_BUCKETS; b++)
            for (kr_lane_t *lane = d->groups[gi]->buckets[b]; lane; lane = lane->hnext) {
                /* a handler waiting for a reply is failed cleanly: its
                 * message stays uncommitted and is redelivered */
                for (kr_inmsg_t *m = lane->todo; m; m = m->tnext) {
                    kr_inmsg_set_retry(d, m, 0);
                    kr_inmsg_drop_run(d, m);
                }
                lane->todo = lane->todo_tail = NULL;
            }
    /* runs in the pool end within their handler timeout; their VMs must
     * be idle before anything is freed */
    int64_t until = kr_clock_ms() + timeout_ms;
    kr_dispatch_flush_jobs(d);
    while (d->running && kr_clock_ms() < until) {
        kr_dispatch_poll_jobs(d);
        if (d->p)
            kr_producer_poll(d->p, 1);
    }
    int64_t left = until - kr_clock_ms();
    return d->p ? kr_producer_flush(d->p, left > 0 ? (int)left : 0) : 0;
}

int kr_dispatch_fatal(const kr_dispatch_t *d)
{
    return d->fatal;
}

void kr_dispatch_set_fatal(kr_dispatch_t *d)
{
    d->fatal = 1;
}

void kr_dispatch_free(kr_dispatch_t *d)
{
    if (!d)
        return;
    for (size_t gi = 0; gi < d->group_cnt; gi++)
        kr_group_free(d, d->groups[gi]);
    free(d->groups);
    free(d->parked);
    free(d->batch_head);
    free(d->batch_tail);
    free(d->batch_len);
    free(d->taken);
    kr_gen_unref(d->gen);
    kr_metrics_free(&d->metrics);
    kr_spares_free(&d->spare_msgs);
    kr_spares_free(&d->spare_outs);
    kr_spares_free(&d->spare_runs);
    free(d->pump_lanes);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
