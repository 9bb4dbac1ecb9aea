/* config_internal.h - what the route-file loader's files share and nothing
 * else sees: the loader's state while files are read, the file:line:col
 * mark every error starts with, the walk over a mapping's pairs, and the
 * functions one config*.c file calls in another. config.h is the public
 * API. Ownership: everything the loader allocates for the result goes into
 * the kr_config_t (kr_config_free frees it); the loader's own strings
 * (dir, handler_root, kafka_where) are freed by config.c. */
#ifndef KR_CONFIG_INTERNAL_H
#define KR_CONFIG_INTERNAL_H

#include <string.h>
#include <yaml.h>

#include "config/config.h"

typedef struct loader {
    kr_config_t *cfg;
    kr_errors_t *errs;
    size_t err_start;        /* errs->cnt when loading began */
    const char *file;        /* file being read */
    char *dir;               /* its folder, for handler paths */
    char *handler_root;      /* realpath handlers must stay under (NULL: unknown) */
    yaml_document_t *doc;
    char *kafka_where;       /* where `kafka:` was first set */
    size_t route_cap;
} loader_t;

#define MARK_FMT "%s:%zu:%zu: "
#define MARK(ld, node) (ld)->file, (node)->start_mark.line + 1, (node)->start_mark.column + 1

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

/* config_nodes.c: YAML nodes to values, ${VAR} expanded */
char *kr_cfg_xstrdup(const char *s);
void *kr_cfg_xrealloc(void *p, size_t n);
char *kr_cfg_where_of(loader_t *ld, yaml_node_t *node);
const char *kr_cfg_node_type_name(yaml_node_t *node);
char *kr_cfg_scalar(loader_t *ld, yaml_node_t *node, const char *what);
const char *kr_cfg_shown(yaml_node_t *node, const char *value);
int kr_cfg_expect_mapping(loader_t *ld, yaml_node_t *node, const char *what);
int kr_cfg_parse_int(loader_t *ld, yaml_node_t *node, const char *what, int lo, int hi, int *out);
int kr_cfg_parse_duration_node(loader_t *ld, yaml_node_t *node, const char *what, int64_t *out);
int kr_cfg_parse_bool_text(const char *s, int *out);
void kr_cfg_unknown_key(loader_t *ld, yaml_node_t *key, const char *section, const char *allowed);
void kr_cfg_set_nonempty(loader_t *ld, yaml_node_t *node, const char *what, char **dst);

/* config_props.c: the `kafka:` section and the librdkafka properties */
void kr_cfg_parse_kafka(loader_t *ld, yaml_node_t *map, yaml_node_t *key);

/* config_routes.c: one route, and the handler root its handlers are under */
void kr_cfg_set_handler_root(loader_t *ld, yaml_node_t *root);
void kr_cfg_parse_route(loader_t *ld, yaml_node_t *map);

#endif
