/* testsupport/bounded.c - bounded_lib(deadline_ms [, mem_limit]): copies of
 * the string and table libraries carrying core/runtime/strbound.c's bounded
 * functions, so unit specs can compare them with stock Lua 5.4 and check
 * that they stop at a deadline. Unrelated to Kafka and processes. */
#include "internal.h"

#include <stdio.h>

#include <lauxlib.h>

#include "clock.h"
#include "runtime/strbound.h"

typedef struct kr_ts_bound {
    int64_t start_ms, deadline_ms;
    size_t mem_limit; /* 0: none */
    char msg[64];
} kr_ts_bound_t;

static const char *kr_ts_bound_check(lua_State *L, void *ud)
{
    (void)L;
    kr_ts_bound_t *bound = ud;
    if (kr_clock_ms() <= bound->deadline_ms)
        return NULL;
    snprintf(bound->msg, sizeof(bound->msg), "timeout: ran longer than %lld ms",
             (long long)(bound->deadline_ms - bound->start_ms));
    return bound->msg;
}

static size_t kr_ts_bound_mem(void *ud)
{
    return ((kr_ts_bound_t *)ud)->mem_limit;
}

/* [-0, +1, m] a shallow copy of the library package.loaded[name] */
static void kr_ts_copy_lib(lua_State *L, const char *name)
{
    lua_newtable(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -5);
    }
    lua_pop(L, 1);
}

/* bounded_lib(deadline_ms [, mem_limit]) -> {string = ..., table = ...}:
 * copies of the string and table libraries with core/runtime/strbound.c's bounded
 * functions, under a deadline counted from this call (and string.rep
 * limited to mem_limit bytes when given). */
static int kr_ts_bounded_lib(lua_State *L)
{
    lua_Integer ms = luaL_checkinteger(L, 1);
    lua_Integer mem = luaL_optinteger(L, 2, 0);
    lua_settop(L, 0);
    kr_ts_bound_t *bound = lua_newuserdatauv(L, sizeof(*bound), 0);
    bound->start_ms = kr_clock_ms();
    bound->deadline_ms = bound->start_ms + ms;
    bound->mem_limit = mem > 0 ? (size_t)mem : 0;
    lua_newtable(L);
    kr_ts_copy_lib(L, "string");
    kr_ts_copy_lib(L, "table");
    kr_strbound_install(L, 3, 4, 1, kr_ts_bound_check, bound,
                        bound->mem_limit ? kr_ts_bound_mem : NULL);
    lua_setfield(L, 2, "table");
    lua_setfield(L, 2, "string");
    return 1;
}

void kr_ts_bounded_open(lua_State *L)
{
    lua_pushcfunction(L, kr_ts_bounded_lib);
    lua_setfield(L, -2, "bounded_lib");
}
