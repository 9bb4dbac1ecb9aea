/* vm_run.c - running handler code in a built state (see vm_internal.h):
 * the deadline (a count hook, and the check the bounded string and table
 * functions ask), protected calls under the cap and the deadline, one
 * coroutine per run (kr_vm_run, suspended in kroute.request and resumed
 * by kr_vm_resume, or dropped by kr_vm_abandon; finished ones kept for
 * reuse), the texts of a failed run, and reload_state's export. */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "codec/json.h"
#include "runtime/message.h"
#include "runtime/vm_internal.h"

/* Count hook, set on the main thread so every coroutine inherits it
 * (including ones a handler creates). Past the deadline it raises, and
 * from then on fires on every instruction of whichever thread it fires
 * in: a handler that swallows the error with pcall - in a child coroutine
 * or in the run's own - is stopped by the next instruction outside the
 * pcall. A thread left on every-instruction mode by an earlier run goes
 * back to sampling the next time its hook fires in time. */
void kr_vmi_deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    void *ud;
    lua_getallocf(L, &ud);
    kr_vm_t *vm = ud;
    if (!vm->deadline_ns || kr_clock_ns() <= vm->deadline_ns) {
        if (lua_gethookcount(L) != HOOK_EVERY)
            lua_sethook(L, kr_vmi_deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
        return;
    }
    vm->timed_out = 1;
    if (lua_gethookcount(L) != 1)
        lua_sethook(L, kr_vmi_deadline_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "timeout: handler ran longer than %I ms",
               (lua_Integer)((vm->deadline_ns - vm->started_ns) / 1000000));
}

/* For the bounded C library functions (strbound.c): NULL while the run
 * has time left, else the timeout text. */
const char *kr_vmi_deadline_check(lua_State *L, void *ud)
{
    (void)L;
    kr_vm_t *vm = ud;
    if (!vm->deadline_ns || kr_clock_ns() <= vm->deadline_ns)
        return NULL;
    vm->timed_out = 1;
    return "timeout: handler ran longer than its limit";
}

size_t kr_vmi_memory_left(void *ud)
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
        lua_sethook(vm->L, kr_vmi_deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
        if (co)
            lua_sethook(co, kr_vmi_deadline_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
}

/* lua_pcall of a function and nargs arguments on the main thread, under
 * the memory cap and the deadline (loading, init, reload_state). */
int kr_vmi_limited_pcall(kr_vm_t *vm, int nargs)
{
    vm->enforce = 1;
    deadline_start(vm);
    int status = lua_pcall(vm->L, nargs, 0, 0);
    deadline_stop(vm, NULL);
    vm->enforce = 0;
    return status;
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
        if (run->nest_reply)
            kr_record_from_nest(co, i, rec, 1);
        else
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
    char *text = status == LUA_OK ? kr_vmi_dup_or_null(lua_tostring(L, -1)) : NULL;
    lua_pop(L, 1);
    return text;
}

/* The text of the error object on top of co; the deadline is still the
 * run's. */
static char *errobj_text(kr_vm_t *vm, lua_State *co)
{
    int t = lua_type(co, -1);
    if (t == LUA_TSTRING)
        return kr_vmi_dup_or_null(lua_tostring(co, -1));
    if (t == LUA_TNIL)
        return kr_vmi_dup_or_null("error(nil) raised without a message");
    lua_xmove(co, vm->L, 1); /* the object leaves the dead coroutine */
    char *text = protected_text(vm, errtext_entry);
    if (text)
        return text;
    char buf[160];
    snprintf(buf, sizeof(buf), "error object is a %s whose __tostring failed%s",
             lua_typename(co, t), vm->timed_out ? " (timeout)" : "");
    return kr_vmi_dup_or_null(buf);
}

/* Ends a run's coroutine: releases it and invalidates its message.
 * `returned`: the handler returned, so its coroutine is as good as new
 * (a return closes its upvalues and to-be-closed variables) and is kept
 * as it is. Any other coroutine is reset: that runs pending __close
 * handlers (handler code) under the cap and a deadline, the run's own or
 * a fresh one when the run is abandoned. A reset also shrinks the stack
 * to its minimum, which the next run would allocate again, so a returned
 * one is not reset; the collector shrinks idle coroutines' stacks. */
static void run_release(kr_vm_t *vm, kr_run_t *run, int returned)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, run->msg_ref);
    kr_message_invalidate(L, -1);
    lua_pop(L, 1);
    int clean = returned;
    if (!clean) {
        int own_deadline = !vm->deadline_ns;
        if (own_deadline)
            deadline_start(vm);
        vm->enforce = 1;
        clean = lua_resetthread(run->co) == LUA_OK;
        vm->enforce = 0;
        if (own_deadline)
            deadline_stop(vm, run->co);
    }
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
        run->error = kr_vmi_dup_or_null("handler yielded: coroutine.yield is not allowed at the top "
                                 "level of a handler");
        run->trace = kr_vmi_dup_or_null("");
    } else if (status == LUA_OK) {
        rc = KR_VM_OK;
    } else if (status == LUA_ERRMEM) {
        char buf[160];
        snprintf(buf, sizeof(buf),
                 "out of memory: the route's Lua memory limit (%zu bytes) was reached",
                 vm->mem_limit);
        run->error = kr_vmi_dup_or_null(buf);
    } else {
        run->error = errobj_text(vm, co);
    }
    if (rc == KR_VM_FAILED) {
        if (!run->trace) {
            lua_rawgeti(L, LUA_REGISTRYINDEX, run->co_ref);
            char *trace = protected_text(vm, traceback_entry);
            run->trace = trace ? trace : kr_vmi_dup_or_null("");
        }
        for (size_t i = 0; i < run->cnt; i++)
            kr_record_free(&run->recs[i]);
        run->cnt = 0; /* a failed run produces nothing */
    }
    run_release(vm, run, status == LUA_OK); /* still under the run's deadline */
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
        kr_vmi_state_rebuild(vm);
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
        run->error = kr_vmi_dup_or_null("There is no matching message handler defined in the "
                                 "remote service.");
        run->trace = kr_vmi_dup_or_null("");
        run_release(vm, run, 0);
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
    if (value && len > kr_vmi_memory_left(vm)) {
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
        run_release(vm, run, 0);
    }
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
    int status = kr_vmi_limited_pcall(vm, 2);
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
