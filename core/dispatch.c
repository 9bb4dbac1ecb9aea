/* dispatch.c - lanes, handler runs, outputs, retries, DLQ, offsets.
 * (see dispatch.h). Single-threaded: every function here runs on the
 * router's loop thread, including the delivery and rebalance callbacks,
 * which librdkafka only fires from our own poll calls. Lua runs in the
 * workers' VMs; a message's worker is chosen from its partition (or key,
 * with ordering: key) so the same lane always lands on the same VM. */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "json.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "nest.h"
#include "pool.h"
#include "record.h"
#include "vm.h"

#define LANE_BUCKETS 1024
#define LANE_PAUSE_AT 20000  /* queued messages before a partition is paused */
#define LANE_RESUME_AT 5000

typedef struct kr_lane kr_lane_t;

/* One consumed message, from fetch to offset store. */
typedef struct kr_inmsg {
    rd_kafka_message_t *rkm;
    kr_msg_t view;
    kr_lane_t *lane;                /* NULL once orphaned by a revoke */
    kr_group_t *group;
    kr_gen_t *gen;                  /* bound when its first route starts */
    const kr_route_t *const *routes; /* routes matching its topic */
    size_t route_cnt;
    size_t route_pos;               /* next route to run */
    int attempt;                    /* failed runs of routes[route_pos] */
    int pending;                    /* outputs without a delivery report */
    int handled;                    /* every route finished */
    char *delivery_error;           /* first failed output, if any */
    const kr_route_t *failed_route; /* route whose output failed */
    kr_run_t *run;                  /* the route run in progress */
    kr_vm_t *vm;                    /* ...and the VM it runs in */
    int worker;                     /* ...which belongs to this pool thread */
    int running;                    /* a pool thread has its run (job) */
    int dropped;                    /* ...and the run is to be dropped when it ends */
    int unflushed;                  /* its job waits in a batch not yet handed over */
    kr_job_t job;
    int zombie;                     /* an abandoned thread still runs its old run (and
                                     * reads its view): memory kept until released */
    int freed;                      /* ...and it was freed meanwhile */
    int waiting;                    /* run suspended in kroute.request */
    int parked;                     /* ...until its reply topic is assigned */
    int64_t request_deadline_ms;
    int64_t retry_at_ms;            /* > 0: waits for a retry of routes[route_pos] */
    uint32_t key_hash;              /* ordering: key blocks messages of equal hash */
    int is_request;                 /* a NestJS request (correlation + reply topic) */
    kr_nest_req_t nest;
    struct kr_inmsg *next;  /* lane order: every message not yet stored */
    struct kr_inmsg *tnext; /* todo order: messages not yet handled */
} kr_inmsg_t;

/* Per produced record: who it belongs to, whether it is a DLQ copy, and
 * where it went and how big it was (for the reason when it fails). */
typedef struct kr_out {
    kr_inmsg_t *m;
    const kr_route_t *route;
    int is_dlq;
    size_t size;  /* key + value bytes */
    char topic[]; /* one allocation with the record */
} kr_out_t;

struct kr_lane {
    kr_group_t *group;
    int pump_mark;           /* listed for a pump after a batch came back */
    char *topic;
    int32_t partition;
    kr_inmsg_t *head, *tail; /* every message not yet stored, offset order */
    kr_inmsg_t *todo, *todo_tail; /* the unhandled ones among them (tnext) */
    size_t queued;
    size_t retry_cnt;        /* todo messages waiting for a retry */
    kr_ordering_t ordering;  /* the strictest of its routes' */
    uint32_t *key_cnt;       /* ordering: key: unhandled messages per key slot */
    int paused;
    kr_lane_t *hnext;
};

typedef struct topic_routes {
    char *topic;
    const kr_route_t **routes; /* owned by the generation */
    size_t cnt;
    kr_ordering_t ordering;    /* the strictest of the routes' */
} topic_routes_t;

struct kr_group {
    kr_dispatch_t *d;
    char *name;
    kr_consumer_t *c;
    const kr_route_t **routes; /* of the live generation */
    size_t route_cnt;
    const char **subs;
    size_t sub_cnt;
    topic_routes_t *cache;     /* topic -> routes, for the live generation */
    size_t cache_cnt;
    kr_lane_t *buckets[LANE_BUCKETS];
};

struct kr_dispatch {
    kr_gen_t *gen; /* the live generation (one reference) */
    kr_metrics_t metrics;
    kr_pool_t *pool;
    size_t running;  /* messages with a job in the pool */
    kr_job_t **batch_head, **batch_tail; /* per pool thread: jobs not yet handed over */
    size_t *batch_len;
    int draining;
    kr_producer_t *p;
    kr_group_t **groups;
    size_t group_cnt;
    size_t inflight;
    size_t retrying;  /* messages waiting for a retry */
    int fatal;
    int rewind;       /* an output failed by the producer: kr_dispatch_rewind */
    size_t rewinds;   /* ...done so far */
    unsigned rr;      /* ordering: none round robin */
    kr_requester_t *rq;
    kr_inmsg_t **parked; /* requests waiting for their reply partition */
    size_t parked_cnt, parked_cap;
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static uint32_t hash_bytes(const void *p, size_t len, uint32_t h)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ s[i]) * 16777619u; /* FNV-1a */
    return h;
}

/* Points each route of gen at its stats (kept by name across reloads). */
static void bind_stats(kr_dispatch_t *d, kr_gen_t *gen)
{
    gen->stats = kr_gen_alloc(gen, gen->cfg->route_cnt * sizeof(*gen->stats));
    for (size_t i = 0; i < gen->cfg->route_cnt; i++)
        gen->stats[i] = kr_metrics_route(&d->metrics, gen->cfg->routes[i].name);
}

kr_dispatch_t *kr_dispatch_new(kr_gen_t *gen)
{
    kr_dispatch_t *d = xcalloc(1, sizeof(*d));
    d->gen = gen;
    bind_stats(d, gen);
    return d;
}

