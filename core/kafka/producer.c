/* producer.c - see producer.h. Defaults: idempotence on (no duplicates or
 * reordering from librdkafka's own retries), acks=all, murmur2_random (the
 * Java client's partitioner, so keyed records land where other clients put
 * them), and no message timeout: a record is retried until the broker takes
 * it or fails permanently, because giving up would mean losing input.
 *
 * Two librdkafka handles: linger.ms is per handle, and one value cannot
 * serve both kinds of record. Bulk outputs (to:, emits, DLQ copies) gain
 * from lingering (5 ms by default: bigger batches, fewer requests), while a
 * reply or a kroute.request send has someone waiting for it, so those go
 * through a second handle with linger.ms 0. Under load that handle still
 * batches: records queue while its in-flight requests are out. When the
 * bulk handle's linger.ms is 0 already, the one handle serves both. */
#include "kafka/producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka/kafkaconf.h"
#include "ops/log.h"

struct kr_producer {
    rd_kafka_t *rk;        /* bulk records */
    rd_kafka_t *prompt_rk; /* replies and requests; == rk when rk does not linger */
    rd_kafka_queue_t *wake_q[2]; /* main queues with an io event, or NULL */
    kr_delivery_cb_t *cb;
    void *ctx;
    size_t max_message; /* effective message.max.bytes */
};

static const char *const producer_defaults[] = {"enable.idempotence", "true",
                                                "acks", "all",
                                                "partitioner", "murmur2_random",
                                                "linger.ms", "5",
                                                "message.timeout.ms", "0",
                                                "client.id", "kroute",
                                                NULL};

/* dr_msg_cb: triggered by rd_kafka_poll()/flush() on the polling thread;
 * librdkafka frees rkmessage afterwards. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkmessage, void *opaque)
{
    (void)rk;
    kr_producer_t *p = opaque;
    p->cb(p->ctx, rkmessage->_private, rkmessage->err);
}

/* One handle from kroute's defaults, the route file's properties, then
 * `overrides` (NULL-terminated name/value pairs). NULL with errstr set. */
static rd_kafka_t *handle_new(kr_producer_t *p, const char *brokers, const kr_props_t *props,
                              const char *const *overrides, char *errstr, size_t errsize)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    if (kr_kafkaconf_apply(conf, producer_defaults, props, errstr, errsize) < 0 ||
        kr_kafkaconf_apply(conf, overrides, NULL, errstr, errsize) < 0)
        goto fail;
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "brokers '%s': %s", brokers, err);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        snprintf(errstr, errsize, "cannot create producer: %s", err);
        goto fail;
    }
    return rk; /* conf is owned by rk */
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

/* A property of rk's effective configuration as a number (librdkafka's
 * default applies when the route files do not set it). */
static unsigned long long conf_number(rd_kafka_t *rk, const char *name, unsigned long long dflt)
{
    char num[32];
    size_t num_size = sizeof(num);
    if (rd_kafka_conf_get(rd_kafka_conf(rk), name, num, &num_size) != RD_KAFKA_CONF_OK)
        return dflt;
    return strtoull(num, NULL, 10);
}

kr_producer_t *kr_producer_new(const char *brokers, const kr_props_t *props,
                               kr_delivery_cb_t *cb, void *ctx, char *errstr, size_t errsize)
{
    static const char *const prompt_overrides[] = {"linger.ms", "0", NULL};
    kr_producer_t *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    p->cb = cb;
    p->ctx = ctx;
    p->rk = handle_new(p, brokers, props, NULL, errstr, errsize);
    if (!p->rk)
        goto fail;
    p->prompt_rk = p->rk;
    if (conf_number(p->rk, "linger.ms", 5) > 0) {
        p->prompt_rk = handle_new(p, brokers, props, prompt_overrides, errstr, errsize);
        if (!p->prompt_rk)
            goto fail;
    }
    p->max_message = conf_number(p->rk, "message.max.bytes", 1000000);
    return p;
fail:
    kr_producer_free(p);
    return NULL;
}

