/* config.c - YAML route files -> kr_config_t (see config.h).
 * libyaml's document loader gives every node a start mark, so each error is
 * reported as "file:line:col: message" at the node that is wrong. Loading
 * keeps going after an error to report every problem in one pass. This file
 * knows the route-file schema; it does not touch Kafka or Lua. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "log.h"

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

/* Bounds on what `kroute check` reads, so a hostile route file costs
 * little: libyaml's scanner is quadratic in flow nesting, and an alias
 * (*name) repeats a whole subtree without repeating its text. */
#define MAX_FILE_SIZE (16u << 20)
#define MAX_DEPTH 64
#define MAX_EXPANDED_NODES 100000

/* Properties kroute sets itself: letting a route file change them would
 * break the delivery guarantee or the group model. */
static const char *const managed_props[] = {
    "bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.offset.store",
    "enable.auto.commit", "auto.commit.enable", "enable.partition.eof",
    "delivery.report.only.error", "rebalance_cb", "offset_commit_cb", "dr_msg_cb", NULL};

/* The librdkafka properties a route file may set. An allow-list, because a
 * route change reviewed with `kroute check` must never run anything, and
 * librdkafka has properties that do: plugin.library.paths dlopen()s at
 * rd_kafka_conf_set() time, sasl.kerberos.kinit.cmd is a shell command,
 * ssl.engine.location and ssl.providers load OpenSSL modules. New
 * librdkafka properties stay refused until someone adds them here. */
static const char *const allowed_props[] = {
    /* both */
    "client.id", "client.rack", "debug", "message.max.bytes", "message.copy.max.bytes",
    "receive.message.max.bytes", "max.in.flight.requests.per.connection", "max.in.flight",
    "topic.metadata.refresh.interval.ms", "metadata.max.age.ms",
    "topic.metadata.refresh.fast.interval.ms", "topic.metadata.refresh.sparse",
    "topic.metadata.propagation.max.ms", "allow.auto.create.topics", "socket.timeout.ms",
    "socket.send.buffer.bytes", "socket.receive.buffer.bytes", "socket.keepalive.enable",
    "socket.nagle.disable", "socket.max.fails", "socket.connection.setup.timeout.ms",
    "broker.address.ttl", "broker.address.family", "connections.max.idle.ms",
    "reconnect.backoff.ms", "reconnect.backoff.max.ms", "log.connection.close",
    "api.version.request", "api.version.request.timeout.ms", "api.version.fallback.ms",
    "broker.version.fallback",
    /* security: files and secrets, never code */
    "security.protocol", "ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list",
    "ssl.key.location", "ssl.key.password", "ssl.key.pem", "ssl.certificate.location",
    "ssl.certificate.pem", "ssl.ca.location", "ssl.ca.pem", "ssl.crl.location",
    "ssl.keystore.location", "ssl.keystore.password", "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm", "sasl.mechanisms", "sasl.mechanism",
    "sasl.username", "sasl.password", "sasl.kerberos.service.name", "sasl.kerberos.principal",
    "sasl.kerberos.keytab", "sasl.kerberos.min.time.before.relogin", "sasl.oauthbearer.config",
    "enable.sasl.oauthbearer.unsecure.jwt", "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.scope",
    "sasl.oauthbearer.extensions", "sasl.oauthbearer.token.endpoint.url",
    /* consumer */
    "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "coordinator.query.interval.ms", "max.poll.interval.ms",
    "auto.commit.interval.ms", "queued.min.messages", "queued.max.messages.kbytes",
    "fetch.wait.max.ms", "fetch.message.max.bytes", "max.partition.fetch.bytes",
    "fetch.max.bytes", "fetch.min.bytes", "fetch.error.backoff.ms", "isolation.level",
    "check.crcs", "auto.offset.reset",
    /* producer */
    "enable.idempotence", "enable.gapless.guarantee", "queue.buffering.max.messages",
    "queue.buffering.max.kbytes", "queue.buffering.max.ms", "linger.ms",
    "message.send.max.retries", "retries", "retry.backoff.ms",
    "queue.buffering.backpressure.threshold", "compression.codec", "compression.type",
    "compression.level", "batch.num.messages", "batch.size", "sticky.partitioning.linger.ms",
    "request.required.acks", "acks", "request.timeout.ms", "message.timeout.ms",
    "delivery.timeout.ms", "partitioner", NULL};

/* Known properties that load or run code: named as such in the error. */
static const char *const code_props[] = {
    "plugin.library.paths", "sasl.kerberos.kinit.cmd", "ssl.engine.location", "ssl.engine.id",
    "ssl.providers", "interceptors", NULL};