static kr_route_stats_t *stats(const kr_inmsg_t *m, const kr_route_t *route)
{
    return m->gen->stats[route->index];
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
        char line[96];
        int n = snprintf(line, sizeof(line), "kroute_lua_memory_bytes{worker=\"%d\"} %zu\n", w,
                         bytes);
        kr_buf_add(out, line, (size_t)n);
    }
    kr_metrics_family(out, "kroute_messages_inflight", "gauge",
                      "Messages consumed and not yet committable");
    char line[64];
    int n = snprintf(line, sizeof(line), "kroute_messages_inflight %zu\n", d->inflight);
    kr_buf_add(out, line, (size_t)n);
    kr_metrics_family(out, "kroute_rewinds_total", "counter",
                      "Times partitions went back to their first unfinished input because "
                      "the producer failed outputs (lost idempotence state, replaced producer)");
    n = snprintf(line, sizeof(line), "kroute_rewinds_total %zu\n", d->rewinds);
    kr_buf_add(out, line, (size_t)n);
}

kr_gen_t *kr_dispatch_gen(const kr_dispatch_t *d)
{
    return d->gen;
}

void kr_dispatch_set_producer(kr_dispatch_t *d, kr_producer_t *p)
{
    d->p = p;
}

static void cache_clear(kr_group_t *g)
{
    for (size_t i = 0; i < g->cache_cnt; i++)
        free(g->cache[i].topic);
    free(g->cache);
    g->cache = NULL;
    g->cache_cnt = 0;
}

/* Recomputes the group's routes and subscriptions from the live
 * generation. Returns 1 when the subscription set changed. */
static int group_refresh(kr_group_t *g)
{
    kr_dispatch_t *d = g->d;
    const char **old = g->subs;
    size_t old_cnt = g->sub_cnt;
    free(g->routes);
    cache_clear(g);
    g->subs = NULL;
    g->sub_cnt = g->route_cnt = 0;
    const kr_config_t *cfg = d->gen->cfg;
    g->routes = xcalloc(cfg->route_cnt, sizeof(*g->routes));
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        if (strcmp(r->group ? r->group : cfg->group, g->name) != 0)
            continue;
        g->routes[g->route_cnt++] = r;
        for (size_t j = 0; j < r->pattern_cnt; j++) {
            const char *sub = r->patterns[j].subscription;
            int dup = 0;
            for (size_t k = 0; k < g->sub_cnt; k++)
                dup |= !strcmp(g->subs[k], sub);
            if (dup)
                continue;
            g->subs = realloc(g->subs, (g->sub_cnt + 1) * sizeof(*g->subs));
            if (!g->subs)
                abort();
            g->subs[g->sub_cnt++] = sub;
        }
    }
    /* the old strings belong to the previous generation: compare first */
    int changed = old_cnt != g->sub_cnt;
    for (size_t i = 0; !changed && i < old_cnt; i++) {
        int found = 0;
        for (size_t j = 0; j < g->sub_cnt && !found; j++)
            found = !strcmp(old[i], g->subs[j]);
        changed = !found;
    }
    free(old);
    return changed;
}

kr_group_t *kr_dispatch_group(kr_dispatch_t *d, const char *group)
{
    for (size_t i = 0; i < d->group_cnt; i++)
        if (!strcmp(d->groups[i]->name, group))
            return d->groups[i];
    kr_group_t *g = xcalloc(1, sizeof(*g));
    g->d = d;
    g->name = strdup(group);
    group_refresh(g);
    d->groups = realloc(d->groups, (d->group_cnt + 1) * sizeof(*d->groups));
    if (!d->groups)
        abort();
    d->groups[d->group_cnt++] = g;
    return g;
}

size_t kr_dispatch_group_count(const kr_dispatch_t *d)
{
    return d->group_cnt;
}

kr_group_t *kr_dispatch_group_at(const kr_dispatch_t *d, size_t i)
{
    return d->groups[i];
}

kr_consumer_t *kr_group_consumer(const kr_group_t *g)
{
    return g->c;
}

size_t kr_group_route_count(const kr_group_t *g)
{
    return g->route_cnt;
}

int kr_dispatch_swap(kr_dispatch_t *d, kr_gen_t *gen, kr_group_t **changed, size_t *changed_cnt)
{
    kr_gen_t *old = d->gen;
    d->gen = gen;
    bind_stats(d, gen);
    *changed_cnt = 0;
    for (size_t i = 0; i < d->group_cnt; i++)
        if (group_refresh(d->groups[i]))
            changed[(*changed_cnt)++] = d->groups[i];
    kr_gen_unref(old);
    return 0;
}

void kr_group_set_consumer(kr_group_t *g, kr_consumer_t *c)
{
    g->c = c;
}

const char *const *kr_group_subscriptions(kr_group_t *g, size_t *cnt)
{
    *cnt = g->sub_cnt;
    return g->subs;
}

const char *kr_group_name(const kr_group_t *g)
{
    return g->name;
}

/* Routes of the group whose patterns match `topic`, computed once. */
static const topic_routes_t *routes_for(kr_group_t *g, const char *topic)
{
    for (size_t i = 0; i < g->cache_cnt; i++)
        if (!strcmp(g->cache[i].topic, topic))
            return &g->cache[i];
    g->cache = realloc(g->cache, (g->cache_cnt + 1) * sizeof(*g->cache));
    if (!g->cache)
        abort();
    topic_routes_t *tr = &g->cache[g->cache_cnt++];
    tr->topic = strdup(topic);
    /* messages keep pointing at this array after a reload: the
     * generation it was made for frees it */
    tr->routes = kr_gen_alloc(g->d->gen, g->route_cnt * sizeof(*tr->routes));
    tr->cnt = 0;
    /* a message runs all its routes in turn, so one route that keeps
     * partition order makes the whole partition keep it */
    tr->ordering = KR_ORDER_NONE;
    for (size_t i = 0; i < g->route_cnt; i++)
        for (size_t j = 0; j < g->routes[i]->pattern_cnt; j++)
            if (kr_pattern_match(&g->routes[i]->patterns[j], topic)) {
                tr->routes[tr->cnt++] = g->routes[i];
                if (g->routes[i]->ordering < tr->ordering)
                    tr->ordering = g->routes[i]->ordering;
                break;
            }
    return tr;
}

/* ---------- lanes ---------- */

static kr_lane_t **lane_slot(kr_group_t *g, const char *topic, int32_t partition)
{
    uint32_t h = hash_bytes(topic, strlen(topic), 2166136261u) ^ ((uint32_t)partition * 2654435761u);
    kr_lane_t **slot = &g->buckets[h % LANE_BUCKETS];
    while (*slot && ((*slot)->partition != partition || strcmp((*slot)->topic, topic)))
        slot = &(*slot)->hnext;
    return slot;
}

