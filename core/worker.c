/* worker.c - see worker.h. */
#include "worker.h"

#include <stdlib.h>
#include <string.h>

/* The VM of the route called `name` in a previous worker, or NULL. */
static kr_vm_t *prev_vm(const kr_worker_t *prev, const kr_config_t *prev_cfg, const char *name)
{
    for (size_t i = 0; prev && i < prev_cfg->route_cnt && i < prev->vm_cnt; i++)
        if (!strcmp(prev_cfg->routes[i].name, name))
            return prev->vms[i];
    return NULL;
}

kr_worker_t *kr_worker_new(int id, const kr_config_t *cfg, const char *lua_dir,
                           const kr_worker_t *prev, const kr_config_t *prev_cfg,
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
        char err[2048];
        /* state a route of the same name hands over (reload_state) */
        kr_buf_t state = {0};
        kr_vm_t *old = prev_vm(prev, prev_cfg, r->name);
        if (old && kr_vm_export_state(old, &state, err, sizeof(err)) < 0) {
            kr_errors_add(errs, "%s", err);
            failed++;
            continue;
        }
        kr_vm_opts_t opts = {.name = r->name,
                             .handler = r->handler,
                             .lua_dir = lua_dir,
                             .timeout_ms = r->timeout_ms,
                             .memory = r->memory,
                             .prev_state = state.len ? state.data : NULL};
        w->vms[i] = kr_vm_new(&opts, err, sizeof(err));
        kr_buf_free(&state);
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
