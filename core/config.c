/* config.c - YAML route files -> kr_config_t (see config.h).
 * libyaml's document loader gives every node a start mark, so each error is
 * reported as "file:line:col: message" at the node that is wrong. Loading
 * keeps going after an error to report every problem in one pass. This file
 * knows the route-file schema; it does not touch Kafka or Lua. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

typedef struct loader {
    kr_config_t *cfg;
    kr_errors_t *errs;
    size_t err_start;        /* errs->cnt when loading began */
    const char *file;        /* file being read */
    char *dir;               /* its folder, for handler paths */
    yaml_document_t *doc;
    char *kafka_where;       /* where `kafka:` was first set */
    size_t route_cap;
} loader_t;

/* Properties kroute sets itself: letting a route file change them would
 * break the delivery guarantee or the group model. */
static const char *const managed_props[] = {
    "bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.offset.store",
    "enable.partition.eof", "rebalance_cb", "offset_commit_cb", "dr_msg_cb", NULL};

#define MARK_FMT "%s:%zu:%zu: "
#define MARK(ld, node) (ld)->file, (node)->start_mark.line + 1, (node)->start_mark.column + 1

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        abort();
    return p;
}

static char *where_of(loader_t *ld, yaml_node_t *node)
{
    char *w;
    if (asprintf(&w, "%s:%zu:%zu", MARK(ld, node)) < 0)
        abort();
    return w;
}

int64_t kr_config_parse_duration(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0)
        return -1;
    while (isspace((unsigned char)*end))
        end++;
    double mult;
    if (!*end || !strcmp(end, "ms"))
        mult = 1;
    else if (!strcmp(end, "s"))
        mult = 1000;
    else if (!strcmp(end, "m"))
        mult = 60000;
    else if (!strcmp(end, "h"))
        mult = 3600000;
    else if (!strcmp(end, "us"))
        mult = 0.001;
    else
        return -1;
    double ms = v * mult;
    if (ms > 9e15)
        return -1;
    return (int64_t)ms;
}

size_t kr_config_parse_size(const char *s)
{
    static const struct { const char *unit; double mult; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
        {"K", 1024.0}, {"M", 1048576.0}, {"G", 1073741824.0}};
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v <= 0)
        return 0;
    while (isspace((unsigned char)*end))
        end++;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(end, units[i].unit)) {
            double b = v * units[i].mult;
            return b >= 1 && b < 1e15 ? (size_t)b : 0;
        }
    return 0;
}

/* Expand ${VAR} and ${VAR:-default}. Returns NULL (error added) when a
 * variable without default is unset or the syntax is broken. */
static char *expand_env(loader_t *ld, yaml_node_t *node, const char *in)
{
    size_t cap = strlen(in) + 64, len = 0;
    char *out = xrealloc(NULL, cap);
    for (const char *p = in; *p;) {
        const char *piece = p;
        size_t piece_len = 1;
        char *owned = NULL;
        if (p[0] == '$' && p[1] == '{') {
            const char *close = strchr(p + 2, '}');
            if (!close) {
                kr_errors_add(ld->errs, MARK_FMT "unterminated ${ in '%s'", MARK(ld, node), in);
                free(out);
                return NULL;
            }
            char *expr = strndup(p + 2, (size_t)(close - p - 2));
            char *dflt = strstr(expr, ":-");
            if (dflt) {
                *dflt = '\0';
                dflt += 2;
            }
            int valid = *expr != '\0';
            for (char *c = expr; *c; c++)
                if (!isalnum((unsigned char)*c) && *c != '_')
                    valid = 0;
            if (!valid) {
                kr_errors_add(ld->errs, MARK_FMT "bad variable name '${%s}'", MARK(ld, node),
                              expr);
                free(expr);
                free(out);
                return NULL;
            }
            const char *val = getenv(expr);
            if (!val || (!*val && dflt))
                val = dflt;
            if (!val) {
                kr_errors_add(ld->errs,
                              MARK_FMT "environment variable %s is not set (write ${%s:-default} "
                                       "for a default)",
                              MARK(ld, node), expr, expr);
                free(expr);
                free(out);
                return NULL;
            }
            owned = xstrdup(val);
            free(expr);
            piece = owned;
            piece_len = strlen(owned);
            p = close + 1;
        } else {
            p++;
        }
        if (len + piece_len + 1 > cap) {
            cap = (len + piece_len + 1) * 2;
            out = xrealloc(out, cap);
        }
        memcpy(out + len, piece, piece_len);
        len += piece_len;
        free(owned);
    }
    out[len] = '\0';
    return out;
}

