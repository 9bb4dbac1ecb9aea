/* lapi.c - the `kroute` module: record, emit, request, json, null, log,
 * now, clock (see lapi.h).
 * Functions that need the current message find it through the running
 * coroutine's kr_run_t; called outside a handler run they raise. Outputs
 * are only collected here - producing them is the dispatcher's job. */
#include "runtime/lapi.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "codec/json.h"
#include "codec/nest.h"
#include "ops/log.h"
#include "runtime/record.h"

#define LOG_NAME_KEY "kroute.log_name"

void kr_lapi_set_log_name(lua_State *L, const char *name)
{
    lua_pushstring(L, name);
    lua_setfield(L, LUA_REGISTRYINDEX, LOG_NAME_KEY);
}

static kr_run_t *check_run(lua_State *L, const char *fn)
{
    kr_run_t *run = kr_run_current(L);
    if (!run)
        luaL_error(L, "%s can only be called while a handler runs (not at load time, in "
                      "init, or from a coroutine the handler created)",
                   fn);
    return run;
}

/* kroute.emit(topic, value [, {key=, headers=, partition=}])  [-0, +0, e]
 * The record joins the run's outputs only once fully built: an emit that
 * raises (caught by pcall or not) adds nothing. */
static int l_emit(lua_State *L)
{
    kr_run_t *run = check_run(L, "kroute.emit");
    lua_settop(L, 3);
    kr_record_from_emit(L, kr_record_begin(L));
    kr_run_commit(L, run);
    return 0;
}

#define REQUEST_DEFAULT_TIMEOUT_MS 10000

/* Continuation of kroute.request: the dispatcher resumed the coroutine
 * with (reply bytes | nil, error | nil). Turns the reply into a Lua value
 * the way NestJS's KafkaParser does (kr_nest_push_decoded). */
static int request_done(lua_State *L, int status, lua_KContext ctx)
{
    (void)status;
    int base = (int)ctx;
    if (lua_gettop(L) < base + 2)
        return luaL_error(L, "kroute.request: resumed without a reply");
    char err[256];
    if (!lua_isnil(L, base + 2)) { /* nil, err */
        /* a NestJS RpcException arrives as {"status":"error","message":...}:
         * hand the handler its message; any other error text as it is */
        size_t elen;
        const char *e = lua_tolstring(L, base + 2, &elen);
        lua_pushnil(L);
        if (elen && e[0] == '{' && kr_json_decode(L, e, elen, err, sizeof(err)) == 0 &&
            lua_istable(L, -1) && lua_getfield(L, -1, "message") == LUA_TSTRING) {
            lua_remove(L, -2);
            return 2;
        }
        lua_settop(L, base + 3);
        lua_pushvalue(L, base + 2);
        return 2;
    }
    size_t len;
    const char *s = lua_tolstring(L, base + 1, &len);
    kr_nest_push_decoded(L, s, len);
    return 1;
}

/* kroute.request(pattern, value [, {key=, headers=, timeout=}])
 * -> reply | nil, "timeout" | nil, err   [-(2|3), +(1|2), e]
 * Yields the handler's coroutine until the reply arrives. */
static int l_request(lua_State *L)
{
    kr_run_t *run = check_run(L, "kroute.request");
    if (L != run->co || !lua_isyieldable(L))
        return luaL_error(L, "kroute.request must be called by the handler itself, not from "
                             "a coroutine it created");
    if (run->request)
        return luaL_error(L, "kroute.request: a request is already pending");
    lua_settop(L, 3);
    lua_Integer timeout = REQUEST_DEFAULT_TIMEOUT_MS;
    if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "timeout");
        timeout = luaL_optinteger(L, -1, REQUEST_DEFAULT_TIMEOUT_MS);
        lua_pop(L, 1);
        if (timeout <= 0)
            return luaL_error(L, "kroute.request: timeout must be a positive number of ms");
    }
    /* built whole before the run sees it: a request that raises (say in a
     * pcall) leaves no half-built request pending */
    kr_record_from_request(L, kr_record_begin(L));
    run->request = kr_run_commit_request(L);
    run->request_timeout_ms = timeout;
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), request_done);
}

/* kroute.now() -> ms since the Unix epoch  [-0, +1, -] */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

/* kroute.clock() -> seconds (float) on a monotonic clock, for timing  [-0, +1, -] */
static int l_clock(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)kr_clock_ns() / 1e9);
    return 1;
}

/* Log text = all arguments tostring'ed and joined with spaces. */
static int log_at(lua_State *L, int level)
{
    if (!kr_log_enabled(level))
        return 0;
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_getfield(L, LUA_REGISTRYINDEX, LOG_NAME_KEY);
    const char *route = lua_tostring(L, -1);
    kr_run_t *run = kr_run_current(L);
    if (run && run->msg)
        kr_log(level, "handler", "route=%s topic=%s partition=%d offset=%lld: %s",
               route ? route : "?", run->msg->topic, (int)run->msg->partition,
               (long long)run->msg->offset, lua_tostring(L, -2));
    else
        kr_log(level, "handler", "route=%s: %s", route ? route : "?", lua_tostring(L, -2));
    return 0;
}

static int l_log_debug(lua_State *L) { return log_at(L, KR_LOG_DEBUG); }
static int l_log_info(lua_State *L) { return log_at(L, KR_LOG_INFO); }
static int l_log_warn(lua_State *L) { return log_at(L, KR_LOG_WARN); }
static int l_log_error(lua_State *L) { return log_at(L, KR_LOG_ERROR); }

int luaopen_kroute(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"emit", l_emit}, {"request", l_request}, {"record", kr_record_new},
        {"now", l_now},   {"clock", l_clock}, {NULL, NULL}};
    static const luaL_Reg log_funcs[] = {{"debug", l_log_debug},
                                         {"info", l_log_info},
                                         {"warn", l_log_warn},
                                         {"error", l_log_error},
                                         {NULL, NULL}};
    kr_record_register(L);
    luaL_newlib(L, funcs);
    luaL_newlib(L, log_funcs);
    lua_setfield(L, -2, "log");
    luaL_requiref(L, "kroute.json", luaopen_kroute_json, 0);
    lua_setfield(L, -2, "json");
    /* kroute.null: the same sentinel as kroute.json.null, for the places
     * that are not JSON (a null record value, a null header value) */
    kr_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
