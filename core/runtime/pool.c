/* pool.c - see pool.h. One mutex guards the queues, the finished list and
 * every thread's current job; a thread holds it only between jobs, never
 * while Lua runs. */
#include "runtime/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "ops/log.h"

/* How long an idle thread with a pass sleeps before passing again: what
 * a pass finds without a poke (delivery reports, offsets) waits this long
 * at most. Each pass that finds nothing doubles the sleep, up to
 * PASS_IDLE_MAX_MS, so an idle kroute does not pass 100 times a second per
 * thread; one that finds work starts again from PASS_IDLE_MS. (The
 * router's cover, engine/pass.c, waits 100 ms: more than the longest
 * sleep.) */
#define PASS_IDLE_MS 10
#define PASS_IDLE_MAX_MS 40

typedef struct thread {
    kr_pool_t *pool;
    int index;
    pthread_t tid;
    pthread_cond_t work;     /* its queue got a job, or stopping */
    kr_job_t *calls, *calls_tail; /* KR_JOB_CALL jobs, run first */
    kr_job_t *head, *tail;   /* queued batches */
    kr_job_t *current;       /* the job in progress, or NULL */
    kr_vm_t *vm;             /* ...its VM (a zombie's stays set: nobody else may enter it) */
    int64_t wedge_at_ms;     /* ...abandoned once the clock passes this */
    int64_t started_ms;
    int abandoned;           /* the watchdog gave up on it (a zombie) */
    int poked;               /* kr_pool_poke since its last pass */
    int64_t passed_ms;       /* when it last began a pass (or started) */
    int idle_ms;             /* how long it sleeps after a pass that found nothing */
    struct thread *znext;    /* zombies, still running */
} thread_t;

struct kr_pool {
    pthread_mutex_t mu;
    thread_t **threads;      /* by worker index; replaced when abandoned */
    int n;
    thread_t *zombies;
    kr_job_t **done_head, **done_tail; /* finished jobs, by the index of their thread */
    int wake_owed;           /* jobs were posted to an empty list: write wake_fd */
    int wake_fd;
    int stopping;
    pthread_t watchdog;
    pthread_cond_t tick;     /* wakes the watchdog to stop */
    kr_pool_pass_fn *pass;   /* kr_pool_set_pass: what an idle thread does */
    void *pass_ctx;
    int in_pass;             /* threads inside pass() now */
    pthread_cond_t passes_done; /* in_pass dropped to 0 */
};

static void *thread_main(void *arg);

/* A run at least this long wakes the router as soon as it ends, even with
 * more of its batch queued behind it. */
#define WAKE_AFTER_S 0.0005

/* Wakes the router for the jobs posted since it last took them. Under
 * p->mu. */
static void wake_router(kr_pool_t *p)
{
    if (!p->wake_owed)
        return;
    p->wake_owed = 0;
    ssize_t w = write(p->wake_fd, "j", 1);
    (void)w;
}

/* Appends one job to the finished list. A job that lands on an empty list
 * owes the router a wake-up; a worker pays it once its queue is empty or
 * a job ran long (see thread_main), so a batch of quick runs wakes the
 * router once, not once per run. Under p->mu. */
static void post_done(kr_pool_t *p, int index, kr_job_t *job)
{
    job->next = NULL;
    if (!p->done_head[index])
        p->wake_owed = 1;
    if (p->done_tail[index])
        p->done_tail[index]->next = job;
    else
        p->done_head[index] = job;
    p->done_tail[index] = job;
}

/* Hands back `job` and, when the rest of its batch is still at the head
 * of t's queue, that rest as KR_JOB_SKIPPED (a batch never runs a message
 * ahead of one that did not end OK). Under p->mu. */
static void post_with_rest(kr_pool_t *p, thread_t *t, kr_job_t *job, int skip_rest)
{
    kr_job_t *rest = skip_rest && job->next && t->head == job->next ? job->next : NULL;
    if (rest) {
        t->head = rest->qnext;
        if (!t->head)
            t->tail = NULL;
    }
    post_done(p, t->index, job);
    for (kr_job_t *j = rest, *nx; j; j = nx) {
        nx = j->next;
        j->rc = KR_JOB_SKIPPED;
        post_done(p, t->index, j);
    }
}

void kr_pool_thread_name(int worker, char *buf, size_t size)
{
    snprintf(buf, size, "kr-worker-%u", (unsigned)worker % 100000u);
}

