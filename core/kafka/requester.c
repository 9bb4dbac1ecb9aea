/* requester.c - see requester.h. Pending requests are few (one per waiting
 * handler, at most one per lane), so they live in a plain array, as do the
 * reply topics. A reply topic is read while the live generation declares
 * its pattern or a request sent to that pattern still waits. */
#include "kafka/requester.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/nest.h"
#include "grow.h"
#include "ops/log.h"

typedef struct reply_topic {
    char *pattern;
    char *topic;        /* "<pattern>.reply" */
    int32_t partition;  /* lowest assigned, or -1 */
    int declared;       /* in the live generation's requests: */
    size_t waiting;     /* pending requests sent to this pattern */
} reply_topic_t;

typedef struct pending {
    char *correlation;
    char *pattern;
    void *req_ctx;
    int64_t deadline_ms;
    char *partial;      /* last non-final value of a streamed reply */
    size_t partial_len;
    int has_partial;
} pending_t;

struct kr_requester {
    kr_consumer_t *c;
    reply_topic_t *topics;
    size_t topic_cnt;
    int resubscribe;    /* a topic is no longer needed: drop it (sync_topics) */
    pending_t *pending;
    size_t pending_cnt, pending_cap;
};

static reply_topic_t *topic_by_name(kr_requester_t *rq, const char *topic)
{
    for (size_t i = 0; i < rq->topic_cnt; i++)
        if (!strcmp(rq->topics[i].topic, topic))
            return &rq->topics[i];
    return NULL;
}

/* Recomputes each reply topic's partition from the current assignment. */
static void on_assignment(kr_requester_t *rq, const rd_kafka_topic_partition_list_t *parts,
                          int added)
{
    for (int i = 0; i < parts->cnt; i++) {
        reply_topic_t *t = topic_by_name(rq, parts->elems[i].topic);
        if (!t)
            continue;
        int32_t p = parts->elems[i].partition;
        if (added && (t->partition < 0 || p < t->partition))
            t->partition = p;
        else if (!added && t->partition == p)
            t->partition = -1; /* re-set by the next assign of this topic */
    }
}

static void hook_assigned(void *ctx, const rd_kafka_topic_partition_list_t *parts)
{
    on_assignment(ctx, parts, 1);
}

static void hook_revoked(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost)
{
    (void)lost;
    on_assignment(ctx, parts, 0);
}

kr_requester_t *kr_requester_new(const char *brokers, const char *group,
                                 const kr_props_t *props, const char *const *patterns,
                                 size_t pattern_cnt, char *errstr, size_t errsize)
{
    kr_requester_t *rq = calloc(1, sizeof(*rq));
    if (!rq)
        abort();
    /* only replies to requests sent from now on matter */
    kr_props_t reply_props = {0};
    reply_props.cnt = (props ? props->cnt : 0) + 1;
    reply_props.v = calloc(reply_props.cnt, sizeof(kr_prop_t));
    if (!reply_props.v)
        abort();
    for (size_t i = 0; props && i < props->cnt; i++)
        reply_props.v[i] = props->v[i];
    reply_props.v[reply_props.cnt - 1] = (kr_prop_t){"auto.offset.reset", "latest"};
    char client_group[512];
    snprintf(client_group, sizeof(client_group), "%s-client", group);
    /* replies are read from the latest offset: no committed offsets asked */
    kr_consumer_hooks_t hooks = {hook_assigned, hook_revoked, rq, 0};
    rq->c = kr_consumer_new(brokers, client_group, &reply_props, 0, &hooks, errstr, errsize);
    free(reply_props.v);
    if (!rq->c || kr_requester_set_patterns(rq, patterns, pattern_cnt, errstr, errsize) < 0) {
        kr_requester_free(rq);
        return NULL;
    }
    return rq;
}

static void topic_free(reply_topic_t *t)
{
    free(t->pattern);
    free(t->topic);
}

static reply_topic_t *topic_by_pattern(kr_requester_t *rq, const char *pattern)
{
    for (size_t i = 0; i < rq->topic_cnt; i++)
        if (!strcmp(rq->topics[i].pattern, pattern))
            return &rq->topics[i];
    return NULL;
}