static const char *node_type_name(yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "empty";
    }
}

/* A scalar's text with ${VAR} expanded; NULL (error added) otherwise. */
static char *scalar(loader_t *ld, yaml_node_t *node, const char *what)
{
    if (node->type != YAML_SCALAR_NODE) {
        kr_errors_add(ld->errs, MARK_FMT "%s must be a string, not %s", MARK(ld, node), what,
                      node_type_name(node));
        return NULL;
    }
    return expand_env(ld, node, (const char *)node->data.scalar.value);
}

/* YAML lets a later duplicate key silently win; in a route file that hides
 * mistakes (two `to:`), so it is an error. */
static void check_duplicate_keys(loader_t *ld, yaml_node_t *map)
{
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
    for (yaml_node_pair_t *a = start; a < top; a++) {
        yaml_node_t *ka = yaml_document_get_node(ld->doc, a->key);
        if (ka->type != YAML_SCALAR_NODE)
            continue;
        for (yaml_node_pair_t *b = start; b < a; b++) {
            yaml_node_t *kb = yaml_document_get_node(ld->doc, b->key);
            if (kb->type == YAML_SCALAR_NODE &&
                !strcmp((const char *)ka->data.scalar.value, (const char *)kb->data.scalar.value)) {
                kr_errors_add(ld->errs, MARK_FMT "duplicate key '%s' (first at line %zu)",
                              MARK(ld, ka), (const char *)ka->data.scalar.value,
                              kb->start_mark.line + 1);
                break;
            }
        }
    }
}

static int expect_mapping(loader_t *ld, yaml_node_t *node, const char *what)
{
    if (node->type == YAML_MAPPING_NODE) {
        check_duplicate_keys(ld, node);
        return 0;
    }
    kr_errors_add(ld->errs, MARK_FMT "%s must be a mapping, not %s", MARK(ld, node), what,
                  node_type_name(node));
    return -1;
}

static int parse_int(loader_t *ld, yaml_node_t *node, const char *what, int lo, int hi, int *out)
{
    char *s = scalar(ld, node, what);
    if (!s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    int bad = end == s || *end || errno || v < lo || v > hi;
    if (bad)
        kr_errors_add(ld->errs, MARK_FMT "%s must be an integer from %d to %d, got '%s'",
                      MARK(ld, node), what, lo, hi, s);
    free(s);
    if (bad)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_duration_node(loader_t *ld, yaml_node_t *node, const char *what, int64_t *out)
{
    char *s = scalar(ld, node, what);
    if (!s)
        return -1;
    int64_t v = kr_config_parse_duration(s);
    if (v < 0)
        kr_errors_add(ld->errs,
                      MARK_FMT "%s must be a duration like 200ms, 5s or 1m, got '%s'",
                      MARK(ld, node), what, s);
    free(s);
    if (v < 0)
        return -1;
    *out = v;
    return 0;
}

static int parse_bool_text(const char *s, int *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = 0;
    else
        return -1;
    return 0;
}

static void unknown_key(loader_t *ld, yaml_node_t *key, const char *section,
                        const char *allowed)
{
    kr_errors_add(ld->errs, MARK_FMT "unknown key '%s' in %s (expected one of: %s)",
                  MARK(ld, key), (const char *)key->data.scalar.value, section, allowed);
}

/* Iterate a mapping's pairs; keys that are not scalars are reported. */
#define FOR_PAIRS(ld, map, k, v)                                                          \
    for (yaml_node_pair_t *pair_ = (map)->data.mapping.pairs.start;                       \
         pair_ < (map)->data.mapping.pairs.top; pair_++)                                  \
        for (yaml_node_t *k = yaml_document_get_node((ld)->doc, pair_->key),              \
                         *v = yaml_document_get_node((ld)->doc, pair_->value);            \
             k; k = NULL)                                                                 \
            if (k->type != YAML_SCALAR_NODE)                                              \
                kr_errors_add((ld)->errs, MARK_FMT "keys must be strings", MARK(ld, k));  \
            else

#define KEY_IS(k, name) (strcmp((const char *)(k)->data.scalar.value, (name)) == 0)

static void parse_props(loader_t *ld, yaml_node_t *map, const char *which, kr_props_t *props)
{
    if (expect_mapping(ld, map, which) < 0)
        return;
    int is_consumer = strcmp(which, "kafka.consumer") == 0;
    FOR_PAIRS(ld, map, k, v)
    {
        const char *name = (const char *)k->data.scalar.value;
        char *value = scalar(ld, v, name);
        if (!value)
            continue;
        int managed = 0;
        for (const char *const *m = managed_props; *m; m++)
            if (!strcmp(*m, name))
                managed = 1;
        if (managed) {
            kr_errors_add(ld->errs,
                          MARK_FMT "librdkafka property '%s' is managed by kroute and cannot "
                                   "be set in %s",
                          MARK(ld, k), name, which);
            free(value);
            continue;
        }
        /* Ask librdkafka itself so unknown names and bad values fail now,
         * at load, with the line of the offending key. */
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        char errstr[512];
        rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr));
        rd_kafka_conf_destroy(conf);
        if (res == RD_KAFKA_CONF_UNKNOWN) {
            kr_errors_add(ld->errs, MARK_FMT "unknown librdkafka %s property '%s'",
                          MARK(ld, k), is_consumer ? "consumer" : "producer", name);
            free(value);
            continue;
        }
        if (res != RD_KAFKA_CONF_OK) {
            kr_errors_add(ld->errs, MARK_FMT "%s.%s: %s", MARK(ld, v), which, name, errstr);
            free(value);
            continue;
        }
        props->v = xrealloc(props->v, (props->cnt + 1) * sizeof(*props->v));
        props->v[props->cnt].name = xstrdup(name);
        props->v[props->cnt].value = value;
        props->cnt++;
    }
}

