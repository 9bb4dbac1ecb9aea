/* consumer.c - see consumer.h. Handles eager and cooperative (incremental)
 * rebalances: the hooks run first so the dispatcher can finish and commit
 * the work of revoked partitions while they are still assigned. */
#include "kafka/consumer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "hash.h"
#include "kafka/kafkaconf.h"
#include "ops/log.h"
#include "ops/metrics.h"

/* how long an assignment waits for the group's committed offsets */
#define COMMITTED_TIMEOUT_MS 3000
/* how long a commit on revoke or close waits out a passing refusal */
#define COMMIT_RETRY_MS 2000

/* A worker thread's share of the messages: the partitions forwarded to it
 * (kr_consumer_forward), and whom to tell when it stops being empty. */
typedef struct worker_queue {
    rd_kafka_queue_t *q;
    kr_consumer_wake_fn *wake;
    void *ctx;
    int index;
} worker_queue_t;

struct kr_consumer {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    char *group;
    kr_consumer_hooks_t hooks;
    rd_kafka_topic_partition_list_t *committed; /* last successful commit per partition */
    rd_kafka_topic_partition_list_t *stores;    /* offsets stored since the last flush */
    int *store_slots;         /* index into stores->elems by partition hash, -1 = free */
    size_t store_slot_cnt;    /* a power of two, at least twice stores->cnt */
    int stores_last_cnt;      /* partitions the last flush stored: the next list's size */
    worker_queue_t *wq;       /* kr_consumer_split: one per worker thread, or NULL */
    int wq_cnt;
};

/* offset_commit_cb (router thread, from the consumer queue): remembers
 * what the group has committed, for the metrics. */
static void commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    kr_consumer_t *c = opaque;
    if (err || !offsets)
        return;
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *o = &offsets->elems[i];
        if (o->err || o->offset < 0)
            continue;
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_find(c->committed, o->topic, o->partition);
        if (!e)
            e = rd_kafka_topic_partition_list_add(c->committed, o->topic, o->partition);
        e->offset = o->offset;
    }
}

static void log_parts(const char *what, const char *group,
                      const rd_kafka_topic_partition_list_t *parts)
{
    char buf[1024];
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && len < sizeof(buf) - 64; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s[%d]", i ? " " : "",
                                parts->elems[i].topic, (int)parts->elems[i].partition);
    kr_info("consumer", "group=%s %s %d partition(s): %s", group, what, parts->cnt,
            parts->cnt ? buf : "-");
}

/* Calls the assign hook with the group's committed offsets, so the
 * dispatcher knows where each partition was left (asked here, one round
 * trip per rebalance: librdkafka's own answer is not exposed). Unknown
 * (the coordinator did not answer in time) means no such knowledge. */
static void assigned_with_committed(kr_consumer_t *c,
                                    const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *at = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = rd_kafka_committed(c->rk, at, COMMITTED_TIMEOUT_MS);
    for (int i = 0; i < at->cnt; i++)
        if (err || at->elems[i].err)
            at->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    if (err)
        kr_warn("consumer", "group=%s committed offsets: %s", c->group, rd_kafka_err2str(err));
    c->hooks.assigned(c->hooks.ctx, at);
    rd_kafka_topic_partition_list_destroy(at);
}

