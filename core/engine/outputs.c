/* engine/outputs.c - what a handler run sends: its records, NestJS
 * replies, kroute.request calls, DLQ copies (truncated to fit), and the
 * delivery reports that settle them. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec/nest.h"
#include "grow.h"
#include "ops/log.h"
#include "runtime/record.h"

/* ---------- producing ---------- */

/* What a produced record is: a bulk output (to:, emits), a DLQ copy, or a
 * reply or request someone waits for (sent without lingering). */
enum out_kind { OUT_BULK, OUT_DLQ, OUT_PROMPT };

static void produce_one(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                        enum out_kind kind, const char *topic, int32_t partition, const void *key, size_t key_len,
                        const void *value, size_t value_len, rd_kafka_headers_t *hdrs)
{
    size_t topic_len = strlen(topic);
    kr_out_t *out = kr_spares_take(&d->spare_outs);
    out->topic = topic_len < sizeof(out->short_topic) ? out->short_topic : malloc(topic_len + 1);
    if (!out->topic)
        abort();
    out->m = m;
    out->route = route;
    out->is_dlq = kind == OUT_DLQ;
    out->size = key_len + value_len;
    memcpy(out->topic, topic, topic_len + 1);
    if (!out->is_dlq)
        stats(m, route)->out++;
    m->pending++;
    rd_kafka_resp_err_t err = kr_producer_send(d->p, kind == OUT_PROMPT, topic, partition, key,
                                               key_len, value, value_len, hdrs, out);
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
    rd_kafka_headers_t *in = kr_msg_headers(msg);
    rd_kafka_headers_t *h = in ? rd_kafka_headers_copy(in) : rd_kafka_headers_new(8);
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
void kr_out_dead_letter(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
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
    produce_one(d, m, route, OUT_DLQ, dlq, RD_KAFKA_PARTITION_UA, msg->key, msg->key_len, msg->value,
                cuts[0].len, h);
}

/* The reply to a NestJS request: the handler's record (its key and
 * headers kept, as ServerKafka keeps an envelope's), or an error; final
 * unless it is NestJS's no-handler answer, which is sent without
 * kafka_nest-is-disposed as NestJS 11 does. */
static void produce_nest_reply(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                               const kr_record_t *rec, const char *err, int disposed)
{
    rd_kafka_headers_t *h = kr_nest_reply_headers(
        rec && rec->headers ? rd_kafka_headers_copy(rec->headers) : NULL, m->nest.correlation,
        err, disposed);
    const void *value = NULL, *key = NULL;
    size_t len = 0, key_len = 0;
    if (rec && !rec->value_null) {
        value = rec->value.data ? rec->value.data : "";
        len = rec->value.len;
    }
    if (rec && rec->key_mode == KR_KEY_SET) {
        key = rec->key.data ? rec->key.data : "";
        key_len = rec->key.len;
    }
    kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> reply %s[%d]%s%s",
             route->name, m->view.topic, (int)m->view.partition, (long long)m->view.offset,
             m->nest.reply_topic, (int)m->nest.reply_partition, err ? " error: " : "",
             err ? err : "");
    produce_one(d, m, route, OUT_PROMPT, m->nest.reply_topic, m->nest.reply_partition, key,
                key_len, value, len, h);
}

/* Produces what the plan (kr_outcome_plan, the rule kroute.testing uses
 * too) makes of a successful run: its outputs, and the NestJS reply. */
void kr_out_run(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route, kr_run_t *run,
                const kr_outcome_t *plan)
{
    const kr_outcome_route_t oroute = {route->reply_nest, route->to};
    const kr_msg_t *msg = &m->view;
    if (plan->reply) /* nothing returned: a null reply still tells the caller it is done */
        produce_nest_reply(d, m, route, plan->reply_rec >= 0 ? &run->recs[plan->reply_rec] : NULL,
                           NULL, 1);
    for (size_t i = 0; i < run->cnt; i++) {
        kr_resolved_t out;
        if (!kr_outcome_is_output(run, i, &oroute, kr_inmsg_is_request(m, route)) ||
            kr_record_resolve(&run->recs[i], msg, route->to, &out) < 0)
            continue; /* (the plan saw to it that every output has a topic) */
        kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> %s",
                 route->name, msg->topic, (int)msg->partition, (long long)msg->offset,
                 out.topic);
        produce_one(d, m, route, OUT_BULK, out.topic, out.partition, out.key, out.key_len,
                    out.value, out.value_len, out.headers);
    }
}

/* Sends the request a suspended run asked for. Returns NULL when it was
 * sent or parked (the run now waits), or the error to resume it with. */
const char *kr_out_request(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route)
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
            d->parked = kr_grow(d->parked, &d->parked_cap, d->parked_cnt, sizeof(*d->parked), 16);
            d->parked[d->parked_cnt++] = m;
            m->parked = 1;
        }
        return NULL;
    }
    kr_inmsg_unpark(d, m);
    char corr[37], part[16], reply_topic[512];
    kr_nest_correlation_id(corr);
    snprintf(part, sizeof(part), "%d", (int)reply_partition);
    snprintf(reply_topic, sizeof(reply_topic), "%s.reply", req->topic);
    rd_kafka_headers_t *h = req->headers ? req->headers : rd_kafka_headers_new(3);
    req->headers = NULL;
    rd_kafka_header_add(h, KR_NEST_CORRELATION, -1, corr, -1);
    rd_kafka_header_add(h, KR_NEST_REPLY_TOPIC, -1, reply_topic, -1);
    rd_kafka_header_add(h, KR_NEST_REPLY_PARTITION, -1, part, -1);
    kr_requester_track(d->rq, req->topic, corr, m, m->request_deadline_ms);
    kr_debug("dispatch", "route=%s topic=%s partition=%d offset=%lld -> request %s (%s)",
             route->name, m->view.topic, (int)m->view.partition, (long long)m->view.offset,
             req->topic, corr);
    produce_one(d, m, route, OUT_PROMPT, req->topic, req->partition,
                req->key_mode == KR_KEY_SET ? (req->key.data ? req->key.data : "") : NULL,
                req->key.len, req->value_null ? NULL : (req->value.data ? req->value.data : ""),
                req->value_null ? 0 : req->value.len, h);
    return NULL;
}

/* The route is done with m without a result: the caller of a NestJS
 * request gets the error, shaped as a NestJS server sends an RpcException
 * ({"status":"error","message":...}; a missing handler is NestJS's plain
 * text error); any other message goes to the DLQ. */
void kr_out_give_up(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                    const char *reason, const char *trace, int no_handler)
{
    if (kr_inmsg_is_request(m, route)) {
        char *err = kr_nest_error_text(reason, no_handler);
        produce_nest_reply(d, m, route, NULL, err, !no_handler);
        free(err);
    } else
        kr_out_dead_letter(d, m, route, reason, trace);
    m->route_pos++;
    m->attempt = 0;
}

/* ---------- delivery reports ---------- */

static void out_free(kr_dispatch_t *d, kr_out_t *out)
{
    if (out->topic != out->short_topic)
        free(out->topic);
    kr_spares_give(&d->spare_outs, out);
}

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
        out_free(d, out);
        m->pending--;
        kr_inmsg_release(d, m);
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
         * other outputs are settled (kr_inmsg_settle) */
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
    out_free(d, out);
    m->pending--;
    if (kr_inmsg_release(d, m)) /* orphaned by a revoke: nothing to store */
        return;
    kr_inmsg_settle(d, m);
}
