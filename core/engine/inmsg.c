/* engine/inmsg.c - the in-flight message (kr_inmsg_t, internal.h) from
 * consumed to freed: made from the consumed record, its run dropped,
 * retries scheduled, settled once every output is reported, released as
 * an orphan, and kr_inmsg_free, the one place a message is freed. */
#include "internal.h"

#include <stdlib.h>

#include "codec/nest.h"
#include "runtime/message.h"
#include "runtime/vm.h"

/* Counts m in (+1) or out (-1) of the in-flight figures. */
static void count(kr_dispatch_t *d, const kr_inmsg_t *m, int sign)
{
    size_t bytes = m->rkm->len + m->rkm->key_len + KR_INMSG_OVERHEAD;
    if (sign > 0) {
        d->inflight++;
        d->inflight_bytes += bytes;
    } else {
        d->inflight--;
        d->inflight_bytes -= bytes;
    }
}

kr_inmsg_t *kr_inmsg_new(kr_group_t *g, rd_kafka_message_t *rkm)
{
    kr_inmsg_t *m = kr_spares_take(&g->d->spare_msgs);
    m->rkm = rkm;
    m->group = g;
    kr_msg_from_rkm(&m->view, rkm);
    m->key_hash = m->view.key ? kr_hash_bytes(m->view.key, m->view.key_len, KR_HASH_SEED)
                              : 0x9e3779b9u; /* null keys keep their order together */
    count(g->d, m, +1);
    return m;
}

int kr_inmsg_is_request(kr_inmsg_t *m, const kr_route_t *route)
{
    if (!route->reply_nest)
        return 0; /* no rule depends on it (outcome.c) */
    if (!m->request_known) {
        m->is_request = kr_nest_parse_request(kr_msg_headers(&m->view), &m->nest);
        m->request_known = 1;
    }
    return m->is_request;
}

/* Takes m off the list of requests waiting for their reply partition. */
void kr_inmsg_unpark(kr_dispatch_t *d, kr_inmsg_t *m)
{
    for (size_t i = 0; m->parked && i < d->parked_cnt; i++)
        if (d->parked[i] == m) {
            d->parked[i] = d->parked[--d->parked_cnt];
            break;
        }
    m->parked = 0;
}

/* A KR_JOB_CALL that releases a suspended run on its VM's own thread (the
 * router never enters a VM: it would wait for whatever runs there). */
typedef struct abandon_call {
    kr_job_t job;
    kr_run_t *run;
} abandon_call_t;

static void abandon_on_thread(kr_job_t *job)
{
    abandon_call_t *c = (abandon_call_t *)job;
    kr_vm_abandon(job->vm, c->run);
    kr_run_clear(c->run);
    free(c->run);
    free(c);
}

/* Drops a run in progress (a handler waiting in kroute.request): its
 * coroutine is closed and its request forgotten; nothing is produced. */
void kr_inmsg_drop_run(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (!m->run)
        return;
    if (m->running) { /* its thread is in the VM: drop it when it is back */
        m->dropped = 1;
        return;
    }
    kr_inmsg_unpark(d, m);
    if (d->rq)
        kr_requester_cancel(d->rq, m);
    if (m->run->co && !kr_vm_retired(m->vm)) {
        abandon_call_t *c = xcalloc(1, sizeof(*c));
        c->job.vm = m->vm;
        c->job.fn = abandon_on_thread;
        c->run = m->run;
        kr_pool_call(d->pool, m->worker, &c->job);
    } else { /* a retired VM is closed whole, with its coroutines */
        kr_run_clear(m->run);
        free(m->run);
    }
    m->run = NULL;
    m->waiting = 0;
}

/* The one place a message is freed. A message whose run is still held by
 * an abandoned thread (m->zombie) only counts as gone here; the memory
 * goes when that thread lets go (KR_JOB_RELEASED in runs.c calls this
 * again). */
void kr_inmsg_free(kr_dispatch_t *d, kr_inmsg_t *m)
{
    kr_inmsg_drop_run(d, m);
    if (m->zombie) { /* an abandoned run still reads m->view: see KR_JOB_RELEASED */
        if (!m->freed)
            count(d, m, -1);
        m->freed = 1;
        return;
    }
    if (m->freed)
        count(d, m, +1); /* counted out already */
    count(d, m, -1);
    kr_nest_req_free(&m->nest);
    rd_kafka_message_destroy(m->rkm);
    kr_gen_unref(m->gen);
    free(m->delivery_error);
    kr_spares_give(&d->spare_msgs, m);
}

/* An orphan (its lane dropped by a revoke, a rewind or a stop) is freed
 * by whatever lets go of it last: its job coming back from the pool or
 * its last delivery report. Returns 1 when m is an orphan (freed now or
 * later), 0 when its lane still holds it. */
int kr_inmsg_release(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (m->lane)
        return 0;
    if (m->pending == 0 && !m->running)
        kr_inmsg_free(d, m);
    return 1;
}

/* Schedules (at > 0) or clears (at == 0) a retry of m. */
void kr_inmsg_set_retry(kr_dispatch_t *d, kr_inmsg_t *m, int64_t at)
{
    int delta = (at != 0) - (m->retry_at_ms != 0);
    d->retrying += (size_t)(ssize_t)delta;
    if (m->lane)
        m->lane->retry_cnt += (size_t)(ssize_t)delta;
    m->retry_at_ms = at;
}

/* Called when m may be done: handled, and no output report outstanding.
 * An output lost for good sends the input to the DLQ instead (so the
 * offset can advance without losing the event); then the lane advances. */
void kr_inmsg_settle(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (m->pending > 0 || !m->handled || d->fatal)
        return;
    if (m->delivery_error) {
        char *reason = m->delivery_error;
        m->delivery_error = NULL;
        m->pending++;
        kr_out_dead_letter(d, m, m->failed_route, reason, "");
        m->pending--;
        free(reason);
        if (m->pending > 0)
            return; /* settles again on the DLQ copy's report */
    }
    kr_lane_advance(d, m->lane);
}

/* Record memory (record arrays and byte buffers) the runs parked on the
 * free list may keep for the next ones, all together: a steady stream
 * reuses it; a burst of runs beyond it parks without any. */
#define RUNS_KEPT_MAX ((size_t)4 << 20)

void kr_inmsg_new_run(kr_dispatch_t *d, kr_inmsg_t *m)
{
    m->run = kr_spares_take(&d->spare_runs);
    d->runs_kept_bytes -= kr_run_kept_bytes(m->run);
    m->run->msg = &m->view;
}

void kr_inmsg_free_run(kr_dispatch_t *d, kr_inmsg_t *m)
{
    kr_run_t *run = m->run;
    kr_run_recycle(run, 1);
    size_t kept = kr_run_kept_bytes(run);
    if (d->spare_runs.cnt >= d->spare_runs.max || d->runs_kept_bytes + kept > RUNS_KEPT_MAX) {
        kr_run_recycle(run, 0);
        kept = 0;
    }
    d->runs_kept_bytes += kept;
    kr_spares_give(&d->spare_runs, run);
    m->run = NULL;
}