static thread_t *thread_start(kr_pool_t *p, int index)
{
    thread_t *t = calloc(1, sizeof(*t));
    if (!t)
        abort();
    t->pool = p;
    t->index = index;
    t->passed_ms = kr_clock_ms();
    t->idle_ms = PASS_IDLE_MS;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* timed_wait's clock */
    pthread_cond_init(&t->work, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
        abort();
    /* named so top -H and perf tell the workers from the router ("kroute") */
    char name[16];
    kr_pool_thread_name(index, name, sizeof(name));
    pthread_setname_np(t->tid, name);
    return t;
}

/* After a zombie's job finally returned: frees its run, tells the router
 * the job's ctx is free, and ends the thread. Under p->mu. */
static void zombie_exit(kr_pool_t *p, thread_t *t, kr_run_t *run, void *ctx)
{
    kr_run_clear(run);
    free(run);
    kr_job_t *rel = calloc(1, sizeof(*rel));
    if (!rel)
        abort();
    rel->rc = KR_JOB_RELEASED;
    rel->ctx = ctx;
    post_done(p, t->index, rel);
    wake_router(p);
    for (thread_t **z = &p->zombies; *z; z = &(*z)->znext)
        if (*z == t) {
            *z = t->znext;
            break;
        }
    kr_warn("pool", "an abandoned handler run (route %s) ended after %.1f s", kr_vm_name(t->vm),
            (double)(kr_clock_ms() - t->started_ms) / 1000.0);
    pthread_cond_destroy(&t->work);
    pthread_detach(t->tid);
    free(t);
}

/* 1 when an abandoned thread still runs in `vm`. Under p->mu. */
static int zombie_vm(kr_pool_t *p, const kr_vm_t *vm)
{
    for (thread_t *z = p->zombies; z; z = z->znext)
        if (z->vm == vm)
            return 1;
    return 0;
}

static int run_job(kr_job_t *job)
{
    if (job->kind == KR_JOB_RUN)
        return kr_vm_run(job->vm, job->run);
    return kr_vm_resume(job->vm, job->run, job->value, job->len, job->err);
}

/* Waits on t->work for at most ms. Under p->mu. */
static void timed_wait(thread_t *t, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += ms * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&t->work, &t->pool->mu, &until);
}

/* Runs the pass for idle thread t, without p->mu. Returns 1 when the
 * thread should look at its queue again before sleeping: the pass did
 * something, or it was poked meanwhile. Under p->mu. */
static int idle_pass(kr_pool_t *p, thread_t *t)
{
    kr_pool_pass_fn *pass = p->pass;
    void *ctx = p->pass_ctx;
    t->poked = 0;
    t->passed_ms = kr_clock_ms();
    p->in_pass++;
    pthread_mutex_unlock(&p->mu);
    int did = pass(ctx, t->index);
    pthread_mutex_lock(&p->mu);
    if (--p->in_pass == 0)
        pthread_cond_broadcast(&p->passes_done);
    return did || t->poked || t->head || t->calls;
}

