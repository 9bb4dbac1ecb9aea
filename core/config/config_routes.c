/* config_routes.c - one route of a route file into a kr_route_t (see
 * config_internal.h): match patterns, the handler file (which must stay
 * under the handler root), to/dlq/emits/requests topics, ordering, retry,
 * timeout, memory and max_input, and the checks across them (a route that
 * would consume its own output). The defaults a route gets are set here,
 * in kr_cfg_parse_route; max_input's default is config.c's, as it needs every file. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "grow.h"

/* Kafka's rule for topic names: what a broker would refuse at run time is
 * an error at load. */
static int valid_topic(const char *t)
{
    size_t n = strlen(t);
    return n >= 1 && n <= 249 && strcmp(t, ".") && strcmp(t, "..") &&
           t[strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")] ==
               '\0';
}

/* 0, or -1 with an error at `node` when `topic` is not a valid name. */
static int check_topic(loader_t *ld, yaml_node_t *node, const char *what, const char *topic)
{
    if (valid_topic(topic))
        return 0;
    kr_errors_add(ld->errs,
                  MARK_FMT "%s '%s' is not a valid Kafka topic name (1 to 249 characters of "
                           "a-z, A-Z, 0-9, '.', '_' and '-'; not '.' or '..')",
                  MARK(ld, node), what, kr_cfg_shown(node, topic));
    return -1;
}

static void add_pattern(loader_t *ld, kr_route_t *r, yaml_node_t *node)
{
    char *s = kr_cfg_scalar(ld, node, "match");
    if (!s)
        return;
    char errstr[512];
    kr_pattern_t p;
    if (kr_pattern_compile(&p, s, errstr, sizeof(errstr)) < 0) {
        /* the pattern's message quotes it: not when it came from a ${VAR} */
        if (kr_cfg_shown(node, s) == s)
            kr_errors_add(ld->errs, MARK_FMT "%s", MARK(ld, node), errstr);
        else
            kr_errors_add(ld->errs, MARK_FMT "match '%s' is not a valid topic pattern",
                          MARK(ld, node), kr_cfg_shown(node, s));
    } else if (p.kind == KR_MATCH_EXACT && check_topic(ld, node, "match", s) < 0) {
        kr_pattern_free(&p);
    } else {
        r->patterns = kr_cfg_xrealloc(r->patterns, (r->pattern_cnt + 1) * sizeof(*r->patterns));
        r->patterns[r->pattern_cnt++] = p;
    }
    free(s);
}

static void add_list_item(loader_t *ld, yaml_node_t *item, const char *what, char ***items,
                          size_t *cnt)
{
    char *s = NULL;
    kr_cfg_set_nonempty(ld, item, what, &s);
    if (!s)
        return;
    if (check_topic(ld, item, what, s) < 0) {
        free(s);
        return;
    }
    /* a request's reply comes back on "<topic>.reply" */
    if (!strcmp(what, "requests") && strlen(s) > 249 - strlen(".reply")) {
        kr_errors_add(ld->errs, MARK_FMT "requests '%s': its reply topic would be longer "
                                         "than 249 characters",
                      MARK(ld, item), kr_cfg_shown(item, s));
        free(s);
        return;
    }
    *items = kr_cfg_xrealloc(*items, (*cnt + 1) * sizeof(char *));
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
    if (kr_cfg_expect_mapping(ld, map, "retry") < 0)
        return;
    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "attempts"))
            kr_cfg_parse_int(ld, v, "retry.attempts", 1, 1000, &r->attempts);
        else if (KEY_IS(k, "backoff"))
            kr_cfg_parse_duration_node(ld, v, "retry.backoff", &r->backoff_ms);
        else if (KEY_IS(k, "max_backoff"))
            kr_cfg_parse_duration_node(ld, v, "retry.max_backoff", &r->max_backoff_ms);
        else
            kr_cfg_unknown_key(ld, k, "retry", "attempts, backoff, max_backoff");
    }
}

/* `rel` against the route file's folder (kept as written: logs and specs
 * show the path the user gave). */
static char *resolve_path(loader_t *ld, const char *rel)
{
    char *path;
    if (rel[0] == '/')
        path = kr_cfg_xstrdup(rel);
    else if (asprintf(&path, "%s/%s", ld->dir, rel) < 0)
        abort();
    return path;
}

static int path_under(const char *path, const char *root)
{
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return 1;
    return !strncmp(path, root, n) && (path[n] == '/' || path[n] == '\0');
}