static kr_lane_t *lane_get(kr_group_t *g, const topic_routes_t *tr, int32_t partition)
{
    kr_lane_t **slot = lane_slot(g, tr->topic, partition);
    if (!*slot) {
        kr_lane_t *lane = xcalloc(1, sizeof(*lane));
        lane->group = g;
        lane->topic = strdup(tr->topic);
        lane->partition = partition;
        *slot = lane;
    }
    return *slot;
}

static void unpark(kr_dispatch_t *d, kr_inmsg_t *m)
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
static void run_drop(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (!m->run)
        return;
    if (m->running) { /* its thread is in the VM: drop it when it is back */
        m->dropped = 1;
        return;
    }
    unpark(d, m);
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

static void inmsg_free(kr_dispatch_t *d, kr_inmsg_t *m)
{
    run_drop(d, m);
    if (m->zombie) { /* an abandoned run still reads m->view: see KR_JOB_RELEASED */
        if (!m->freed)
            d->inflight--;
        m->freed = 1;
        return;
    }
    if (m->freed)
        d->inflight++; /* counted down already */
    kr_nest_req_free(&m->nest);
    rd_kafka_message_destroy(m->rkm);
    kr_gen_unref(m->gen);
    free(m->delivery_error);
    free(m);
    d->inflight--;
}

/* Schedules (at > 0) or clears (at == 0) a retry of m. */
static void set_retry(kr_dispatch_t *d, kr_inmsg_t *m, int64_t at)
{
    int delta = (at != 0) - (m->retry_at_ms != 0);
    d->retrying += (size_t)(ssize_t)delta;
    if (m->lane)
        m->lane->retry_cnt += (size_t)(ssize_t)delta;
    m->retry_at_ms = at;
}

/* Stores the offset after the longest run of finished messages at the
 * head of the lane: never past a message that is not done. */
static void lane_advance(kr_dispatch_t *d, kr_lane_t *lane)
{
    /* after a fatal error nothing more is stored: a DLQ copy refused
     * synchronously would otherwise let its input's offset through */
    if (d->fatal)
        return;
    int64_t next = -1;
    while (lane->head && lane->head->handled && lane->head->pending == 0) {
        kr_inmsg_t *m = lane->head;
        next = m->rkm->offset + 1;
        lane->head = m->next;
        if (!lane->head)
            lane->tail = NULL;
        lane->queued--;
        inmsg_free(d, m);
    }
    if (next >= 0 && lane->group->c)
        kr_consumer_store(lane->group->c, lane->topic, lane->partition, next);
    if (lane->paused && lane->queued <= LANE_RESUME_AT && lane->group->c) {
        kr_consumer_pause(lane->group->c, lane->topic, lane->partition, 0);
        lane->paused = 0;
        kr_info("dispatch", "group=%s topic=%s partition=%d resumed (%zu queued)",
                lane->group->name, lane->topic, (int)lane->partition, lane->queued);
    }
}

static void dead_letter(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                        const char *reason, const char *trace);

/* Called when m may be done: handled, and no output report outstanding.
 * An output lost for good sends the input to the DLQ instead (so the
 * offset can advance without losing the event); then the lane advances. */
static void inmsg_settle(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (m->pending > 0 || !m->handled || d->fatal)
        return;
    if (m->delivery_error) {
        char *reason = m->delivery_error;
        m->delivery_error = NULL;
        m->pending++;
        dead_letter(d, m, m->failed_route, reason, "");
        m->pending--;
        free(reason);
        if (m->pending > 0)
            return; /* settles again on the DLQ copy's report */
    }
    lane_advance(d, m->lane);
}

/* ---------- producing ---------- */

static void produce_one(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route, int is_dlq,
                        const char *topic, int32_t partition, const void *key, size_t key_len,
                        const void *value, size_t value_len, rd_kafka_headers_t *hdrs)
{
    size_t topic_len = strlen(topic);
    kr_out_t *out = xcalloc(1, sizeof(*out) + topic_len + 1);
    out->m = m;
    out->route = route;
    out->is_dlq = is_dlq;
    out->size = key_len + value_len;
    memcpy(out->topic, topic, topic_len + 1);
    if (!is_dlq)
        stats(m, route)->out++;
    m->pending++;
    rd_kafka_resp_err_t err = kr_producer_send(d->p, topic, partition, key, key_len, value,
                                               value_len, hdrs, out);
    if (err) /* refused before queueing: same path as a failed delivery */
        kr_dispatch_delivered(d, out, err);
}

static void add_header_text(rd_kafka_headers_t *h, const char *name, const char *value)
{
    rd_kafka_header_add(h, name, -1, value, -1);
}

/* The DLQ copy's headers: the input's, then the kafka_dlt-* ones (the
 * exception message and stack trace cut to the lengths given). */
static rd_kafka_headers_t *dlq_headers(const kr_inmsg_t *m, const kr_route_t *route,
                                       const char *reason, size_t reason_len,
                                       const char *trace, size_t trace_len)
{
    const kr_msg_t *msg = &m->view;
    rd_kafka_headers_t *h = msg->headers ? rd_kafka_headers_copy(msg->headers)
                                         : rd_kafka_headers_new(8);
    char num[32];
    add_header_text(h, "kafka_dlt-original-topic", msg->topic);
    snprintf(num, sizeof(num), "%d", (int)msg->partition);
    add_header_text(h, "kafka_dlt-original-partition", num);
    snprintf(num, sizeof(num), "%lld", (long long)msg->offset);
    add_header_text(h, "kafka_dlt-original-offset", num);
    snprintf(num, sizeof(num), "%lld", (long long)msg->timestamp);
    add_header_text(h, "kafka_dlt-original-timestamp", num);
    add_header_text(h, "kafka_dlt-original-consumer-group", m->group->name);
    rd_kafka_header_add(h, "kafka_dlt-exception-message", -1, reason, (ssize_t)reason_len);
    rd_kafka_header_add(h, "kafka_dlt-exception-stacktrace", -1, trace, (ssize_t)trace_len);
    add_header_text(h, "kroute_route", route->name);
    return h;
}

/* What a DLQ copy too large for the producer gives up, in this order:
 * the value, then the stack trace and the exception message (down to
 * DLQ_KEEP bytes each, then to nothing). The key and the input's own
 * headers are kept: without them the copy says little. */
#define DLQ_KEEP 4096
#define DLQ_TRUNC_ROOM 512 /* for the kroute_dlt-* headers saying what was cut */

typedef struct dlq_cut {
    const char *name;
    size_t orig, len;
} dlq_cut_t;

/* Shrinks cuts[] (value, stacktrace, message) by `excess` bytes. */
static void dlq_shrink(dlq_cut_t *cuts, size_t cnt, size_t excess)
{
    for (size_t keep = DLQ_KEEP;; keep = 0) {
        for (size_t i = 0; i < cnt && excess; i++) {
            size_t floor = i == 0 ? 0 : keep; /* the value goes first, all of it */
            if (cuts[i].len <= floor)
                continue;
            size_t c = cuts[i].len - floor < excess ? cuts[i].len - floor : excess;
            cuts[i].len -= c;
            excess -= c;
        }
        if (!excess || !keep)
            return;
    }
}

/* Dead-letters the input of `m` for `route` with the reason and trace. A
 * copy larger than the producer accepts is truncated to fit, and says so
 * in kroute_dlt-truncated (what was cut) and kroute_dlt-original-*-size. */
static void dead_letter(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                        const char *reason, const char *trace)
{
    const kr_msg_t *msg = &m->view;
    stats(m, route)->dead++;
    if (route->dlq_off) {
        kr_warn("dispatch", "route=%s topic=%s partition=%d offset=%lld: skipped after "
                            "failure (dlq: false): %s",
                route->name, msg->topic, (int)msg->partition, (long long)msg->offset, reason);
        return;
    }
    char dlq_buf[512];
    const char *dlq = route->dlq;
    if (!dlq) {
        snprintf(dlq_buf, sizeof(dlq_buf), "%s.dlq", msg->topic);
        dlq = dlq_buf;
    }
    if (!trace)
        trace = "";
    dlq_cut_t cuts[] = {{"value", msg->value_len, msg->value_len},
                        {"stacktrace", strlen(trace), strlen(trace)},
                        {"message", strlen(reason), strlen(reason)}};
    rd_kafka_headers_t *h = dlq_headers(m, route, reason, cuts[2].len, trace, cuts[1].len);
    size_t size = kr_producer_record_size(msg->key_len, msg->value_len, h);
    size_t limit = kr_producer_max_message(d->p);
    if (size > limit) {
        size_t target = limit > DLQ_TRUNC_ROOM ? limit - DLQ_TRUNC_ROOM : 0;
        dlq_shrink(cuts, sizeof(cuts) / sizeof(cuts[0]), size - target);
        rd_kafka_headers_destroy(h);
        h = dlq_headers(m, route, reason, cuts[2].len, trace, cuts[1].len);
        char what[64] = "", name[64], num[32];
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
            if (cuts[i].len == cuts[i].orig)
                continue;
            snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s%s",
                     what[0] ? "," : "", cuts[i].name);
            snprintf(name, sizeof(name), "kroute_dlt-original-%s-size", cuts[i].name);
            snprintf(num, sizeof(num), "%zu", cuts[i].orig);
            add_header_text(h, name, num);
        }
        add_header_text(h, "kroute_dlt-truncated", what);
        kr_warn("dispatch", "route=%s topic=%s partition=%d offset=%lld: DLQ copy of %zu "
                            "bytes exceeds message.max.bytes (%zu): truncated (%s)",
                route->name, msg->topic, (int)msg->partition, (long long)msg->offset, size,
                limit, what);
    }
    kr_warn("dispatch", "route=%s topic=%s partition=%d offset=%lld: sent to DLQ %s: %.*s",
            route->name, msg->topic, (int)msg->partition, (long long)msg->offset, dlq,
            (int)(cuts[2].len < 2048 ? cuts[2].len : 2048), reason);
    produce_one(d, m, route, 1, dlq, RD_KAFKA_PARTITION_UA, msg->key, msg->key_len, msg->value,
                cuts[0].len, h);
}

