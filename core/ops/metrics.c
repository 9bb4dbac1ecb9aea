/* metrics.c - see metrics.h. */
#include "ops/metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Handler run time bounds, seconds (le= labels). */
static const double bounds[KR_LATENCY_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                  0.005,  0.01,    0.025,  0.05,  0.1,
                                                  0.5,    1.0};

kr_route_stats_t *kr_metrics_route(kr_metrics_t *m, const char *name)
{
    for (size_t i = 0; i < m->route_cnt; i++)
        if (!strcmp(m->routes[i]->name, name))
            return m->routes[i];
    kr_route_stats_t *s = calloc(1, sizeof(*s));
    kr_route_stats_t **routes = realloc(m->routes, (m->route_cnt + 1) * sizeof(*routes));
    if (!s || !routes || !(s->name = strdup(name)))
        abort();
    m->routes = routes;
    m->routes[m->route_cnt++] = s;
    return s;
}

void kr_metrics_observe(kr_route_stats_t *s, double seconds)
{
    for (int i = 0; i < KR_LATENCY_BUCKETS; i++)
        if (seconds <= bounds[i]) {
            s->buckets[i]++;
            break;
        }
    s->lat_count++;
    s->lat_sum += seconds;
}

/* A label value in Prometheus text: quotes, backslashes and newlines
 * escaped. */
static void label_value(kr_buf_t *out, const char *value)
{
    kr_buf_addc(out, '"');
    for (const char *c = value; *c; c++) {
        if (*c == '\\' || *c == '"')
            kr_buf_addc(out, '\\');
        if (*c == '\n')
            kr_buf_add(out, "\\n", 2);
        else
            kr_buf_addc(out, *c);
    }
    kr_buf_addc(out, '"');
}

void kr_metrics_family(kr_buf_t *out, const char *name, const char *type, const char *help)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    kr_buf_add(out, line, (size_t)n);
}

/* A sample's name and labels, up to the space before its value. */
static void sample_head(kr_buf_t *out, const char *name, const kr_metric_label_t *labels,
                        size_t label_cnt)
{
    kr_buf_add(out, name, strlen(name));
    for (size_t i = 0; i < label_cnt; i++) {
        kr_buf_addc(out, i ? ',' : '{');
        kr_buf_add(out, labels[i].name, strlen(labels[i].name));
        kr_buf_addc(out, '=');
        label_value(out, labels[i].value);
    }
    if (label_cnt)
        kr_buf_addc(out, '}');
    kr_buf_addc(out, ' ');
}

void kr_metrics_sample(kr_buf_t *out, const char *name, const kr_metric_label_t *labels,
                       size_t label_cnt, double value)
{
    char num[64];
    sample_head(out, name, labels, label_cnt);
    int n = snprintf(num, sizeof(num), "%.17g\n", value);
    kr_buf_add(out, num, (size_t)n);
}

void kr_metrics_sample_int(kr_buf_t *out, const char *name, const kr_metric_label_t *labels,
                           size_t label_cnt, long long value)
{
    char num[32];
    sample_head(out, name, labels, label_cnt);
    int n = snprintf(num, sizeof(num), "%lld\n", value);
    kr_buf_add(out, num, (size_t)n);
}

void kr_metrics_single(kr_buf_t *out, const char *name, const char *type, const char *help,
                       double value)
{
    kr_metrics_family(out, name, type, help);
    kr_metrics_sample(out, name, NULL, 0, value);
}

/* A route's sample, with an `le` label for a histogram bucket. */
static void route_sample(kr_buf_t *out, const char *name, const char *route, const char *le,
                         double value)
{
    kr_metric_label_t labels[] = {{"route", route}, {"le", le}};
    kr_metrics_sample(out, name, labels, le ? 2 : 1, value);
}

typedef struct counter {
    const char *name, *help;
    size_t offset;
} counter_t;

static const counter_t counters[] = {
    {"kroute_messages_in_total", "Messages a route started on", offsetof(kr_route_stats_t, in)},
    {"kroute_messages_out_total", "Records a route produced (outputs, emits, replies)",
     offsetof(kr_route_stats_t, out)},
    {"kroute_messages_filtered_total", "Handler runs that produced nothing",
     offsetof(kr_route_stats_t, filtered)},
    {"kroute_handler_errors_total", "Failed handler runs (each attempt)",
     offsetof(kr_route_stats_t, errors)},
    {"kroute_retries_total", "Retries scheduled", offsetof(kr_route_stats_t, retries)},
    {"kroute_dead_letters_total", "Messages sent to the DLQ (or skipped with dlq: false)",
     offsetof(kr_route_stats_t, dead)},
    {"kroute_dlq_failures_total",
     "DLQ copies refused for good (too large even truncated): logged, then skipped",
     offsetof(kr_route_stats_t, dlq_failed)},
};

void kr_metrics_render_routes(const kr_metrics_t *m, kr_buf_t *out)
{
    for (size_t c = 0; c < sizeof(counters) / sizeof(counters[0]); c++) {
        kr_metrics_family(out, counters[c].name, "counter", counters[c].help);
        for (size_t i = 0; i < m->route_cnt; i++) {
            const uint64_t *v =
                (const uint64_t *)((const char *)m->routes[i] + counters[c].offset);
            route_sample(out, counters[c].name, m->routes[i]->name, NULL, (double)*v);
        }
    }
    kr_metrics_family(out, "kroute_handler_duration_seconds", "histogram",
                      "Wall time of handler runs");
    for (size_t i = 0; i < m->route_cnt; i++) {
        const kr_route_stats_t *s = m->routes[i];
        uint64_t cum = 0;
        char le[32];
        for (int b = 0; b < KR_LATENCY_BUCKETS; b++) {
            cum += s->buckets[b];
            snprintf(le, sizeof(le), "%g", bounds[b]);
            route_sample(out, "kroute_handler_duration_seconds_bucket", s->name, le,
                         (double)cum);
        }
        route_sample(out, "kroute_handler_duration_seconds_bucket", s->name, "+Inf",
                     (double)s->lat_count);
        route_sample(out, "kroute_handler_duration_seconds_sum", s->name, NULL, s->lat_sum);
        route_sample(out, "kroute_handler_duration_seconds_count", s->name, NULL,
                     (double)s->lat_count);
    }
}

void kr_metrics_free(kr_metrics_t *m)
{
    for (size_t i = 0; i < m->route_cnt; i++) {
        free(m->routes[i]->name);
        free(m->routes[i]);
    }
    free(m->routes);
    m->routes = NULL;
    m->route_cnt = 0;
}
