/* vm.c - the handler sandbox (see vm.h).
 * Libraries are opened one by one (no io, no debug, no package loaders;
 * os cut down to clock/time/date/difftime; load is text-only), `require`
 * searches only the handler's folder and kroute's lua/ folder, the
 * allocator enforces the route's memory cap while handler code runs, and a
 * count hook stops a run that passes its deadline. Every handler run is a
 * coroutine started from C, so nothing in here runs unprotected. */
#include "vm.h"

#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "lapi.h"
#include "log.h"
#include "message.h"

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
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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
 * from then on fires on every instruction: a handler that swallows the
 * error with pcall is stopped by the next instruction outside the pcall. */
static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    void *ud;
    lua_getallocf(L, &ud);
    kr_vm_t *vm = ud;
    if (!vm->deadline_ns || now_ns() <= vm->deadline_ns)
        return;
    if (!vm->timed_out) {
        vm->timed_out = 1;
        lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "timeout: handler ran longer than %I ms",
               (lua_Integer)((vm->deadline_ns - vm->started_ns) / 1000000));
}

static void deadline_start(kr_vm_t *vm)
{
    vm->started_ns = now_ns();
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
            if (access(path, R_OK) != 0) {
                luaL_addstring(&tried, "\n\tno file '");
                luaL_addstring(&tried, path);
                luaL_addstring(&tried, "'");
                continue;
            }
            if (luaL_loadfilex(L, path, "t") != LUA_OK)
                return lua_error(L);
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
    lua_gc(L, LUA_GCGEN, 0, 0);
}

/* Runs protected (see load_handler): loads the file, runs it, calls
 * init, and anchors the handle function. [-2, +0, e] */
static int load_entry(lua_State *L)
{
    kr_vm_t *vm = lua_touserdata(L, 1);
    const char *path = lua_tostring(L, 2);
    if (luaL_loadfilex(L, path, "t") != LUA_OK)
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

kr_vm_t *kr_vm_new(const kr_vm_opts_t *opts, char *errstr, size_t errsize)
{
    kr_vm_t *vm = calloc(1, sizeof(*vm));
    if (!vm)
        abort();
    vm->name = dup_or_null(opts->name ? opts->name : "?");
    char *tmp = dup_or_null(opts->handler);
    vm->handler_dir = dup_or_null(dirname(tmp));
    free(tmp);
    vm->lua_dir = dup_or_null(opts->lua_dir);
    vm->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    vm->mem_limit = opts->memory ? opts->memory : (64u << 20);
    vm->handle_ref = LUA_NOREF;
    vm->state_ref = LUA_NOREF;
    vm->idle_ref = LUA_NOREF;
    vm->prev_state = opts->prev_state;
    vm_add_file(vm, opts->handler);
    vm->L = lua_newstate(vm_alloc, vm);
    if (!vm->L) {
        snprintf(errstr, errsize, "%s:1: cannot create a Lua state", opts->handler);
        goto fail;
    }
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
    if (load_handler(vm, opts->handler, errstr, errsize) < 0)
        goto fail;
    vm->prev_state = NULL;
    return vm;
fail:
    kr_vm_free(vm);
    return NULL;
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
        kr_record_t *rec = kr_run_add(run);
        rec->returned = 1;
        kr_record_from_lua(co, i, rec);
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

static char *errobj_text(lua_State *L, int idx)
{
    const char *s;
    if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER)
        s = lua_tostring(L, idx);
    else if (lua_isnil(L, idx))
        s = "error(nil) raised without a message";
    else
        s = luaL_tolstring(L, idx, NULL);
    return dup_or_null(s);
}

/* Ends a run's coroutine: releases it and invalidates its message. */
static void run_release(kr_vm_t *vm, kr_run_t *run)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->msg_ref);
    kr_message_invalidate(L, -1);
    lua_pop(L, 1);
    int clean = lua_resetthread(run->co) == LUA_OK;
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
    deadline_stop(vm, co);
    vm->enforce = 0;

    if (status == LUA_YIELD) {
        lua_pop(co, nres);
        if (run->request) /* suspended in kroute.request: the caller sends it */
            return KR_VM_YIELDED;
        run->error = dup_or_null("handler yielded: coroutine.yield is not allowed at the top "
                                 "level of a handler");
        run->trace = dup_or_null("");
    } else if (status == LUA_OK) {
        run_release(vm, run);
        return KR_VM_OK;
    } else if (status == LUA_ERRMEM) {
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "out of memory: the route's Lua memory limit (%zu bytes) was reached",
                 vm->mem_limit);
        run->error = dup_or_null(buf);
    } else {
        run->error = errobj_text(co, -1);
    }
    if (!run->trace) {
        luaL_traceback(L, co, NULL, 0);
        run->trace = dup_or_null(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    for (size_t i = 0; i < run->cnt; i++)
        kr_record_free(&run->recs[i]);
    run->cnt = 0; /* a failed run produces nothing */
    run_release(vm, run);
    return KR_VM_FAILED;
}

/* [-0, +1, -] the function that handles `topic`: the handler function, or
 * the entry named `topic` of a handler table (a NestJS-style service);
 * nil when the table has none. */
static void push_handle(kr_vm_t *vm, lua_State *co, const char *topic)
{
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->handle_ref);
    if (lua_istable(co, -1)) {
        lua_getfield(co, -1, topic);
        lua_remove(co, -2);
        if (!lua_isfunction(co, -1)) {
            lua_pop(co, 1);
            lua_pushnil(co);
        }
    }
}

int kr_vm_run(kr_vm_t *vm, kr_run_t *run)
{
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
    }
    run->co = co;
    run->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    kr_message_push(L, run->msg);
    run->msg_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    run->vm = vm;
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
    if (run->co)
        run_release(vm, run);
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
    if (kr_json_encode(L, -1, out, err, sizeof(err)) < 0)
        return luaL_error(L, "reload_state: the state cannot be carried over as JSON: %s", err);
    return 0;
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
    free(vm->handler_dir);
    free(vm->lua_dir);
    free(vm);
}