static void produce_outputs(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                            kr_run_t *run)
{
    const kr_msg_t *msg = &m->view;
    for (size_t i = 0; i < run->cnt; i++) {
        kr_resolved_t out;
        if (kr_record_resolve(&run->recs[i], msg, route->to, &out) < 0)
            continue; /* cannot happen: kr_run_missing_topic() checked it */
        kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> %s",
                 route->name, msg->topic, (int)msg->partition, (long long)msg->offset,
                 out.topic);
        produce_one(d, m, route, 0, out.topic, out.partition, out.key, out.key_len, out.value,
                    out.value_len, out.headers);
    }
}

static kr_vm_t *vm_for(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route)
{
    uint32_t h;
    if (route->ordering == KR_ORDER_KEY && m->view.key)
        h = hash_bytes(m->view.key, m->view.key_len, 2166136261u);
    else if (route->ordering == KR_ORDER_NONE)
        h = d->rr++;
    else
        h = hash_bytes(m->view.topic, strlen(m->view.topic), (uint32_t)m->view.partition);
    m->worker = (int)(h % (uint32_t)m->gen->worker_cnt);
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

static void produce_nest_reply(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                               const kr_record_t *rec, const char *err)
{
    rd_kafka_headers_t *h = kr_nest_reply_headers(&m->nest, err);
    const void *value = NULL;
    size_t len = 0;
    if (rec && !rec->value_null) {
        value = rec->value.data ? rec->value.data : "";
        len = rec->value.len;
    }
    kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> reply %s[%d]%s%s",
             route->name, m->view.topic, (int)m->view.partition, (long long)m->view.offset,
             m->nest.reply_topic, (int)m->nest.reply_partition, err ? " error: " : "",
             err ? err : "");
    produce_one(d, m, route, 0, m->nest.reply_topic, m->nest.reply_partition, NULL, 0, value,
                len, h);
}

/* The outputs of a successful run. In a reply route the first returned
 * value of a request is the reply (to the caller's reply partition); the
 * returned values of an event there go to `to`, or nowhere without one. */
