/* generation.h - one loaded configuration: the routes, the handler VMs of
 * every worker, and the files it was built from. A reload builds a new
 * generation beside the live one and swaps it in; each message holds a
 * reference to the generation it started on, so an old generation lives
 * until its last in-flight message is done. */
#ifndef KR_GENERATION_H
#define KR_GENERATION_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "config/errors.h"
#include "runtime/worker.h"

struct kr_pool;

typedef struct kr_gen_opts {
    const char *const *paths; /* route files and folders */
    size_t path_cnt;
    const char *brokers;      /* overrides kafka.brokers, or NULL */
    const char *group;        /* overrides kafka.group, or NULL */
    const char *lua_dir;      /* kroute's lua/ folder */
    int workers;              /* VMs per route */
} kr_gen_opts_t;

typedef struct kr_gen {
    uint64_t id;              /* 1 for the first, +1 per successful reload */
    kr_config_t *cfg;
    kr_worker_t **workers;
    int worker_cnt;
    char **files;             /* route files and every Lua file handlers loaded */
    size_t file_cnt;
    struct kr_route_stats **stats; /* per route index, set by the dispatcher */
    void **owned;             /* arrays that live as long as the generation */
    size_t owned_cnt;
    const char *lua_dir;      /* kroute's lua/ folder (the options', outlives it) */
    kr_vm_t **retired;        /* VMs replaced by kr_gen_retire_vm, freed with it */
    size_t retired_cnt;
    int refs;
} kr_gen_t;

/* Adds to g->files what its VMs loaded since the last call (a module a
 * handler first requires while handling an event); returns how many new
 * files. Router thread. */
size_t kr_gen_take_new_files(kr_gen_t *g);

/* A reload's export of route state (reload_state()) from a live
 * generation, running on the pool threads that own its VMs. */
typedef struct kr_gen_export kr_gen_export_t;
/* Queues the export on `pool` (NULL: runs it here, when no thread runs the
 * VMs); `wake_fd` is written when it is done (-1: not). NULL when no route
 * of `prev` defines reload_state: nothing to wait for. `prev` must live
 * until the export is done. */
kr_gen_export_t *kr_gen_export_start(const kr_gen_t *prev, struct kr_pool *pool, int wake_fd);
int kr_gen_export_done(kr_gen_export_t *x);
/* Frees a finished export. */
void kr_gen_export_free(kr_gen_export_t *x);

/* Parses and checks the route files, then compiles, loads and inits every
 * handler in fresh VMs; `states` (a finished export, or NULL) hands route
 * state over to init(prev). Returns NULL with "file:line..." errors. The
 * new generation has one reference, held by the caller. */
kr_gen_t *kr_gen_build(const kr_gen_opts_t *o, const kr_gen_t *prev, kr_gen_export_t *states,
                       kr_errors_t *errs);
/* Allocates zeroed memory freed with the generation. */
void *kr_gen_alloc(kr_gen_t *g, size_t size);
/* Replaces worker `worker`'s VM of route `route_index` with a freshly
 * loaded one (module state starts over) and keeps the old one, retired,
 * until the generation is freed: an abandoned thread may still run in it.
 * 0, or -1 with errstr (nothing changed). */
int kr_gen_retire_vm(kr_gen_t *g, int worker, size_t route_index, char *errstr,
                     size_t errsize);
void kr_gen_ref(kr_gen_t *g);
/* Drops a reference; the last one frees the generation and its VMs. */
void kr_gen_unref(kr_gen_t *g);

#endif