rd_kafka_resp_err_t kr_producer_send(kr_producer_t *p, int prompt, const char *topic,
                                     int32_t partition, const void *key, size_t key_len,
                                     const void *value, size_t value_len,
                                     rd_kafka_headers_t *hdrs, void *msg_opaque)
{
    rd_kafka_t *rk = prompt ? p->prompt_rk : p->rk;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (err && hdrs)
                rd_kafka_headers_destroy(hdrs);
            return err;
        }
        /* queue full: serve delivery reports until there is room */
        rd_kafka_poll(rk, 100);
    }
}

void kr_producer_poll(kr_producer_t *p, int timeout_ms)
{
    if (p->prompt_rk != p->rk)
        rd_kafka_poll(p->prompt_rk, 0);
    rd_kafka_poll(p->rk, timeout_ms);
}

int kr_producer_flush(kr_producer_t *p, int timeout_ms)
{
    int left = 0;
    if (p->prompt_rk != p->rk) {
        rd_kafka_flush(p->prompt_rk, timeout_ms);
        left = rd_kafka_outq_len(p->prompt_rk);
    }
    /* the bulk handle's records were on their way meanwhile */
    rd_kafka_flush(p->rk, left ? 0 : timeout_ms);
    return left + rd_kafka_outq_len(p->rk);
}

size_t kr_producer_max_message(const kr_producer_t *p)
{
    return p->max_message;
}

/* Per record and per header, librdkafka adds at most a few varints and
 * fixed fields (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD is 36 bytes in 2.0);
 * rounding up keeps this an upper bound across versions. */
#define RECORD_OVERHEAD 64
#define HEADER_OVERHEAD 10

size_t kr_producer_record_size(size_t key_len, size_t value_len,
                               const rd_kafka_headers_t *hdrs)
{
    size_t size = RECORD_OVERHEAD + key_len + value_len;
    const char *name;
    const void *val;
    size_t val_size;
    for (size_t i = 0; hdrs && !rd_kafka_header_get_all(hdrs, i, &name, &val, &val_size); i++)
        size += HEADER_OVERHEAD + strlen(name) + val_size;
    return size;
}

int kr_producer_err_per_message(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:    /* message.max.bytes, here or broker's */
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE: /* the broker's segment size */
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:        /* e.g. no key for a compacted topic */
        return 1;
    default:
        return 0;
    }
}

int kr_producer_err_own(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR__GAPLESS_GUARANTEE:
    case RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER:
    case RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID:
    case RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH:
    case RD_KAFKA_RESP_ERR_PRODUCER_FENCED:
    case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
    case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
        return 1;
    default:
        return 0;
    }
}

int kr_producer_fatal(kr_producer_t *p, char *errstr, size_t errsize)
{
    char none[8];
    rd_kafka_t *rks[2] = {p->rk, p->prompt_rk};
    for (int i = 0; i < 2; i++)
        if (rd_kafka_fatal_error(rks[i], errstr ? errstr : none,
                                 errstr ? errsize : sizeof(none)) != RD_KAFKA_RESP_ERR_NO_ERROR)
            return 1;
    return 0;
}

int kr_producer_purge(kr_producer_t *p, int timeout_ms)
{
    const int flags =
        RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT | RD_KAFKA_PURGE_F_NON_BLOCKING;
    rd_kafka_purge(p->rk, flags);
    if (p->prompt_rk != p->rk)
        rd_kafka_purge(p->prompt_rk, flags);
    return kr_producer_flush(p, timeout_ms);
}

void kr_producer_wake_fd(kr_producer_t *p, int fd)
{
    rd_kafka_t *rks[2] = {p->rk, p->prompt_rk != p->rk ? p->prompt_rk : NULL};
    for (int i = 0; i < 2 && rks[i]; i++) {
        p->wake_q[i] = rd_kafka_queue_get_main(rks[i]);
        rd_kafka_queue_io_event_enable(p->wake_q[i], fd, "p", 1);
    }
}

void kr_producer_free(kr_producer_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < 2; i++) {
        if (p->wake_q[i]) {
            rd_kafka_queue_io_event_enable(p->wake_q[i], -1, NULL, 0);
            rd_kafka_queue_destroy(p->wake_q[i]);
        }
    }
    if (p->prompt_rk && p->prompt_rk != p->rk)
        rd_kafka_destroy(p->prompt_rk);
    if (p->rk)
        rd_kafka_destroy(p->rk);
    free(p);
}