/* rebalance_cb: triggered from rd_kafka_consumer_poll/consume_batch_queue
 * (and close) on the polling thread. */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    kr_consumer_t *c = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t ret = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_parts("assigned", c->group, parts);
        if (c->hooks.assigned && c->hooks.committed)
            assigned_with_committed(c, parts);
        else if (c->hooks.assigned)
            c->hooks.assigned(c->hooks.ctx, parts);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            ret = rd_kafka_assign(rk, parts);
    } else {
        int lost = rd_kafka_assignment_lost(rk);
        log_parts(lost ? "lost" : "revoked", c->group, parts);
        if (c->hooks.revoked)
            c->hooks.revoked(c->hooks.ctx, parts, lost);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            ret = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        kr_error("consumer", "group=%s rebalance: %s", c->group, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (ret) {
        kr_error("consumer", "group=%s rebalance: %s", c->group, rd_kafka_err2str(ret));
    }
}

kr_consumer_t *kr_consumer_new(const char *brokers, const char *group, const kr_props_t *props,
                               size_t prefetch_kb, const kr_consumer_hooks_t *hooks,
                               char *errstr, size_t errsize)
{
    /* session/heartbeat values that also work on the mock cluster; a
     * route file can override any of them */
    char prefetch[24];
    snprintf(prefetch, sizeof(prefetch), "%zu", prefetch_kb);
    const char *const defaults[] = {"enable.auto.commit", "true",
                                    "auto.commit.interval.ms", "1000",
                                    "auto.offset.reset", "earliest",
                                    "session.timeout.ms", "6000",
                                    "heartbeat.interval.ms", "500",
                                    "fetch.wait.max.ms", "100",
                                    "queued.min.messages", "1000000",
                                    "topic.metadata.refresh.interval.ms", "5000",
                                    "client.id", "kroute",
                                    /* last: left out when 0 */
                                    prefetch_kb ? "queued.max.messages.kbytes" : NULL, prefetch,
                                    NULL};
    kr_consumer_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->group = strdup(group);
    c->committed = rd_kafka_topic_partition_list_new(16);
    if (hooks)
        c->hooks = *hooks;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kr_kafkaconf_apply(conf, defaults, props, errstr, errsize) < 0)
        goto fail;
    const char *managed[] = {"bootstrap.servers", brokers, "group.id", group,
                             "enable.auto.offset.store", "false", NULL};
    if (kr_kafkaconf_apply(conf, managed, NULL, errstr, errsize) < 0)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, commit_cb);
    rd_kafka_conf_set_opaque(conf, c);
    char err[512];
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!c->rk) {
        snprintf(errstr, errsize, "cannot create consumer for group %s: %s", group, err);
        goto fail;
    }
    conf = NULL; /* owned by rk */
    char kb[24];
    size_t kbsize = sizeof(kb);
    if (rd_kafka_conf_get(rd_kafka_conf(c->rk), "queued.max.messages.kbytes", kb, &kbsize) ==
        RD_KAFKA_CONF_OK)
        kr_info("consumer", "group=%s prefetches up to %s KiB (queued.max.messages.kbytes)",
                group, kb);
    rd_kafka_poll_set_consumer(c->rk);
    c->q = rd_kafka_queue_get_consumer(c->rk);
    return c;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    rd_kafka_topic_partition_list_destroy(c->committed);
    free(c->group);
    free(c);
    return NULL;
}

