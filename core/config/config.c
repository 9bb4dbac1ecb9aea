/* config.c - YAML route files -> kr_config_t (see config.h).
 * libyaml's document loader gives every node a start mark, so each error is
 * reported as "file:line:col: message" at the node that is wrong. Loading
 * keeps going after an error to report every problem in one pass. This file
 * reads files and folders, bounds what a hostile file may cost, walks a
 * file's top level and frees what loading built; the schema below the top
 * level is in config_routes.c (a route), config_props.c (`kafka:` and the
 * librdkafka properties) and config_nodes.c (values, ${VAR}). It does not
 * touch Kafka or Lua. */
#include "config/config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config/config_internal.h"
#include "ops/log.h"

/* Bounds on what `kroute check` reads, so a hostile route file costs
 * little: libyaml's scanner is quadratic in flow nesting, and an alias
 * (*name) repeats a whole subtree without repeating its text. */
#define MAX_FILE_SIZE (16u << 20)
#define MAX_DEPTH 64
#define MAX_EXPANDED_NODES 100000

/* The top level of one file. handler_root is read before the routes, in
 * whatever order the keys come, as every route's handler is checked
 * against it. */
static void parse_root(loader_t *ld, yaml_node_t *root)
{
    if (!root) {
        kr_errors_add(ld->errs, "%s:1:1: empty route file", ld->file);
        return;
    }
    if (kr_cfg_expect_mapping(ld, root, "the route file") < 0)
        return;
    kr_cfg_set_handler_root(ld, root);
    int saw_routes = 0;
    FOR_PAIRS(ld, root, k, v)
    {
        if (KEY_IS(k, "kafka")) {
            kr_cfg_parse_kafka(ld, v, k);
        } else if (KEY_IS(k, "routes")) {
            saw_routes = 1;
            if (v->type != YAML_SEQUENCE_NODE) {
                kr_errors_add(ld->errs, MARK_FMT "routes must be a list, not %s", MARK(ld, v),
                              kr_cfg_node_type_name(v));
                continue;
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start;
                 it < v->data.sequence.items.top; it++)
                kr_cfg_parse_route(ld, yaml_document_get_node(ld->doc, *it));
        } else if (!KEY_IS(k, "handler_root")) { /* read first, by kr_cfg_set_handler_root */
            kr_cfg_unknown_key(ld, k, "the route file", "kafka, routes, handler_root");
        }
    }
    (void)saw_routes; /* a file may hold only `kafka:` */
}

/* The whole of a route file, NUL-terminated; NULL with the error added.
 * Opened without blocking and read only if it is a regular file: a FIFO
 * would hang `kroute check` (and a reload) forever, a device may never end. */
static char *read_file(loader_t *ld, const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        kr_errors_add(ld->errs, "%s:1:1: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        kr_errors_add(ld->errs, "%s:1:1: cannot open: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        kr_errors_add(ld->errs, "%s:1:1: not a regular file (a FIFO, device or folder cannot "
                                "be a route file)", path);
    } else if (st.st_size > MAX_FILE_SIZE) {
        kr_errors_add(ld->errs, "%s:1:1: larger than 16 MiB", path);
    } else {
        buf = kr_cfg_xrealloc(NULL, (size_t)st.st_size + 1);
        ssize_t n;
        *len = 0;
        /* a file growing while read is cut at its size when opened */
        while (*len < (size_t)st.st_size &&
               (n = read(fd, buf + *len, (size_t)st.st_size - *len)) != 0) {
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                kr_errors_add(ld->errs, "%s:1:1: cannot read: %s", path, strerror(errno));
                free(buf);
                buf = NULL;
                break;
            }
            *len += (size_t)n;
        }
        if (buf)
            buf[*len] = '\0';
    }
    close(fd);
    return buf;
}

/* A libyaml error as file:line:col. A reader error (bad UTF-8, a control
 * character) has only a byte offset: count lines and characters to it. */
static void yaml_error(loader_t *ld, const yaml_parser_t *parser, const char *buf, size_t len)
{
    size_t line = parser->problem_mark.line + 1, col = parser->problem_mark.column + 1;
    if (parser->error == YAML_READER_ERROR) {
        size_t end = parser->problem_offset < len ? parser->problem_offset : len;
        line = col = 1;
        for (size_t i = 0; i < end; i++) {
            if (buf[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)buf[i] & 0xC0) != 0x80) { /* not a continuation byte */
                col++;
            }
        }
    }
    kr_errors_add(ld->errs, "%s:%zu:%zu: %s%s%s", ld->file, line, col,
                  parser->problem ? parser->problem : "YAML error", parser->context ? " " : "",
                  parser->context ? parser->context : "");
}

/* One pass over the first document's events before libyaml builds it:
 * its scanner is quadratic in flow nesting (100k `[` took 21 s), so the
 * depth is bounded here, where stopping early costs little. Sets *aliases
 * when the document uses any. Returns 0, or -1 with the error added. */