/* A handler must be a regular file under the handler root (the route
 * file's folder unless `handler_root:` widens it), symlinks resolved: a
 * route file must not make kroute read /etc/shadow or any file it was not
 * meant to. Nothing outside the root is opened, and a FIFO or device is
 * never read (it would block or never end). */
static void check_handler(loader_t *ld, yaml_node_t *node, const char *path)
{
    const char *as_written = kr_cfg_shown(node, path);
    char *real = realpath(path, NULL);
    if (!real) {
        kr_errors_add(ld->errs, MARK_FMT "handler file '%s' cannot be read: %s", MARK(ld, node),
                      as_written, strerror(errno));
        return;
    }
    struct stat st;
    int fd = -1;
    if (ld->handler_root && !path_under(real, ld->handler_root))
        kr_errors_add(ld->errs,
                      MARK_FMT "handler file '%s' is outside %s, the folder handlers must be "
                               "in (move it there, or set `handler_root:` in the route file)",
                      MARK(ld, node), as_written, ld->handler_root);
    else if ((fd = open(real, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        kr_errors_add(ld->errs, MARK_FMT "handler file '%s' cannot be read: %s", MARK(ld, node),
                      as_written, strerror(errno));
    else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        kr_errors_add(ld->errs, MARK_FMT "handler file '%s' is not a regular file",
                      MARK(ld, node), as_written);
    if (fd >= 0)
        close(fd);
    free(real);
}

/* `handler_root:` of the file being read, set before its routes are:
 * handlers must resolve under it. */
void kr_cfg_set_handler_root(loader_t *ld, yaml_node_t *root)
{
    yaml_node_t *node = NULL;
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k->type == YAML_SCALAR_NODE && KEY_IS(k, "handler_root"))
            node = yaml_document_get_node(ld->doc, pair->value);
    }
    char *text = NULL;
    if (node) {
        kr_cfg_set_nonempty(ld, node, "handler_root", &text);
        if (!text)
            return; /* reported: the load fails */
    }
    char *path = resolve_path(ld, text ? text : ".");
    ld->handler_root = realpath(path, NULL);
    if (!ld->handler_root && node)
        kr_errors_add(ld->errs, MARK_FMT "handler_root '%s' cannot be used: %s", MARK(ld, node),
                      kr_cfg_shown(node, text), strerror(errno));
    else if (!ld->handler_root)
        kr_errors_add(ld->errs, "%s:1:1: its folder cannot be resolved: %s", ld->file,
                      strerror(errno));
    free(path);
    free(text);
}

void kr_cfg_parse_route(loader_t *ld, yaml_node_t *map)
{
    if (kr_cfg_expect_mapping(ld, map, "a route") < 0)
        return;
    kr_config_t *cfg = ld->cfg;
    cfg->routes = kr_grow(cfg->routes, &ld->route_cap, cfg->route_cnt, sizeof(*cfg->routes), 8);
    kr_route_t *r = &cfg->routes[cfg->route_cnt];
    memset(r, 0, sizeof(*r));
    r->index = cfg->route_cnt++;
    r->ordering = KR_ORDER_PARTITION;
    r->attempts = 3;
    r->backoff_ms = 200;
    r->max_backoff_ms = 5000;
    r->timeout_ms = 5000;
    r->memory = 64u << 20;
    r->where = kr_cfg_where_of(ld, map);
    yaml_node_t *handler_node = NULL, *match_node = NULL, *to_node = NULL;
    yaml_node_t *max_input_node = NULL;

    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "name")) {
            kr_cfg_set_nonempty(ld, v, "name", &r->name);
            if (r->name)
                for (size_t i = 0; i < r->index; i++)
                    if (cfg->routes[i].name && !strcmp(cfg->routes[i].name, r->name))
                        kr_errors_add(ld->errs, MARK_FMT "duplicate route name '%s' (first at %s)",
                                      MARK(ld, v), kr_cfg_shown(v, r->name), cfg->routes[i].where);
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
            char *s = kr_cfg_scalar(ld, v, "handler");
            handler_node = v;
            if (s) {
                free(r->handler);
                r->handler = resolve_path(ld, s);
                free(s);
            }
        } else if (KEY_IS(k, "to")) {
            kr_cfg_set_nonempty(ld, v, "to", &r->to);
            to_node = v;
            if (r->to && check_topic(ld, v, "to", r->to) < 0) {
                free(r->to);
                r->to = NULL;
            }
        } else if (KEY_IS(k, "group")) {
            kr_cfg_set_nonempty(ld, v, "group", &r->group);
        } else if (KEY_IS(k, "ordering")) {
            char *s = kr_cfg_scalar(ld, v, "ordering");
            if (s && !strcmp(s, "partition"))
                r->ordering = KR_ORDER_PARTITION;
            else if (s && !strcmp(s, "key"))
                r->ordering = KR_ORDER_KEY;
            else if (s && !strcmp(s, "none"))
                r->ordering = KR_ORDER_NONE;
            else if (s)
                kr_errors_add(ld->errs,
                              MARK_FMT "ordering must be partition, key or none, got '%s'",
                              MARK(ld, v), kr_cfg_shown(v, s));
            free(s);
        } else if (KEY_IS(k, "retry")) {
            parse_retry(ld, r, v);
        } else if (KEY_IS(k, "dlq")) {
            char *s = kr_cfg_scalar(ld, v, "dlq");
            int b;
            if (s && kr_cfg_parse_bool_text(s, &b) == 0) {
                if (b)
                    kr_errors_add(ld->errs,
                                  MARK_FMT "dlq takes a topic name or false (the default is "
                                           "\"<topic>.dlq\")",
                                  MARK(ld, v));
                r->dlq_off = !b;
                free(s);
            } else if (s && check_topic(ld, v, "dlq", s) == 0) {
                free(r->dlq);
                r->dlq = s;
            } else {
                free(s);
            }
        } else if (KEY_IS(k, "timeout")) {
            kr_cfg_parse_duration_node(ld, v, "timeout", &r->timeout_ms);
            if (r->timeout_ms == 0)
                kr_errors_add(ld->errs, MARK_FMT "timeout must be greater than 0", MARK(ld, v));
        } else if (KEY_IS(k, "memory")) {
            char *s = kr_cfg_scalar(ld, v, "memory");
            if (s) {
                size_t m = kr_config_parse_size(s);
                if (m < (1u << 20))
                    kr_errors_add(ld->errs,
                                  MARK_FMT "memory must be a size of at least 1MiB like "
                                           "64MiB, got '%s'",
                                  MARK(ld, v), kr_cfg_shown(v, s));
                else
                    r->memory = m;
                free(s);
            }
        } else if (KEY_IS(k, "max_input")) {
            char *s = kr_cfg_scalar(ld, v, "max_input");
            if (s) {
                r->max_input = kr_config_parse_size(s);
                max_input_node = v;
                if (!r->max_input)
                    kr_errors_add(ld->errs,
                                  MARK_FMT "max_input must be a size like 1MiB, got '%s'",
                                  MARK(ld, v), kr_cfg_shown(v, s));
                free(s);
            }
        } else if (KEY_IS(k, "emits")) {
            parse_list(ld, v, "emits", &r->emits, &r->emit_cnt);
        } else if (KEY_IS(k, "requests")) {
            parse_list(ld, v, "requests", &r->requests, &r->request_cnt);
        } else if (KEY_IS(k, "reply")) {
            char *s = kr_cfg_scalar(ld, v, "reply");
            if (s && !strcmp(s, "nest"))
                r->reply_nest = 1;
            else if (s && strcmp(s, "none") != 0)
                kr_errors_add(ld->errs, MARK_FMT "reply must be nest or none, got '%s'",
                              MARK(ld, v), kr_cfg_shown(v, s));
            free(s);
        } else {
            kr_cfg_unknown_key(ld, k, "route",
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
    } else if (r->handler) {
        check_handler(ld, handler_node, r->handler);
    }
    if (r->max_backoff_ms < r->backoff_ms)
        r->max_backoff_ms = r->backoff_ms;
    /* without max_input, r->max_input stays 0: its default depends on the
     * producer's limit, known once every file is read (max_input_defaults) */
    if (max_input_node && r->max_input > r->memory)
        kr_errors_add(ld->errs, MARK_FMT "max_input (%zu bytes) is larger than memory (%zu bytes)",
                      MARK(ld, max_input_node), r->max_input, r->memory);
    /* A route whose output feeds its own input loops forever. */
    if (r->to && to_node)
        for (size_t i = 0; i < r->pattern_cnt; i++)
            if (kr_pattern_match(&r->patterns[i], r->to))
                kr_errors_add(ld->errs,
                              MARK_FMT "route '%s' sends to '%s', which its own match '%s' "
                                       "would consume again (a loop)",
                              MARK(ld, to_node), r->name ? r->name : "?", kr_cfg_shown(to_node, r->to),
                              r->patterns[i].text);
}
