/* health.c - the broker reachability probe behind /healthz (see health.h). */
#include "kafka/health.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "clock.h"
#include "kafka/kafkaconf.h"

#define PROBE_EVERY_MS 1000
#define PROBE_TIMEOUT_MS 1000

struct kr_health {
    rd_kafka_t *rk;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;              /* under mu */
    int answered;          /* under mu: the last probe got metadata */
    int64_t answered_at;   /* under mu: kr_clock_ms of the last answer */
};

static void *probe_loop(void *arg)
{
    kr_health_t *h = arg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        pthread_mutex_unlock(&h->mu);
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(h->rk, 0, NULL, &md, PROBE_TIMEOUT_MS);
        if (md)
            rd_kafka_metadata_destroy(md);
        pthread_mutex_lock(&h->mu);
        h->answered = !e;
        if (!e)
            h->answered_at = kr_clock_ms();
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += PROBE_EVERY_MS / 1000;
        while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

kr_health_t *kr_health_start(const char *brokers, const kr_props_t *props, char *err,
                             size_t errsize)
{
    /* a producer handle that never produces: no idempotence, so it asks
     * the cluster for nothing but metadata */
    static const char *const defaults[] = {"client.id", "kroute-health", NULL};
    static const char *const after[] = {"enable.idempotence", "false", NULL};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char e[512];
    if (kr_kafkaconf_apply(conf, defaults, props, err, errsize) < 0 ||
        kr_kafkaconf_apply(conf, after, NULL, err, errsize) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, e, sizeof(e)) != RD_KAFKA_CONF_OK) {
        snprintf(err, errsize, "health probe: brokers '%s': %s", brokers, e);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    kr_health_t *h = calloc(1, sizeof(*h));
    if (!h)
        abort();
    h->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, e, sizeof(e));
    if (!h->rk) {
        snprintf(err, errsize, "health probe: %s", e);
        rd_kafka_conf_destroy(conf);
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    h->answered = 1; /* healthy until a probe says otherwise */
    h->answered_at = kr_clock_ms();
    if (pthread_create(&h->thread, NULL, probe_loop, h) != 0) {
        snprintf(err, errsize, "health probe: cannot start its thread");
        rd_kafka_destroy(h->rk);
        free(h);
        return NULL;
    }
    return h;
}

int kr_health_check(kr_health_t *h, char *why, size_t whysize)
{
    pthread_mutex_lock(&h->mu);
    int answered = h->answered;
    int64_t age = kr_clock_ms() - h->answered_at;
    pthread_mutex_unlock(&h->mu);
    if (answered)
        return 0;
    snprintf(why, whysize, "broker unreachable: no metadata answer for %.1f s",
             (double)age / 1000);
    return -1;
}

void kr_health_stop(kr_health_t *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->thread, NULL);
    rd_kafka_destroy(h->rk);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}
