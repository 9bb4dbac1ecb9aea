/* testsupport/admin.c - topics and cluster metadata on a real Kafka cluster,
 * through librdkafka's Admin API and Metadata requests: create_topics (and
 * wait until every partition has a leader), delete_topics (and wait until
 * they are gone), partition_leaders, brokers. Every call is bounded by a
 * timeout and reports failures as `nil, err`. The mock cluster implements
 * no Admin API: there, use the mock object's create_topic (mock.c);
 * partition_leaders and brokers work on both. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "clock.h"

#define KR_TS_ADMIN_MS 30000   /* default bound of create/delete_topics */
#define KR_TS_TOPIC_MAX 249    /* Kafka's limit on a topic name's length */
#define KR_TS_PARTS_MAX 100000 /* as the mock's create_topic */

/* One topic a call works on. parts < 0: any partition count (a topic that
 * already existed under exist_ok, or one being deleted). */
typedef struct kr_ts_want {
    char name[KR_TS_TOPIC_MAX + 1];
    int parts;
} kr_ts_want_t;

/* The options every call here takes: opts.timeout (ms, the whole call). */
static int64_t kr_ts_admin_deadline(lua_State *L, int opts, const char *fn,
                                    lua_Integer dflt)
{
    lua_Integer ms = dflt;
    if (opts && (kr_ts_int_field(L, opts, "timeout", &ms) < 0 || ms < 1 || ms > 3600000))
        luaL_error(L, "%s: opts.timeout must be an integer in 1..3600000 (ms)", fn);
    return kr_clock_ms() + ms;
}

/* Index of an optional opts table argument, or 0 when absent. */
static int kr_ts_admin_opts(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return 0;
    luaL_checktype(L, arg, LUA_TTABLE);
    return arg;
}

/* Writes "<what>" to err, followed by the client's latest error when there
 * is one: a timeout alone does not say that the broker refused connections. */
static void kr_ts_admin_why(kr_ts_res_t *res, const char *what, char *err, size_t errsz)
{
    rd_kafka_poll(res->rk, 0); /* serves pending error_cb calls */
    int len = res->last_err[0]
                  ? snprintf(err, errsz, "%s (last client error: %s)", what, res->last_err)
                  : snprintf(err, errsz, "%s", what);
    if (len >= (int)errsz && errsz > 4)
        memcpy(err + errsz - 4, "...", 4); /* shows that the text was cut */
}

/* Makes the handle of an admin call. Its errors are recorded (error_cb) and
 * end up in the returned message, so they are not logged as well. Returns
 * 0, or 2 with nil, err pushed. */
static int kr_ts_admin_connect(lua_State *L, kr_ts_res_t *res, const char *brokers,
                               const char *fn)
{
    static const char *const kv[] = {"log_level", "2", NULL};
    char err[512];
    if (kr_ts_connect(res, RD_KAFKA_PRODUCER, brokers, kv, kr_ts_conf_error_cb, err,
                      sizeof(err)) != 0)
        return kr_ts_fail(L, "%s: %s", fn, err);
    return 0;
}

/* Replaces res->md with fresh metadata (every topic's when all_topics, else
 * brokers only) within ms. Returns 0, or -1 with err filled. */
static int kr_ts_admin_metadata(kr_ts_res_t *res, int all_topics, int64_t ms, char *err,
                                size_t errsz)
{
    if (res->md)
        rd_kafka_metadata_destroy(res->md);
    res->md = NULL;
    if (ms < 1)
        ms = 1;
    rd_kafka_resp_err_t e =
        rd_kafka_metadata(res->rk, all_topics, NULL, &res->md, ms > 2000 ? 2000 : (int)ms);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    res->md = NULL;
    char what[256];
    snprintf(what, sizeof(what), "metadata: %s", rd_kafka_err2str(e));
    kr_ts_admin_why(res, what, err, errsz);
    return -1;
}

/* [-0, +1|3, e] For partition_leaders and brokers: reads the optional opts
 * table at opts_arg ({timeout = 10000 ms}) and fetches metadata (every
 * topic's when all_topics) into a new resource holder, retrying failed
 * requests until the deadline (an absent topic is an answer, not a
 * failure). Returns the holder, or NULL with nil, err pushed above it. */
