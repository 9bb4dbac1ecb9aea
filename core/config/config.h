/* config.h - route files (YAML) loaded into immutable structs.
 * A config is built once per load (start, check, later reload) and never
 * mutated afterwards; everything the runtime needs is resolved here:
 * ${VAR} expansion, handler paths, durations, sizes, patterns, and the
 * librdkafka properties (only those on an allow-list, checked against
 * librdkafka now; none that load or run code). */
#ifndef KR_CONFIG_H
#define KR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "config/errors.h"
#include "config/pattern.h"

typedef struct kr_prop {
    char *name, *value;
} kr_prop_t;

typedef struct kr_props {
    kr_prop_t *v;
    size_t cnt;
} kr_props_t;

typedef enum { KR_ORDER_PARTITION, KR_ORDER_KEY, KR_ORDER_NONE } kr_ordering_t;

typedef struct kr_route {
    size_t index;          /* position in kr_config_t.routes */
    char *name;
    kr_pattern_t *patterns;
    size_t pattern_cnt;
    char *handler;         /* path resolved against the route file's folder */
    char *to;              /* default output topic, or NULL */
    char *group;           /* own consumer group, or NULL for the default */
    kr_ordering_t ordering;
    int attempts;          /* total handler runs before dead-lettering */
    int64_t backoff_ms, max_backoff_ms;
    char *dlq;             /* DLQ topic; NULL = "<input topic>.dlq" */
    int dlq_off;           /* `dlq: false`: log and skip */
    int64_t timeout_ms;    /* wall time per handler run */
    size_t memory;         /* Lua allocator cap for this route's VMs */
    size_t max_input;      /* larger inputs (key + value) go to the DLQ unhandled */
    char **emits;          /* declared emit topics (documentation, graph) */
    size_t emit_cnt;
    int reply_nest;        /* `reply: nest`: answer NestJS ClientKafka.send() */
    char **requests;       /* patterns the handler calls with kroute.request */
    size_t request_cnt;
    char *where;           /* "file:line:col" of the route, for messages */
} kr_route_t;

typedef struct kr_config {
    char *brokers;         /* "embedded" or a bootstrap list */
    char *group;           /* default consumer group */
    kr_props_t consumer, producer;
    kr_route_t *routes;
    size_t route_cnt;
    char **files;          /* every route file read, in load order */
    size_t file_cnt;
} kr_config_t;

/* The consumer group route r is read in: its own, or the default. */
static inline const char *kr_route_group(const kr_config_t *cfg, const kr_route_t *r)
{
    return r->group ? r->group : cfg->group;
}

/* Loads route files and folders of YAML route files. Returns NULL and adds
 * "file:line:col: message" lines to `errs` on any problem. */
kr_config_t *kr_config_load(const char *const *paths, size_t path_cnt, kr_errors_t *errs);
void kr_config_free(kr_config_t *cfg);

/* 0 if a route file may set librdkafka property name=value, else -1 with
 * errstr saying why (kroute manages it, it runs code, it is not on the
 * allow-list, librdkafka does not know it, or the value is refused).
 * Never loads or runs anything. */
int kr_config_prop_check(const char *name, const char *value, char *errstr, size_t errsize);

/* Parse "200ms", "5s", "1m", "2h" or bare milliseconds; -1 if malformed. */
int64_t kr_config_parse_duration(const char *s);
/* Parse "64MiB", "512KiB", "1GB" or bare bytes; 0 if malformed. */
size_t kr_config_parse_size(const char *s);

#endif