static int check_shape(loader_t *ld, const char *buf, size_t len, int *aliases)
{
    yaml_parser_t parser;
    yaml_event_t ev;
    int depth = 0, rc = 0, done = 0;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    while (!done && rc == 0) {
        if (!yaml_parser_parse(&parser, &ev)) {
            yaml_error(ld, &parser, buf, len);
            rc = -1;
            break;
        }
        switch (ev.type) {
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (++depth > MAX_DEPTH) {
                kr_errors_add(ld->errs, "%s:%zu:%zu: nested more than %d levels deep", ld->file,
                              ev.start_mark.line + 1, ev.start_mark.column + 1, MAX_DEPTH);
                rc = -1;
            }
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: depth--; break;
        case YAML_ALIAS_EVENT: *aliases = 1; break;
        case YAML_DOCUMENT_END_EVENT: /* the loader reads only the first document */
        case YAML_STREAM_END_EVENT: done = 1; break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

/* 1 if the document, with every alias (*name) expanded, is more than
 * `budget` nodes and scalar bytes: an alias repeats a whole subtree
 * without repeating its text, so a few lines could make the schema walk
 * below visit billions of nodes (and an alias inside its own anchor never
 * ends). */
static int expands_beyond(yaml_document_t *doc, size_t budget)
{
    size_t cap = 64, top = 0, used = 0;
    int *stack = kr_cfg_xrealloc(NULL, cap * sizeof(*stack));
    stack[top++] = 1; /* the root */
    while (top > 0 && used <= budget) {
        yaml_node_t *node = yaml_document_get_node(doc, stack[--top]);
        used++;
        if (!node)
            continue;
        if (node->type == YAML_SCALAR_NODE) {
            used += node->data.scalar.length;
            continue;
        }
        size_t kids = node->type == YAML_SEQUENCE_NODE
                          ? (size_t)(node->data.sequence.items.top - node->data.sequence.items.start)
                          : 2 * (size_t)(node->data.mapping.pairs.top -
                                         node->data.mapping.pairs.start);
        if (top + kids > cap) {
            cap = (top + kids) * 2;
            stack = kr_cfg_xrealloc(stack, cap * sizeof(*stack));
        }
        if (node->type == YAML_SEQUENCE_NODE) {
            for (yaml_node_item_t *it = node->data.sequence.items.start;
                 it < node->data.sequence.items.top; it++)
                stack[top++] = *it;
        } else {
            for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
                 pair < node->data.mapping.pairs.top; pair++) {
                stack[top++] = pair->key;
                stack[top++] = pair->value;
            }
        }
    }
    free(stack);
    return used > budget;
}

static void load_file(loader_t *ld, const char *path)
{
    size_t len = 0;
    char *buf = read_file(ld, path, &len);
    if (!buf)
        return;
    kr_config_t *cfg = ld->cfg;
    cfg->files = kr_cfg_xrealloc(cfg->files, (cfg->file_cnt + 1) * sizeof(char *));
    cfg->files[cfg->file_cnt++] = kr_cfg_xstrdup(path);
    ld->file = cfg->files[cfg->file_cnt - 1];
    char *tmp = kr_cfg_xstrdup(path);
    ld->dir = kr_cfg_xstrdup(dirname(tmp));
    free(tmp);

    int aliases = 0;
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (check_shape(ld, buf, len, &aliases) < 0) {
        /* reported */
    } else if (!yaml_parser_load(&parser, &doc)) {
        yaml_error(ld, &parser, buf, len);
    } else {
        /* twice the file's own size leaves room for sensible anchors */
        if (aliases && expands_beyond(&doc, 2 * len + 100000))
            kr_errors_add(ld->errs, "%s:1:1: its aliases (*name) expand it to more than "
                                    "twice its size",
                          path);
        else {
            ld->doc = &doc;
            parse_root(ld, yaml_document_get_root_node(&doc));
            ld->doc = NULL;
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    free(buf);
    free(ld->dir);
    ld->dir = NULL;
    free(ld->handler_root);
    ld->handler_root = NULL;
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
            names = kr_cfg_xrealloc(names, (cnt + 1) * sizeof(char *));
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

/* Room left in a record for what kroute adds to a passed-through input
 * (headers, framing): max_input defaults to message.max.bytes minus this. */
static size_t max_input_room(size_t limit)
{
    return limit / 4 < (64u << 10) ? limit / 4 : (64u << 10);
}

/* The default max_input of every route without one: an eighth of its Lua
 * memory (decoding JSON takes a few times the text's size), but never
 * more than the producer can send, so an input the handler passes
 * through is not refused on the way out. An explicit larger max_input
 * is allowed (a big input may give a small output) with a warning. */
static void max_input_defaults(kr_config_t *cfg)
{
    char num[32] = "1000000";
    size_t num_size = sizeof(num);
    const char *set = NULL; /* the last setting wins, as in librdkafka */
    for (size_t i = 0; i < cfg->producer.cnt; i++)
        if (!strcmp(cfg->producer.v[i].name, "message.max.bytes"))
            set = cfg->producer.v[i].value; /* librdkafka checked it is a number */
    if (!set) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_get(conf, "message.max.bytes", num, &num_size);
        rd_kafka_conf_destroy(conf);
        set = num;
    }
    size_t limit = strtoull(set, NULL, 10);
    size_t cap = limit - max_input_room(limit);
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        kr_route_t *r = &cfg->routes[i];
        if (!r->max_input)
            r->max_input = r->memory / 8 < cap ? r->memory / 8 : cap;
        else if (r->max_input > cap)
            kr_warn("config", "%s: route '%s': max_input (%zu bytes) is more than the producer "
                              "sends (message.max.bytes %zu, less %zu for headers): an input "
                              "that large passed through is dead-lettered, its copy truncated",
                    r->where, r->name, r->max_input, limit, max_input_room(limit));
    }
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
        cfg->brokers = kr_cfg_xstrdup("embedded");
    if (!cfg->group)
        cfg->group = kr_cfg_xstrdup("kroute");
    if (errs->cnt == ld.err_start)
        max_input_defaults(cfg);
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
