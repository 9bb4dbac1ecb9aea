/* vm.c - the handler sandbox (see vm.h).
 * Libraries are opened one by one (no io, no debug, no package loaders;
 * os cut down to clock/time/date/difftime; load is text-only), `require`
 * searches only the handler's folder and kroute's lua/ folder, the
 * allocator enforces the route's memory cap while handler code runs, and a
 * count hook stops a run that passes its deadline. Every handler run is a
 * coroutine started from C, and everything else that can run handler code
 * (an error object's __tostring, __close handlers, reload_state) runs in a
 * protected call under the same deadline and cap: nothing in here runs
 * handler code unprotected or unbounded. Finalizers (__gc) are refused
 * outright: the collector runs them with hooks off, so no deadline could
 * stop one. Handler code cannot reach kroute's own run coroutines. */
#include "vm.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <libgen.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "json.h"
#include "lapi.h"
#include "log.h"
#include "message.h"
#include "strbound.h"

#define HOOK_EVERY 1000 /* instructions between deadline checks */
#define IDLE_COROUTINES 8 /* finished coroutines kept per VM for reuse */

struct kr_vm {
    lua_State *L;
    char *name;
    char *handler_dir;
    char *lua_dir;
    int64_t timeout_ms;
    size_t mem_used, mem_limit;
    int enforce;    /* the cap applies only while handler code runs */
    int handle_ref; /* registry ref of the handle function */
    int state_ref;  /* the handler table's reload_state function, if any */
    const char *prev_state; /* JSON from the previous generation, for init(prev) */
    int idle_ref;   /* registry table of finished coroutines kept for reuse */
    int idle_n;
    char **files;   /* the handler file and every module it required */
    size_t file_cnt;
    int64_t started_ns, deadline_ns; /* monotonic; 0 = no run in progress */
    int timed_out;
    int runs_ref;   /* registry set (weak keys) of kroute's run coroutines */
    int suspended;  /* runs waiting in kroute.request (their coroutines live in L) */
    int rebuild;    /* the state sits at its cap: rebuild it once nothing is suspended */
    int has_state;  /* the handler defines reload_state (read by other threads) */
    int retired;    /* replaced after its thread was abandoned (router thread only) */
    kr_vm_opts_t opts; /* what built it (strings owned), for a rebuild */
};


static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    kr_vm_t *vm = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        /* relaxed atomics: /metrics reads this from the router thread */
        __atomic_store_n(&vm->mem_used, vm->mem_used - old, __ATOMIC_RELAXED);
        return NULL;
    }
    if (vm->enforce && nsize > old && vm->mem_used + (nsize - old) > vm->mem_limit)
        return NULL; /* Lua turns this into LUA_ERRMEM */
    void *p = realloc(ptr, nsize);
    if (p)
        __atomic_store_n(&vm->mem_used, vm->mem_used - old + nsize, __ATOMIC_RELAXED);
    return p;
}

static int vm_panic(lua_State *L)
{
    kr_error("vm", "unprotected Lua error: %s", lua_tostring(L, -1));
    abort();
}

/* Count hook, set on the main thread so every coroutine inherits it
 * (including ones a handler creates). Past the deadline it raises, and
 * from then on fires on every instruction of whichever thread it fires
 * in: a handler that swallows the error with pcall - in a child coroutine
 * or in the run's own - is stopped by the next instruction outside the
 * pcall. A thread left on every-instruction mode by an earlier run goes
 * back to sampling the next time its hook fires in time. */
static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    void *ud;
    lua_getallocf(L, &ud);
    kr_vm_t *vm = ud;
    if (!vm->deadline_ns || kr_clock_ns() <= vm->deadline_ns) {
        if (lua_gethookcount(L) != HOOK_EVERY)
            lua_sethook(L, deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
        return;
    }
    vm->timed_out = 1;
    if (lua_gethookcount(L) != 1)
        lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "timeout: handler ran longer than %I ms",
               (lua_Integer)((vm->deadline_ns - vm->started_ns) / 1000000));
}

/* For the bounded C library functions (strbound.c): NULL while the run
 * has time left, else the timeout text. */