int kr_consumer_subscribe(kr_consumer_t *c, const char *const *topics, size_t cnt,
                          char *errstr, size_t errsize)
{
    rd_kafka_resp_err_t err;
    if (cnt == 0) { /* librdkafka refuses an empty subscription */
        err = rd_kafka_unsubscribe(c->rk);
    } else {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)cnt);
        for (size_t i = 0; i < cnt; i++)
            rd_kafka_topic_partition_list_add(list, topics[i], RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(c->rk, list);
        rd_kafka_topic_partition_list_destroy(list);
    }
    if (err) {
        snprintf(errstr, errsize, "group %s: subscribe failed: %s", c->group,
                 rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

ssize_t kr_consumer_poll(kr_consumer_t *c, int timeout_ms, rd_kafka_message_t **rkms,
                         size_t max)
{
    return rd_kafka_consume_batch_queue(c->q, timeout_ms, rkms, max);
}

/* rd_kafka_queue_cb_event_enable's callback: a librdkafka thread, with
 * the queue's lock held, when a message lands on it after it was served. */
static void worker_queue_event(rd_kafka_t *rk, void *opaque)
{
    (void)rk;
    worker_queue_t *w = opaque;
    w->wake(w->ctx, w->index);
}

void kr_consumer_split(kr_consumer_t *c, int n, kr_consumer_wake_fn *wake, void *ctx)
{
    if (c->wq || n <= 0)
        return;
    c->wq = calloc((size_t)n, sizeof(*c->wq));
    if (!c->wq)
        abort();
    c->wq_cnt = n;
    for (int i = 0; i < n; i++) {
        worker_queue_t *w = &c->wq[i];
        *w = (worker_queue_t){rd_kafka_queue_new(c->rk), wake, ctx, i};
        rd_kafka_queue_cb_event_enable(w->q, worker_queue_event, w);
    }
}

void kr_consumer_forward(kr_consumer_t *c, const char *topic, int32_t partition, int worker)
{
    if (!c->wq)
        return;
    rd_kafka_queue_t *pq = rd_kafka_queue_get_partition(c->rk, topic, partition);
    if (!pq)
        return; /* then the consumer queue has its messages, as without workers */
    rd_kafka_queue_forward(pq, c->wq[worker % c->wq_cnt].q);
    rd_kafka_queue_destroy(pq);
}

ssize_t kr_consumer_poll_worker(kr_consumer_t *c, int worker, rd_kafka_message_t **rkms,
                                size_t max)
{
    if (!c->wq)
        return 0;
    return rd_kafka_consume_batch_queue(c->wq[worker % c->wq_cnt].q, 0, rkms, max);
}

/* Stops the worker queues' wake-ups and lets go of them (rd_kafka_destroy
 * waits for every queue reference); what they still hold is dropped,
 * uncommitted, for the partitions' next owner. */
static void worker_queues_free(kr_consumer_t *c)
{
    for (int i = 0; i < c->wq_cnt; i++) {
        rd_kafka_queue_cb_event_enable(c->wq[i].q, NULL, NULL);
        rd_kafka_queue_destroy(c->wq[i].q);
    }
    free(c->wq);
    c->wq = NULL;
    c->wq_cnt = 0;
}

void kr_consumer_wake_fd(kr_consumer_t *c, int fd)
{
    rd_kafka_queue_io_event_enable(c->q, fd, "c", 1);
}

/* The slot of topic[partition] in the stores' index: its element's, or
 * the free slot where it goes. */
static int *store_slot(kr_consumer_t *c, const char *topic, int32_t partition)
{
    size_t mask = c->store_slot_cnt - 1;
    for (size_t i = kr_hash_partition(topic, partition) & mask;; i = (i + 1) & mask) {
        int *slot = &c->store_slots[i];
        if (*slot < 0)
            return slot;
        const rd_kafka_topic_partition_t *e = &c->stores->elems[*slot];
        if (e->partition == partition && !strcmp(e->topic, topic))
            return slot;
    }
}

/* Makes room for one more element: the index stays at most half full. */
static void store_index_grow(kr_consumer_t *c)
{
    if (c->store_slot_cnt && (size_t)c->stores->cnt + 1 <= c->store_slot_cnt / 2)
        return;
    free(c->store_slots);
    c->store_slot_cnt = c->store_slot_cnt ? c->store_slot_cnt * 2 : 64;
    c->store_slots = malloc(c->store_slot_cnt * sizeof(*c->store_slots));
    if (!c->store_slots)
        abort();
    memset(c->store_slots, 0xff, c->store_slot_cnt * sizeof(*c->store_slots)); /* all -1 */
    for (int i = 0; i < c->stores->cnt; i++)
        *store_slot(c, c->stores->elems[i].topic, c->stores->elems[i].partition) = i;
}

void kr_consumer_store(kr_consumer_t *c, const char *topic, int32_t partition, int64_t offset)
{
    /* gathered, and handed to librdkafka once per pass of the event loop
     * (kr_consumer_flush_stores): an offset advances with almost every
     * delivery report, and each rd_kafka_offsets_store call costs a list.
     * Found through a hash index: librdkafka's list_find is a linear scan
     * with strcmp, 3% of the router thread with 64 partitions. */
    if (!c->stores) /* sized as the last one: growing it was 1% of the router */
        c->stores = rd_kafka_topic_partition_list_new(c->stores_last_cnt > 16 ? c->stores_last_cnt
                                                                                : 16);
    store_index_grow(c);
    int *slot = store_slot(c, topic, partition);
    if (*slot < 0) {
        *slot = c->stores->cnt;
        rd_kafka_topic_partition_list_add(c->stores, topic, partition);
    }
    c->stores->elems[*slot].offset = offset;
}

/* Hands the gathered stores over: the list and its index start empty. */
static rd_kafka_topic_partition_list_t *stores_take(kr_consumer_t *c)
{
    rd_kafka_topic_partition_list_t *list = c->stores;
    c->stores = NULL;
    if (list)
        c->stores_last_cnt = list->cnt;
    if (list && c->store_slots)
        memset(c->store_slots, 0xff, c->store_slot_cnt * sizeof(*c->store_slots));
    return list;
}

void kr_consumer_flush_stores(kr_consumer_t *c)
{
    rd_kafka_topic_partition_list_t *list = stores_take(c);
    if (!list)
        return;
    rd_kafka_offsets_store(c->rk, list);
    for (int i = 0; i < list->cnt; i++) /* a partition revoked meanwhile: nothing to keep */
        if (list->elems[i].err)
            kr_debug("consumer", "group=%s store %s[%d]@%lld: %s", c->group, list->elems[i].topic,
                     (int)list->elems[i].partition, (long long)list->elems[i].offset,
                     rd_kafka_err2str(list->elems[i].err));
    /* destroyed now: once stored, an element holds a reference to its
     * partition, and rd_kafka_destroy waits for every such reference */
    rd_kafka_topic_partition_list_destroy(list);
}

/* Answers of a live coordinator that pass within moments: the group
 * completing a rebalance (its leader has not sent the assignment yet), or
 * the coordinator moving or loading. Anything else is not retried: a
 * broker that does not answer would only make shutdown slower. */
static int commit_passing(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS ||
           err == RD_KAFKA_RESP_ERR_NOT_COORDINATOR;
}

void kr_consumer_commit(kr_consumer_t *c)
{
    kr_consumer_flush_stores(c);
    /* a revoke or a close commits once: what fails here is redelivered
     * to the partitions' next owner, so a passing refusal is waited out */
    int64_t until = kr_clock_ms() + COMMIT_RETRY_MS;
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_commit(c->rk, NULL, 0)) && commit_passing(err) &&
           kr_clock_ms() < until) {
        kr_debug("consumer", "group=%s commit: %s: trying again", c->group, rd_kafka_err2str(err));
        usleep(100 * 1000);
    }
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        kr_warn("consumer", "group=%s commit: %s", c->group, rd_kafka_err2str(err));
}