static void produce_run(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                        kr_run_t *run)
{
    if (!route->reply_nest) {
        produce_outputs(d, m, route, run);
        return;
    }
    const kr_record_t *reply = NULL;
    size_t keep = 0;
    for (size_t i = 0; i < run->cnt; i++) {
        kr_record_t *rec = &run->recs[i];
        if (rec->returned && (m->is_request || !route->to)) {
            if (m->is_request && !reply)
                reply = rec;
            continue;
        }
        run->recs[keep++] = *rec; /* emits (and event outputs with `to`) */
        if (keep - 1 != i)
            memset(rec, 0, sizeof(*rec));
    }
    if (m->is_request) {
        /* nothing returned: a null reply still tells the caller it is done */
        produce_nest_reply(d, m, route, reply, NULL);
    }
    size_t total = run->cnt;
    run->cnt = keep;
    produce_outputs(d, m, route, run);
    for (size_t i = keep; i < total; i++)
        kr_record_free(&run->recs[i]);
}

static void on_reply(void *ctx, void *req_ctx, const void *value, size_t len, const char *err);

/* Sends the request a suspended run asked for. Returns NULL when it was
 * sent or parked (the run now waits), or the error to resume it with. */
static const char *start_request(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route)
{
    kr_record_t *req = m->run->request;
    if (!d->rq)
        return "kroute.request: no route declares `requests:`, so no reply topic is consumed";
    int32_t reply_partition = kr_requester_partition(d->rq, req->topic);
    if (reply_partition == -2)
        return "kroute.request: the pattern is not listed in the route's `requests:`";
    if (!m->parked)
        m->request_deadline_ms = kr_clock_ms() + m->run->request_timeout_ms;
    if (reply_partition < 0) { /* reply topic not assigned yet: send when it is */
        if (!m->parked) {
            if (d->parked_cnt == d->parked_cap) {
                d->parked_cap = d->parked_cap ? d->parked_cap * 2 : 16;
                d->parked = realloc(d->parked, d->parked_cap * sizeof(*d->parked));
                if (!d->parked)
                    abort();
            }
            d->parked[d->parked_cnt++] = m;
            m->parked = 1;
        }
        return NULL;
    }
    unpark(d, m);
    char corr[37], part[16], reply_topic[512];
    kr_nest_correlation_id(corr);
    snprintf(part, sizeof(part), "%d", (int)reply_partition);
    snprintf(reply_topic, sizeof(reply_topic), "%s.reply", req->topic);
    rd_kafka_headers_t *h = req->headers ? req->headers : rd_kafka_headers_new(3);
    req->headers = NULL;
    rd_kafka_header_add(h, KR_NEST_CORRELATION, -1, corr, -1);
    rd_kafka_header_add(h, KR_NEST_REPLY_TOPIC, -1, reply_topic, -1);
    rd_kafka_header_add(h, KR_NEST_REPLY_PARTITION, -1, part, -1);
    kr_requester_track(d->rq, corr, m, m->request_deadline_ms);
    kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> request %s (%s)",
             route->name, m->view.topic, (int)m->view.partition, (long long)m->view.offset,
             req->topic, corr);
    produce_one(d, m, route, 0, req->topic, req->partition,
                req->key_mode == KR_KEY_SET ? (req->key.data ? req->key.data : "") : NULL,
                req->key.len, req->value_null ? NULL : (req->value.data ? req->value.data : ""),
                req->value_null ? 0 : req->value.len, h);
    return NULL;
}

static void run_free(kr_inmsg_t *m)
{
    kr_run_clear(m->run);
    free(m->run);
    m->run = NULL;
}

/* The route is done with m without a result: the caller of a NestJS
 * request gets the error, shaped as a NestJS server sends an RpcException
 * ({"status":"error","message":...}; a missing handler is NestJS's plain
 * text error); any other message goes to the DLQ. */
static void give_up(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                    const char *reason, const char *trace, int no_handler)
{
    if (route->reply_nest && m->is_request) {
        kr_buf_t err = {0};
        if (no_handler) {
            kr_buf_add(&err, KR_NEST_NO_HANDLER, strlen(KR_NEST_NO_HANDLER));
        } else {
            static const char head[] = "{\"status\":\"error\",\"message\":";
            kr_buf_add(&err, head, sizeof(head) - 1);
            kr_json_add_string(&err, reason, strlen(reason));
            kr_buf_addc(&err, '}');
        }
        kr_buf_addc(&err, '\0');
        produce_nest_reply(d, m, route, NULL, err.data);
        kr_buf_free(&err);
    } else
        dead_letter(d, m, route, reason, trace);
    m->route_pos++;
    m->attempt = 0;
}

/* Hands m's run to its VM's pool thread: a fresh run, or the resumption
 * of one that waited in kroute.request (value/err copied). The outcome
 * comes back through kr_dispatch_poll_jobs. */
#define BATCH_MAX 64 /* jobs per hand-over: amortises it, bounds the wait for outputs */

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
        const char *err = start_request(d, m, route);
        if (!err)
            m->waiting = 1;
        else /* the request could not be sent: the handler gets nil, err */
            submit(d, m, KR_JOB_RESUME, NULL, 0, err);
        return 1;
    }
    /* every output needs a topic before any is produced: an incomplete
     * run fails as a whole (and is retried) rather than half-sent */
    const char *bad = NULL;
    if (rc == KR_VM_OK && !route->reply_nest)
        bad = kr_run_missing_topic(run, route->to);
    if (rc == KR_VM_OK && !bad) {
        if (!run->cnt && !(route->reply_nest && m->is_request))
            stats(m, route)->filtered++;
        produce_run(d, m, route, run);
        run_free(m);
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
        set_retry(d, m, kr_clock_ms() + delay);
        stats(m, route)->retries++;
        run_free(m);
        return 1;
    }
    kr_error("dispatch",
             "route=%s topic=%s partition=%d offset=%lld: failed after %d attempt(s): %s\n%s",
             route->name, msg->topic, (int)msg->partition, (long long)msg->offset, m->attempt,
             reason, run->trace ? run->trace : "");
    give_up(d, m, route, reason, run->trace, run->no_handler);
    run_free(m);
    return 0;
}

/* Runs the remaining routes of `m`. Returns 0 when m is handled, or 1
 * when it waits (for a retry or a reply). */
static int run_routes(kr_dispatch_t *d, kr_inmsg_t *m)
{
    if (!m->gen) {
        /* the generation live now serves this message to the end: a reload
         * swaps generations between messages, never inside one */
        const topic_routes_t *tr = routes_for(m->group, m->view.topic);
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
            give_up(d, m, route, reason, "", 0);
            continue;
        }
        m->run = calloc(1, sizeof(*m->run));
        if (!m->run)
            abort();
        m->run->msg = &m->view;
        m->vm = vm_for(d, m, route);
        submit(d, m, KR_JOB_RUN, NULL, 0, NULL);
        return 1;
    }
    return 0;
}