/* Subscribes to the reply topics still needed, after dropping the ones
 * neither declared nor waited on. Returns 0 or -1 with errstr set. */
static int sync_topics(kr_requester_t *rq, char *errstr, size_t errsize)
{
    size_t keep = 0;
    for (size_t i = 0; i < rq->topic_cnt; i++) {
        reply_topic_t *t = &rq->topics[i];
        if (t->declared || t->waiting) {
            rq->topics[keep++] = *t;
            continue;
        }
        kr_info("requester", "stopped reading %s: no route declares requests to %s any more",
                t->topic, t->pattern);
        topic_free(t);
    }
    rq->topic_cnt = keep;
    rq->resubscribe = 0;
    const char **subs = calloc(rq->topic_cnt ? rq->topic_cnt : 1, sizeof(*subs));
    if (!subs)
        abort();
    for (size_t i = 0; i < rq->topic_cnt; i++)
        subs[i] = rq->topics[i].topic;
    int rc = kr_consumer_subscribe(rq->c, subs, rq->topic_cnt, errstr, errsize);
    free(subs);
    return rc;
}

/* After requests finished: drops a topic whose last waiting request that
 * was. Errors are logged: the reply consumer keeps its old subscription. */
static void sync_if_needed(kr_requester_t *rq)
{
    char err[256];
    if (rq->resubscribe && sync_topics(rq, err, sizeof(err)) < 0)
        kr_warn("requester", "%s", err);
}

int kr_requester_set_patterns(kr_requester_t *rq, const char *const *patterns, size_t cnt,
                              char *errstr, size_t errsize)
{
    int changed = 0, added = 0;
    for (size_t i = 0; i < rq->topic_cnt; i++) {
        reply_topic_t *t = &rq->topics[i];
        int was = t->declared;
        t->declared = 0;
        for (size_t j = 0; j < cnt && !t->declared; j++)
            t->declared = !strcmp(t->pattern, patterns[j]);
        changed |= was && !t->declared && !t->waiting;
    }
    for (size_t i = 0; i < cnt; i++) {
        if (topic_by_pattern(rq, patterns[i]))
            continue;
        reply_topic_t *topics = realloc(rq->topics, (rq->topic_cnt + 1) * sizeof(*topics));
        if (!topics)
            abort();
        rq->topics = topics;
        reply_topic_t *t = &rq->topics[rq->topic_cnt++];
        memset(t, 0, sizeof(*t));
        t->pattern = strdup(patterns[i]);
        if (!t->pattern || asprintf(&t->topic, "%s.reply", patterns[i]) < 0)
            abort();
        t->partition = -1;
        t->declared = 1;
        added++;
    }
    if (!changed && !added)
        return 0;
    return sync_topics(rq, errstr, errsize) < 0 ? -1 : added;
}

int32_t kr_requester_partition(const kr_requester_t *rq, const char *pattern)
{
    for (size_t i = 0; i < rq->topic_cnt; i++)
        if (!strcmp(rq->topics[i].pattern, pattern))
            return rq->topics[i].partition;
    return -2;
}

void kr_requester_track(kr_requester_t *rq, const char *pattern, const char *correlation,
                        void *req_ctx, int64_t deadline_ms)
{
    rq->pending = kr_grow(rq->pending, &rq->pending_cap, rq->pending_cnt, sizeof(*rq->pending), 16);
    pending_t *p = &rq->pending[rq->pending_cnt++];
    memset(p, 0, sizeof(*p));
    p->correlation = strdup(correlation);
    p->pattern = strdup(pattern);
    if (!p->correlation || !p->pattern)
        abort();
    reply_topic_t *t = topic_by_pattern(rq, pattern);
    if (t)
        t->waiting++;
    p->req_ctx = req_ctx;
    p->deadline_ms = deadline_ms;
}

static void pending_remove(kr_requester_t *rq, size_t i)
{
    reply_topic_t *t = topic_by_pattern(rq, rq->pending[i].pattern);
    if (t && --t->waiting == 0 && !t->declared)
        rq->resubscribe = 1;
    free(rq->pending[i].correlation);
    free(rq->pending[i].pattern);
    free(rq->pending[i].partial);
    rq->pending[i] = rq->pending[--rq->pending_cnt];
}

