/* lapi.c - the `kroute` module: record, emit, json, log, now (see lapi.h).
 * Functions that need the current message find it through the running
 * coroutine's kr_run_t; called outside a handler run they raise. Outputs
 * are only collected here - producing them is the dispatcher's job. */
#include "lapi.h"

#include <lauxlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "record.h"

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

/* kroute.emit(topic, value [, {key=, headers=, partition=}])  [-0, +0, e] */
static int l_emit(lua_State *L)
{
    kr_run_t *run = check_run(L, "kroute.emit");
    kr_record_t *rec = kr_run_add(run);
    kr_record_from_emit(L, rec);
    return 0;
}

/* kroute.now() -> ms since the Unix epoch  [-0, +1, -] */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
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
        {"emit", l_emit}, {"record", kr_record_new}, {"now", l_now}, {NULL, NULL}};
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
    return 1;
}
