/* vm.h - one sandboxed Lua state running one route's handler.
 * A worker holds one kr_vm_t per route, so each route has its own memory
 * cap and module state, and a route that misbehaves cannot corrupt another.
 * The VM is driven from one thread at a time; it knows nothing of Kafka. */
#ifndef KR_VM_H
#define KR_VM_H

#include "buf.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/record.h"

typedef struct kr_vm_opts {
    const char *name;     /* route name, for log lines */
    const char *handler;  /* handler file */
    const char *lua_dir;  /* kroute's lua/ folder for require, or NULL */
    int64_t timeout_ms;   /* wall time per run */
    size_t memory;        /* allocator cap in bytes */
    const char *prev_state; /* JSON passed to init(prev) on a reload, or NULL */
} kr_vm_opts_t;

typedef struct kr_vm kr_vm_t;

/* Builds the sandbox, loads the handler file and runs its init().
 * Returns NULL with "file:line: message" in errstr on failure. */
kr_vm_t *kr_vm_new(const kr_vm_opts_t *opts, char *errstr, size_t errsize);
enum { KR_VM_OK = 0, KR_VM_FAILED = -1, KR_VM_YIELDED = 1 };

/* Runs the handler over run->msg in a fresh coroutine. Returns KR_VM_OK
 * with the outputs in run->recs; KR_VM_FAILED with run->error and
 * run->trace set (run->no_handler when a service table has no function for
 * the topic); or KR_VM_YIELDED when the handler waits in kroute.request
 * (run->request says what to send; finish with kr_vm_resume/abandon). */
int kr_vm_run(kr_vm_t *vm, kr_run_t *run);
/* Continues a yielded run with the reply bytes (NULL: null value) or an
 * error text (NULL: none). Same returns as kr_vm_run. */
int kr_vm_resume(kr_vm_t *vm, kr_run_t *run, const char *value, size_t len, const char *err);
/* Drops a yielded run (revoke, shutdown): its outputs are discarded. */
void kr_vm_abandon(kr_vm_t *vm, kr_run_t *run);
/* The next file the VM loaded (the handler, then every module it required,
 * also during a run) that was not taken before, as a copy the caller
 * frees; NULL when there is none. Any thread. */
char *kr_vm_take_file(kr_vm_t *vm);
/* 1 when the handler defines reload_state (any thread). */
int kr_vm_has_state(const kr_vm_t *vm);
/* Calls the handler's reload_state() and appends its result as JSON text
 * (NUL-terminated) to out: 1 done, 0 no reload_state, -1 failed. */
int kr_vm_export_state(kr_vm_t *vm, kr_buf_t *out, char *errstr, size_t errsize);
/* The route's time limit per run, and its name (fixed for the VM's life:
 * other threads may read them while it runs). */
int64_t kr_vm_timeout_ms(const kr_vm_t *vm);
const char *kr_vm_name(const kr_vm_t *vm);
/* Marks a VM that an abandoned thread may still be running in: it is
 * never entered again, only freed (see kr_gen_retire_vm). Router thread. */
void kr_vm_retire(kr_vm_t *vm);
int kr_vm_retired(const kr_vm_t *vm);
/* Bytes currently allocated by the VM. */
size_t kr_vm_memory(const kr_vm_t *vm);
void kr_vm_free(kr_vm_t *vm);

#endif
