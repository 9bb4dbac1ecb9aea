/* pool.h - the worker threads that run Lua. Thread i runs every handler
 * whose VM belongs to worker i of a generation, one job at a time, so a
 * Lua state is only ever entered by its own thread. The router thread
 * queues jobs (a run, or the resumption of a run after kroute.request)
 * and collects finished ones; it is woken through its pipe when the
 * first of a batch finishes. Everything else (Kafka, offsets, outputs)
 * stays on the router thread. */
#ifndef KR_POOL_H
#define KR_POOL_H

#include <stddef.h>

#include "record.h"
#include "vm.h"

enum { KR_JOB_RUN, KR_JOB_RESUME };
/* rc of a job not run: an earlier job of its batch failed or yielded */
#define KR_JOB_SKIPPED (-2)

typedef struct kr_job {
    int kind;
    kr_vm_t *vm;
    kr_run_t *run;
    char *value;        /* resume: reply bytes (owned, NULL = null value) */
    size_t len;
    char *err;          /* resume: error text (owned), or NULL */
    int rc;             /* KR_VM_OK / FAILED / YIELDED once done */
    double seconds;     /* wall time the VM took */
    void *ctx;          /* the caller's */
    struct kr_job *next;   /* the next job of the batch */
    struct kr_job *qnext;  /* the next batch in a thread's queue */
} kr_job_t;

typedef struct kr_pool kr_pool_t; /* struct kr_pool: see generation.h */

/* Starts `threads` workers; `wake_fd` is written when jobs finish. */
kr_pool_t *kr_pool_new(int threads, int wake_fd);
int kr_pool_threads(const kr_pool_t *p);
/* Queues a batch (jobs linked by `next`) for thread `worker`; every VM
 * must belong to it. The thread runs them in order and stops at the first
 * that does not end KR_VM_OK: the rest come back KR_JOB_SKIPPED, so a
 * batch never runs a message ahead of one that failed or waits. One
 * hand-over per batch instead of per message is what makes it fast. */
void kr_pool_submit(kr_pool_t *p, int worker, kr_job_t *batch);
/* Takes every finished job (linked by `next`), batches in the order they
 * finished, jobs in batch order (NULL: none). */
kr_job_t *kr_pool_finished(kr_pool_t *p);
/* Exclusive use of worker `worker`'s VMs from the calling thread (to
 * abandon a run, or read reload_state) until kr_pool_unlock. */
void kr_pool_lock(kr_pool_t *p, int worker);
void kr_pool_unlock(kr_pool_t *p, int worker);
/* Stops the threads once their queues are empty, and frees the pool. */
void kr_pool_free(kr_pool_t *p);

#endif
