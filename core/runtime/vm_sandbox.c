/* vm_sandbox.c - what handler code may reach in its Lua state (see
 * vm_internal.h): the libraries opened one by one, `require` limited to
 * the handler's folder and kroute's lua/ folder (every file it loads is
 * remembered, for the router to watch), load() of text only, setmetatable
 * without finalizers, coroutine.resume/close kept off kroute's own run
 * coroutines, and kroute's metatables locked. Nothing here runs a handler:
 * vm.c loads it, vm_run.c runs it. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/lapi.h"
#include "runtime/message.h"
#include "runtime/strbound.h"
#include "runtime/vm_internal.h"

/* ---------- sandboxed require ---------- */

static kr_vm_t *vm_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Remembers a file this VM loaded: the router watches them all, also a
 * module first required inside a handler call. */
void kr_vmi_vm_add_file(kr_vm_t *vm, const char *path)
{
    pthread_mutex_lock(&vm->files_mu);
    char **files = realloc(vm->files, (vm->file_cnt + 1) * sizeof(*files));
    if (!files || !(files[vm->file_cnt] = strdup(path)))
        abort();
    vm->files = files;
    vm->file_cnt++;
    pthread_mutex_unlock(&vm->files_mu);
}

/* [-0, +1, e] loads a handler or module file as a text chunk. The file is
 * opened without blocking and must be a regular file (a FIFO would hang
 * the loader, a device would never end) no bigger than the VM's cap.
 * Returns LUA_OK with the chunk pushed, or an error status with the
 * message pushed; 1 in *missing when the file does not exist. */
int kr_vmi_load_source(kr_vm_t *vm, lua_State *L, const char *path, int *missing)
{
    *missing = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *missing = errno == ENOENT || errno == ENOTDIR;
        lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
        return LUA_ERRFILE;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        lua_pushfstring(L, "%s: not a regular file", path);
        return LUA_ERRFILE;
    }
    if ((size_t)st.st_size > vm->mem_limit) {
        close(fd);
        lua_pushfstring(L, "%s: %I bytes is more than the route's memory limit", path,
                        (lua_Integer)st.st_size);
        return LUA_ERRFILE;
    }
    /* read through a Lua buffer: counted against the cap, freed on error */
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)st.st_size + 1);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (got += (size_t)n) > (size_t)st.st_size)
            break; /* a file that grew while read is cut at its stat size */
    }
    close(fd);
    if (got > (size_t)st.st_size)
        got = (size_t)st.st_size;
    luaL_addsize(&b, got);
    luaL_pushresult(&b);
    lua_pushfstring(L, "@%s", path);
    size_t len;
    const char *src = lua_tolstring(L, -2, &len);
    int status = luaL_loadbufferx(L, src, len, lua_tostring(L, -1), "t");
    lua_replace(L, -3); /* chunk or message where the source was */
    lua_pop(L, 1);
    return status;
}

/* require(name): preloaded modules, then <handler dir>/<name>.lua,
 * <lua dir>/<name>.lua and .../<name>/init.lua; text chunks only. */
static int l_require(lua_State *L)
{
    kr_vm_t *vm = vm_of(L);
    const char *name = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, 2, name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (strstr(name, "..") || strchr(name, '/') || name[0] == '.' || !*name)
        return luaL_error(L, "module '%s' not found (bad module name)", name);
    char rel[512];
    snprintf(rel, sizeof(rel), "%s", name);
    for (char *c = rel; *c; c++)
        if (*c == '.')
            *c = '/';
    const char *dirs[2] = {vm->handler_dir, vm->lua_dir};
    luaL_Buffer tried;
    luaL_buffinit(L, &tried);
    for (int i = 0; i < 2; i++) {
        if (!dirs[i])
            continue;
        for (int form = 0; form < 2; form++) {
            char path[4096];
            snprintf(path, sizeof(path), form ? "%s/%s/init.lua" : "%s/%s.lua", dirs[i], rel);
            int missing;
            if (kr_vmi_load_source(vm, L, path, &missing) != LUA_OK) {
                if (!missing)
                    return lua_error(L);
                lua_pop(L, 1);
                luaL_addstring(&tried, "\n\tno file '");
                luaL_addstring(&tried, path);
                luaL_addstring(&tried, "'");
                continue;
            }
            kr_vmi_vm_add_file(vm, path);
            lua_pushstring(L, name);
            lua_pushstring(L, path);
            lua_call(L, 2, 1);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushboolean(L, 1);
            }
            lua_pushvalue(L, -1);
            lua_setfield(L, 2, name);
            return 1;
        }
    }
    luaL_pushresult(&tried);
    return luaL_error(L, "module '%s' not found:%s", name, lua_tostring(L, -1));
}