/* librdkafka pastes these into its kinit shell command (run when
 * sasl.mechanism is GSSAPI), so their values are held to a safe alphabet. */
static const char *const shell_pasted_props[] = {"sasl.kerberos.principal",
                                                 "sasl.kerberos.keytab", NULL};

static int in_list(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (!strcmp(*list, name))
            return 1;
    return 0;
}

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

/* What an error may show of a value: the text as written when it holds a
 * ${VAR}, so a secret from the environment never lands in a log or a CI
 * transcript; the value itself otherwise. */
static const char *shown(yaml_node_t *node, const char *value)
{
    if (node->type == YAML_SCALAR_NODE && strstr((const char *)node->data.scalar.value, "${"))
        return (const char *)node->data.scalar.value;
    return value;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
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
        size_t i = hash_str(name) & (cap - 1);
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
                      MARK(ld, node), what, lo, hi, shown(node, s));
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
                      MARK(ld, node), what, shown(node, s));
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

static char *prop_table; /* librdkafka's property table, as text */

static void read_prop_table(void)
{
    size_t len = 0;
    FILE *fp = open_memstream(&prop_table, &len);
    if (!fp)
        abort();
    rd_kafka_conf_properties_show(fp);
    fclose(fp);
}

/* 1 if librdkafka has a property of this name. Asked through its property
 * table, never rd_kafka_conf_set(): setting plugin.library.paths loads the
 * library right away. The table is read once per process. */
static int known_prop(const char *name)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, read_prop_table);
    size_t n = strlen(name);
    for (const char *line = prop_table; line;) { /* "name   | C/P | ..." */
        if (!strncmp(line, name, n) && line[n] == ' ')
            return 1;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return 0;
}

typedef enum {
    PROP_OK, PROP_UNKNOWN, PROP_MANAGED, PROP_RUNS_CODE, PROP_NOT_ALLOWED, PROP_BAD_VALUE
} prop_verdict_t;

/* Whether a route file may set name=value; errstr says why not. Only an
 * allowed name ever reaches rd_kafka_conf_set(), to check its value. */
static prop_verdict_t prop_verdict(const char *name, const char *value, char *errstr,
                                   size_t errsize)
{
    if (in_list(managed_props, name)) {
        snprintf(errstr, errsize, "librdkafka property '%s' is managed by kroute", name);
        return PROP_MANAGED;
    }
    if (in_list(code_props, name)) {
        snprintf(errstr, errsize,
                 "librdkafka property '%s' loads or runs code and is not allowed in route files",
                 name);
        return PROP_RUNS_CODE;
    }
    if (!in_list(allowed_props, name)) {
        if (!known_prop(name)) {
            snprintf(errstr, errsize, "unknown librdkafka property '%s'", name);
            return PROP_UNKNOWN;
        }
        snprintf(errstr, errsize,
                 "librdkafka property '%s' is not allowed in route files (the README lists "
                 "those that are, under Route files)",
                 name);
        return PROP_NOT_ALLOWED;
    }
    if (in_list(shell_pasted_props, name) &&
        value[strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                            "._-/@+=:,")]) {
        snprintf(errstr, errsize,
                 "may only hold letters, digits and . _ - / @ + = : , (librdkafka pastes it "
                 "into a shell command)");
        return PROP_BAD_VALUE;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value, errstr, errsize);
    rd_kafka_conf_destroy(conf);
    if (res == RD_KAFKA_CONF_UNKNOWN) /* an allowed name this librdkafka lacks */
        return PROP_UNKNOWN;
    return res == RD_KAFKA_CONF_OK ? PROP_OK : PROP_BAD_VALUE;
}

int kr_config_prop_check(const char *name, const char *value, char *errstr, size_t errsize)
{
    return prop_verdict(name, value, errstr, errsize) == PROP_OK ? 0 : -1;
}

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
        char errstr[512];
        prop_verdict_t verdict = prop_verdict(name, value, errstr, sizeof(errstr));
        if (verdict == PROP_UNKNOWN)
            kr_errors_add(ld->errs, MARK_FMT "unknown librdkafka %s property '%s'",
                          MARK(ld, k), is_consumer ? "consumer" : "producer", name);
        else if (verdict == PROP_BAD_VALUE) /* librdkafka's text quotes the value */
            kr_errors_add(ld->errs, MARK_FMT "%s.%s: %s", MARK(ld, v), which, name,
                          shown(v, value) == value ? errstr
                                                   : "the value of this ${VAR} is refused");
        else if (verdict == PROP_MANAGED)
            kr_errors_add(ld->errs, MARK_FMT "%s and cannot be set in %s", MARK(ld, k), errstr,
                          which);
        else if (verdict != PROP_OK)
            kr_errors_add(ld->errs, MARK_FMT "%s: %s", MARK(ld, k), which, errstr);
        if (verdict != PROP_OK) {
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
                  MARK(ld, node), what, shown(node, topic));
    return -1;
}