static const char *deadline_check(lua_State *L, void *ud)
{
    (void)L;
    kr_vm_t *vm = ud;
    if (!vm->deadline_ns || kr_clock_ns() <= vm->deadline_ns)
        return NULL;
    vm->timed_out = 1;
    return "timeout: handler ran longer than its limit";
}

static size_t memory_left(void *ud)
{
    kr_vm_t *vm = ud;
    return vm->mem_used < vm->mem_limit ? vm->mem_limit - vm->mem_used : 0;
}

static void deadline_start(kr_vm_t *vm)
{
    vm->started_ns = kr_clock_ns();
    vm->deadline_ns = vm->started_ns + vm->timeout_ms * 1000000;
    vm->timed_out = 0;
}

static void deadline_stop(kr_vm_t *vm, lua_State *co)
{
    vm->deadline_ns = 0;
    if (vm->timed_out) { /* back to the normal sampling rate */
        lua_sethook(vm->L, deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
        if (co)
            lua_sethook(co, deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
}

/* ---------- sandboxed require ---------- */

static kr_vm_t *vm_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Remembers a file this VM loaded: a reload watches them all. */
static void vm_add_file(kr_vm_t *vm, const char *path)
{
    char **files = realloc(vm->files, (vm->file_cnt + 1) * sizeof(*files));
    if (!files || !(files[vm->file_cnt] = strdup(path)))
        abort();
    vm->files = files;
    vm->file_cnt++;
}

/* [-0, +1, e] loads a handler or module file as a text chunk. The file is
 * opened without blocking and must be a regular file (a FIFO would hang
 * the loader, a device would never end) no bigger than the VM's cap.
 * Returns LUA_OK with the chunk pushed, or an error status with the
 * message pushed; 1 in *missing when the file does not exist. */
static int load_source(kr_vm_t *vm, lua_State *L, const char *path, int *missing)
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
            if (load_source(vm, L, path, &missing) != LUA_OK) {
                if (!missing)
                    return lua_error(L);
                lua_pop(L, 1);
                luaL_addstring(&tried, "\n\tno file '");
                luaL_addstring(&tried, path);
                luaL_addstring(&tried, "'");
                continue;
            }
            vm_add_file(vm, path);
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

static void open_sandbox(kr_vm_t *vm)
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
    kr_strbound_open(L, deadline_check, vm, memory_left);
    guard_coroutines(vm);
    lock_metatables(L);
    lua_gc(L, LUA_GCGEN, 0, 0);
}

/* Runs protected (see load_handler): loads the file, runs it, calls
 * init, and anchors the handle function. [-2, +0, e] */
static int load_entry(lua_State *L)
{
    kr_vm_t *vm = lua_touserdata(L, 1);
    const char *path = lua_tostring(L, 2);
    int missing;
    if (load_source(vm, L, path, &missing) != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);
        if (lua_getfield(L, t, "reload_state") != LUA_TNIL) {
            if (!lua_isfunction(L, -1))
                return luaL_error(L, "%s:1: reload_state must be a function, not %s", path,
                                  luaL_typename(L, -1));
            vm->state_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        } else {
            lua_pop(L, 1);
        }
        if (lua_getfield(L, t, "init") != LUA_TNIL) {
            if (!lua_isfunction(L, -1))
                return luaL_error(L, "%s:1: init must be a function, not %s", path,
                                  luaL_typename(L, -1));
            /* init(prev): what the previous generation's reload_state()
             * returned, carried over as JSON (nil on a first start) */
            int nargs = 0;
            if (vm->prev_state) {
                char err[256];
                if (kr_json_decode(L, vm->prev_state, strlen(vm->prev_state), err,
                                   sizeof(err)) < 0)
                    lua_pushnil(L);
                nargs = 1;
            }
            if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
                lua_pushfstring(L, "%s (in init)", luaL_tolstring(L, -1, NULL));
                return lua_error(L);
            }
        } else {
            lua_pop(L, 1);
        }
        if (lua_getfield(L, t, "handle") != LUA_TFUNCTION) {
            /* no `handle`: a service table of topic -> function (NestJS
             * style, one function per @MessagePattern) */
            lua_pop(L, 1);
            int functions = 0;
            lua_pushnil(L);
            while (lua_next(L, t)) {
                if (lua_type(L, -2) == LUA_TSTRING && lua_isfunction(L, -1) &&
                    strcmp(lua_tostring(L, -2), "init") != 0)
                    functions++;
                lua_pop(L, 1);
            }
            if (!functions)
                return luaL_error(L, "%s:1: the handler table has no 'handle' function and "
                                     "no topic -> function entries", path);
            lua_pushvalue(L, t);
        }
    } else if (!lua_isfunction(L, -1)) {
        return luaL_error(L,
                          "%s:1: a handler file must return a function or a table with a "
                          "'handle' function (it returned %s)",
                          path, luaL_typename(L, -1));
    }
    vm->handle_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* lua_pcall of a function and nargs arguments on the main thread, under
 * the memory cap and the deadline (loading, init, reload_state). */
static int limited_pcall(kr_vm_t *vm, int nargs)
{
    vm->enforce = 1;
    deadline_start(vm);
    int status = lua_pcall(vm->L, nargs, 0, 0);
    deadline_stop(vm, NULL);
    vm->enforce = 0;
    return status;
}

/* Loads the handler under the memory cap and the deadline, all inside
 * one pcall: even a failed allocation while anchoring is caught. */
static int load_handler(kr_vm_t *vm, const char *path, char *errstr, size_t errsize)
{
    lua_State *L = vm->L;
    lua_pushcfunction(L, load_entry);
    lua_pushlightuserdata(L, vm);
    lua_pushstring(L, path);
    int status = limited_pcall(vm, 2);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (status == LUA_ERRMEM)
            snprintf(errstr, errsize, "%s:1: out of memory loading the handler (the route's "
                     "memory limit is %zu bytes)", path, vm->mem_limit);
        else
            snprintf(errstr, errsize, "%s", msg ? msg : "error object is not a string");
    }
    lua_settop(L, 0);
    return status == LUA_OK ? 0 : -1;
}