static kr_ts_res_t *kr_ts_admin_describe(lua_State *L, const char *brokers, int opts_arg,
                                         int all_topics, const char *fn)
{
    int64_t deadline = kr_ts_admin_deadline(L, kr_ts_admin_opts(L, opts_arg), fn,
                                            KR_TS_META_MS);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    if (kr_ts_admin_connect(L, res, brokers, fn))
        return NULL;
    while (kr_ts_admin_metadata(res, all_topics, deadline - kr_clock_ms(), err,
                                sizeof(err)) != 0) {
        if (kr_clock_ms() >= deadline) {
            kr_ts_fail(L, "%s: %s", fn, err);
            return NULL;
        }
        kr_ts_sleep_ms(100);
    }
    return res;
}

static const rd_kafka_metadata_topic_t *kr_ts_admin_find(const struct rd_kafka_metadata *md,
                                                         const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, name) == 0)
            return &md->topics[i];
    return NULL;
}

/* Why `want` is not yet as the caller waits for it (present with every
 * partition led, or gone), written to err; NULL when it is. */
static const char *kr_ts_admin_pending(const rd_kafka_metadata_topic_t *t,
                                       const kr_ts_want_t *want, int present, char *err,
                                       size_t errsz)
{
    if (!present) {
        if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return NULL;
        snprintf(err, errsz, "%s is still listed in metadata", want->name);
        return err;
    }
    if (!t)
        snprintf(err, errsz, "%s is missing from metadata", want->name);
    else if (t->err)
        snprintf(err, errsz, "%s: %s", want->name, rd_kafka_err2str(t->err));
    else if (want->parts >= 0 && t->partition_cnt != want->parts)
        snprintf(err, errsz, "%s shows %d of %d partitions", want->name, t->partition_cnt,
                 want->parts);
    else {
        for (int p = 0; p < t->partition_cnt; p++)
            if (t->partitions[p].leader < 0 || t->partitions[p].err) {
                snprintf(err, errsz, "%s [%d] has no leader", want->name,
                         (int)t->partitions[p].id);
                return err;
            }
        return NULL;
    }
    return err;
}

/* Polls metadata until every topic of wants[0..n) is present with a leader
 * for each partition (present) or absent (!present), or the deadline.
 * Returns 0, or -1 with err saying what was still missing. */
static int kr_ts_admin_settle(kr_ts_res_t *res, const kr_ts_want_t *wants, size_t n,
                              int present, int64_t deadline, char *err, size_t errsz)
{
    for (;;) {
        const char *pending = NULL;
        if (kr_ts_admin_metadata(res, 1, deadline - kr_clock_ms(), err, errsz) != 0)
            pending = err;
        for (size_t i = 0; !pending && i < n; i++)
            pending = kr_ts_admin_pending(kr_ts_admin_find(res->md, wants[i].name),
                                          &wants[i], present, err, errsz);
        if (!pending)
            return 0;
        if (kr_clock_ms() >= deadline)
            return -1;
        kr_ts_sleep_ms(100);
    }
}

/* Sends nothing: waits for the admin result on res->rkqu, serving error
 * callbacks meanwhile. librdkafka ends the request at its request timeout
 * (the deadline); the grace only covers the event's way back. Takes the
 * event into res->rkev. Returns 0, or -1 with err filled. */
static int kr_ts_admin_result(kr_ts_res_t *res, int64_t deadline, char *err, size_t errsz)
{
    int64_t give_up = deadline + 5000;
    while (!res->rkev) {
        res->rkev = rd_kafka_queue_poll(res->rkqu, 100);
        rd_kafka_poll(res->rk, 0);
        if (!res->rkev && kr_clock_ms() > give_up) {
            kr_ts_admin_why(res, "no reply in time", err, errsz);
            return -1;
        }
    }
    if (rd_kafka_event_error(res->rkev)) {
        kr_ts_admin_why(res, rd_kafka_event_error_string(res->rkev), err, errsz);
        return -1;
    }
    return 0;
}

/* Sets request and broker-side operation timeouts to fit the deadline. */
static int kr_ts_admin_options(kr_ts_res_t *res, rd_kafka_admin_op_t op, int64_t deadline,
                               char *err, size_t errsz)
{
    int64_t left = deadline - kr_clock_ms();
    if (left < 100)
        left = 100;
    res->aopts = rd_kafka_AdminOptions_new(res->rk, op);
    res->rkqu = rd_kafka_queue_new(res->rk);
    if (!res->aopts || !res->rkqu) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    /* The broker answers within the operation timeout, a bit before the
     * client gives up on the request. */
    if (rd_kafka_AdminOptions_set_request_timeout(res->aopts, (int)left, err, errsz) ||
        rd_kafka_AdminOptions_set_operation_timeout(res->aopts, (int)(left * 2 / 3), err,
                                                    errsz))
        return -1;
    return 0;
}

