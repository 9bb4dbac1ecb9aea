/* testsupport/kafka.c - librdkafka glue the client and admin bindings share:
 * making a short-lived handle with the module's defaults, recording its
 * errors, and reading a topic's partitions from metadata. Holds no binding;
 * what the calls do with the handle lives in client.c and admin.c. */
#include "internal.h"

#include <stdio.h>

#include "clock.h"

int kr_ts_connect(kr_ts_res_t *res, rd_kafka_type_t type, const char *brokers,
                  const char *const *kv, kr_ts_conf_fn *setup, char *err, size_t errsz)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Errors only: the mock broker and short-lived handles are chatty. */
    if (rd_kafka_conf_set(conf, "log_level", "3", err, errsz) != RD_KAFKA_CONF_OK ||
        (brokers && rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, errsz) !=
                        RD_KAFKA_CONF_OK))
        goto fail;
    for (; kv && kv[0]; kv += 2)
        if (rd_kafka_conf_set(conf, kv[0], kv[1], err, errsz) != RD_KAFKA_CONF_OK)
            goto fail;
    if (setup)
        setup(conf);
    rd_kafka_conf_set_opaque(conf, res); /* callbacks' state lives in res */
    res->rk = rd_kafka_new(type, conf, err, errsz);
    if (!res->rk)
        goto fail; /* rd_kafka_new only takes conf on success */
    res->is_consumer = type == RD_KAFKA_CONSUMER;
    return 0;
fail:
    rd_kafka_conf_destroy(conf);
    return -1;
}

/* Triggered by rd_kafka_poll on the calling thread; keeps the latest error
 * (a refused connection says more than the timeout it leads to), but not
 * "all brokers are down" over the reason they are. */
static void kr_ts_error_cb(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    kr_ts_res_t *res = opaque;
    (void)rk;
    if (code == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && res->last_err[0])
        return;
    snprintf(res->last_err, sizeof(res->last_err), "%s", reason);
}

void kr_ts_conf_error_cb(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_error_cb(conf, kr_ts_error_cb);
}

/* A new topic (the Metadata request itself auto-creates it on the mock) may
 * report no leader or no partitions for a moment, hence the retries. */
int kr_ts_load_partitions(kr_ts_res_t *res, const char *topic, int64_t timeout_ms, char *err,
                          size_t errsz)
{
    int64_t deadline = kr_clock_ms() + timeout_ms;
    res->rkt = rd_kafka_topic_new(res->rk, topic, NULL);
    if (!res->rkt) {
        snprintf(err, errsz, "%s", rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    snprintf(err, errsz, "no partitions");
    for (;;) {
        int64_t left = deadline - kr_clock_ms();
        if (left <= 0)
            return -1;
        rd_kafka_resp_err_t e = rd_kafka_metadata(res->rk, 0, res->rkt, &res->md,
                                                  left > 2000 ? 2000 : (int)left);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errsz, "%s", rd_kafka_err2str(e));
            res->md = NULL;
        } else if (res->md->topic_cnt < 1) {
            snprintf(err, errsz, "topic missing from metadata");
        } else if (res->md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, errsz, "%s", rd_kafka_err2str(res->md->topics[0].err));
        } else if (res->md->topics[0].partition_cnt > 0) {
            const rd_kafka_metadata_topic_t *t = &res->md->topics[0];
            res->parts = rd_kafka_topic_partition_list_new(t->partition_cnt);
            for (int i = 0; i < t->partition_cnt; i++)
                rd_kafka_topic_partition_list_add(res->parts, topic, t->partitions[i].id);
            rd_kafka_topic_partition_list_sort(res->parts, NULL, NULL);
            rd_kafka_metadata_destroy(res->md);
            res->md = NULL;
            return 0;
        }
        if (res->md) {
            rd_kafka_metadata_destroy(res->md);
            res->md = NULL;
        }
        kr_ts_sleep_ms(50);
    }
}
