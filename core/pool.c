/* pool.c - see pool.h. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

typedef struct thread {
    kr_pool_t *pool;
    pthread_t tid;
    pthread_mutex_t vm_mu;   /* held while one of its VMs is in use */
    pthread_cond_t work;     /* its queue got a job, or stopping */
    kr_job_t *head, *tail;   /* queued jobs (under pool->mu) */
} thread_t;

struct kr_pool {
    pthread_mutex_t mu;      /* queues, finished list, counters */
    thread_t *threads;
    int n;
    kr_job_t *done_head, *done_tail;
    int wake_fd;
    int stopping;
};

static void *thread_main(void *arg)
{
    thread_t *t = arg;
    kr_pool_t *p = t->pool;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!t->head && !p->stopping)
            pthread_cond_wait(&t->work, &p->mu);
        kr_job_t *batch = t->head;
        if (!batch)
            break; /* stopping, and nothing left */
        t->head = batch->qnext;
        if (!t->head)
            t->tail = NULL;
        pthread_mutex_unlock(&p->mu);

        pthread_mutex_lock(&t->vm_mu);
        int stopped = 0;
        kr_job_t *last = batch;
        for (kr_job_t *job = batch; job; job = job->next) {
            last = job;
            if (stopped) {
                job->rc = KR_JOB_SKIPPED;
                continue;
            }
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if (job->kind == KR_JOB_RUN)
                job->rc = kr_vm_run(job->vm, job->run);
            else
                job->rc = kr_vm_resume(job->vm, job->run, job->value, job->len, job->err);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            job->seconds =
                (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
            stopped = job->rc != KR_VM_OK;
        }
        pthread_mutex_unlock(&t->vm_mu);

        pthread_mutex_lock(&p->mu);
        int was_empty = !p->done_head;
        if (p->done_tail)
            p->done_tail->next = batch;
        else
            p->done_head = batch;
        p->done_tail = last;
        if (was_empty) { /* one wake-up per batch the router has not seen */
            ssize_t w = write(p->wake_fd, "j", 1);
            (void)w;
        }
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
    if (!p->threads)
        abort();
    pthread_mutex_init(&p->mu, NULL);
    for (int i = 0; i < p->n; i++) {
        thread_t *t = &p->threads[i];
        t->pool = p;
        pthread_mutex_init(&t->vm_mu, NULL);
        pthread_cond_init(&t->work, NULL);
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
            abort();
    }
    return p;
}

int kr_pool_threads(const kr_pool_t *p)
{
    return p->n;
}

void kr_pool_submit(kr_pool_t *p, int worker, kr_job_t *batch)
{
    thread_t *t = &p->threads[worker % p->n];
    batch->qnext = NULL;
    pthread_mutex_lock(&p->mu);
    if (t->tail) {
        t->tail->qnext = batch; /* the thread is awake: it drains its queue */
    } else {
        t->head = batch;
        pthread_cond_signal(&t->work);
    }
    t->tail = batch;
    pthread_mutex_unlock(&p->mu);
}

kr_job_t *kr_pool_finished(kr_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    kr_job_t *jobs = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    return jobs;
}

void kr_pool_lock(kr_pool_t *p, int worker)
{
    pthread_mutex_lock(&p->threads[worker % p->n].vm_mu);
}

void kr_pool_unlock(kr_pool_t *p, int worker)
{
    pthread_mutex_unlock(&p->threads[worker % p->n].vm_mu);
}

void kr_pool_free(kr_pool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (int i = 0; i < p->n; i++)
        pthread_cond_signal(&p->threads[i].work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) {
        pthread_join(p->threads[i].tid, NULL);
        pthread_mutex_destroy(&p->threads[i].vm_mu);
        pthread_cond_destroy(&p->threads[i].work);
    }
    /* finished jobs nobody collected belong to their submitters */
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}
