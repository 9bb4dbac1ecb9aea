/* worker.h - a worker: one sandboxed VM per route of a configuration.
 * Building a worker is also how handlers are validated (kroute check),
 * since it compiles, loads and inits every handler exactly as serving does. */
#ifndef KR_WORKER_H
#define KR_WORKER_H

#include "config/config.h"
#include "config/errors.h"
#include "runtime/vm.h"

typedef struct kr_worker {
    int id;
    kr_vm_t **vms;      /* indexed by kr_route_t.index */
    size_t vm_cnt;
} kr_worker_t;

/* What a previous worker's routes hand over on a reload, by route name:
 * the JSON text reload_state() returned (len 0: none), or its error. */
typedef struct kr_worker_states {
    size_t cnt;
    const char **names;  /* the previous config's, borrowed */
    kr_buf_t *states;
    char **errors;
} kr_worker_states_t;

/* Returns NULL and adds "file:line: message" errors if any handler fails.
 * With `prev` (a reload), each route's init(prev) receives what the
 * same-named route's reload_state() returned there. */
kr_worker_t *kr_worker_new(int id, const kr_config_t *cfg, const char *lua_dir,
                           const kr_worker_states_t *prev, kr_errors_t *errs);
/* A fresh VM for route r, as kr_worker_new builds it; NULL with errstr. */
kr_vm_t *kr_worker_build_vm(const kr_route_t *r, const char *lua_dir, const char *prev_state,
                            char *errstr, size_t errsize);
/* 1 when some route of w defines reload_state. */
int kr_worker_has_state(const kr_worker_t *w);
/* Runs reload_state() in every VM of w that defines it, except those
 * skip() returns 1 for; must run on the thread that owns w's VMs. */
void kr_worker_export(const kr_worker_t *w, const kr_config_t *cfg,
                      int (*skip)(const kr_vm_t *vm, void *ud), void *ud,
                      kr_worker_states_t *out);
void kr_worker_states_free(kr_worker_states_t *s);
void kr_worker_free(kr_worker_t *w);

#endif
