/* metrics.h - per-route counters and handler latency histograms, kept by
 * route name so they carry across reloads; and the one writer of the
 * Prometheus text format (HELP/TYPE lines, label escaping, numbers) that
 * every /metrics line goes through, whoever owns the figure (the
 * dispatcher, the consumers, the router). Updated and read on the router
 * thread only. */
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
/* One label of a sample; its value is escaped when written. */
typedef struct kr_metric_label {
    const char *name, *value;
} kr_metric_label_t;

/* Appends "# HELP/# TYPE" for a metric family. */
void kr_metrics_family(kr_buf_t *out, const char *name, const char *type, const char *help);
/* Appends one sample, `name{labels} value` (no braces without labels). */
void kr_metrics_sample(kr_buf_t *out, const char *name, const kr_metric_label_t *labels,
                       size_t label_cnt, double value);
/* ...with an integer value (offsets, byte counts: exact past 2^53). */
void kr_metrics_sample_int(kr_buf_t *out, const char *name, const kr_metric_label_t *labels,
                           size_t label_cnt, long long value);
/* Appends a family of one unlabelled sample: HELP, TYPE and the value. */
void kr_metrics_single(kr_buf_t *out, const char *name, const char *type, const char *help,
                       double value);
void kr_metrics_free(kr_metrics_t *m);

#endif
