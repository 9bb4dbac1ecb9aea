/* engine/runs.c - handler runs: a message's routes one after the other
 * on the VM of its lane's worker, handed to the pool in batches; their
 * outcomes (outputs, a retry with backoff, giving up, a request to wait
 * for, a wedged worker), replies that resume them, and due retries. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "grow.h"
#include "ops/log.h"
#include "ops/metrics.h"
#include "runtime/vm.h"

/* The VM that runs m's route: on the partition's worker thread (the one
 * its messages are forwarded to), the key's, or the next in turn. */
static kr_vm_t *vm_for(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route)
{
    int n = m->gen->worker_cnt;
    if (route->ordering == KR_ORDER_KEY && m->view.key)
        m->worker = (int)(kr_hash_bytes(m->view.key, m->view.key_len, KR_HASH_SEED) %
                          (uint32_t)n);
    else if (route->ordering == KR_ORDER_NONE)
        m->worker = (int)(d->rr++ % (unsigned)n);
    else
        m->worker = kr_partition_worker(m->view.topic, m->view.partition, n);
    return m->gen->workers[m->worker]->vms[route->index];
}

static int64_t backoff_ms(const kr_route_t *route, int attempt)
{
    int64_t delay = route->backoff_ms;
    for (int i = 1; i < attempt && delay < route->max_backoff_ms; i++)
        delay *= 2;
    if (delay > route->max_backoff_ms)
        delay = route->max_backoff_ms;
    /* equal jitter: spread retries of many partitions over [delay/2, delay] */
    if (delay > 1)
        delay = delay / 2 + rand() % (delay / 2 + 1);
    return delay;
}

#define BATCH_MAX 64 /* jobs per hand-over: amortises it, bounds the wait for outputs */

/* Hands pool thread w the runs batched for it so far. */
static void flush_worker(kr_dispatch_t *d, int w)
{
    if (!d->batch_head[w])
        return;
    for (kr_job_t *j = d->batch_head[w]; j; j = j->next)
        ((kr_inmsg_t *)j->ctx)->unflushed = 0;
    kr_pool_submit(d->pool, w, d->batch_head[w]);
    d->batch_head[w] = d->batch_tail[w] = NULL;
    d->batch_len[w] = 0;
}

void kr_dispatch_flush_jobs(kr_dispatch_t *d)
{
    for (int w = 0; d->pool && w < kr_pool_threads(d->pool); w++)
        flush_worker(d, w);
}

/* Queues m's run for its VM's pool thread: a fresh run (batched with the
 * other runs of this pass for that thread), or the resumption of one that
 * waited in kroute.request (handed over alone and at once: it must never
 * be skipped). The outcome comes back through kr_dispatch_poll_jobs. */
static void submit(kr_dispatch_t *d, kr_inmsg_t *m, int kind, const void *value, size_t len,
                   const char *err)
{
    kr_job_t *job = &m->job;
    memset(job, 0, sizeof(*job));
    job->kind = kind;
    job->vm = m->vm;
    job->run = m->run;
    job->ctx = m;
    if (value) {
        job->value = malloc(len ? len : 1);
        if (!job->value)
            abort();
        memcpy(job->value, value, len);
        job->len = len;
    }
    job->err = err ? strdup(err) : NULL;
    m->running = 1;
    d->running++;
    int w = m->worker;
    if (kind == KR_JOB_RESUME) {
        kr_pool_submit(d->pool, w, job);
        return;
    }
    if (d->batch_tail[w])
        d->batch_tail[w]->next = job;
    else
        d->batch_head[w] = job;
    d->batch_tail[w] = job;
    m->unflushed = 1;
    if (++d->batch_len[w] >= BATCH_MAX)
        flush_worker(d, w);
}

/* Acts on the outcome `rc` of the run of routes[route_pos]. Returns 1 when
 * m must wait (a retry or a reply), 0 when the route is done with it. */
