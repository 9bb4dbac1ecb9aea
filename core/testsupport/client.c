/* testsupport/client.c - a small librdkafka client for specs: produce
 * records (keys, values, headers, partitions, timestamps) and wait for their
 * delivery; consume a topic from the beginning with count/idle/timeout
 * bounds; read high watermarks (one-shot, or through a reused handle for
 * benchmarks) and a group's committed offsets. Topic and cluster management
 * is in admin.c and mock.c. */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "clock.h"
#include "kafka/watermarks.h"

/* ---------------------------------------------------------------- produce */

static void kr_ts_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    kr_ts_res_t *res = opaque;
    (void)rk;
    if (!m->err) {
        res->dr_ok++;
        return;
    }
    if (res->dr_failed++ == 0)
        snprintf(res->dr_err, sizeof(res->dr_err), "%s [%d]: %s",
                 rd_kafka_topic_name(m->rkt), (int)m->partition,
                 rd_kafka_err2str(m->err));
}

static void kr_ts_conf_dr_cb(rd_kafka_conf_t *conf)
{
    rd_kafka_conf_set_dr_msg_cb(conf, kr_ts_dr_cb);
}

/* Reads records[i].key/.value: nil (null) or a string. */
static void kr_ts_bytes_field(lua_State *L, int rec, const char *field, lua_Integer i,
                              rd_kafka_vtype_t vtype, rd_kafka_vu_t *vus, size_t *nvu)
{
    int t = lua_getfield(L, rec, field); /* left on the stack: MSG_F_COPY is
                                            done before the caller pops it */
    if (t == LUA_TNIL)
        return;
    if (t != LUA_TSTRING)
        luaL_error(L, "produce: records[%d].%s must be a string or nil", (int)i, field);
    size_t len;
    vus[*nvu].vtype = vtype;
    vus[*nvu].u.mem.ptr = (void *)lua_tolstring(L, -1, &len);
    vus[*nvu].u.mem.size = len;
    (*nvu)++;
}

/* Builds res->hdrs from records[i].headers = {{name, value}, ...}. */
static void kr_ts_build_headers(lua_State *L, kr_ts_res_t *res, int rec, lua_Integer i)
{
    int t = lua_getfield(L, rec, "headers");
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (t != LUA_TTABLE)
        luaL_error(L, "produce: records[%d].headers must be an array", (int)i);
    lua_Integer n = luaL_len(L, -1);
    res->hdrs = rd_kafka_headers_new((size_t)n);
    for (lua_Integer h = 1; h <= n; h++) {
        if (lua_geti(L, -1, h) != LUA_TTABLE)
            luaL_error(L, "produce: records[%d].headers[%d] must be {name, value}",
                       (int)i, (int)h);
        /* Types are checked first: lua_tolstring would turn a number into a
         * string in place and hide the mistake. */
        int nt = lua_geti(L, -1, 1), vt = lua_geti(L, -2, 2);
        if (nt != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNIL))
            luaL_error(L, "produce: records[%d].headers[%d] must be {name, value}",
                       (int)i, (int)h);
        size_t nlen, vlen = 0;
        const char *name = lua_tolstring(L, -2, &nlen);
        const char *val = lua_tolstring(L, -1, &vlen); /* NULL: null header */
        rd_kafka_header_add(res->hdrs, name, (ssize_t)nlen, val,
                            val ? (ssize_t)vlen : -1);
        lua_pop(L, 3);
    }
    lua_pop(L, 1);
}