/* load(chunk [, name [, mode [, env]]]) restricted to text chunks. */
static int l_load_text(lua_State *L)
{
    int n = lua_gettop(L);
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the original load */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    if (n >= 4) /* an explicit env, even nil, is passed on */
        lua_pushvalue(L, 4);
    lua_call(L, n >= 4 ? 4 : 3, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

/* setmetatable(t, mt) without finalizers: Lua runs __gc with hooks off
 * and at any allocation (even between runs), so no deadline or cap could
 * hold it. Otherwise the base library's behaviour. [-2, +1, e] */
static int l_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        int has_gc = lua_rawget(L, 2) != LUA_TNIL;
        lua_pop(L, 1);
        if (has_gc)
            return luaL_error(L, "setmetatable: __gc metamethods are not allowed in handlers "
                                 "(a finalizer would run outside the handler's time limit)");
    }
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* coroutine.resume/close for handler code: refused on kroute's own run
 * coroutines (a handler that kept coroutine.running() must not drive or
 * kill another message's run) and on the main thread. Upvalues: the
 * original function, the run set. */
static int l_coroutine_guard(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TTHREAD) {
        lua_pushvalue(L, 1);
        int ours = lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL;
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        ours |= lua_rawequal(L, 1, -1);
        lua_pop(L, 2);
        if (ours)
            return luaL_error(L, "coroutine: only coroutines the handler created can be "
                                 "resumed or closed");
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static void guard_coroutines(kr_vm_t *vm)
{
    lua_State *L = vm->L;
    lua_newtable(L); /* the run set, weak keys: idle coroutines may be collected */
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    vm->runs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getglobal(L, LUA_COLIBNAME);
    static const char *const guarded[] = {"resume", "close", NULL};
    for (const char *const *f = guarded; *f; f++) {
        lua_getfield(L, -1, *f);
        lua_pushvalue(L, -3);
        lua_pushcclosure(L, l_coroutine_guard, 2);
        lua_setfield(L, -2, *f);
    }
    lua_pop(L, 2);
}

/* Locks every metatable kroute registered (luaL_newmetatable: messages,
 * records, JSON arrays): getmetatable() on those values returns a string,
 * so a handler can neither add a __gc to them nor change their methods. */
static void lock_metatables(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, LUA_REGISTRYINDEX)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
            lua_pushliteral(L, "__name");
            lua_rawget(L, -2);
            if (lua_rawequal(L, -1, -3)) {
                lua_pushliteral(L, "kroute");
                lua_setfield(L, -3, "__metatable");
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
}

void kr_vmi_open_sandbox(kr_vm_t *vm)
{
    lua_State *L = vm->L;
    static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                    {LUA_COLIBNAME, luaopen_coroutine},
                                    {LUA_STRLIBNAME, luaopen_string},
                                    {LUA_TABLIBNAME, luaopen_table},
                                    {LUA_MATHLIBNAME, luaopen_math},
                                    {LUA_UTF8LIBNAME, luaopen_utf8},
                                    {NULL, NULL}};
    for (const luaL_Reg *lib = libs; lib->func; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    /* os: only the clock and calendar functions */
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);
    lua_newtable(L);
    static const char *const os_keep[] = {"clock", "time", "date", "difftime", NULL};
    for (const char *const *k = os_keep; *k; k++) {
        lua_getfield(L, -2, *k);
        lua_setfield(L, -2, *k);
    }
    lua_setglobal(L, LUA_OSLIBNAME);
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getglobal(L, LUA_OSLIBNAME);
    lua_setfield(L, -2, LUA_OSLIBNAME);
    lua_pop(L, 1);

    /* no file access, no bytecode */
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
    lua_getglobal(L, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_getglobal(L, "load");
    lua_pushcclosure(L, l_load_text, 1);
    lua_setglobal(L, "load");

    kr_message_register(L);
    luaL_requiref(L, "kroute", luaopen_kroute, 0);
    lua_getfield(L, -1, "log");
    lua_getfield(L, -1, "info");
    lua_setglobal(L, "print"); /* print goes to the log, tagged */
    lua_pop(L, 2);
    kr_lapi_set_log_name(L, vm->name);

    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, l_require, 1);
    lua_setglobal(L, "require");
    lua_pushcfunction(L, l_setmetatable);
    lua_setglobal(L, "setmetatable");
    /* string and table functions whose C loops a count hook cannot see,
     * bounded by the run's deadline and the cap (strbound.c) */
    kr_strbound_open(L, kr_vmi_deadline_check, vm, kr_vmi_memory_left);
    guard_coroutines(vm);
    lock_metatables(L);
    lua_gc(L, LUA_GCGEN, 0, 0);
}