static char *dup_or_null(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

/* Creates vm->L: the sandbox, then the handler loaded and inited under
 * the cap and the deadline. 0, or -1 with errstr (vm->L is then NULL). */
static int state_build(kr_vm_t *vm, char *errstr, size_t errsize)
{
    const char *handler = vm->opts.handler;
    vm->L = lua_newstate(vm_alloc, vm);
    if (!vm->L) {
        snprintf(errstr, errsize, "%s:1: cannot create a Lua state", handler);
        return -1;
    }
    vm->handle_ref = vm->state_ref = vm->idle_ref = vm->runs_ref = LUA_NOREF;
    vm->idle_n = 0;
    lua_atpanic(vm->L, vm_panic);
    /* the main thread's extra space is not zeroed by Lua, and every
     * coroutine copies it: "no run" must read as NULL everywhere */
    kr_run_set_current(vm->L, NULL);
    lua_sethook(vm->L, deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
    open_sandbox(vm);
    lua_newtable(vm->L);
    vm->idle_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
    /* loading counts against the cap too: a handler whose module state
     * alone exceeds `memory` is a configuration error */
    if (load_handler(vm, handler, errstr, errsize) < 0) {
        lua_close(vm->L);
        vm->L = NULL;
        return -1;
    }
    __atomic_store_n(&vm->has_state, vm->state_ref != LUA_NOREF, __ATOMIC_RELAXED);
    return 0;
}

kr_vm_t *kr_vm_new(const kr_vm_opts_t *opts, char *errstr, size_t errsize)
{
    kr_vm_t *vm = calloc(1, sizeof(*vm));
    if (!vm)
        abort();
    vm->opts.name = vm->name = dup_or_null(opts->name ? opts->name : "?");
    vm->opts.handler = dup_or_null(opts->handler);
    char *tmp = dup_or_null(opts->handler);
    vm->handler_dir = dup_or_null(dirname(tmp));
    free(tmp);
    vm->opts.lua_dir = vm->lua_dir = dup_or_null(opts->lua_dir);
    vm->opts.timeout_ms = vm->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    vm->opts.memory = vm->mem_limit = opts->memory ? opts->memory : (64u << 20);
    vm->prev_state = opts->prev_state;
    vm_add_file(vm, opts->handler);
    int rc = state_build(vm, errstr, errsize);
    vm->prev_state = NULL;
    if (rc < 0) {
        kr_vm_free(vm);
        return NULL;
    }
    return vm;
}

/* Replaces a state that sits at its memory cap at rest (every later run
 * would fail) with a freshly loaded one; its module state is lost. Only
 * when no run is suspended in it. */
static void state_rebuild(kr_vm_t *vm)
{
    vm->rebuild = 0;
    lua_State *old = vm->L;
    size_t used = kr_vm_memory(vm);
    /* the new state is counted on its own: the old one is closed after */
    char err[1024];
    vm->L = NULL;
    vm->mem_used = 0;
    if (state_build(vm, err, sizeof(err)) < 0) {
        kr_error("vm", "route=%s: the Lua state is at its memory limit (%zu of %zu bytes) "
                       "and could not be rebuilt, keeping it: %s",
                 vm->name, used, vm->mem_limit, err);
        vm->L = old;
        vm->mem_used = used;
        return;
    }
    size_t fresh = kr_vm_memory(vm);
    lua_close(old); /* frees through vm_alloc: subtract what it held */
    __atomic_store_n(&vm->mem_used, fresh, __ATOMIC_RELAXED);
    kr_warn("vm", "route=%s: the Lua state was at its memory limit (%zu of %zu bytes) after a "
                  "run: rebuilt from the handler file (module state starts over)",
            vm->name, used, vm->mem_limit);
}

/* After a run ends. A state over its cap, or one whose run just hit the
 * cap and that still holds more than 7/8 of it once collected, would fail
 * every later run: it is marked for a rebuild. */
static void check_memory(kr_vm_t *vm, int hit_cap)
{
    if (!hit_cap && kr_vm_memory(vm) <= vm->mem_limit)
        return;
    lua_gc(vm->L, LUA_GCCOLLECT); /* no handler finalizers exist: see l_setmetatable */
    if (kr_vm_memory(vm) + vm->mem_limit / 8 >= vm->mem_limit)
        vm->rebuild = 1;
}

/* Continuation after the handler returned: its results -> records. */
static int run_finish(lua_State *co, int status, lua_KContext ctx)
{
    (void)status;
    (void)ctx;
    kr_run_t *run = kr_run_current(co);
    int n = lua_gettop(co);
    for (int i = 1; i <= n; i++) {
        if (lua_isnil(co, i))
            continue; /* nothing returned = filtered out */
        kr_record_t *rec = kr_record_begin(co);
        rec->returned = 1;
        kr_record_from_lua(co, i, rec);
        kr_run_commit(co, run);
    }
    return 0;
}

/* The coroutine body: handle(msg). lua_callk keeps it resumable when a
 * binding yields (kroute.request). */
static int run_entry(lua_State *co)
{
    lua_callk(co, 1, LUA_MULTRET, 0, run_finish);
    return run_finish(co, LUA_OK, 0);
}

/* [-1, +1, e] luaL_tolstring of the error object: may run its __tostring */
static int errtext_entry(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* [-1, +1, e] the traceback of the failed coroutine given as argument */
static int traceback_entry(lua_State *L)
{
    luaL_traceback(L, lua_tothread(L, 1), NULL, 0);
    return 1;
}

/* Calls `f` with the value on top of the main thread (popped), protected,
 * under the cap and the run's deadline: an error object's __tostring is
 * handler code and may fail, loop or allocate. Returns the text
 * (malloc'd) or NULL when f failed. */
static char *protected_text(kr_vm_t *vm, lua_CFunction f)
{
    lua_State *L = vm->L;
    lua_pushcfunction(L, f);
    lua_insert(L, -2);
    vm->enforce = 1;
    int status = lua_pcall(L, 1, 1, 0);
    vm->enforce = 0;
    char *text = status == LUA_OK ? dup_or_null(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return text;
}

/* The text of the error object on top of co; the deadline is still the
 * run's. */
static char *errobj_text(kr_vm_t *vm, lua_State *co)
{
    int t = lua_type(co, -1);
    if (t == LUA_TSTRING)
        return dup_or_null(lua_tostring(co, -1));
    if (t == LUA_TNIL)
        return dup_or_null("error(nil) raised without a message");
    lua_xmove(co, vm->L, 1); /* the object leaves the dead coroutine */
    char *text = protected_text(vm, errtext_entry);
    if (text)
        return text;
    char buf[160];
    snprintf(buf, sizeof(buf), "error object is a %s whose __tostring failed%s",
             lua_typename(co, t), vm->timed_out ? " (timeout)" : "");
    return dup_or_null(buf);
}

/* Ends a run's coroutine: releases it and invalidates its message. The
 * reset runs pending __close handlers (handler code) under the cap and a
 * deadline: the run's own, or a fresh one when the run is abandoned. */
static void run_release(kr_vm_t *vm, kr_run_t *run)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->msg_ref);
    kr_message_invalidate(L, -1);
    lua_pop(L, 1);
    int own_deadline = !vm->deadline_ns;
    if (own_deadline)
        deadline_start(vm);
    vm->enforce = 1;
    int clean = lua_resetthread(run->co) == LUA_OK;
    vm->enforce = 0;
    if (own_deadline)
        deadline_stop(vm, run->co);
    lua_settop(run->co, 0);
    kr_run_set_current(run->co, NULL);
    /* a reset coroutine is as good as new: keep a few, so a run costs no
     * thread allocation (and no garbage) */
    if (clean && vm->idle_n < IDLE_COROUTINES) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->idle_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);
        lua_rawseti(L, -2, ++vm->idle_n);
        lua_pop(L, 1);
    }
    if (run->request) { /* raised while building a request */
        kr_record_free(run->request);
        free(run->request);
        run->request = NULL;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, run->co_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, run->msg_ref);
    run->co = NULL;
    run->co_ref = run->msg_ref = LUA_NOREF;
}