int64_t kr_consumer_high_watermark(kr_consumer_t *c, const char *topic, int32_t partition)
{
    int64_t low, high;
    if (rd_kafka_get_watermark_offsets(c->rk, topic, partition, &low, &high) || high < 0)
        return -1;
    return high;
}

void kr_consumer_pause(kr_consumer_t *c, const char *topic, int32_t partition, int pause)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition);
    if (pause)
        rd_kafka_pause_partitions(c->rk, list);
    else
        rd_kafka_resume_partitions(c->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
}

int kr_consumer_seek(kr_consumer_t *c, const rd_kafka_topic_partition_list_t *to)
{
    int rc = 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(to);
    rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, l, 5000);
    if (error) {
        kr_error("consumer", "group=%s seek: %s", c->group, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rc = -1;
    }
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].err && (rc = -1))
            kr_error("consumer", "group=%s seek %s[%d]@%lld: %s", c->group, l->elems[i].topic,
                     (int)l->elems[i].partition, (long long)l->elems[i].offset,
                     rd_kafka_err2str(l->elems[i].err));
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* rd_kafka_destroy of a closed consumer, waited for at most
 * DESTROY_WAIT_MS. librdkafka 2.0.2 can wait forever there for a broker
 * thread that still counts a reference to a partition of a topic that was
 * deleted and created again while it was assigned (reproduced on Apache
 * Kafka: cluster_spec). By then rd_kafka_consumer_close has returned and
 * the offsets are committed, so rather than wedge a shutdown or a reload,
 * the destroy is left to finish on its own thread. */
#define DESTROY_WAIT_MS 5000

typedef struct destroy_job {
    rd_kafka_t *rk;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int done;
    int owners; /* the closing thread and the destroying one: the last frees */
} destroy_job_t;

static void destroy_job_release(destroy_job_t *j)
{
    pthread_mutex_lock(&j->mu);
    int last = --j->owners == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cond);
    free(j);
}

static void *destroy_main(void *arg)
{
    destroy_job_t *j = arg;
    rd_kafka_destroy(j->rk);
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->mu);
    destroy_job_release(j);
    return NULL;
}

static void destroy_bounded(rd_kafka_t *rk, const char *group)
{
    destroy_job_t *j = calloc(1, sizeof(*j));
    if (!j)
        abort();
    j->rk = rk;
    j->owners = 2;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t tid;
    if (pthread_create(&tid, NULL, destroy_main, j) != 0) {
        j->owners = 1;
        destroy_job_release(j);
        rd_kafka_destroy(rk); /* no thread to spare: wait as before */
        return;
    }
    pthread_detach(tid);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += DESTROY_WAIT_MS / 1000;
    pthread_mutex_lock(&j->mu);
    int rc = 0;
    while (!j->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&j->cond, &j->mu, &until);
    int done = j->done;
    pthread_mutex_unlock(&j->mu);
    if (!done)
        kr_warn("consumer", "group=%s: librdkafka did not finish closing the consumer within %d "
                            "ms (its offsets are committed); going on without waiting for it",
                group, DESTROY_WAIT_MS);
    destroy_job_release(j);
}