void kr_requester_cancel(kr_requester_t *rq, void *req_ctx)
{
    for (size_t i = rq->pending_cnt; i-- > 0;)
        if (rq->pending[i].req_ctx == req_ctx)
            pending_remove(rq, i);
    sync_if_needed(rq);
}

/* One reply record: final (is-disposed or err) completes the request; a
 * value without either is a non-final stream value, kept as the answer
 * should the final record carry no value of its own. */
static void handle_reply(kr_requester_t *rq, rd_kafka_message_t *rkm, kr_reply_cb_t *cb,
                         void *ctx)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    char *corr = kr_nest_header(hdrs, KR_NEST_CORRELATION);
    if (!corr)
        return;
    size_t i;
    for (i = 0; i < rq->pending_cnt && strcmp(rq->pending[i].correlation, corr); i++)
        ;
    free(corr);
    if (i == rq->pending_cnt)
        return; /* another instance's, or one that expired */
    pending_t *p = &rq->pending[i];
    char *err = kr_nest_header(hdrs, KR_NEST_ERR);
    const void *disposed;
    size_t dsize;
    int final = err || rd_kafka_header_get_last(hdrs, KR_NEST_DISPOSED, &disposed, &dsize) ==
                           RD_KAFKA_RESP_ERR_NO_ERROR;
    if (!final) {
        free(p->partial);
        p->partial = rkm->payload ? malloc(rkm->len ? rkm->len : 1) : NULL;
        if (rkm->payload)
            memcpy(p->partial, rkm->payload, rkm->len);
        p->partial_len = rkm->len;
        p->has_partial = 1;
        return;
    }
    void *req_ctx = p->req_ctx;
    char *value = NULL;
    size_t len = 0;
    if (rkm->payload) {
        value = malloc(rkm->len ? rkm->len : 1);
        memcpy(value, rkm->payload, rkm->len);
        len = rkm->len;
    } else if (p->has_partial) {
        value = p->partial;
        len = p->partial_len;
        p->partial = NULL;
    }
    pending_remove(rq, i);
    cb(ctx, req_ctx, value, len, err);
    free(value);
    free(err);
}

size_t kr_requester_poll(kr_requester_t *rq, kr_reply_cb_t *cb, void *ctx)
{
    rd_kafka_message_t *rkms[256];
    size_t total = 0;
    ssize_t n;
    while ((n = kr_consumer_poll(rq->c, 0, rkms, 256)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (!rkms[i]->err)
                handle_reply(rq, rkms[i], cb, ctx);
            else if (rkms[i]->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                kr_warn("requester", "reply consumer: %s", rd_kafka_message_errstr(rkms[i]));
            rd_kafka_message_destroy(rkms[i]);
        }
        total += (size_t)n;
        if (n < 256)
            break;
    }
    sync_if_needed(rq);
    return total;
}

int kr_requester_expire(kr_requester_t *rq, int64_t now_ms, kr_reply_cb_t *cb, void *ctx)
{
    int64_t next = -1;
    for (size_t i = rq->pending_cnt; i-- > 0;) {
        pending_t *p = &rq->pending[i];
        if (p->deadline_ms <= now_ms) {
            void *req_ctx = p->req_ctx;
            pending_remove(rq, i);
            cb(ctx, req_ctx, NULL, 0, "timeout");
            /* the callback may have added requests: rescan from the end */
            i = rq->pending_cnt;
            continue;
        }
        if (next < 0 || p->deadline_ms - now_ms < next)
            next = p->deadline_ms - now_ms;
    }
    sync_if_needed(rq);
    return next < 0 ? -1 : (int)next;
}

kr_consumer_t *kr_requester_consumer(kr_requester_t *rq)
{
    return rq->c;
}

void kr_requester_free(kr_requester_t *rq)
{
    if (!rq)
        return;
    kr_consumer_close(rq->c);
    while (rq->pending_cnt)
        pending_remove(rq, rq->pending_cnt - 1);
    for (size_t i = 0; i < rq->topic_cnt; i++)
        topic_free(&rq->topics[i]);
    free(rq->topics);
    free(rq->pending);
    free(rq);
}