/* Replaces *dst with the scalar's text; empty text is an error. */
static void set_nonempty(loader_t *ld, yaml_node_t *node, const char *what, char **dst)
{
    char *s = scalar(ld, node, what);
    if (s && !*s) {
        kr_errors_add(ld->errs, MARK_FMT "%s is empty", MARK(ld, node), what);
        free(s);
    } else if (s) {
        free(*dst);
        *dst = s;
    }
}

static void parse_kafka(loader_t *ld, yaml_node_t *map, yaml_node_t *key)
{
    if (ld->kafka_where) {
        kr_errors_add(ld->errs, MARK_FMT "'kafka' is already set at %s (at most one file may set it)",
                      MARK(ld, key), ld->kafka_where);
        return;
    }
    ld->kafka_where = where_of(ld, key);
    if (expect_mapping(ld, map, "kafka") < 0)
        return;
    kr_config_t *cfg = ld->cfg;
    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "brokers"))
            set_nonempty(ld, v, "kafka.brokers", &cfg->brokers);
        else if (KEY_IS(k, "group"))
            set_nonempty(ld, v, "kafka.group", &cfg->group);
        else if (KEY_IS(k, "consumer"))
            parse_props(ld, v, "kafka.consumer", &cfg->consumer);
        else if (KEY_IS(k, "producer"))
            parse_props(ld, v, "kafka.producer", &cfg->producer);
        else
            unknown_key(ld, k, "kafka", "brokers, group, consumer, producer");
    }
}

static void add_pattern(loader_t *ld, kr_route_t *r, yaml_node_t *node)
{
    char *s = scalar(ld, node, "match");
    if (!s)
        return;
    char errstr[512];
    kr_pattern_t p;
    if (kr_pattern_compile(&p, s, errstr, sizeof(errstr)) < 0) {
        kr_errors_add(ld->errs, MARK_FMT "%s", MARK(ld, node), errstr);
    } else {
        r->patterns = xrealloc(r->patterns, (r->pattern_cnt + 1) * sizeof(*r->patterns));
        r->patterns[r->pattern_cnt++] = p;
    }
    free(s);
}

static void add_list_item(loader_t *ld, yaml_node_t *item, const char *what, char ***items,
                          size_t *cnt)
{
    char *s = NULL;
    set_nonempty(ld, item, what, &s);
    if (!s)
        return;
    *items = xrealloc(*items, (*cnt + 1) * sizeof(char *));
    (*items)[(*cnt)++] = s;
}

/* A list of non-empty strings (a single string is a list of one). */
static void parse_list(loader_t *ld, yaml_node_t *node, const char *what, char ***items,
                       size_t *cnt)
{
    if (node->type == YAML_SCALAR_NODE) {
        add_list_item(ld, node, what, items, cnt);
        return;
    }
    if (node->type != YAML_SEQUENCE_NODE) {
        kr_errors_add(ld->errs, MARK_FMT "%s must be a list of topics", MARK(ld, node), what);
        return;
    }
    for (yaml_node_item_t *it = node->data.sequence.items.start;
         it < node->data.sequence.items.top; it++)
        add_list_item(ld, yaml_document_get_node(ld->doc, *it), what, items, cnt);
}