/* Resumes run->co with nargs values on its stack; interprets the outcome. */
static int run_resume(kr_vm_t *vm, kr_run_t *run, int nargs)
{
    lua_State *L = vm->L, *co = run->co;
    int nres = 0;
    vm->enforce = 1;
    deadline_start(vm);
    int status = lua_resume(co, L, nargs, &nres);
    vm->enforce = 0;
    int rc = KR_VM_FAILED;

    if (status == LUA_YIELD) {
        lua_pop(co, nres);
        if (run->request) { /* suspended in kroute.request: the caller sends it */
            deadline_stop(vm, co);
            vm->suspended++;
            return KR_VM_YIELDED;
        }
        run->error = dup_or_null("handler yielded: coroutine.yield is not allowed at the top "
                                 "level of a handler");
        run->trace = dup_or_null("");
    } else if (status == LUA_OK) {
        rc = KR_VM_OK;
    } else if (status == LUA_ERRMEM) {
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "out of memory: the route's Lua memory limit (%zu bytes) was reached",
                 vm->mem_limit);
        run->error = dup_or_null(buf);
    } else {
        run->error = errobj_text(vm, co);
    }
    if (rc == KR_VM_FAILED) {
        if (!run->trace) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);
            char *trace = protected_text(vm, traceback_entry);
            run->trace = trace ? trace : dup_or_null("");
        }
        for (size_t i = 0; i < run->cnt; i++)
            kr_record_free(&run->recs[i]);
        run->cnt = 0; /* a failed run produces nothing */
    }
    run_release(vm, run); /* still under the run's deadline */
    deadline_stop(vm, co);
    check_memory(vm, status == LUA_ERRMEM);
    return rc;
}