/* Leaves the group before rd_kafka_consumer_close. librdkafka 2.0.2 can
 * wait forever in the rd_kafka_assign() that the revoke callback makes
 * when the close itself raises it while a rebalance is under way: the
 * group is terminating and nothing answers the assign (librdkafka issues
 * 4527 and 4884; seen here as a shutdown stuck until --drain-timeout when
 * two members of a group stop together, gdb: rebalance_cb -> rd_kafka_assign
 * inside rd_kafka_consumer_close). So the group is left by unsubscribing,
 * and the consumer queue is served - the revoke callback runs from this
 * poll like any other - until nothing is assigned, for at most
 * LEAVE_WAIT_MS; the close then has nothing to revoke. What the poll
 * returns is not handled: its offsets are not stored, so it is redelivered
 * to the partitions' next owner. */
#define LEAVE_WAIT_MS 5000

static int has_assignment(kr_consumer_t *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int has = rd_kafka_assignment(c->rk, &parts) == RD_KAFKA_RESP_ERR_NO_ERROR && parts &&
              parts->cnt > 0;
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    return has;
}

static void leave_group(kr_consumer_t *c)
{
    rd_kafka_resp_err_t err = rd_kafka_unsubscribe(c->rk);
    if (err) {
        kr_warn("consumer", "group=%s unsubscribe: %s", c->group, rd_kafka_err2str(err));
        return;
    }
    int64_t until = kr_clock_ms() + LEAVE_WAIT_MS;
    rd_kafka_message_t *rkms[64];
    while (has_assignment(c)) {
        if (kr_clock_ms() >= until) {
            kr_warn("consumer", "group=%s: still assigned %d ms after leaving the group; "
                                "closing anyway", c->group, LEAVE_WAIT_MS);
            return;
        }
        ssize_t n = kr_consumer_poll(c, 100, rkms, sizeof(rkms) / sizeof(rkms[0]));
        for (ssize_t i = 0; i < n; i++)
            rd_kafka_message_destroy(rkms[i]);
    }
}

void kr_consumer_close(kr_consumer_t *c)
{
    if (!c)
        return;
    kr_consumer_commit(c);
    leave_group(c);
    rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
    rd_kafka_queue_destroy(c->q);
    rd_kafka_consumer_close(c->rk);
    worker_queues_free(c);
    if (c->stores) /* advanced by a lost partition's revoke: not to be committed */
        rd_kafka_topic_partition_list_destroy(c->stores);
    free(c->store_slots);
    destroy_bounded(c->rk, c->group);
    rd_kafka_topic_partition_list_destroy(c->committed);
    free(c->group);
    free(c);
}

char **kr_consumer_assigned_topics(kr_consumer_t *c, size_t *cnt)
{
    *cnt = 0;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) || !parts)
        return NULL;
    char **topics = calloc((size_t)parts->cnt + 1, sizeof(*topics));
    if (!topics)
        abort();
    for (int i = 0; i < parts->cnt; i++) {
        size_t j;
        for (j = 0; j < *cnt && strcmp(topics[j], parts->elems[i].topic); j++)
            ;
        if (j == *cnt && !(topics[(*cnt)++] = strdup(parts->elems[i].topic)))
            abort();
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return topics;
}

void kr_consumer_render_partitions(kr_consumer_t *c, kr_buf_t *lag, kr_buf_t *committed)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) || !parts)
        return;
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        rd_kafka_topic_partition_t *e =
            rd_kafka_topic_partition_list_find(c->committed, p->topic, p->partition);
        int64_t lo, hi;
        /* watermarks as of the last fetch response: no request is made */
        int have_hi = !rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &lo, &hi) &&
                      hi >= 0;
        for (int k = 0; k < 2; k++) {
            kr_buf_t *b = k ? committed : lag;
            if ((k && !e) || (!k && (!have_hi || !e)))
                continue;
            const char *name = k ? "kroute_committed_offset" : "kroute_consumer_lag";
            long long value = k ? e->offset : (hi > e->offset ? hi - e->offset : 0);
            char partition[16];
            snprintf(partition, sizeof(partition), "%d", (int)p->partition);
            kr_metric_label_t labels[] = {
                {"group", c->group}, {"topic", p->topic}, {"partition", partition}};
            kr_metrics_sample_int(b, name, labels, 3, value);
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
}