static void parse_retry(loader_t *ld, kr_route_t *r, yaml_node_t *map)
{
    if (expect_mapping(ld, map, "retry") < 0)
        return;
    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "attempts"))
            parse_int(ld, v, "retry.attempts", 1, 1000, &r->attempts);
        else if (KEY_IS(k, "backoff"))
            parse_duration_node(ld, v, "retry.backoff", &r->backoff_ms);
        else if (KEY_IS(k, "max_backoff"))
            parse_duration_node(ld, v, "retry.max_backoff", &r->max_backoff_ms);
        else
            unknown_key(ld, k, "retry", "attempts, backoff, max_backoff");
    }
}

static char *resolve_handler(loader_t *ld, const char *rel)
{
    char *path;
    if (rel[0] == '/')
        path = xstrdup(rel);
    else if (asprintf(&path, "%s/%s", ld->dir, rel) < 0)
        abort();
    return path;
}

static void parse_route(loader_t *ld, yaml_node_t *map)
{
    if (expect_mapping(ld, map, "a route") < 0)
        return;
    kr_config_t *cfg = ld->cfg;
    if (cfg->route_cnt == ld->route_cap) {
        ld->route_cap = ld->route_cap ? ld->route_cap * 2 : 8;
        cfg->routes = xrealloc(cfg->routes, ld->route_cap * sizeof(*cfg->routes));
    }
    kr_route_t *r = &cfg->routes[cfg->route_cnt];
    memset(r, 0, sizeof(*r));
    r->index = cfg->route_cnt++;
    r->ordering = KR_ORDER_PARTITION;
    r->attempts = 3;
    r->backoff_ms = 200;
    r->max_backoff_ms = 5000;
    r->timeout_ms = 5000;
    r->memory = 64u << 20;
    r->where = where_of(ld, map);
    yaml_node_t *handler_node = NULL, *match_node = NULL, *to_node = NULL;
    yaml_node_t *max_input_node = NULL;

    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "name")) {
            set_nonempty(ld, v, "name", &r->name);
            if (r->name)
                for (size_t i = 0; i < r->index; i++)
                    if (cfg->routes[i].name && !strcmp(cfg->routes[i].name, r->name))
                        kr_errors_add(ld->errs, MARK_FMT "duplicate route name '%s' (first at %s)",
                                      MARK(ld, v), r->name, cfg->routes[i].where);
        } else if (KEY_IS(k, "match")) {
            match_node = v;
            if (v->type == YAML_SEQUENCE_NODE) {
                for (yaml_node_item_t *it = v->data.sequence.items.start;
                     it < v->data.sequence.items.top; it++)
                    add_pattern(ld, r, yaml_document_get_node(ld->doc, *it));
                if (r->pattern_cnt == 0)
                    kr_errors_add(ld->errs, MARK_FMT "match list is empty", MARK(ld, v));
            } else {
                add_pattern(ld, r, v);
            }
        } else if (KEY_IS(k, "handler")) {
            char *s = scalar(ld, v, "handler");
            handler_node = v;
            if (s) {
                free(r->handler);
                r->handler = resolve_handler(ld, s);
                free(s);
            }
        } else if (KEY_IS(k, "to")) {
            set_nonempty(ld, v, "to", &r->to);
            to_node = v;
        } else if (KEY_IS(k, "group")) {
            set_nonempty(ld, v, "group", &r->group);
        } else if (KEY_IS(k, "ordering")) {
            char *s = scalar(ld, v, "ordering");
            if (s && !strcmp(s, "partition"))
                r->ordering = KR_ORDER_PARTITION;
            else if (s && !strcmp(s, "key"))
                r->ordering = KR_ORDER_KEY;
            else if (s && !strcmp(s, "none"))
                r->ordering = KR_ORDER_NONE;
            else if (s)
                kr_errors_add(ld->errs,
                              MARK_FMT "ordering must be partition, key or none, got '%s'",
                              MARK(ld, v), s);
            free(s);
        } else if (KEY_IS(k, "retry")) {
            parse_retry(ld, r, v);
        } else if (KEY_IS(k, "dlq")) {
            char *s = scalar(ld, v, "dlq");
            int b;
            if (s && parse_bool_text(s, &b) == 0) {
                if (b)
                    kr_errors_add(ld->errs,
                                  MARK_FMT "dlq takes a topic name or false (the default is "
                                           "\"<topic>.dlq\")",
                                  MARK(ld, v));
                r->dlq_off = !b;
                free(s);
            } else if (s) {
                free(r->dlq);
                r->dlq = s;
            }
        } else if (KEY_IS(k, "timeout")) {
            parse_duration_node(ld, v, "timeout", &r->timeout_ms);
            if (r->timeout_ms == 0)
                kr_errors_add(ld->errs, MARK_FMT "timeout must be greater than 0", MARK(ld, v));
        } else if (KEY_IS(k, "memory")) {
            char *s = scalar(ld, v, "memory");
            if (s) {
                size_t m = kr_config_parse_size(s);
                if (m < (1u << 20))
                    kr_errors_add(ld->errs,
                                  MARK_FMT "memory must be a size of at least 1MiB like "
                                           "64MiB, got '%s'",
                                  MARK(ld, v), s);
                else
                    r->memory = m;
                free(s);
            }
        } else if (KEY_IS(k, "max_input")) {
            char *s = scalar(ld, v, "max_input");
            if (s) {
                r->max_input = kr_config_parse_size(s);
                max_input_node = v;
                if (!r->max_input)
                    kr_errors_add(ld->errs,
                                  MARK_FMT "max_input must be a size like 1MiB, got '%s'",
                                  MARK(ld, v), s);
                free(s);
            }
        } else if (KEY_IS(k, "emits")) {
            parse_list(ld, v, "emits", &r->emits, &r->emit_cnt);
        } else if (KEY_IS(k, "requests")) {
            parse_list(ld, v, "requests", &r->requests, &r->request_cnt);
        } else if (KEY_IS(k, "reply")) {
            char *s = scalar(ld, v, "reply");
            if (s && !strcmp(s, "nest"))
                r->reply_nest = 1;
            else if (s && strcmp(s, "none") != 0)
                kr_errors_add(ld->errs, MARK_FMT "reply must be nest or none, got '%s'",
                              MARK(ld, v), s);
            free(s);
        } else {
            unknown_key(ld, k, "route",
                        "name, match, handler, to, group, ordering, retry, dlq, timeout, "
                        "memory, max_input, emits, requests, reply");
        }
    }
    if (!r->name)
        kr_errors_add(ld->errs, MARK_FMT "route has no 'name'", MARK(ld, map));
    if (!match_node)
        kr_errors_add(ld->errs, MARK_FMT "route '%s' has no 'match'", MARK(ld, map),
                      r->name ? r->name : "?");
    if (!handler_node) {
        kr_errors_add(ld->errs, MARK_FMT "route '%s' has no 'handler'", MARK(ld, map),
                      r->name ? r->name : "?");
    } else if (r->handler && access(r->handler, R_OK) != 0) {
        kr_errors_add(ld->errs, MARK_FMT "handler file '%s' cannot be read: %s",
                      MARK(ld, handler_node), r->handler, strerror(errno));
    }
    if (r->max_backoff_ms < r->backoff_ms)
        r->max_backoff_ms = r->backoff_ms;
    /* decoding JSON takes a few times the text's size: by default an input
     * may use an eighth of the route's Lua memory */
    if (!max_input_node)
        r->max_input = r->memory / 8;
    else if (r->max_input > r->memory)
        kr_errors_add(ld->errs, MARK_FMT "max_input (%zu bytes) is larger than memory (%zu bytes)",
                      MARK(ld, max_input_node), r->max_input, r->memory);
    /* A route whose output feeds its own input loops forever. */
    if (r->to && to_node)
        for (size_t i = 0; i < r->pattern_cnt; i++)
            if (kr_pattern_match(&r->patterns[i], r->to))
                kr_errors_add(ld->errs,
                              MARK_FMT "route '%s' sends to '%s', which its own match '%s' "
                                       "would consume again (a loop)",
                              MARK(ld, to_node), r->name ? r->name : "?", r->to,
                              r->patterns[i].text);
}

