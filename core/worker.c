/* worker.c - see worker.h. */
#include "worker.h"

#include <stdlib.h>

kr_worker_t *kr_worker_new(int id, const kr_config_t *cfg, const char *lua_dir,
                           kr_errors_t *errs)
{
    kr_worker_t *w = calloc(1, sizeof(*w));
    if (!w)
        abort();
    w->id = id;
    w->vm_cnt = cfg->route_cnt;
    w->vms = calloc(cfg->route_cnt ? cfg->route_cnt : 1, sizeof(*w->vms));
    if (!w->vms)
        abort();
    size_t failed = 0;
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        kr_vm_opts_t opts = {.name = r->name,
                             .handler = r->handler,
                             .lua_dir = lua_dir,
                             .timeout_ms = r->timeout_ms,
                             .memory = r->memory};
        char err[2048];
        w->vms[i] = kr_vm_new(&opts, err, sizeof(err));
        if (!w->vms[i]) {
            kr_errors_add(errs, "%s", err);
            failed++;
        }
    }
    if (failed) {
        kr_worker_free(w);
        return NULL;
    }
    return w;
}

void kr_worker_free(kr_worker_t *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->vm_cnt; i++)
        kr_vm_free(w->vms[i]);
    free(w->vms);
    free(w);
}
