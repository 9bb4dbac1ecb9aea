/* vm.c - the handler sandbox (see vm.h): one Lua state's life.
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
 * stop one. Handler code cannot reach kroute's own run coroutines.
 * This file builds a state (the handler loaded and its init run), rebuilds
 * one stuck at its cap, and frees it; the capped allocator is vm_alloc.c's,
 * what handler code may reach vm_sandbox.c's, running it (the deadline,
 * coroutines, reload_state) vm_run.c's. */
#include "runtime/vm.h"

#include <lauxlib.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "ops/log.h"
#include "runtime/vm_internal.h"

static int vm_panic(lua_State *L)
{
    kr_error("vm", "unprotected Lua error: %s", lua_tostring(L, -1));
    abort();
}

/* Runs protected (see load_handler): loads the file, runs it, calls
 * init, and anchors the handle function. [-2, +0, e] */
static int load_entry(lua_State *L)
{
    kr_vm_t *vm = lua_touserdata(L, 1);
    const char *path = lua_tostring(L, 2);
    int missing;
    if (kr_vmi_load_source(vm, L, path, &missing) != LUA_OK)
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

/* Loads the handler under the memory cap and the deadline, all inside
 * one pcall: even a failed allocation while anchoring is caught. */
static int load_handler(kr_vm_t *vm, const char *path, char *errstr, size_t errsize)
{
    lua_State *L = vm->L;
    lua_pushcfunction(L, load_entry);
    lua_pushlightuserdata(L, vm);
    lua_pushstring(L, path);
    int status = kr_vmi_limited_pcall(vm, 2);
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

char *kr_vmi_dup_or_null(const char *s)
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
    vm->L = lua_newstate(kr_vmi_alloc, vm);
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
    lua_sethook(vm->L, kr_vmi_deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
    kr_vmi_open_sandbox(vm);
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
    pthread_mutex_init(&vm->files_mu, NULL);
    vm->opts.name = vm->name = kr_vmi_dup_or_null(opts->name ? opts->name : "?");
    vm->opts.handler = kr_vmi_dup_or_null(opts->handler);
    char *tmp = kr_vmi_dup_or_null(opts->handler);
    vm->handler_dir = kr_vmi_dup_or_null(dirname(tmp));
    free(tmp);
    vm->opts.lua_dir = vm->lua_dir = kr_vmi_dup_or_null(opts->lua_dir);
    vm->opts.timeout_ms = vm->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 5000;
    vm->opts.memory = vm->mem_limit = opts->memory ? opts->memory : (64u << 20);
    vm->prev_state = opts->prev_state;
    kr_vmi_vm_add_file(vm, opts->handler);
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
void kr_vmi_state_rebuild(kr_vm_t *vm)
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
    lua_close(old); /* frees through kr_vmi_alloc: subtract what it held */
    __atomic_store_n(&vm->mem_used, fresh, __ATOMIC_RELAXED);
    kr_warn("vm", "route=%s: the Lua state was at its memory limit (%zu of %zu bytes) after a "
                  "run: rebuilt from the handler file (module state starts over)",
            vm->name, used, vm->mem_limit);
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

char *kr_vm_take_file(kr_vm_t *vm)
{
    char *path = NULL;
    pthread_mutex_lock(&vm->files_mu);
    if (vm->files_taken < vm->file_cnt && !(path = strdup(vm->files[vm->files_taken++])))
        abort();
    pthread_mutex_unlock(&vm->files_mu);
    return path;
}

void kr_vm_free(kr_vm_t *vm)
{
    if (!vm)
        return;
    for (size_t i = 0; i < vm->file_cnt; i++)
        free(vm->files[i]);
    free(vm->files);
    pthread_mutex_destroy(&vm->files_mu);
    if (vm->L)
        lua_close(vm->L);
    kr_vmi_alloc_flush(vm);
    free(vm->name);
    free((char *)vm->opts.handler);
    free(vm->handler_dir);
    free(vm->lua_dir);
    free(vm);
}