/* Per-topic results: TOPIC_ALREADY_EXISTS (create) or UNKNOWN_TOPIC_OR_PART
 * (delete) are accepted when `tolerated` names that code, and mark the
 * topic's partition count as unknown. Returns 0, or -1 with err listing the
 * first failure and how many there were. */
static int kr_ts_admin_check(const rd_kafka_topic_result_t **results, size_t cnt,
                             rd_kafka_resp_err_t tolerated, kr_ts_want_t *wants, size_t n,
                             char *err, size_t errsz)
{
    size_t failed = 0;
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(results[i]);
        const char *name = rd_kafka_topic_result_name(results[i]);
        if (e && e == tolerated) {
            for (size_t w = 0; w < n; w++)
                if (strcmp(wants[w].name, name) == 0)
                    wants[w].parts = -1;
        } else if (e && failed++ == 0) {
            const char *why = rd_kafka_topic_result_error_string(results[i]);
            snprintf(err, errsz, "%s: %s", name, why ? why : rd_kafka_err2str(e));
        }
    }
    if (failed > 1) {
        size_t len = strlen(err);
        snprintf(err + len, errsz - len, " (and %zu more)", failed - 1);
    }
    return failed ? -1 : 0;
}

/* Copies one topic entry of the Lua array at `arr` into want: "name" or
 * "name:partitions" (1 partition by default). Raises on a malformed one. */
static void kr_ts_admin_want(lua_State *L, int arr, lua_Integer i, int with_parts,
                             const char *fn, kr_ts_want_t *want)
{
    if (lua_geti(L, arr, i) != LUA_TSTRING)
        luaL_error(L, "%s: topics[%d] must be a string", fn, (int)i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    const char *colon = with_parts ? strrchr(s, ':') : NULL;
    size_t namelen = colon ? (size_t)(colon - s) : len;
    want->parts = 1;
    if (colon) {
        char *end;
        long parts = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || *end || parts < 1 || parts > KR_TS_PARTS_MAX)
            luaL_error(L, "%s: topics[%d] '%s': partitions must be 1..%d", fn, (int)i, s,
                       KR_TS_PARTS_MAX);
        want->parts = (int)parts;
    }
    if (namelen < 1 || namelen > KR_TS_TOPIC_MAX || memchr(s, '\0', namelen))
        luaL_error(L, "%s: topics[%d] '%s': the name must be 1..%d characters", fn, (int)i,
                   s, KR_TS_TOPIC_MAX);
    memcpy(want->name, s, namelen);
    want->name[namelen] = '\0';
    lua_pop(L, 1);
}

/* [-0, +1, m] Reads the array of topics at arg into a new userdata of
 * *n entries, left on the stack. */
static kr_ts_want_t *kr_ts_admin_wants(lua_State *L, int arg, int with_parts,
                                       const char *fn, size_t *n)
{
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer len = luaL_len(L, arg);
    if (len < 1 || len > 10000)
        luaL_error(L, "%s: topics must be an array of 1..10000 names", fn);
    kr_ts_want_t *wants = lua_newuserdatauv(L, (size_t)len * sizeof(*wants), 0);
    for (lua_Integer i = 1; i <= len; i++)
        kr_ts_admin_want(L, arg, i, with_parts, fn, &wants[i - 1]);
    *n = (size_t)len;
    return wants;
}

/* Applies opts.config ({name = value}) to every new topic. Raises on a
 * malformed entry. */
static void kr_ts_admin_config(lua_State *L, int opts, kr_ts_res_t *res)
{
    if (!opts)
        return;
    int t = lua_getfield(L, opts, "config");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "create_topics: opts.config must be a table");
    int config = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, config) != 0) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
            luaL_error(L, "create_topics: opts.config must map names to strings");
        const char *name = lua_tostring(L, -2);
        const char *value = luaL_tolstring(L, -1, NULL); /* a copy: keeps the key */
        for (size_t i = 0; i < res->ntopics; i++)
            if (rd_kafka_NewTopic_set_config(res->newts[i], name, value))
                luaL_error(L, "create_topics: opts.config.%s: rejected", name);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
}

