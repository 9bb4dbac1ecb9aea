/* testsupport/call.c - what every binding call of `kroute.testsupport`
 * shares: the to-be-closed resource holder that frees whatever a call
 * acquired (also when it raises), the `nil, err` failure return, and the
 * optional-integer-field reader. Holds no binding itself. */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#define KR_TS_RES_MT "kroute.testsupport.res"

int kr_ts_fail(lua_State *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushnil(L);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    return 2;
}

int kr_ts_int_field(lua_State *L, int t, const char *field, lua_Integer *out)
{
    int type = lua_getfield(L, t, field);
    int ok = 0;
    if (type != LUA_TNIL) {
        *out = lua_tointegerx(L, -1, &ok);
        ok = ok ? 1 : -1;
    }
    lua_pop(L, 1);
    return ok;
}

static void kr_ts_res_release(kr_ts_res_t *res)
{
    if (res->msg)
        rd_kafka_message_destroy(res->msg);
    if (res->hdrs)
        rd_kafka_headers_destroy(res->hdrs);
    if (res->md)
        rd_kafka_metadata_destroy(res->md);
    if (res->parts)
        rd_kafka_topic_partition_list_destroy(res->parts);
    if (res->rkt)
        rd_kafka_topic_destroy(res->rkt);
    if (res->rkev)
        rd_kafka_event_destroy(res->rkev);
    if (res->aopts)
        rd_kafka_AdminOptions_destroy(res->aopts);
    if (res->newts) {
        rd_kafka_NewTopic_destroy_array(res->newts, res->ntopics);
        free(res->newts);
    }
    if (res->delts) {
        rd_kafka_DeleteTopic_destroy_array(res->delts, res->ntopics);
        free(res->delts);
    }
    /* A queue holds a reference on its handle: destroy it first. */
    if (res->rkqu)
        rd_kafka_queue_destroy(res->rkqu);
    if (res->rk) {
        /* Assign-only consumers have no group to leave; closing first still
         * stops the fetchers cleanly before the handle goes away. */
        if (res->is_consumer)
            rd_kafka_consumer_close(res->rk);
        rd_kafka_destroy(res->rk);
    }
    if (res->fd >= 0)
        close(res->fd);
    res->msg = NULL;
    res->hdrs = NULL;
    res->md = NULL;
    res->parts = NULL;
    res->rkt = NULL;
    res->rkev = NULL;
    res->aopts = NULL;
    res->newts = NULL;
    res->delts = NULL;
    res->ntopics = 0;
    res->rkqu = NULL;
    res->rk = NULL;
    res->fd = -1;
}

static int kr_ts_res_gc(lua_State *L)
{
    kr_ts_res_release(luaL_checkudata(L, 1, KR_TS_RES_MT));
    return 0;
}

kr_ts_res_t *kr_ts_res_new(lua_State *L)
{
    kr_ts_res_t *res = lua_newuserdatauv(L, sizeof(*res), 0);
    memset(res, 0, sizeof(*res));
    res->fd = -1;
    luaL_setmetatable(L, KR_TS_RES_MT);
    lua_toclose(L, -1);
    return res;
}

void kr_ts_set_release(lua_State *L, lua_CFunction release)
{
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, release);
    lua_setfield(L, -2, "__close");
}

void kr_ts_call_open(lua_State *L)
{
    luaL_newmetatable(L, KR_TS_RES_MT);
    kr_ts_set_release(L, kr_ts_res_gc);
    lua_pop(L, 1);
}