static int finish_run(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route, int rc)
{
    const kr_msg_t *msg = &m->view;
    kr_run_t *run = m->run;
    if (rc == KR_VM_YIELDED) {
        const char *err = kr_out_request(d, m, route);
        if (!err)
            m->waiting = 1;
        else /* the request could not be sent: the handler gets nil, err */
            submit(d, m, KR_JOB_RESUME, NULL, 0, err);
        return 1;
    }
    /* what the run becomes (the rule kroute.testing uses too); every
     * output needs a topic before any is produced: an incomplete run fails
     * as a whole (and is retried) rather than half-sent */
    kr_outcome_t plan = {.reply_rec = -1};
    const kr_outcome_route_t oroute = {route->reply_nest, route->to};
    if (rc == KR_VM_OK)
        kr_outcome_plan(run, &oroute, kr_inmsg_is_request(m, route), &plan);
    const char *bad = plan.fail;
    if (rc == KR_VM_OK && !bad) {
        if (plan.filtered)
            stats(m, route)->filtered++;
        kr_out_run(d, m, route, run, &plan);
        kr_inmsg_free_run(d, m);
        m->route_pos++;
        m->attempt = 0;
        return 0;
    }
    const char *reason = bad ? bad : run->error;
    m->attempt++;
    stats(m, route)->errors++;
    /* a missing service function will not appear on retry */
    if (m->attempt < route->attempts && !run->no_handler) {
        int64_t delay = backoff_ms(route, m->attempt);
        kr_warn("dispatch",
                "route=%s topic=%s partition=%d offset=%lld: attempt %d/%d failed, retry "
                "in %lldms: %s\n%s",
                route->name, msg->topic, (int)msg->partition, (long long)msg->offset,
                m->attempt, route->attempts, (long long)delay, reason,
                run->trace ? run->trace : "");
        kr_inmsg_set_retry(d, m, kr_clock_ms() + delay);
        stats(m, route)->retries++;
        kr_inmsg_free_run(d, m);
        return 1;
    }
    kr_error("dispatch",
             "route=%s topic=%s partition=%d offset=%lld: failed after %d attempt(s): %s\n%s",
             route->name, msg->topic, (int)msg->partition, (long long)msg->offset, m->attempt,
             reason, run->trace ? run->trace : "");
    kr_out_give_up(d, m, route, reason, run->trace, run->no_handler);
    kr_inmsg_free_run(d, m);
    return 0;
}

/* Runs the remaining routes of `m`. Returns 0 when m is handled, or 1
 * when it waits (for a retry or a reply). */
int kr_runs_next(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (!m->gen) {
        /* the generation live now serves this message to the end: a reload
         * swaps generations between messages, never inside one */
        const topic_routes_t *tr = kr_group_routes_for(m->group, m->view.topic);
        m->gen = d->gen;
        kr_gen_ref(m->gen);
        m->routes = tr->routes;
        m->route_cnt = tr->cnt;
    }
    while (m->route_pos < m->route_cnt) {
        if (m->waiting)
            return 1;
        const kr_route_t *route = m->routes[m->route_pos];
        size_t size = m->view.key_len + m->view.value_len;
        if (size > route->max_input) {
            stats(m, route)->in++;
            /* refused before any Lua sees it: a retry cannot help */
            char reason[160];
            snprintf(reason, sizeof(reason), "input of %zu bytes exceeds max_input (%zu bytes)",
                     size, route->max_input);
            kr_error("dispatch", "route=%s topic=%s partition=%d offset=%lld: %s", route->name,
                     m->view.topic, (int)m->view.partition, (long long)m->view.offset, reason);
            kr_out_give_up(d, m, route, reason, "", 0);
            continue;
        }
        kr_inmsg_new_run(d, m);
        const kr_outcome_route_t oroute = {route->reply_nest, route->to};
        m->run->nest_reply = kr_outcome_answers(&oroute, kr_inmsg_is_request(m, route));
        m->vm = vm_for(d, m, route);
        submit(d, m, KR_JOB_RUN, NULL, 0, NULL);
        return 1;
    }
    return 0;
}