static void parse_root(loader_t *ld, yaml_node_t *root)
{
    if (!root) {
        kr_errors_add(ld->errs, "%s:1:1: empty route file", ld->file);
        return;
    }
    if (expect_mapping(ld, root, "the route file") < 0)
        return;
    int saw_routes = 0;
    FOR_PAIRS(ld, root, k, v)
    {
        if (KEY_IS(k, "kafka")) {
            parse_kafka(ld, v, k);
        } else if (KEY_IS(k, "routes")) {
            saw_routes = 1;
            if (v->type != YAML_SEQUENCE_NODE) {
                kr_errors_add(ld->errs, MARK_FMT "routes must be a list, not %s", MARK(ld, v),
                              node_type_name(v));
                continue;
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++)
                parse_route(ld, yaml_document_get_node(ld->doc, *it));
        } else {
            unknown_key(ld, k, "the route file", "kafka, routes");
        }
    }
    (void)saw_routes; /* a file may hold only `kafka:` */
}

static void load_file(loader_t *ld, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        kr_errors_add(ld->errs, "%s:1:1: cannot open: %s", path, strerror(errno));
        return;
    }
    kr_config_t *cfg = ld->cfg;
    cfg->files = xrealloc(cfg->files, (cfg->file_cnt + 1) * sizeof(char *));
    cfg->files[cfg->file_cnt++] = xstrdup(path);
    ld->file = cfg->files[cfg->file_cnt - 1];
    char *tmp = xstrdup(path);
    ld->dir = xstrdup(dirname(tmp));
    free(tmp);

    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        kr_errors_add(ld->errs, "%s:%zu:%zu: %s%s%s", path, parser.problem_mark.line + 1,
                      parser.problem_mark.column + 1, parser.problem ? parser.problem : "YAML error",
                      parser.context ? " " : "", parser.context ? parser.context : "");
    } else {
        ld->doc = &doc;
        parse_root(ld, yaml_document_get_root_node(&doc));
        ld->doc = NULL;
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(fp);
    free(ld->dir);
    ld->dir = NULL;
}

