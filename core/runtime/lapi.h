/* lapi.h - the `kroute` Lua module handlers require.
 * record, emit, request, json, null, log, now. The same luaopen is linked into the kroute
 * binary and into the loadable module the busted specs use. */
#ifndef KR_LAPI_H
#define KR_LAPI_H

#include <lua.h>

/* require "kroute". Upvalue-free: per-message state comes from the
 * running coroutine (kr_run_current), per-VM state from the registry. */
int luaopen_kroute(lua_State *L);

/* Name used in log lines from kroute.log/print ("route" of the VM). */
void kr_lapi_set_log_name(lua_State *L, const char *name);

#endif