/* The pool abandoned the thread running m (a call no hook could stop ran
 * past the deadline): that thread keeps m's run and VM until it ends, so
 * m's memory is held (m->zombie) with a generation reference, the VM is
 * replaced by a fresh one, and m counts as failed for good (no retry: it
 * would wedge the next worker too) - it goes to the DLQ, or its caller
 * gets the error. */
static void wedged(kr_dispatch_t *d, kr_inmsg_t *m, double seconds)
{
    const kr_route_t *route = m->routes[m->route_pos];
    m->zombie = 1;
    m->run = NULL; /* the abandoned thread frees it */
    kr_gen_ref(m->gen);
    char err[1024];
    if (kr_gen_retire_vm(m->gen, m->worker, route->index, err, sizeof(err)) < 0) {
        kr_error("dispatch", "route=%s: the abandoned worker's VM cannot be rebuilt, stopping: %s",
                 route->name, err);
        kr_dispatch_set_fatal(d);
        return;
    }
    stats(m, route)->in += !m->attempt;
    stats(m, route)->errors++;
    kr_metrics_observe(stats(m, route), seconds);
    if (m->dropped || !m->lane)
        return;
    char reason[256];
    snprintf(reason, sizeof(reason),
             "timeout: handler ran longer than %lld ms and could not be stopped (%.1f s in a "
             "library call); its worker was replaced",
             (long long)route->timeout_ms, seconds);
    kr_error("dispatch", "route=%s topic=%s partition=%d offset=%lld: %s", route->name,
             m->view.topic, (int)m->view.partition, (long long)m->view.offset, reason);
    m->pending++;
    kr_out_give_up(d, m, route, reason, "", 0);
    m->pending--;
}

/* kr_reply_cb_t: a reply (or "timeout") for a handler waiting in
 * kroute.request. Resumes it, then lets its lane move on. */
static void on_reply(void *ctx, void *req_ctx, const void *value, size_t len, const char *err)
{
    kr_dispatch_t *d = ctx;
    kr_inmsg_t *m = req_ctx;
    if (!m->waiting || !m->run)
        return;
    m->waiting = 0;
    kr_inmsg_unpark(d, m);
    if (kr_vm_retired(m->vm)) {
        /* its VM was replaced while it waited: the route runs again, from
         * the start, in the new one */
        kr_warn("dispatch", "topic=%s partition=%d offset=%lld: its handler's worker was "
                            "replaced while it waited for a reply; running it again",
                m->view.topic, (int)m->view.partition, (long long)m->view.offset);
        kr_inmsg_free_run(d, m);
        kr_lane_pump(d, m->lane);
        return;
    }
    submit(d, m, KR_JOB_RESUME, value, len, err);
}

size_t kr_dispatch_poll_jobs(kr_dispatch_t *d)
{
    return kr_runs_finished(d, kr_pool_finished(d->pool));
}

