/* metrics.h - per-route counters and handler latency histograms, kept by
 * route name so they carry across reloads, rendered in the Prometheus
 * text format. Updated and read on the router thread only. */
#ifndef KR_METRICS_H
#define KR_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define KR_LATENCY_BUCKETS 12

typedef struct kr_route_stats {
    char *name;
    uint64_t in;          /* messages the route started on */
    uint64_t out;         /* records produced (outputs, emits, replies) */
    uint64_t filtered;    /* runs that produced nothing */
    uint64_t errors;      /* failed runs (each attempt) */
    uint64_t retries;     /* retries scheduled */
    uint64_t dead;        /* messages dead-lettered (or skipped with dlq: false) */
    uint64_t dlq_failed;  /* DLQ copies refused for good (logged, then skipped) */
    uint64_t buckets[KR_LATENCY_BUCKETS]; /* cumulative at render time */
    uint64_t lat_count;
    double lat_sum;       /* seconds */
} kr_route_stats_t;

typedef struct kr_metrics {
    kr_route_stats_t **routes;
    size_t route_cnt;
} kr_metrics_t;

/* The stats of route `name` (made on first use). */
kr_route_stats_t *kr_metrics_route(kr_metrics_t *m, const char *name);
void kr_metrics_observe(kr_route_stats_t *s, double seconds);
/* Appends every route's series. */
void kr_metrics_render_routes(const kr_metrics_t *m, kr_buf_t *out);
/* Appends "# HELP/# TYPE" for a metric family. */
void kr_metrics_family(kr_buf_t *out, const char *name, const char *type, const char *help);
/* Appends the Prometheus text of a label value (quotes, backslashes,
 * newlines escaped). */
void kr_metrics_label(kr_buf_t *out, const char *value);
void kr_metrics_free(kr_metrics_t *m);

#endif
