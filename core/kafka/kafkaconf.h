/* kafkaconf.h - building librdkafka configurations for kroute's handles.
 * One place applies kroute's defaults, then the route file's pass-through
 * properties (already validated at load), then the bits kroute manages. */
#ifndef KR_KAFKACONF_H
#define KR_KAFKACONF_H

#include <librdkafka/rdkafka.h>

#include "config/config.h"

/* Sets name=value pairs from a NULL-terminated {name, value, ...} list then
 * `props`, each of which must pass kr_config_prop_check(). Returns 0, or -1
 * with errstr naming the property. */
int kr_kafkaconf_apply(rd_kafka_conf_t *conf, const char *const *defaults,
                       const kr_props_t *props, char *errstr, size_t errsize);

#endif