static void lane_pump(kr_dispatch_t *d, kr_lane_t *lane);

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
    give_up(d, m, route, reason, "", 0);
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
    unpark(d, m);
    if (kr_vm_retired(m->vm)) {
        /* its VM was replaced while it waited: the route runs again, from
         * the start, in the new one */
        kr_warn("dispatch", "topic=%s partition=%d offset=%lld: its handler's worker was "
                            "replaced while it waited for a reply; running it again",
                m->view.topic, (int)m->view.partition, (long long)m->view.offset);
        run_free(m);
        lane_pump(d, m->lane);
        return;
    }
    submit(d, m, KR_JOB_RESUME, value, len, err);
}

#define KEY_BITS 4096 /* key slots: a collision only makes an unrelated
                        key wait, never breaks order */

/* Sets the lane's ordering; for `key`, counts its unhandled messages per
 * key slot (kept up to date as messages come and are handled). */
static void lane_set_ordering(kr_lane_t *lane, kr_ordering_t ordering)
{
    lane->ordering = ordering;
    if (ordering != KR_ORDER_KEY)
        return;
    if (!lane->key_cnt)
        lane->key_cnt = xcalloc(KEY_BITS, sizeof(*lane->key_cnt));
    else
        memset(lane->key_cnt, 0, KEY_BITS * sizeof(*lane->key_cnt));
    for (kr_inmsg_t *m = lane->todo; m; m = m->tnext)
        lane->key_cnt[m->key_hash % KEY_BITS]++;
}

/* m is handled: out of the todo list (prev is the one before it). */
static void todo_remove(kr_lane_t *lane, kr_inmsg_t *prev, kr_inmsg_t *m)
{
    m->handled = 1;
    if (prev)
        prev->tnext = m->tnext;
    else
        lane->todo = m->tnext;
    if (lane->todo_tail == m)
        lane->todo_tail = prev;
    m->tnext = NULL;
    if (lane->key_cnt && lane->ordering == KR_ORDER_KEY)
        lane->key_cnt[m->key_hash % KEY_BITS]--;
}

/* Handles the lane's unhandled messages in offset order. One that waits
 * (for a retry or a reply) holds back what must stay behind it: the rest
 * of the partition (ordering: partition), later messages of its key
 * (ordering: key), or nothing (ordering: none). */
static void lane_pump(kr_dispatch_t *d, kr_lane_t *lane)
{
    uint64_t blocked[KEY_BITS / 64];
    int any_blocked = 0;
    if (d->draining)
        return;
    kr_inmsg_t *prev = NULL, *m = lane->todo;
    while (m && !d->fatal) {
        kr_inmsg_t *next = m->tnext;
        uint32_t bit = m->key_hash % KEY_BITS;
        int held = any_blocked && (blocked[bit / 64] >> (bit % 64) & 1);
        if (!held && !m->waiting && !m->retry_at_ms && !m->running) {
            m->pending++; /* hold: delivery reports served while producing must
                             not finish m before all its outputs are queued */
            int waiting = run_routes(d, m);
            if (!waiting)
                todo_remove(lane, prev, m);
            m->pending--;
            if (!waiting) {
                /* an output refused synchronously: DLQ it now (this frees
                 * only handled messages, never prev or next) */
                if (m->delivery_error)
                    inmsg_settle(d, m);
                m = next;
                continue;
            }
        }
        /* in a batch not yet handed over: what follows it (in the
         * partition, or of its key) may join that batch, which runs in
         * order and stops at a failure */
        if (m->running && m->unflushed) {
            prev = m;
            m = next;
            continue;
        }
        /* m stays unhandled: it holds back what must keep its order */
        if (lane->ordering == KR_ORDER_PARTITION)
            break;
        if (lane->ordering == KR_ORDER_KEY) {
            if (!any_blocked)
                memset(blocked, 0, sizeof(blocked));
            any_blocked = 1;
            blocked[bit / 64] |= (uint64_t)1 << (bit % 64);
        }
        prev = m;
        m = next;
    }
    lane_advance(d, lane);
}