static int is_yaml_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && ((n > 5 && !strcmp(name + n - 5, ".yaml")) ||
                              (n > 4 && !strcmp(name + n - 4, ".yml")));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void load_path(loader_t *ld, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        kr_errors_add(ld->errs, "%s: %s", path, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        load_file(ld, path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        kr_errors_add(ld->errs, "%s: %s", path, strerror(errno));
        return;
    }
    char **names = NULL;
    size_t cnt = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (is_yaml_name(de->d_name)) {
            names = xrealloc(names, (cnt + 1) * sizeof(char *));
            if (asprintf(&names[cnt++], "%s/%s", path, de->d_name) < 0)
                abort();
        }
    closedir(d);
    qsort(names, cnt, sizeof(char *), cmp_str); /* load order is stable */
    if (cnt == 0)
        kr_errors_add(ld->errs, "%s: no *.yaml route files in this folder", path);
    for (size_t i = 0; i < cnt; i++) {
        load_file(ld, names[i]);
        free(names[i]);
    }
    free(names);
}

kr_config_t *kr_config_load(const char *const *paths, size_t path_cnt, kr_errors_t *errs)
{
    kr_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        abort();
    loader_t ld = {.cfg = cfg, .errs = errs, .err_start = errs->cnt};
    for (size_t i = 0; i < path_cnt; i++)
        load_path(&ld, paths[i]);
    if (errs->cnt == ld.err_start && cfg->route_cnt == 0)
        kr_errors_add(errs, "%s: no routes defined", path_cnt ? paths[0] : "(no path)");
    if (!cfg->brokers)
        cfg->brokers = xstrdup("embedded");
    if (!cfg->group)
        cfg->group = xstrdup("kroute");
    free(ld.kafka_where);
    if (errs->cnt > ld.err_start) {
        kr_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static void props_free(kr_props_t *props)
{
    for (size_t i = 0; i < props->cnt; i++) {
        free(props->v[i].name);
        free(props->v[i].value);
    }
    free(props->v);
}

void kr_config_free(kr_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        kr_route_t *r = &cfg->routes[i];
        free(r->name);
        for (size_t j = 0; j < r->pattern_cnt; j++)
            kr_pattern_free(&r->patterns[j]);
        free(r->patterns);
        free(r->handler);
        free(r->to);
        free(r->group);
        free(r->dlq);
        for (size_t j = 0; j < r->emit_cnt; j++)
            free(r->emits[j]);
        free(r->emits);
        for (size_t j = 0; j < r->request_cnt; j++)
            free(r->requests[j]);
        free(r->requests);
        free(r->where);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->file_cnt; i++)
        free(cfg->files[i]);
    free(cfg->files);
    props_free(&cfg->consumer);
    props_free(&cfg->producer);
    free(cfg->brokers);
    free(cfg->group);
    free(cfg);
}
