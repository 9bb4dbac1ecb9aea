/* worker.h - a worker: one sandboxed VM per route of a configuration.
 * Building a worker is also how handlers are validated (kroute check),
 * since it compiles, loads and inits every handler exactly as serving does. */
#ifndef KR_WORKER_H
#define KR_WORKER_H

#include "config.h"
#include "errors.h"
#include "vm.h"

typedef struct kr_worker {
    int id;
    kr_vm_t **vms;      /* indexed by kr_route_t.index */
    size_t vm_cnt;
} kr_worker_t;

/* Returns NULL and adds "file:line: message" errors if any handler fails.
 * With a previous worker (a reload), each route's init(prev) receives what
 * the same-named route's reload_state() returned there. */
kr_worker_t *kr_worker_new(int id, const kr_config_t *cfg, const char *lua_dir,
                           const kr_worker_t *prev, const kr_config_t *prev_cfg,
                           kr_errors_t *errs);
void kr_worker_free(kr_worker_t *w);

#endif