/* [-0, +1, -] the function that handles `topic`: the handler function, or
 * the entry named `topic` of a handler table (a NestJS-style service);
 * nil when the table has none. */
static void push_handle(kr_vm_t *vm, lua_State *co, const char *topic)
{
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->handle_ref);
    if (lua_istable(co, -1)) {
        lua_pushstring(co, topic);
        lua_rawget(co, -2); /* raw: no handler __index runs outside the run */
        lua_remove(co, -2);
        if (!lua_isfunction(co, -1)) {
            lua_pop(co, 1);
            lua_pushnil(co);
        }
    }
}

int kr_vm_run(kr_vm_t *vm, kr_run_t *run)
{
    if (vm->rebuild && !vm->suspended)
        state_rebuild(vm);
    lua_State *L = vm->L;
    lua_State *co;
    if (vm->idle_n > 0) { /* pop a finished coroutine off the idle stack */
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->idle_ref);
        lua_rawgeti(L, -1, vm->idle_n);
        co = lua_tothread(L, -1);
        lua_pushnil(L);
        lua_rawseti(L, -3, vm->idle_n--);
        lua_remove(L, -2);
    } else {
        co = lua_newthread(L);
        /* a run coroutine: out of reach of coroutine.resume/close */
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->runs_ref);
        lua_pushvalue(L, -2);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    run->co = co;
    run->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    kr_message_push(L, run->msg);
    run->msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    run->vm = vm;
    run->mem_limit = vm->mem_limit; /* outputs' C memory counts against the cap */
    kr_run_set_current(co, run);
    lua_pushcfunction(co, run_entry);
    push_handle(vm, co, run->msg->topic);
    if (lua_isnil(co, -1)) {
        run->no_handler = 1;
        run->error = dup_or_null("There is no matching message handler defined in the "
                                 "remote service.");
        run->trace = dup_or_null("");
        run_release(vm, run);
        return KR_VM_FAILED;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, run->msg_ref);
    return run_resume(vm, run, 2);
}