void kr_dispatch_message(kr_group_t *g, rd_kafka_message_t *rkm)
{
    kr_dispatch_t *d = g->d;
    if (rkm->err) {
        if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            kr_warn("consumer", "group=%s topic=%s: %s", g->name,
                    rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-",
                    rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        return;
    }
    kr_inmsg_t *m = xcalloc(1, sizeof(*m));
    m->rkm = rkm;
    m->group = g;
    kr_msg_from_rkm(&m->view, rkm);
    m->is_request = kr_nest_parse_request(m->view.headers, &m->nest);
    const topic_routes_t *tr = routes_for(g, m->view.topic);
    m->key_hash = m->view.key ? hash_bytes(m->view.key, m->view.key_len, 2166136261u)
                              : 0x9e3779b9u; /* null keys keep their order together */
    kr_lane_t *lane = lane_get(g, tr, rkm->partition);
    if (lane->ordering != tr->ordering || (tr->ordering == KR_ORDER_KEY && !lane->key_cnt))
        lane_set_ordering(lane, tr->ordering);
    m->lane = lane;
    kr_inmsg_t *before = lane->todo_tail;
    if (lane->tail)
        lane->tail->next = m;
    else
        lane->head = m;
    lane->tail = m;
    if (lane->todo_tail)
        lane->todo_tail->tnext = m;
    else
        lane->todo = m;
    lane->todo_tail = m;
    lane->queued++;
    d->inflight++;
    if (!lane->paused && lane->queued >= LANE_PAUSE_AT && g->c) {
        /* fetching stops for this partition only; polling goes on, so the
         * group never sees kroute as stuck (max.poll.interval.ms) */
        kr_consumer_pause(g->c, lane->topic, lane->partition, 1);
        lane->paused = 1;
        kr_info("dispatch", "group=%s topic=%s partition=%d paused: %zu messages queued",
                g->name, lane->topic, (int)lane->partition, lane->queued);
    }
    if (lane->ordering == KR_ORDER_PARTITION) {
        lane_pump(d, lane);
        return;
    }
    /* key and none: only the new message can have become runnable, so
     * do not rescan the lane (it may hold thousands): run m if nothing
     * of its key is ahead of it, else it waits for that to finish */
    if (lane->ordering == KR_ORDER_KEY && lane->key_cnt[m->key_hash % KEY_BITS]++)
        return;
    m->pending++;
    int waiting = run_routes(d, m);
    if (!waiting)
        todo_remove(lane, before, m);
    m->pending--;
    if (!waiting && m->delivery_error)
        inmsg_settle(d, m);
    lane_advance(d, lane);
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
}

size_t kr_dispatch_poll_jobs(kr_dispatch_t *d)
{
    size_t n = 0;
    kr_lane_t **lanes = NULL; /* to pump once each, after the whole batch */
    size_t lane_cnt = 0, lane_cap = 0;
    for (kr_job_t *job = kr_pool_finished(d->pool), *next; job; job = next, n++) {
        next = job->next;
        kr_inmsg_t *m = job->ctx;
        if (job->rc == KR_JOB_RELEASED) { /* its abandoned run ended at last */
            free(job);
            m->zombie = 0;
            kr_gen_unref(m->gen); /* the abandoned thread's reference */
            if (m->freed)
                inmsg_free(d, m);
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
            run_drop(d, m);
            if (!m->lane && m->pending == 0)
                inmsg_free(d, m);
            continue;
        }
        const kr_route_t *route = m->routes[m->route_pos];
        if (job->rc == KR_JOB_WEDGED) {
            /* handled above */
        } else if (job->rc == KR_JOB_SKIPPED) {
            run_free(m); /* never started: it runs again in a later batch */
        } else {
            if (job->kind == KR_JOB_RUN && !m->attempt)
                stats(m, route)->in++;
            kr_metrics_observe(stats(m, route), job->seconds);
            m->pending++; /* hold while its outputs are queued (see lane_pump) */
            finish_run(d, m, route, job->rc);
            m->pending--;
        }
        if (!m->lane->pump_mark) {
            if (lane_cnt == lane_cap) {
                lane_cap = lane_cap ? lane_cap * 2 : 16;
                lanes = realloc(lanes, lane_cap * sizeof(*lanes));
                if (!lanes)
                    abort();
            }
            m->lane->pump_mark = 1;
            lanes[lane_cnt++] = m->lane;
        }
    }
    /* each message's next route, or what waited behind it */
    for (size_t i = 0; i < lane_cnt; i++) {
        lanes[i]->pump_mark = 0;
        lane_pump(d, lanes[i]);
    }
    free(lanes);
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
                lane_pump(d, m->lane);
        } else if (next < 0 || m->request_deadline_ms - now < next) {
            next = m->request_deadline_ms - now;
        }
    }
    return next;
}

int kr_dispatch_tick(kr_dispatch_t *d)
{
    int64_t now = kr_clock_ms(), next = -1;
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
                        set_retry(d, m, 0);
                        due = 1;
                    }
                if (due)
                    lane_pump(d, lane);
                for (kr_inmsg_t *m = lane->todo; m && lane->retry_cnt; m = m->tnext)
                    if (m->retry_at_ms && (next < 0 || m->retry_at_ms - now < next))
                        next = m->retry_at_ms - now;
            }
    return next < 0 ? -1 : (int)(next > 0 ? next : 0);
}

/* ---------- delivery reports ---------- */

void kr_dispatch_delivered(void *ctx, void *msg_opaque, rd_kafka_resp_err_t err)
{
    kr_dispatch_t *d = ctx;
    kr_out_t *out = msg_opaque;
    kr_inmsg_t *m = out->m;
    if (err && (kr_producer_err_own(err) || kr_producer_fatal(d->p, NULL, 0))) {
        /* the producer failed, not the record (its idempotence state was
         * lost in a leader change, or it was purged): nothing of this lane
         * is stored past m, and kr_dispatch_rewind has its inputs handled
         * again, in order, rather than dead-lettering a good event */
        if (!d->rewind && !d->draining)
            kr_warn("dispatch", "route=%s topic=%s partition=%d offset=%lld: output to %s "
                                "failed in the producer (%s): handling the partitions' "
                                "unfinished inputs again",
                    out->route->name, m->view.topic, (int)m->view.partition,
                    (long long)m->view.offset, out->topic, rd_kafka_err2str(err));
        d->rewind = 1;
        free(out);
        m->pending--;
        if (!m->lane && m->pending == 0 && !m->running)
            inmsg_free(d, m);
        return;
    } else if (err && out->is_dlq && kr_producer_err_per_message(err)) {
        /* this copy can never be delivered (it was already truncated to
         * the producer's limit; a broker may allow less): stopping would
         * only fail the same way after every restart and hold the
         * partition forever, so it is logged in full, counted, and the
         * partition moves on */
        kr_error("dispatch",
                 "route=%s topic=%s partition=%d offset=%lld: DLQ copy to %s (%zu bytes) "
                 "refused: %s; the message is skipped (kroute_dlq_failures_total)",
                 out->route->name, m->view.topic, (int)m->view.partition,
                 (long long)m->view.offset, out->topic, out->size, rd_kafka_err2str(err));
        stats(m, out->route)->dlq_failed++;
    } else if (err && out->is_dlq) {
        /* nowhere left to put it (the DLQ topic is missing or not
         * writable): keep its offset uncommitted and stop */
        kr_error("dispatch",
                 "route=%s topic=%s partition=%d offset=%lld: DLQ delivery to %s failed: %s; "
                 "stopping so the message is redelivered after restart",
                 out->route->name, m->view.topic, (int)m->view.partition,
                 (long long)m->view.offset, out->topic, rd_kafka_err2str(err));
        d->fatal = 1;
    } else if (err && !m->delivery_error) {
        /* the input, not kroute, has failed: it goes to the DLQ once its
         * other outputs are settled (inmsg_settle) */
        char limit[64] = "";
        if (kr_producer_err_per_message(err))
            snprintf(limit, sizeof(limit), " (producer message.max.bytes: %zu)",
                     kr_producer_max_message(d->p));
        if (asprintf(&m->delivery_error, "output delivery failed: record of %zu bytes to %s: %s%s",
                     out->size, out->topic, rd_kafka_err2str(err), limit) < 0)
            abort();
        kr_error("dispatch", "route=%s topic=%s partition=%d offset=%lld: %s", out->route->name,
                 m->view.topic, (int)m->view.partition, (long long)m->view.offset,
                 m->delivery_error);
        m->failed_route = out->route;
    }
    free(out);
    m->pending--;
    if (!m->lane) { /* orphaned by a revoke: nothing to store */
        if (m->pending == 0 && !m->running)
            inmsg_free(d, m);
        return;
    }
    inmsg_settle(d, m);
}