static void add_pattern(loader_t *ld, kr_route_t *r, yaml_node_t *node)
{
    char *s = scalar(ld, node, "match");
    if (!s)
        return;
    char errstr[512];
    kr_pattern_t p;
    if (kr_pattern_compile(&p, s, errstr, sizeof(errstr)) < 0) {
        /* the pattern's message quotes it: not when it came from a ${VAR} */
        if (shown(node, s) == s)
            kr_errors_add(ld->errs, MARK_FMT "%s", MARK(ld, node), errstr);
        else
            kr_errors_add(ld->errs, MARK_FMT "match '%s' is not a valid topic pattern",
                          MARK(ld, node), shown(node, s));
    } else if (p.kind == KR_MATCH_EXACT && check_topic(ld, node, "match", s) < 0) {
        kr_pattern_free(&p);
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
    if (check_topic(ld, item, what, s) < 0) {
        free(s);
        return;
    }
    /* a request's reply comes back on "<topic>.reply" */
    if (!strcmp(what, "requests") && strlen(s) > 249 - strlen(".reply")) {
        kr_errors_add(ld->errs, MARK_FMT "requests '%s': its reply topic would be longer "
                                         "than 249 characters",
                      MARK(ld, item), shown(item, s));
        free(s);
        return;
    }
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

/* `rel` against the route file's folder (kept as written: logs and specs
 * show the path the user gave). */
static char *resolve_path(loader_t *ld, const char *rel)
{
    char *path;
    if (rel[0] == '/')
        path = xstrdup(rel);
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
    const char *as_written = shown(node, path);
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
static void set_handler_root(loader_t *ld, yaml_node_t *root)
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
        set_nonempty(ld, node, "handler_root", &text);
        if (!text)
            return; /* reported: the load fails */
    }
    char *path = resolve_path(ld, text ? text : ".");
    ld->handler_root = realpath(path, NULL);
    if (!ld->handler_root && node)
        kr_errors_add(ld->errs, MARK_FMT "handler_root '%s' cannot be used: %s", MARK(ld, node),
                      shown(node, text), strerror(errno));
    else if (!ld->handler_root)
        kr_errors_add(ld->errs, "%s:1:1: its folder cannot be resolved: %s", ld->file,
                      strerror(errno));
    free(path);
    free(text);
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
                                      MARK(ld, v), shown(v, r->name), cfg->routes[i].where);
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
                r->handler = resolve_path(ld, s);
                free(s);
            }
        } else if (KEY_IS(k, "to")) {
            set_nonempty(ld, v, "to", &r->to);
            to_node = v;
            if (r->to && check_topic(ld, v, "to", r->to) < 0) {
                free(r->to);
                r->to = NULL;
            }
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
                              MARK(ld, v), shown(v, s));
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
            } else if (s && check_topic(ld, v, "dlq", s) == 0) {
                free(r->dlq);
                r->dlq = s;
            } else {
                free(s);
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
                                  MARK(ld, v), shown(v, s));
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
                                  MARK(ld, v), shown(v, s));
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
                              MARK(ld, v), shown(v, s));
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
                              MARK(ld, to_node), r->name ? r->name : "?", shown(to_node, r->to),
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
    set_handler_root(ld, root);
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
        } else if (!KEY_IS(k, "handler_root")) { /* read first, by set_handler_root */
            unknown_key(ld, k, "the route file", "kafka, routes, handler_root");
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
        buf = xrealloc(NULL, (size_t)st.st_size + 1);
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
    int *stack = xrealloc(NULL, cap * sizeof(*stack));
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
            stack = xrealloc(stack, cap * sizeof(*stack));
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
    cfg->files = xrealloc(cfg->files, (cfg->file_cnt + 1) * sizeof(char *));
    cfg->files[cfg->file_cnt++] = xstrdup(path);
    ld->file = cfg->files[cfg->file_cnt - 1];
    char *tmp = xstrdup(path);
    ld->dir = xstrdup(dirname(tmp));
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
        cfg->brokers = xstrdup("embedded");
    if (!cfg->group)
        cfg->group = xstrdup("kroute");
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
