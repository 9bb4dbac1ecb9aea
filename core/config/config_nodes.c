/* config_nodes.c - YAML nodes to values for the route-file loader (see
 * config_internal.h): a scalar's text with ${VAR} and ${VAR:-default}
 * expanded, integers, durations, sizes and booleans, mappings checked for
 * duplicate keys, and the texts errors show (a value from the environment
 * is shown as written, never expanded). Every helper reports its own error
 * at the node; none knows what a route or a Kafka property is. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"
#include "hash.h"

char *kr_cfg_xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

void *kr_cfg_xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        abort();
    return p;
}

char *kr_cfg_where_of(loader_t *ld, yaml_node_t *node)
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
    char *out = kr_cfg_xrealloc(NULL, cap);
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
            owned = kr_cfg_xstrdup(val);
            free(expr);
            piece = owned;
            piece_len = strlen(owned);
            p = close + 1;
        } else {
            p++;
        }
        if (len + piece_len + 1 > cap) {
            cap = (len + piece_len + 1) * 2;
            out = kr_cfg_xrealloc(out, cap);
        }
        memcpy(out + len, piece, piece_len);
        len += piece_len;
        free(owned);
    }
    out[len] = '\0';
    return out;
}

const char *kr_cfg_node_type_name(yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "empty";
    }
}

/* A scalar's text with ${VAR} expanded; NULL (error added) otherwise. */
char *kr_cfg_scalar(loader_t *ld, yaml_node_t *node, const char *what)
{
    if (node->type != YAML_SCALAR_NODE) {
        kr_errors_add(ld->errs, MARK_FMT "%s must be a string, not %s", MARK(ld, node), what,
                      kr_cfg_node_type_name(node));
        return NULL;
    }
    return expand_env(ld, node, (const char *)node->data.scalar.value);
}

/* What an error may show of a value: the text as written when it holds a
 * ${VAR}, so a secret from the environment never lands in a log or a CI
 * transcript; the value itself otherwise. */
const char *kr_cfg_shown(yaml_node_t *node, const char *value)
{
    if (node->type == YAML_SCALAR_NODE && strstr((const char *)node->data.scalar.value, "${"))
        return (const char *)node->data.scalar.value;
    return value;
}

/* YAML lets a later duplicate key silently win; in a route file that hides
 * mistakes (two `to:`), so it is an error. A hash set keeps this linear: a
 * mapping may have 100k keys. */
static void check_duplicate_keys(loader_t *ld, yaml_node_t *map)
{
    yaml_node_pair_t *start = map->data.mapping.pairs.start, *top = map->data.mapping.pairs.top;
    size_t cap = 16;
    while (cap < (size_t)(top - start) * 2)
        cap *= 2;
    yaml_node_t **slots = calloc(cap, sizeof(*slots)); /* first key of each name */
    if (!slots)
        abort();
    for (yaml_node_pair_t *a = start; a < top; a++) {
        yaml_node_t *ka = yaml_document_get_node(ld->doc, a->key);
        if (ka->type != YAML_SCALAR_NODE)
            continue;
        const char *name = (const char *)ka->data.scalar.value;
        size_t i = kr_hash_bytes(name, strlen(name), KR_HASH_SEED) & (cap - 1);
        while (slots[i] && strcmp((const char *)slots[i]->data.scalar.value, name))
            i = (i + 1) & (cap - 1);
        if (!slots[i])
            slots[i] = ka;
        else
            kr_errors_add(ld->errs, MARK_FMT "duplicate key '%s' (first at line %zu)",
                          MARK(ld, ka), name, slots[i]->start_mark.line + 1);
    }
    free(slots);
}

int kr_cfg_expect_mapping(loader_t *ld, yaml_node_t *node, const char *what)
{
    if (node->type == YAML_MAPPING_NODE) {
        check_duplicate_keys(ld, node);
        return 0;
    }
    kr_errors_add(ld->errs, MARK_FMT "%s must be a mapping, not %s", MARK(ld, node), what,
                  kr_cfg_node_type_name(node));
    return -1;
}

int kr_cfg_parse_int(loader_t *ld, yaml_node_t *node, const char *what, int lo, int hi, int *out)
{
    char *s = kr_cfg_scalar(ld, node, what);
    if (!s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    int bad = end == s || *end || errno || v < lo || v > hi;
    if (bad)
        kr_errors_add(ld->errs, MARK_FMT "%s must be an integer from %d to %d, got '%s'",
                      MARK(ld, node), what, lo, hi, kr_cfg_shown(node, s));
    free(s);
    if (bad)
        return -1;
    *out = (int)v;
    return 0;
}

int kr_cfg_parse_duration_node(loader_t *ld, yaml_node_t *node, const char *what, int64_t *out)
{
    char *s = kr_cfg_scalar(ld, node, what);
    if (!s)
        return -1;
    int64_t v = kr_config_parse_duration(s);
    if (v < 0)
        kr_errors_add(ld->errs,
                      MARK_FMT "%s must be a duration like 200ms, 5s or 1m, got '%s'",
                      MARK(ld, node), what, kr_cfg_shown(node, s));
    free(s);
    if (v < 0)
        return -1;
    *out = v;
    return 0;
}

int kr_cfg_parse_bool_text(const char *s, int *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = 0;
    else
        return -1;
    return 0;
}

void kr_cfg_unknown_key(loader_t *ld, yaml_node_t *key, const char *section,
                        const char *allowed)
{
    kr_errors_add(ld->errs, MARK_FMT "unknown key '%s' in %s (expected one of: %s)",
                  MARK(ld, key), (const char *)key->data.scalar.value, section, allowed);
}

/* Replaces *dst with the scalar's text; empty text is an error. */
void kr_cfg_set_nonempty(loader_t *ld, yaml_node_t *node, const char *what, char **dst)
{
    char *s = kr_cfg_scalar(ld, node, what);
    if (s && !*s) {
        kr_errors_add(ld->errs, MARK_FMT "%s is empty", MARK(ld, node), what);
        free(s);
    } else if (s) {
        free(*dst);
        *dst = s;
    }
}