static void *thread_main(void *arg)
{
    thread_t *t = arg;
    kr_pool_t *p = t->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (t->calls) { /* calls first: a reload's state export */
            kr_job_t *call = t->calls;
            t->calls = call->qnext;
            if (!t->calls)
                t->calls_tail = NULL;
            pthread_mutex_unlock(&p->mu);
            call->fn(call); /* takes over the job */
            pthread_mutex_lock(&p->mu);
            continue;
        }
        kr_job_t *batch = t->head;
        if (!batch) {
            if (p->stopping)
                break;
            if (p->pass) {
                if (idle_pass(p, t)) {
                    t->idle_ms = PASS_IDLE_MS;
                    continue; /* it found work: maybe jobs for this thread */
                }
                timed_wait(t, t->idle_ms);
                if (t->idle_ms < PASS_IDLE_MAX_MS)
                    t->idle_ms *= 2;
                continue;
            }
            pthread_cond_wait(&t->work, &p->mu);
            continue;
        }
        /* one job at a time off the front of the batch */
        t->head = batch->next;
        if (!t->head) {
            t->head = batch->qnext;
            if (!t->head)
                t->tail = NULL;
        } else {
            t->head->qnext = batch->qnext;
            if (t->tail == batch)
                t->tail = t->head;
        }
        kr_job_t *job = batch;
        if (zombie_vm(p, job->vm)) {
            /* queued before the router replaced the VM an abandoned thread
             * still runs in: handed back, to be run again in the new one */
            job->rc = KR_JOB_SKIPPED;
            post_with_rest(p, t, job, 1);
            wake_router(p);
            continue;
        }
        int64_t start_ns = kr_clock_ns(); /* the watchdog's start and the run's time */
        t->current = job;
        t->vm = job->vm;
        t->started_ms = start_ns / 1000000;
        t->wedge_at_ms = t->started_ms + 2 * kr_vm_timeout_ms(job->vm) + KR_POOL_WEDGE_MARGIN_MS;
        kr_run_t *run = job->run;
        void *ctx = job->ctx;
        pthread_mutex_unlock(&p->mu);

        int rc = run_job(job);
        int64_t end_ns = kr_clock_ns();

        pthread_mutex_lock(&p->mu);
        if (t->abandoned) { /* the job went back as WEDGED: it is not ours */
            zombie_exit(p, t, run, ctx);
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        t->current = NULL;
        job->rc = rc;
        job->seconds = (double)(end_ns - start_ns) / 1e9;
        post_with_rest(p, t, job, rc != KR_VM_OK);
        /* the router hears of finished runs when this thread runs out of
         * work, or at once after a long run (its outputs wait otherwise);
         * with a pass, a thread out of work collects them itself */
        if (t->head ? job->seconds >= WAKE_AFTER_S : !p->pass)
            wake_router(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Gives up on thread i (under p->mu): its job goes back WEDGED, the rest of
 * its batch SKIPPED, and a fresh thread takes over its queue. */
static void abandon(kr_pool_t *p, int i)
{
    thread_t *t = p->threads[i];
    kr_job_t *job = t->current;
    kr_error("pool", "worker %d: route %s ran %.1f s, past its deadline and the %d ms margin, "
                     "inside a call no hook can interrupt: the run is abandoned and the "
                     "worker replaced",
             i, kr_vm_name(t->vm), (double)(kr_clock_ms() - t->started_ms) / 1000.0,
             KR_POOL_WEDGE_MARGIN_MS);
    t->abandoned = 1;
    t->current = NULL;
    thread_t *fresh = thread_start(p, i);
    job->rc = KR_JOB_WEDGED;
    job->seconds = (double)(kr_clock_ms() - t->started_ms) / 1000.0;
    post_with_rest(p, t, job, 1); /* the rest of its batch: not ahead of it */
    wake_router(p);
    fresh->calls = t->calls;
    fresh->calls_tail = t->calls_tail;
    fresh->head = t->head;
    fresh->tail = t->tail;
    t->calls = t->calls_tail = t->head = t->tail = NULL;
    t->znext = p->zombies;
    p->zombies = t;
    p->threads[i] = fresh;
    if (fresh->head || fresh->calls)
        pthread_cond_signal(&fresh->work);
}

static void *watchdog_main(void *arg)
{
    kr_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        int64_t now = kr_clock_ms();
        for (int i = 0; i < p->n; i++) {
            thread_t *t = p->threads[i];
            if (t->current && now > t->wedge_at_ms)
                abandon(p, i);
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->tick, &p->mu, &until);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

kr_pool_t *kr_pool_new(int threads, int wake_fd)
{
    kr_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    p->n = threads > 0 ? threads : 1;
    p->wake_fd = wake_fd;
    p->threads = calloc((size_t)p->n, sizeof(*p->threads));
    p->done_head = calloc((size_t)p->n, sizeof(*p->done_head));
    p->done_tail = calloc((size_t)p->n, sizeof(*p->done_tail));
    if (!p->threads || !p->done_head || !p->done_tail)
        abort();
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->tick, NULL);
    pthread_cond_init(&p->passes_done, NULL);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n; i++)
        p->threads[i] = thread_start(p, i);
    pthread_mutex_unlock(&p->mu);
    if (pthread_create(&p->watchdog, NULL, watchdog_main, p) != 0)
        abort();
    pthread_setname_np(p->watchdog, "kr-watchdog");
    return p;
}

int kr_pool_threads(const kr_pool_t *p)
{
    return p->n;
}

void kr_pool_submit(kr_pool_t *p, int worker, kr_job_t *batch)
{
    batch->qnext = NULL;
    pthread_mutex_lock(&p->mu);
    thread_t *t = p->threads[worker % p->n];
    if (t->tail)
        t->tail->qnext = batch;
    else
        t->head = batch;
    t->tail = batch;
    pthread_cond_signal(&t->work);
    pthread_mutex_unlock(&p->mu);
}

void kr_pool_call(kr_pool_t *p, int worker, kr_job_t *job)
{
    job->kind = KR_JOB_CALL;
    job->qnext = NULL;
    pthread_mutex_lock(&p->mu);
    thread_t *t = p->threads[worker % p->n];
    if (t->calls_tail)
        t->calls_tail->qnext = job;
    else
        t->calls = job;
    t->calls_tail = job;
    pthread_cond_signal(&t->work);
    pthread_mutex_unlock(&p->mu);
}

void kr_pool_set_pass(kr_pool_t *p, kr_pool_pass_fn *pass, void *ctx)
{
    pthread_mutex_lock(&p->mu);
    p->pass = pass;
    p->pass_ctx = ctx;
    while (!pass && p->in_pass > 0) /* the old ctx may go once nobody uses it */
        pthread_cond_wait(&p->passes_done, &p->mu);
    for (int i = 0; pass && i < p->n; i++)
        pthread_cond_signal(&p->threads[i]->work);
    pthread_mutex_unlock(&p->mu);
}

void kr_pool_poke(kr_pool_t *p, int worker)
{
    pthread_mutex_lock(&p->mu);
    thread_t *t = p->threads[worker % p->n];
    t->poked = 1;
    pthread_cond_signal(&t->work);
    pthread_mutex_unlock(&p->mu);
}

/* Unlinks thread i's finished jobs, in order (NULL: none); *last (if
 * given) gets the last of them. Under p->mu. */
static kr_job_t *take_done(kr_pool_t *p, int i, kr_job_t **last)
{
    kr_job_t *jobs = p->done_head[i];
    if (last)
        *last = p->done_tail[i];
    p->done_head[i] = p->done_tail[i] = NULL;
    return jobs;
}

kr_job_t *kr_pool_finished(kr_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    kr_job_t *jobs = NULL, **tail = &jobs;
    for (int i = 0; i < p->n; i++) {
        kr_job_t *last, *mine = take_done(p, i, &last);
        if (!mine)
            continue;
        *tail = mine;
        tail = &last->next;
    }
    pthread_mutex_unlock(&p->mu);
    return jobs;
}

int64_t kr_pool_passed_ms(kr_pool_t *p, int worker)
{
    pthread_mutex_lock(&p->mu);
    int64_t at = p->threads[worker % p->n]->passed_ms;
    pthread_mutex_unlock(&p->mu);
    return at;
}

kr_job_t *kr_pool_finished_by(kr_pool_t *p, int worker)
{
    pthread_mutex_lock(&p->mu);
    kr_job_t *jobs = take_done(p, worker % p->n, NULL);
    pthread_mutex_unlock(&p->mu);
    return jobs;
}

int kr_pool_vm_abandoned(kr_pool_t *p, const kr_vm_t *vm)
{
    pthread_mutex_lock(&p->mu);
    int in = zombie_vm(p, vm);
    pthread_mutex_unlock(&p->mu);
    return in;
}

int kr_pool_wedged(kr_pool_t *p, char *route, size_t route_size, double *seconds)
{
    int n = 0;
    int64_t now = kr_clock_ms(), oldest = now;
    pthread_mutex_lock(&p->mu);
    for (thread_t *z = p->zombies; z; z = z->znext) {
        n++;
        if (z->started_ms <= oldest) {
            oldest = z->started_ms;
            snprintf(route, route_size, "%s", kr_vm_name(z->vm));
        }
    }
    /* a thread past its deadline that the watchdog has not reached yet */
    for (int i = 0; i < p->n; i++) {
        thread_t *t = p->threads[i];
        if (t->current && now > t->wedge_at_ms - KR_POOL_WEDGE_MARGIN_MS) {
            n++;
            if (t->started_ms <= oldest) {
                oldest = t->started_ms;
                snprintf(route, route_size, "%s", kr_vm_name(t->vm));
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    *seconds = (double)(now - oldest) / 1000.0;
    return n;
}

void kr_pool_free(kr_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (int i = 0; i < p->n; i++)
        pthread_cond_signal(&p->threads[i]->work);
    pthread_cond_signal(&p->tick);
    int zombies = p->zombies != NULL;
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->watchdog, NULL);
    for (int i = 0; i < p->n; i++) {
        pthread_join(p->threads[i]->tid, NULL);
        pthread_cond_destroy(&p->threads[i]->work);
        free(p->threads[i]);
    }
    if (zombies) {
        /* a zombie still runs in a VM and takes p->mu when it returns: the
         * pool stays for the process's exit */
        kr_warn("pool", "exiting with an abandoned handler run still executing");
        return;
    }
    /* finished jobs nobody collected belong to their submitters */
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->tick);
    pthread_cond_destroy(&p->passes_done);
    free(p->done_head);
    free(p->done_tail);
    free(p->threads);
    free(p);
}