/* ---------- rebalance ---------- */

void kr_dispatch_assigned(void *ctx, const rd_kafka_topic_partition_list_t *parts)
{
    (void)ctx;
    (void)parts; /* lanes are created by the first message */
}

/* Detaches the lane's messages: none of them is stored (so the unfinished
 * are redelivered to the next owner); a run waiting for a reply is
 * dropped; messages with outputs still in flight become orphans, freed by
 * their last delivery report. */
static void lane_drop(kr_dispatch_t *d, kr_lane_t *lane)
{
    kr_inmsg_t *m = lane->head;
    while (m) {
        kr_inmsg_t *next = m->next;
        set_retry(d, m, 0);
        m->lane = NULL;
        m->next = NULL;
        run_drop(d, m);
        if (m->pending == 0 && !m->running) /* else freed when its job is back */
            inmsg_free(d, m);
        m = next;
    }
    free(lane->key_cnt);
    free(lane->topic);
    free(lane);
}

static int lanes_pending(kr_group_t *g, const rd_kafka_topic_partition_list_t *parts)
{
    int pending = 0;
    for (int i = 0; i < parts->cnt; i++) {
        kr_lane_t *lane = *lane_slot(g, parts->elems[i].topic, parts->elems[i].partition);
        for (kr_inmsg_t *m = lane ? lane->head : NULL; m; m = m->next)
            if (m->handled && m->pending)
                pending++;
    }
    return pending;
}

void kr_dispatch_revoked(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost)
{
    kr_group_t *g = ctx;
    kr_dispatch_t *d = g->d;
    if (!lost && d->p) {
        /* let the outputs of handled messages land so their offsets can be
         * committed before another member takes the partitions over */
        int64_t until = kr_clock_ms() + 10000;
        while (lanes_pending(g, parts) && kr_clock_ms() < until && !d->fatal)
            kr_producer_poll(d->p, 20);
        if (g->c)
            kr_consumer_commit(g->c);
    }
    for (int i = 0; i < parts->cnt; i++) {
        kr_lane_t **slot = lane_slot(g, parts->elems[i].topic, parts->elems[i].partition);
        kr_lane_t *lane = *slot;
        if (!lane)
            continue;
        *slot = lane->hnext;
        lane_drop(d, lane);
    }
}

int kr_dispatch_rewind_wanted(const kr_dispatch_t *d)
{
    return d->rewind && !d->draining && !d->fatal;
}

/* Every lane with messages not yet stored goes back to its first one: the
 * lane is dropped (as on a revoke, but the partition stays ours) and its
 * consumer seeks there, so those inputs are fetched and handled again in
 * offset order. Their outputs that did land are produced twice
 * (at-least-once); none is skipped, and a key's outputs keep their order. */
void kr_dispatch_rewind(kr_dispatch_t *d)
{
    size_t lanes = 0;
    for (size_t gi = 0; gi < d->group_cnt; gi++) {
        kr_group_t *g = d->groups[gi];
        rd_kafka_topic_partition_list_t *to = rd_kafka_topic_partition_list_new(8);
        for (size_t b = 0; b < LANE_BUCKETS; b++) {
            kr_lane_t **slot = &g->buckets[b];
            while (*slot) {
                kr_lane_t *lane = *slot;
                if (!lane->head) {
                    slot = &lane->hnext;
                    continue;
                }
                rd_kafka_topic_partition_list_add(to, lane->topic, lane->partition)->offset =
                    lane->head->rkm->offset;
                if (lane->paused && g->c)
                    kr_consumer_pause(g->c, lane->topic, lane->partition, 0);
                *slot = lane->hnext;
                lane_drop(d, lane);
                lanes++;
            }
        }
        if (g->c && to->cnt && kr_consumer_seek(g->c, to) < 0) {
            /* what was dropped would be skipped by the next stored offset:
             * stop storing and exit, the committed offsets are still right */
            kr_error("dispatch", "group=%s: cannot go back to the unfinished inputs, stopping",
                     g->name);
            d->fatal = 1;
        }
        rd_kafka_topic_partition_list_destroy(to);
    }
    d->rewind = 0;
    d->rewinds++;
    kr_warn("dispatch", "rewound %zu partition(s) to their first unfinished input", lanes);
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
                    set_retry(d, m, 0);
                    run_drop(d, m);
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
    return d->p ? kr_producer_flush(d->p, timeout_ms) : 0;
}

int kr_dispatch_fatal(const kr_dispatch_t *d)
{
    return d->fatal;
}

void kr_dispatch_set_fatal(kr_dispatch_t *d)
{
    d->fatal = 1;
}

static void group_free(kr_dispatch_t *d, kr_group_t *g)
{
    for (size_t b = 0; b < LANE_BUCKETS; b++) {
        kr_lane_t *lane = g->buckets[b];
        while (lane) {
            kr_lane_t *next = lane->hnext;
            for (kr_inmsg_t *m = lane->head; m;) {
                kr_inmsg_t *mn = m->next;
                if (m->retry_at_ms)
                    set_retry(d, m, 0);
                m->running = 0; /* the pool is joined before the dispatcher is freed */
                inmsg_free(d, m);
                m = mn;
            }
            free(lane->key_cnt);
            free(lane->topic);
            free(lane);
            lane = next;
        }
    }
    cache_clear(g);
    free(g->subs);
    free(g->routes);
    free(g->name);
    free(g);
}

void kr_dispatch_group_remove(kr_dispatch_t *d, kr_group_t *g)
{
    for (size_t i = 0; i < d->group_cnt; i++)
        if (d->groups[i] == g) {
            memmove(&d->groups[i], &d->groups[i + 1], (d->group_cnt - i - 1) * sizeof(g));
            d->group_cnt--;
            break;
        }
    group_free(d, g);
}

void kr_dispatch_free(kr_dispatch_t *d)
{
    if (!d)
        return;
    for (size_t gi = 0; gi < d->group_cnt; gi++)
        group_free(d, d->groups[gi]);
    free(d->groups);
    free(d->parked);
    free(d->batch_head);
    free(d->batch_tail);
    free(d->batch_len);
    kr_gen_unref(d->gen);
    kr_metrics_free(&d->metrics);
    free(d);
}
