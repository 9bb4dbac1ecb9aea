/* producer.c - see producer.h. Defaults: idempotence on (no duplicates or
 * reordering from librdkafka's own retries), acks=all, murmur2_random (the
 * Java client's partitioner, so keyed records land where other clients put
 * them), and no message timeout: a record is retried until the broker takes
 * it or fails permanently, because giving up would mean losing input. */
#include "producer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafkaconf.h"
#include "log.h"

struct kr_producer {
    rd_kafka_t *rk;
    kr_delivery_cb_t *cb;
    void *ctx;
    size_t max_message; /* effective message.max.bytes */
};

/* dr_msg_cb: triggered by rd_kafka_poll()/flush() on the polling thread;
 * librdkafka frees rkmessage afterwards. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkmessage, void *opaque)
{
    (void)rk;
    kr_producer_t *p = opaque;
    p->cb(p->ctx, rkmessage->_private, rkmessage->err);
}

kr_producer_t *kr_producer_new(const char *brokers, const kr_props_t *props,
                               kr_delivery_cb_t *cb, void *ctx, char *errstr, size_t errsize)
{
    static const char *const defaults[] = {"enable.idempotence", "true",
                                           "acks", "all",
                                           "partitioner", "murmur2_random",
                                           "linger.ms", "5",
                                           "message.timeout.ms", "0",
                                           "client.id", "kroute",
                                           NULL};
    kr_producer_t *p = calloc(1, sizeof(*p));
    if (!p)
        abort();
    p->cb = cb;
    p->ctx = ctx;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (kr_kafkaconf_apply(conf, defaults, props, errstr, errsize) < 0)
        goto fail;
    char err[512];
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof(err)) !=
        RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "brokers '%s': %s", brokers, err);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!p->rk) {
        snprintf(errstr, errsize, "cannot create producer: %s", err);
        goto fail;
    }
    conf = NULL; /* owned by rk */
    /* read back rather than parsed from props: librdkafka's default
     * applies when the route files do not set it */
    char num[32];
    size_t num_size = sizeof(num);
    p->max_message = 1000000;
    if (rd_kafka_conf_get(rd_kafka_conf(p->rk), "message.max.bytes", num, &num_size) ==
        RD_KAFKA_CONF_OK)
        p->max_message = strtoull(num, NULL, 10);
    return p;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(p);
    return NULL;
}

rd_kafka_resp_err_t kr_producer_send(kr_producer_t *p, const char *topic, int32_t partition,
                                     const void *key, size_t key_len, const void *value,
                                     size_t value_len, rd_kafka_headers_t *hdrs,
                                     void *msg_opaque)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY((void *)key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (err && hdrs)
                rd_kafka_headers_destroy(hdrs);
            return err;
        }
        /* queue full: serve delivery reports until there is room */
        rd_kafka_poll(p->rk, 100);
    }
}

void kr_producer_poll(kr_producer_t *p, int timeout_ms)
{
    rd_kafka_poll(p->rk, timeout_ms);
}

int kr_producer_flush(kr_producer_t *p, int timeout_ms)
{
    rd_kafka_flush(p->rk, timeout_ms);
    return rd_kafka_outq_len(p->rk);
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
    return rd_kafka_fatal_error(p->rk, errstr ? errstr : none, errstr ? errsize : sizeof(none)) !=
           RD_KAFKA_RESP_ERR_NO_ERROR;
}

int kr_producer_purge(kr_producer_t *p, int timeout_ms)
{
    rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                              RD_KAFKA_PURGE_F_NON_BLOCKING);
    return kr_producer_flush(p, timeout_ms);
}

rd_kafka_t *kr_producer_handle(kr_producer_t *p)
{
    return p->rk;
}

void kr_producer_free(kr_producer_t *p)
{
    if (!p)
        return;
    if (p->rk)
        rd_kafka_destroy(p->rk);
    free(p);
}
