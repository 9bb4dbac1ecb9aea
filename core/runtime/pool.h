/* pool.h - the worker threads that run Lua. Thread i runs every handler
 * whose VM belongs to worker i of a generation, one job at a time, so a
 * Lua state is only ever entered by its own thread. The router thread
 * queues jobs (a run, the resumption of a run after kroute.request, or a
 * call such as a reload's state export) and collects finished ones; it is
 * woken through its pipe when finished jobs are waiting, once a thread
 * has run out of queued work or has finished a run of 0.5 ms or more (not
 * for every quick run: with one worker, a wake-up per run cost as much
 * CPU as the handlers).
 * A watchdog abandons a thread whose job outlives its VM's deadline by
 * more than a margin (a long C call no hook can interrupt): the job comes
 * back KR_JOB_WEDGED, a fresh thread takes over the queue, and the old one
 * finishes on its own; it never touches the job again. Between jobs, a
 * thread with nothing queued runs the pass it was given (kr_pool_set_pass:
 * the engine's work for the partitions it owns, engine/pass.c); then the
 * router is not woken for the jobs it finished, the pass acts on them. */
#ifndef KR_POOL_H
#define KR_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/record.h"
#include "runtime/vm.h"

enum { KR_JOB_RUN, KR_JOB_RESUME, KR_JOB_CALL };
/* rc of a job not run: an earlier job of its batch failed or yielded */
#define KR_JOB_SKIPPED (-2)
/* rc of a job whose thread was abandoned: its run and VM are still in use
 * by that thread, and job->ctx must stay valid until a KR_JOB_RELEASED job
 * with the same ctx comes back */
#define KR_JOB_WEDGED (-3)
/* rc of a job the pool allocated: the abandoned run of job->ctx has ended
 * (its run struct is freed); free() this job */
#define KR_JOB_RELEASED (-4)

/* The margin past a run's deadline before its thread is abandoned. */
#define KR_POOL_WEDGE_MARGIN_MS 1000

typedef struct kr_job kr_job_t;
/* A KR_JOB_CALL: runs on the thread between jobs, takes over the job. */
typedef void kr_job_fn(kr_job_t *job);

struct kr_job {
    int kind;
    kr_vm_t *vm;
    kr_run_t *run;
    char *value;        /* resume: reply bytes (owned, NULL = null value) */
    size_t len;
    char *err;          /* resume: error text (owned), or NULL */
    kr_job_fn *fn;      /* call: what to run */
    int rc;             /* KR_VM_OK / FAILED / YIELDED once done, or above */
    double seconds;     /* wall time the VM took */
    void *ctx;          /* the caller's */
    struct kr_job *next;   /* the next job of the batch */
    struct kr_job *qnext;  /* the next batch in a thread's queue */
};

typedef struct kr_pool kr_pool_t;

/* Starts `threads` workers and the watchdog; `wake_fd` is written when jobs
 * finish. */
kr_pool_t *kr_pool_new(int threads, int wake_fd);
int kr_pool_threads(const kr_pool_t *p);
/* Thread `worker`'s name, as top -H and perf show it ("kr-worker-N"; the
 * router thread is "kroute"): what the metrics label a worker with. */
void kr_pool_thread_name(int worker, char *buf, size_t size);
/* Queues a batch (jobs linked by `next`) for thread `worker`; every VM
 * must belong to it. The thread runs them in order and stops at the first
 * that does not end KR_VM_OK: the rest come back KR_JOB_SKIPPED, so a
 * batch never runs a message ahead of one that failed or waits. Each job
 * is handed back as soon as it is done. */
void kr_pool_submit(kr_pool_t *p, int worker, kr_job_t *batch);
/* Queues a KR_JOB_CALL for thread `worker`, ahead of every batch: it runs
 * as soon as the job in progress there ends. */
void kr_pool_call(kr_pool_t *p, int worker, kr_job_t *job);
/* What a thread does whenever it runs out of queued jobs: the router's
 * pass for worker `worker` (consume its partitions, act on finished runs,
 * produce). Returns 1 when it did something, 0 when there was nothing to
 * do. Called without the pool's lock, so it may queue jobs. */
typedef int kr_pool_pass_fn(void *ctx, int worker);
/* Sets the pass (NULL: none; then a thread only sleeps when idle, and the
 * router is woken for every batch of finished jobs). Idle threads pass
 * again when poked, and every 10 to 40 ms. Setting NULL returns once
 * no thread is inside the old pass, so its ctx may be freed. */
void kr_pool_set_pass(kr_pool_t *p, kr_pool_pass_fn *pass, void *ctx);
/* Wakes thread `worker` for a pass, if it is idle (any thread, any time:
 * kr_consumer_split's wake). */
void kr_pool_poke(kr_pool_t *p, int worker);
/* When thread `worker` last began a pass (kr_clock_ms; an idle thread
 * passes every 10 to 40 ms): long ago means it is running a long job. */
int64_t kr_pool_passed_ms(kr_pool_t *p, int worker);
/* Takes every finished job (linked by `next`; NULL: none): each thread's
 * in the order it finished them, one thread's after another's. */
kr_job_t *kr_pool_finished(kr_pool_t *p);
/* The same, of thread `worker`'s jobs only (the ones its pass acts on). */
kr_job_t *kr_pool_finished_by(kr_pool_t *p, int worker);
/* 1 while an abandoned thread still runs in `vm` (no one may enter it). */
int kr_pool_vm_abandoned(kr_pool_t *p, const kr_vm_t *vm);
/* Threads abandoned by the watchdog that are still running, and the route
 * name and seconds of the oldest; 0 when none. */
int kr_pool_wedged(kr_pool_t *p, char *route, size_t route_size, double *seconds);
/* Stops the threads once their queues are empty, and frees the pool.
 * Abandoned threads are left to the process's exit. */
void kr_pool_free(kr_pool_t *p);

#endif