static int kr_ts_produce(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer nrec = luaL_len(L, 3);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    /* linger + 64 KiB batches: fast, yet far below the 1 MiB batch size at
     * which the mock broker may drop data (see mock.c). */
    /* clang-format off */
    static const char *const kv[] = {
        "linger.ms", "5",
        "batch.size", "65536",
        /* records keep their order in a partition even when a first request
         * is retried (a fresh topic's leader is not known at once on real
         * Kafka): specs check per-key order and offset ranges */
        "enable.idempotence", "true",
        "partitioner", "murmur2_random",
        /* specs feed inputs larger than kroute's producer may send (as a
         * client with a higher limit, or the broker's 1 MiB, would) */
        "message.max.bytes", "4000000",
        NULL};
    /* clang-format on */
    if (kr_ts_connect(res, RD_KAFKA_PRODUCER, brokers, kv, kr_ts_conf_dr_cb, err,
                      sizeof(err)) != 0)
        return kr_ts_fail(L, "produce: %s", err);

    int base = lua_gettop(L);
    for (lua_Integer i = 1; i <= nrec; i++) {
        if (lua_geti(L, 3, i) != LUA_TTABLE)
            return luaL_error(L, "produce: records[%d] must be a table", (int)i);
        int rec = lua_gettop(L);
        rd_kafka_vu_t vus[8];
        size_t nvu = 0;
        memset(vus, 0, sizeof(vus));
        vus[nvu].vtype = RD_KAFKA_VTYPE_TOPIC;
        vus[nvu++].u.cstr = topic;
        vus[nvu].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vus[nvu++].u.i = RD_KAFKA_MSG_F_COPY;
        kr_ts_bytes_field(L, rec, "key", i, RD_KAFKA_VTYPE_KEY, vus, &nvu);
        kr_ts_bytes_field(L, rec, "value", i, RD_KAFKA_VTYPE_VALUE, vus, &nvu);
        lua_Integer v;
        int has = kr_ts_int_field(L, rec, "partition", &v);
        if (has < 0 || (has > 0 && (v < -1 || v > INT32_MAX)))
            return luaL_error(L, "produce: records[%d].partition must be an integer",
                              (int)i);
        if (has > 0) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_PARTITION;
            vus[nvu++].u.i32 = (int32_t)v;
        }
        has = kr_ts_int_field(L, rec, "timestamp", &v);
        if (has < 0)
            return luaL_error(L, "produce: records[%d].timestamp must be an integer",
                              (int)i);
        if (has > 0) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
            vus[nvu++].u.i64 = (int64_t)v;
        }
        kr_ts_build_headers(L, res, rec, i);
        if (res->hdrs) {
            vus[nvu].vtype = RD_KAFKA_VTYPE_HEADERS;
            vus[nvu++].u.headers = res->hdrs;
        }
        /* A full local queue is back-pressure, not failure: serve delivery
         * reports to make room and retry, but not forever. */
        int64_t give_up = kr_clock_ms() + KR_TS_FLUSH_MS;
        for (;;) {
            rd_kafka_error_t *e = rd_kafka_produceva(res->rk, vus, nvu);
            if (!e) {
                res->hdrs = NULL; /* librdkafka owns them now */
                break;
            }
            rd_kafka_resp_err_t code = rd_kafka_error_code(e);
            snprintf(err, sizeof(err), "%s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL || kr_clock_ms() > give_up)
                return luaL_error(L, "produce: records[%d]: %s", (int)i, err);
            rd_kafka_poll(res->rk, 10);
        }
        rd_kafka_poll(res->rk, 0);
        lua_settop(L, base);
    }

    if (rd_kafka_flush(res->rk, KR_TS_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return luaL_error(L, "produce: %d record(s) still undelivered after %d ms",
                          rd_kafka_outq_len(res->rk), KR_TS_FLUSH_MS);
    if (res->dr_failed > 0)
        return luaL_error(L, "produce: %d of %d record(s) failed delivery; first: %s",
                          (int)res->dr_failed, (int)nrec, res->dr_err);
    lua_pushinteger(L, res->dr_ok);
    return 1;
}

/* ---------------------------------------------------------------- consume */

/* Pushes msg as {topic, partition, offset, key, value, timestamp, headers}. */
static void kr_ts_push_record(lua_State *L, rd_kafka_message_t *msg)
{
    lua_createtable(L, 0, 7);
    lua_pushstring(L, rd_kafka_topic_name(msg->rkt));
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, msg->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, msg->offset);
    lua_setfield(L, -2, "offset");
    if (msg->key) {
        lua_pushlstring(L, msg->key, msg->key_len);
        lua_setfield(L, -2, "key");
    }
    if (msg->payload) {
        lua_pushlstring(L, msg->payload, msg->len);
        lua_setfield(L, -2, "value");
    }
    lua_pushinteger(L, rd_kafka_message_timestamp(msg, NULL));
    lua_setfield(L, -2, "timestamp");

    rd_kafka_headers_t *hdrs; /* owned by msg */
    size_t nh = 0;
    if (rd_kafka_message_headers(msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
        nh = rd_kafka_header_cnt(hdrs);
    lua_createtable(L, (int)nh, 0);
    for (size_t h = 0; h < nh; h++) {
        const char *name;
        const void *val;
        size_t size;
        if (rd_kafka_header_get_all(hdrs, h, &name, &val, &size))
            break;
        lua_createtable(L, 2, 0);
        lua_pushstring(L, name);
        lua_rawseti(L, -2, 1);
        if (val) {
            lua_pushlstring(L, val, size);
            lua_rawseti(L, -2, 2);
        }
        lua_rawseti(L, -2, (lua_Integer)h + 1);
    }
    lua_setfield(L, -2, "headers");
}

static int kr_ts_consume(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer min = 0, timeout = 10000, idle = 300;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (kr_ts_int_field(L, 3, "min", &min) < 0 ||
            kr_ts_int_field(L, 3, "timeout", &timeout) < 0 ||
            kr_ts_int_field(L, 3, "idle", &idle) < 0)
            return luaL_error(L, "consume: opts.min/timeout/idle must be integers");
    }
    int64_t deadline = kr_clock_ms() + timeout;
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512], group[64];
    /* A fresh group per call: nothing is committed (auto commit is off)
     * and no subscription is made, the id only satisfies librdkafka. */
    static unsigned seq;
    snprintf(group, sizeof(group), "kroute-ts-%d-%lld-%u", (int)getpid(),
             (long long)kr_ts_wall_ms(), ++seq);
    /* fetch.wait.max.ms=10: the mock holds an empty Fetch for the full wait
     * even when data arrives (see mock.c). */
    /* clang-format off */
    const char *const kv[] = {
        "group.id", group,
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "enable.partition.eof", "false",
        "fetch.wait.max.ms", "10",
        NULL};
    /* clang-format on */
    if (kr_ts_connect(res, RD_KAFKA_CONSUMER, brokers, kv, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "consume: %s", err);
    rd_kafka_poll_set_consumer(res->rk);
    if (kr_ts_load_partitions(res, topic, deadline - kr_clock_ms(), err, sizeof(err)) !=
        0)
        return kr_ts_fail(L, "consume: no metadata for topic %s: %s", topic, err);
    for (int i = 0; i < res->parts->cnt; i++)
        res->parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t e = rd_kafka_assign(res->rk, res->parts);
    if (e)
        return kr_ts_fail(L, "consume: assign: %s", rd_kafka_err2str(e));

    /* Records are bucketed per partition: librdkafka hands out each
     * partition's messages in offset order, so concatenating the buckets in
     * partition order yields (partition, offset) order without a sort. */
    lua_newtable(L);
    int buckets = lua_gettop(L);
    lua_Integer count = 0;
    int64_t quiet_since = kr_clock_ms(); /* idle is counted from assign too */
    for (;;) {
        int64_t now = kr_clock_ms();
        int64_t wait = deadline - now;
        if (count >= min) {
            int64_t idle_left = idle - (now - quiet_since);
            if (idle_left < wait)
                wait = idle_left;
        }
        if (wait <= 0)
            break;
        if (wait > 1000)
            wait = 1000; /* keeps the int cast safe for huge timeouts */
        res->msg = rd_kafka_consumer_poll(res->rk, (int)wait);
        if (!res->msg)
            continue;
        if (!res->msg->err) {
            if (lua_rawgeti(L, buckets, res->msg->partition) == LUA_TNIL) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_rawseti(L, buckets, res->msg->partition);
            }
            kr_ts_push_record(L, res->msg);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            lua_pop(L, 1);
            count++;
            quiet_since = kr_clock_ms();
        }
        /* Errors (e.g. a broker briefly down) are transient for a reader that
         * only returns what it got; the caller asserts on the count. */
        rd_kafka_message_destroy(res->msg);
        res->msg = NULL;
    }

    lua_createtable(L, (int)count, 0);
    lua_Integer n = 0;
    for (int i = 0; i < res->parts->cnt; i++) {
        if (lua_rawgeti(L, buckets, res->parts->elems[i].partition) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer j = 1; j <= len; j++) {
                lua_rawgeti(L, -1, j);
                lua_rawseti(L, -3, ++n);
            }
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* --------------------------------------------------- offsets / watermarks */

static int kr_ts_high_watermarks(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *topic = luaL_checkstring(L, 2);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    if (kr_ts_connect(res, RD_KAFKA_PRODUCER, brokers, NULL, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "high_watermarks: %s", err);
    if (kr_ts_load_partitions(res, topic, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "high_watermarks: no metadata for topic %s: %s", topic, err);
    int n = res->parts->cnt;
    int32_t ids[n + 1];
    int64_t hi[n + 1];
    for (int i = 0; i < n; i++)
        ids[i] = res->parts->elems[i].partition;
    if (kr_watermarks_query(res->rk, topic, ids, n, NULL, hi, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "high_watermarks: %s", err);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, hi[i]);
        lua_rawseti(L, -2, ids[i]);
    }
    return 1;
}

/* ts.watermarks(brokers) -> an object whose :sum(topic, partitions)
 * returns the sum of the high watermarks of partitions 0..n-1 through one
 * reused client: benchmarks sample progress every few milliseconds. */
#define KR_TS_WM_MT "kroute.testsupport.watermarks"

static int kr_ts_wm_gc(lua_State *L)
{
    rd_kafka_t **rk = luaL_checkudata(L, 1, KR_TS_WM_MT);
    if (*rk)
        rd_kafka_destroy(*rk);
    *rk = NULL;
    return 0;
}

static int kr_ts_wm_sum(lua_State *L)
{
    rd_kafka_t **rk = luaL_checkudata(L, 1, KR_TS_WM_MT);
    const char *topic = luaL_checkstring(L, 2);
    lua_Integer n = luaL_checkinteger(L, 3);
    luaL_argcheck(L, *rk, 1, "closed");
    luaL_argcheck(L, n >= 0 && n <= 4096, 3, "partition count out of range");
    int32_t ids[n + 1];
    int64_t hi[n + 1];
    for (lua_Integer p = 0; p < n; p++)
        ids[p] = (int32_t)p;
    char err[512];
    if (kr_watermarks_query(*rk, topic, ids, (int)n, NULL, hi, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "watermarks: %s", err);
    lua_Integer sum = 0;
    for (lua_Integer p = 0; p < n; p++)
        sum += hi[p];
    lua_pushinteger(L, sum);
    return 1;
}

static int kr_ts_watermarks(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    rd_kafka_t **rk = lua_newuserdatauv(L, sizeof(*rk), 0);
    *rk = NULL;
    if (luaL_newmetatable(L, KR_TS_WM_MT)) {
        lua_pushcfunction(L, kr_ts_wm_gc);
        lua_setfield(L, -2, "__gc");
        lua_newtable(L);
        lua_pushcfunction(L, kr_ts_wm_sum);
        lua_setfield(L, -2, "sum");
        lua_setfield(L, -2, "__index");
    }
    lua_setmetatable(L, -2);
    kr_ts_res_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    char err[512];
    if (kr_ts_connect(&tmp, RD_KAFKA_PRODUCER, brokers, NULL, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "watermarks: %s", err);
    *rk = tmp.rk;
    return 1;
}

static int kr_ts_committed(lua_State *L)
{
    const char *brokers = luaL_checkstring(L, 1);
    const char *group = luaL_checkstring(L, 2);
    const char *topic = luaL_checkstring(L, 3);
    kr_ts_res_t *res = kr_ts_res_new(L);
    char err[512];
    /* Joins no group: OffsetFetch only needs the group's coordinator, so the
     * group's live members are not disturbed. */
    const char *const kv[] = {"group.id", group, "enable.auto.commit", "false", NULL};
    if (kr_ts_connect(res, RD_KAFKA_CONSUMER, brokers, kv, NULL, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "committed: %s", err);
    if (kr_ts_load_partitions(res, topic, KR_TS_META_MS, err, sizeof(err)) != 0)
        return kr_ts_fail(L, "committed: no metadata for topic %s: %s", topic, err);
    rd_kafka_resp_err_t e = rd_kafka_committed(res->rk, res->parts, KR_TS_COMMITTED_MS);
    if (e)
        return kr_ts_fail(L, "committed: %s", rd_kafka_err2str(e));
    lua_createtable(L, 0, res->parts->cnt);
    for (int i = 0; i < res->parts->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &res->parts->elems[i];
        if (tp->err)
            return kr_ts_fail(L, "committed: %s [%d]: %s", topic, (int)tp->partition,
                              rd_kafka_err2str(tp->err));
        lua_pushinteger(L, tp->offset); /* RD_KAFKA_OFFSET_INVALID (-1001): none */
        lua_rawseti(L, -2, tp->partition);
    }
    return 1;
}

static const luaL_Reg kr_ts_client_funcs[] = {
    {"produce", kr_ts_produce},
    {"consume", kr_ts_consume},
    {"high_watermarks", kr_ts_high_watermarks},
    {"watermarks", kr_ts_watermarks},
    {"committed", kr_ts_committed},
    {NULL, NULL},
};

void kr_ts_client_open(lua_State *L)
{
    luaL_setfuncs(L, kr_ts_client_funcs, 0);
}