size_t kr_runs_finished(kr_dispatch_t *d, kr_job_t *jobs)
{
    size_t n = 0;
    /* lanes to pump once each, after the whole batch (d's array, kept:
     * nothing below polls jobs again) */
    kr_lane_t **lanes = d->pump_lanes;
    size_t lane_cnt = 0;
    for (kr_job_t *job = jobs, *next; job; job = next, n++) {
        next = job->next;
        kr_inmsg_t *m = job->ctx;
        if (job->rc == KR_JOB_RELEASED) { /* its abandoned run ended at last */
            free(job);
            m->zombie = 0;
            kr_gen_unref(m->gen); /* the abandoned thread's reference */
            if (m->freed)
                kr_inmsg_free(d, m);
            continue;
        }
        free(job->value);
        free(job->err);
        m->running = 0;
        d->running--;
        if (job->rc == KR_JOB_WEDGED)
            wedged(d, m, job->seconds);
        if (m->dropped || !m->lane) {
            /* revoked or stopping while it ran: nothing it did counts */
            m->dropped = 0;
            kr_inmsg_drop_run(d, m);
            kr_inmsg_release(d, m);
            continue;
        }
        const kr_route_t *route = m->routes[m->route_pos];
        if (job->rc == KR_JOB_WEDGED) {
            /* handled above */
        } else if (job->rc == KR_JOB_SKIPPED) {
            kr_inmsg_free_run(d, m); /* never started: it runs again in a later batch */
        } else {
            if (job->kind == KR_JOB_RUN && !m->attempt)
                stats(m, route)->in++;
            kr_metrics_observe(stats(m, route), job->seconds);
            m->pending++; /* hold while its outputs are queued (see kr_lane_pump) */
            finish_run(d, m, route, job->rc);
            m->pending--;
        }
        if (!m->lane->pump_mark) {
            lanes = d->pump_lanes = kr_grow(lanes, &d->pump_cap, lane_cnt, sizeof(*lanes), 16);
            m->lane->pump_mark = 1;
            lanes[lane_cnt++] = m->lane;
        }
    }
    /* each message's next route, or what waited behind it */
    for (size_t i = 0; i < lane_cnt; i++) {
        lanes[i]->pump_mark = 0;
        kr_lane_pump(d, lanes[i]);
    }
    kr_dispatch_flush_jobs(d);
    return n;
}

size_t kr_dispatch_poll_replies(kr_dispatch_t *d)
{
    return d->rq ? kr_requester_poll(d->rq, on_reply, d) : 0;
}

/* Sends parked requests whose reply topic got assigned, times out the
 * rest; returns ms until the earliest parked deadline, or -1. */
static int64_t tick_parked(kr_dispatch_t *d, int64_t now)
{
    int64_t next = -1;
    for (size_t i = d->parked_cnt; i-- > 0;) {
        if (i >= d->parked_cnt)
            continue; /* a callback shrank the list */
        kr_inmsg_t *m = d->parked[i];
        if (now >= m->request_deadline_ms) {
            on_reply(d, m, NULL, 0, "timeout");
        } else if (kr_requester_partition(d->rq, m->run->request->topic) >= 0) {
            m->waiting = 0;
            m->pending++;
            finish_run(d, m, m->routes[m->route_pos], KR_VM_YIELDED);
            m->pending--;
            if (m->lane)
                kr_lane_pump(d, m->lane);
        } else if (next < 0 || m->request_deadline_ms - now < next) {
            next = m->request_deadline_ms - now;
        }
    }
    return next;
}

int kr_dispatch_tick(kr_dispatch_t *d)
{
    int64_t now = kr_clock_ms(), next = -1;
    kr_dispatch_flush_stores(d); /* this pass's advanced offsets */
    kr_dispatch_reforward(d, now);
    if (d->rq) {
        next = tick_parked(d, now);
        int n = kr_requester_expire(d->rq, now, on_reply, d);
        if (n >= 0 && (next < 0 || n < next))
            next = n;
        if (d->parked_cnt && (next < 0 || next > 50))
            next = 50; /* parked requests wait for an assignment: look again soon */
    }
    if (!d->retrying)
        return next < 0 ? -1 : (int)next;
    for (size_t gi = 0; gi < d->group_cnt; gi++)
        for (size_t b = 0; b < LANE_BUCKETS; b++)
            for (kr_lane_t *lane = d->groups[gi]->buckets[b]; lane; lane = lane->hnext) {
                if (!lane->retry_cnt)
                    continue;
                int due = 0;
                for (kr_inmsg_t *m = lane->todo; m; m = m->tnext)
                    if (m->retry_at_ms && m->retry_at_ms <= now) {
                        kr_inmsg_set_retry(d, m, 0);
                        due = 1;
                    }
                if (due)
                    kr_lane_pump(d, lane);
                for (kr_inmsg_t *m = lane->todo; m && lane->retry_cnt; m = m->tnext)
                    if (m->retry_at_ms && (next < 0 || m->retry_at_ms - now < next))
                        next = m->retry_at_ms - now;
            }
    return next < 0 ? -1 : (int)(next > 0 ? next : 0);
}
