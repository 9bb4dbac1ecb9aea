/* log.h - levelled, component-tagged logging to stderr.
 * Every subsystem logs through kr_log(); librdkafka's own log lines are
 * bridged in with kr_log_rdkafka() so one stream shows everything. */
#ifndef KR_LOG_H
#define KR_LOG_H

#include <librdkafka/rdkafka.h>

enum { KR_LOG_DEBUG = 0, KR_LOG_INFO, KR_LOG_WARN, KR_LOG_ERROR, KR_LOG_OFF };

/* Parses "debug|info|warn|error|off"; returns -1 when unknown. */
int kr_log_parse_level(const char *name);
void kr_log_set_level(int level);
/* One JSON object per line instead of text (--log-format json). */
void kr_log_set_json(int on);
int kr_log_enabled(int level);
void kr_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* librdkafka log_cb: called on librdkafka's internal threads. */
void kr_log_rdkafka(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

#define kr_debug(comp, ...) kr_log(KR_LOG_DEBUG, comp, __VA_ARGS__)
#define kr_info(comp, ...) kr_log(KR_LOG_INFO, comp, __VA_ARGS__)
#define kr_warn(comp, ...) kr_log(KR_LOG_WARN, comp, __VA_ARGS__)
#define kr_error(comp, ...) kr_log(KR_LOG_ERROR, comp, __VA_ARGS__)

#endif