int kr_vm_resume(kr_vm_t *vm, kr_run_t *run, const char *value, size_t len, const char *err)
{
    lua_State *co = run->co;
    kr_record_free(run->request);
    free(run->request);
    run->request = NULL;
    vm->suspended--;
    if (value && len > memory_left(vm)) {
        value = NULL; /* pushed outside the cap, it could swamp the state */
        err = "reply too large for the route's memory limit";
    }
    if (value)
        lua_pushlstring(co, value, len);
    else
        lua_pushnil(co);
    if (err)
        lua_pushstring(co, err);
    else
        lua_pushnil(co);
    return run_resume(vm, run, 2);
}

void kr_vm_abandon(kr_vm_t *vm, kr_run_t *run)
{
    if (run->co) {
        vm->suspended--;
        run_release(vm, run);
    }
}

int64_t kr_vm_timeout_ms(const kr_vm_t *vm)
{
    return vm->timeout_ms;
}

const char *kr_vm_name(const kr_vm_t *vm)
{
    return vm->name;
}

void kr_vm_retire(kr_vm_t *vm)
{
    vm->retired = 1;
}

int kr_vm_retired(const kr_vm_t *vm)
{
    return vm->retired;
}

size_t kr_vm_memory(const kr_vm_t *vm)
{
    return __atomic_load_n(&vm->mem_used, __ATOMIC_RELAXED);
}

const char *const *kr_vm_files(const kr_vm_t *vm, size_t *cnt)
{
    *cnt = vm->file_cnt;
    return (const char *const *)vm->files;
}

/* Runs protected: reload_state() -> JSON text in the kr_buf_t. */
static int export_entry(lua_State *L)
{
    kr_vm_t *vm = lua_touserdata(L, 1);
    kr_buf_t *out = lua_touserdata(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->state_ref);
    lua_call(L, 0, 1);
    char err[256];
    if (kr_json_encode(L, -1, err, sizeof(err)) < 0)
        return luaL_error(L, "reload_state: the state cannot be carried over as JSON: %s", err);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    kr_buf_add(out, text, len);
    return 0;
}

int kr_vm_has_state(const kr_vm_t *vm)
{
    return __atomic_load_n(&vm->has_state, __ATOMIC_RELAXED);
}

int kr_vm_export_state(kr_vm_t *vm, kr_buf_t *out, char *errstr, size_t errsize)
{
    if (vm->state_ref == LUA_NOREF)
        return 0;
    lua_State *L = vm->L;
    lua_pushcfunction(L, export_entry);
    lua_pushlightuserdata(L, vm);
    lua_pushlightuserdata(L, out);
    int status = limited_pcall(vm, 2);
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        snprintf(errstr, errsize, "%s (in reload_state)", msg ? msg : "error");
        lua_settop(L, 0);
        out->len = 0;
        return -1;
    }
    lua_settop(L, 0);
    kr_buf_addc(out, '\0');
    return 1;
}

void kr_vm_free(kr_vm_t *vm)
{
    if (!vm)
        return;
    for (size_t i = 0; i < vm->file_cnt; i++)
        free(vm->files[i]);
    free(vm->files);
    if (vm->L)
        lua_close(vm->L);
    free(vm->name);
    free((char *)vm->opts.handler);
    free(vm->handler_dir);
    free(vm->lua_dir);
    free(vm);
}
