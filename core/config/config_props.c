/* config_props.c - the `kafka:` section of a route file: brokers, group,
 * and the librdkafka properties a route file may set (see
 * config_internal.h). Which names are allowed is decided here, also for
 * kafkaconf.c (kr_config_prop_check): reviewing a route change with
 * `kroute check` must never run anything, and some librdkafka properties
 * load or run code, so only an allow-list gets through. */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

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
    if (kr_cfg_expect_mapping(ld, map, which) < 0)
        return;
    int is_consumer = strcmp(which, "kafka.consumer") == 0;
    FOR_PAIRS(ld, map, k, v)
    {
        const char *name = (const char *)k->data.scalar.value;
        char *value = kr_cfg_scalar(ld, v, name);
        if (!value)
            continue;
        char errstr[512];
        prop_verdict_t verdict = prop_verdict(name, value, errstr, sizeof(errstr));
        if (verdict == PROP_UNKNOWN)
            kr_errors_add(ld->errs, MARK_FMT "unknown librdkafka %s property '%s'",
                          MARK(ld, k), is_consumer ? "consumer" : "producer", name);
        else if (verdict == PROP_BAD_VALUE) /* librdkafka's text quotes the value */
            kr_errors_add(ld->errs, MARK_FMT "%s.%s: %s", MARK(ld, v), which, name,
                          kr_cfg_shown(v, value) == value ? errstr
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
        props->v = kr_cfg_xrealloc(props->v, (props->cnt + 1) * sizeof(*props->v));
        props->v[props->cnt].name = kr_cfg_xstrdup(name);
        props->v[props->cnt].value = value;
        props->cnt++;
    }
}

void kr_cfg_parse_kafka(loader_t *ld, yaml_node_t *map, yaml_node_t *key)
{
    if (ld->kafka_where) {
        kr_errors_add(ld->errs, MARK_FMT "'kafka' is already set at %s (at most one file may set it)",
                      MARK(ld, key), ld->kafka_where);
        return;
    }
    ld->kafka_where = kr_cfg_where_of(ld, key);
    if (kr_cfg_expect_mapping(ld, map, "kafka") < 0)
        return;
    kr_config_t *cfg = ld->cfg;
    FOR_PAIRS(ld, map, k, v)
    {
        if (KEY_IS(k, "brokers"))
            kr_cfg_set_nonempty(ld, v, "kafka.brokers", &cfg->brokers);
        else if (KEY_IS(k, "group"))
            kr_cfg_set_nonempty(ld, v, "kafka.group", &cfg->group);
        else if (KEY_IS(k, "consumer"))
            parse_props(ld, v, "kafka.consumer", &cfg->consumer);
        else if (KEY_IS(k, "producer"))
            parse_props(ld, v, "kafka.producer", &cfg->producer);
        else
            kr_cfg_unknown_key(ld, k, "kafka", "brokers, group, consumer, producer");
    }
}
