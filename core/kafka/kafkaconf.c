/* kafkaconf.c - see kafkaconf.h. Also routes every handle's logs through
 * kr_log so librdkafka's warnings share kroute's log format. */
#include "kafka/kafkaconf.h"

#include <stdio.h>

#include "ops/log.h"

static int set_one(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                   size_t errsize)
{
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errsize, "librdkafka property %s=%s: %s", name, value, err);
        return -1;
    }
    return 0;
}

int kr_kafkaconf_apply(rd_kafka_conf_t *conf, const char *const *defaults,
                       const kr_props_t *props, char *errstr, size_t errsize)
{
    rd_kafka_conf_set_log_cb(conf, kr_log_rdkafka);
    for (const char *const *d = defaults; d && d[0]; d += 2)
        if (set_one(conf, d[0], d[1], errstr, errsize) < 0)
            return -1;
    for (size_t i = 0; props && i < props->cnt; i++) {
        /* checked when the route file was read; checked again so no other
         * way of filling `props` can hand librdkafka a property that loads
         * or runs code */
        if (kr_config_prop_check(props->v[i].name, props->v[i].value, errstr, errsize) < 0 ||
            set_one(conf, props->v[i].name, props->v[i].value, errstr, errsize) < 0)
            return -1;
    }
    return 0;
}