/* Reads opts[field] as a flag (absent: false). */
static int kr_ts_admin_flag(lua_State *L, int opts, const char *field)
{
    if (!opts)
        return 0;
    lua_getfield(L, opts, field);
    int on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return on;
}

/* Sends the CreateTopics (res->newts) or DeleteTopics (res->delts) request
 * built in res, within the deadline, and waits until metadata shows its
 * outcome for wants[0..n): created topics with a leader for every
 * partition, deleted ones gone. With `tolerant`, a topic that already
 * exists (create) or is unknown (delete) is no failure.
 * [-0, +1|2, e] pushes true, or nil, err. */
static int kr_ts_admin_run(lua_State *L, kr_ts_res_t *res, const char *brokers,
                           rd_kafka_admin_op_t op, kr_ts_want_t *wants, size_t n,
                           int tolerant, int64_t deadline)
{
    int create = op == RD_KAFKA_ADMIN_OP_CREATETOPICS;
    const char *fn = create ? "create_topics" : "delete_topics";
    rd_kafka_resp_err_t tolerated = !tolerant ? RD_KAFKA_RESP_ERR_NO_ERROR
                                    : create  ? RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS
                                              : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    char err[512];
    if (kr_ts_admin_connect(L, res, brokers, fn))
        return 2;
    if (kr_ts_admin_options(res, op, deadline, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "%s: %s", fn, err);
    if (create)
        rd_kafka_CreateTopics(res->rk, res->newts, res->ntopics, res->aopts, res->rkqu);
    else
        rd_kafka_DeleteTopics(res->rk, res->delts, res->ntopics, res->aopts, res->rkqu);
    if (kr_ts_admin_result(res, deadline, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "%s: %s", fn, err);
    size_t cnt;
    const rd_kafka_topic_result_t **results =
        create ? rd_kafka_CreateTopics_result_topics(
                     rd_kafka_event_CreateTopics_result(res->rkev), &cnt)
               : rd_kafka_DeleteTopics_result_topics(
                     rd_kafka_event_DeleteTopics_result(res->rkev), &cnt);
    if (kr_ts_admin_check(results, cnt, tolerated, wants, n, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "%s: %s", fn, err);
    if (kr_ts_admin_settle(res, wants, n, create, deadline, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "%s: %s in time: %s", fn, create ? "not ready" : "not gone",
                          err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ts.create_topics(brokers, {"name[:partitions]", ...} [, opts]) -> true |
 * nil, err  [-0, +1|2, e]
 * opts.replication (1), opts.config {name = value}, opts.exist_ok (an
 * existing topic is then accepted as it is), opts.timeout (30000 ms for the
 * whole call). Returns once every topic's partitions all have a leader, so
 * a spec can produce at once. Kafka decides per topic: when one fails, the
 * others may still have been created. */
static int kr_ts_create_topics(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    int opts = kr_ts_admin_opts(L, 3);
    size_t n;
    kr_ts_want_t *wants = kr_ts_admin_wants(L, 2, 1, "create_topics", &n);
    lua_Integer repl = 1;
    if (opts && (kr_ts_int_field(L, opts, "replication", &repl) < 0 || repl < 1 ||
                 repl > 1000))
        return luaL_error(L, "create_topics: opts.replication must be a positive integer");
    int exist_ok = kr_ts_admin_flag(L, opts, "exist_ok");
    int64_t deadline = kr_ts_admin_deadline(L, opts, "create_topics", KR_TS_ADMIN_MS);

    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    res->newts = calloc(n, sizeof(*res->newts));
    if (!res->newts)
        return luaL_error(L, "create_topics: out of memory");
    for (; res->ntopics < n; res->ntopics++) {
        kr_ts_want_t *w = &wants[res->ntopics];
        res->newts[res->ntopics] =
            rd_kafka_NewTopic_new(w->name, w->parts, (int)repl, err, sizeof(err));
        if (!res->newts[res->ntopics])
            return luaL_error(L, "create_topics: %s: %s", w->name, err);
    }
    kr_ts_admin_config(L, opts, res);
    return kr_ts_admin_run(L, res, brokers, RD_KAFKA_ADMIN_OP_CREATETOPICS, wants, n,
                           exist_ok, deadline);
}

/* ts.delete_topics(brokers, {name, ...} [, opts]) -> true | nil, err
 * [-0, +1|2, e]  opts.missing_ok (an unknown topic is then no error),
 * opts.timeout (30000 ms for the whole call). Returns once metadata no
 * longer lists the topics, so a spec can create them anew. */
static int kr_ts_delete_topics(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    int opts = kr_ts_admin_opts(L, 3);
    size_t n;
    kr_ts_want_t *wants = kr_ts_admin_wants(L, 2, 0, "delete_topics", &n);
    int missing_ok = kr_ts_admin_flag(L, opts, "missing_ok");
    int64_t deadline = kr_ts_admin_deadline(L, opts, "delete_topics", KR_TS_ADMIN_MS);

    kr_ts_res_t *res = kr_ts_res_new(L);
    res->delts = calloc(n, sizeof(*res->delts));
    if (!res->delts)
        return luaL_error(L, "delete_topics: out of memory");
    for (; res->ntopics < n; res->ntopics++)
        if (!(res->delts[res->ntopics] = rd_kafka_DeleteTopic_new(wants[res->ntopics].name)))
            return luaL_error(L, "delete_topics: out of memory");
    return kr_ts_admin_run(L, res, brokers, RD_KAFKA_ADMIN_OP_DELETETOPICS, wants, n,
                           missing_ok, deadline);
}

/* ts.partition_leaders(brokers, topic [, opts]) -> {[partition] = broker id}
 * | nil, err  [-0, +1|2, e]
 * Keyed by partition number from 0, as high_watermarks and committed are
 * (so t[0] is partition 0; #t does not count it). A partition without a
 * leader (an election under way) maps to -1. One Metadata request for all
 * topics, so an unknown topic is reported, never auto-created; on the mock
 * cluster it reflects :set_leader. opts.timeout: 10000 ms. */
static int kr_ts_partition_leaders(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    kr_ts_res_t *res = kr_ts_admin_describe(L, brokers, 3, 1, "partition_leaders");
    if (!res)
        return 2;
    const rd_kafka_metadata_topic_t *t = kr_ts_admin_find(res->md, topic);
    if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        return kr_ts_fail(L, "partition_leaders: unknown topic %s", topic);
    if (t->err)
        return kr_ts_fail(L, "partition_leaders: %s: %s", topic, rd_kafka_err2str(t->err));
    lua_createtable(L, 0, t->partition_cnt);
    for (int p = 0; p < t->partition_cnt; p++) {
        lua_pushinteger(L, t->partitions[p].leader);
        lua_rawseti(L, -2, t->partitions[p].id);
    }
    return 1;
}

static int kr_ts_broker_cmp(const void *a, const void *b)
{
    int32_t x = ((const rd_kafka_metadata_broker_t *)a)->id;
    int32_t y = ((const rd_kafka_metadata_broker_t *)b)->id;
    return (x > y) - (x < y);
}

/* ts.brokers(brokers [, opts]) -> {{id=, host=, port=}, ...} | nil, err
 * [-0, +1|2, e]  The cluster's brokers from metadata, sorted by id (the
 * mock's are 1..n). opts.timeout: 10000 ms. */
static int kr_ts_brokers(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    kr_ts_res_t *res = kr_ts_admin_describe(L, brokers, 2, 0, "brokers");
    if (!res)
        return 2;
    int cnt = res->md->broker_cnt;
    rd_kafka_metadata_broker_t *sorted =
        lua_newuserdatauv(L, (size_t)(cnt ? cnt : 1) * sizeof(*sorted), 0);
    memcpy(sorted, res->md->brokers, (size_t)cnt * sizeof(*sorted));
    qsort(sorted, (size_t)cnt, sizeof(*sorted), kr_ts_broker_cmp);
    lua_createtable(L, cnt, 0);
    for (int i = 0; i < cnt; i++) {
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, sorted[i].id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, sorted[i].host);
        lua_setfield(L, -2, "host");
        lua_pushinteger(L, sorted[i].port);
        lua_setfield(L, -2, "port");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const luaL_Reg kr_ts_admin_funcs[] = {
    {"create_topics", kr_ts_create_topics},
    {"delete_topics", kr_ts_delete_topics},
    {"partition_leaders", kr_ts_partition_leaders},
    {"brokers", kr_ts_brokers},
    {NULL, NULL},
};

void kr_ts_admin_open(lua_State *L)
{
    luaL_setfuncs(L, kr_ts_admin_funcs, 0);
}
