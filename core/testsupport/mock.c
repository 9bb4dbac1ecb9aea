/* testsupport/mock.c - mock_cluster(n): librdkafka's in-process mock Kafka
 * cluster as a Lua object (bootstraps, create_topic, and fault injection:
 * broker up/down, RTT, request errors, leader and coordinator moves). Specs
 * design around the mock's limits: retention is 5 MiB per partition, a batch
 * over 1 MiB may be dropped, an empty Fetch is held for the full
 * fetch.wait.max.ms, any Metadata request for a topic creates it (4
 * partitions), and the Admin API (CreateTopics, DeleteTopics) is not
 * implemented. Admin for real Kafka is in admin.c. */
#include "internal.h"

#include <string.h>

#include <lauxlib.h>

#include <librdkafka/rdkafka_mock.h>

#define KR_TS_MOCK_MT "kroute.testsupport.mock"

/* The mock cluster runs on threads of a dedicated producer handle that
 * never produces; it must outlive the cluster and is destroyed after it. */
typedef struct kr_ts_mock {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
} kr_ts_mock_t;

static void kr_ts_mock_release(kr_ts_mock_t *m)
{
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    m->mc = NULL;
    m->rk = NULL;
}

static kr_ts_mock_t *kr_ts_mock_check(lua_State *L)
{
    kr_ts_mock_t *m = luaL_checkudata(L, 1, KR_TS_MOCK_MT);
    if (!m->mc)
        luaL_error(L, "mock cluster is closed");
    return m;
}

static int kr_ts_mock_cluster(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 1);
    if (n < 1 || n > 64)
        return luaL_error(L, "mock_cluster: broker_count must be 1..64");
    /* Userdata first: if it cannot be allocated, nothing is held yet. */
    kr_ts_mock_t *m = lua_newuserdatauv(L, sizeof(*m), 0);
    memset(m, 0, sizeof(*m));
    luaL_setmetatable(L, KR_TS_MOCK_MT);
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return kr_ts_fail(L, "mock_cluster: %s", err);
    }
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!m->rk) {
        rd_kafka_conf_destroy(conf);
        return kr_ts_fail(L, "mock_cluster: %s", err);
    }
    m->mc = rd_kafka_mock_cluster_new(m->rk, (int)n);
    if (!m->mc) {
        kr_ts_mock_release(m);
        return kr_ts_fail(L, "mock_cluster: rd_kafka_mock_cluster_new failed");
    }
    return 1;
}

static int kr_ts_mock_bootstraps(lua_State *L)
{
    lua_pushstring(L, rd_kafka_mock_cluster_bootstraps(kr_ts_mock_check(L)->mc));
    return 1;
}

static int kr_ts_mock_create_topic(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    const char *name = luaL_checkstring(L, 2);
    lua_Integer parts = luaL_checkinteger(L, 3);
    if (parts < 1 || parts > 100000)
        return luaL_error(L, "create_topic: partitions must be positive");
    rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(m->mc, name, (int)parts, 1);
    if (e)
        return kr_ts_fail(L, "create_topic %s: %s", name, rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* Fault injection, for the fault-tolerance specs. Broker ids are 1..n. */
static int kr_ts_mock_broker_state(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    int32_t id = (int32_t)luaL_checkinteger(L, 2);
    int up = lua_toboolean(L, 3);
    rd_kafka_resp_err_t e = up ? rd_kafka_mock_broker_set_up(m->mc, id)
                               : rd_kafka_mock_broker_set_down(m->mc, id);
    if (e)
        return kr_ts_fail(L, "broker %d: %s", (int)id, rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :rtt(broker_id, ms) */
static int kr_ts_mock_rtt(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_broker_set_rtt(
        m->mc, (int32_t)luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3));
    if (e)
        return kr_ts_fail(L, "rtt: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :request_errors(api_key, {error_code, ...}): the next requests of that
 * API (0 Produce, 1 Fetch, 8 OffsetCommit, 12 Heartbeat...) fail in turn */
static int kr_ts_mock_request_errors(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    int16_t api = (int16_t)luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    size_t n = lua_rawlen(L, 3);
    rd_kafka_resp_err_t *errs = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*errs), 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        errs[i] = (rd_kafka_resp_err_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    rd_kafka_mock_push_request_errors_array(m->mc, api, n, errs);
    lua_pushboolean(L, 1);
    return 1;
}

/* :set_leader(topic, partition, broker_id) */
static int kr_ts_mock_set_leader(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_partition_set_leader(
        m->mc, luaL_checkstring(L, 2), (int32_t)luaL_checkinteger(L, 3),
        (int32_t)luaL_checkinteger(L, 4));
    if (e)
        return kr_ts_fail(L, "set_leader: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

/* :coordinator(group, broker_id): moves the group's coordinator */
static int kr_ts_mock_coordinator(lua_State *L)
{
    kr_ts_mock_t *m = kr_ts_mock_check(L);
    rd_kafka_resp_err_t e = rd_kafka_mock_coordinator_set(
        m->mc, "group", luaL_checkstring(L, 2), (int32_t)luaL_checkinteger(L, 3));
    if (e)
        return kr_ts_fail(L, "coordinator: %s", rd_kafka_err2str(e));
    lua_pushboolean(L, 1);
    return 1;
}

static int kr_ts_mock_close(lua_State *L)
{
    kr_ts_mock_release(luaL_checkudata(L, 1, KR_TS_MOCK_MT));
    return 0;
}

static int kr_ts_mock_tostring(lua_State *L)
{
    kr_ts_mock_t *m = luaL_checkudata(L, 1, KR_TS_MOCK_MT);
    if (m->mc)
        lua_pushfstring(L, "mock_cluster(%s)", rd_kafka_mock_cluster_bootstraps(m->mc));
    else
        lua_pushliteral(L, "mock_cluster(closed)");
    return 1;
}

static const luaL_Reg kr_ts_mock_methods[] = {
    {"bootstraps", kr_ts_mock_bootstraps},
    {"create_topic", kr_ts_mock_create_topic},
    {"broker_state", kr_ts_mock_broker_state},
    {"rtt", kr_ts_mock_rtt},
    {"request_errors", kr_ts_mock_request_errors},
    {"set_leader", kr_ts_mock_set_leader},
    {"coordinator", kr_ts_mock_coordinator},
    {"close", kr_ts_mock_close},
    {NULL, NULL},
};

void kr_ts_mock_open(lua_State *L)
{
    luaL_newmetatable(L, KR_TS_MOCK_MT);
    luaL_newlib(L, kr_ts_mock_methods);
    lua_setfield(L, -2, "__index");
    kr_ts_set_release(L, kr_ts_mock_close); /* local c <close> = mock_cluster(1) */
    lua_pushcfunction(L, kr_ts_mock_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_pushcfunction(L, kr_ts_mock_cluster);
    lua_setfield(L, -2, "mock_cluster");
}
