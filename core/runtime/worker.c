/* worker.c - see worker.h. */
#include "runtime/worker.h"

#include <stdlib.h>
#include <string.h>

kr_vm_t *kr_worker_build_vm(const kr_route_t *r, const char *lua_dir, const char *prev_state,
                            char *errstr, size_t errsize)
{
    kr_vm_opts_t opts = {.name = r->name,
                         .handler = r->handler,
                         .lua_dir = lua_dir,
                         .timeout_ms = r->timeout_ms,
                         .memory = r->memory,
                         .prev_state = prev_state};
    return kr_vm_new(&opts, errstr, errsize);
}

int kr_worker_has_state(const kr_worker_t *w)
{
    for (size_t i = 0; w && i < w->vm_cnt; i++)
        if (kr_vm_has_state(w->vms[i]))
            return 1;
    return 0;
}

void kr_worker_export(const kr_worker_t *w, const kr_config_t *cfg,
                      int (*skip)(const kr_vm_t *vm, void *ud), void *ud,
                      kr_worker_states_t *out)
{
    out->cnt = w->vm_cnt;
    out->names = calloc(w->vm_cnt ? w->vm_cnt : 1, sizeof(*out->names));
    out->states = calloc(w->vm_cnt ? w->vm_cnt : 1, sizeof(*out->states));
    out->errors = calloc(w->vm_cnt ? w->vm_cnt : 1, sizeof(*out->errors));
    if (!out->names || !out->states || !out->errors)
        abort();
    for (size_t i = 0; i < w->vm_cnt; i++) {
        out->names[i] = cfg->routes[i].name;
        if (!kr_vm_has_state(w->vms[i]) || (skip && skip(w->vms[i], ud)))
            continue;
        char err[2048];
        if (kr_vm_export_state(w->vms[i], &out->states[i], err, sizeof(err)) < 0 &&
            !(out->errors[i] = strdup(err)))
            abort();
    }
}

void kr_worker_states_free(kr_worker_states_t *s)
{
    for (size_t i = 0; i < s->cnt; i++) {
        kr_buf_free(&s->states[i]);
        free(s->errors[i]);
    }
    free(s->names);
    free(s->states);
    free(s->errors);
    memset(s, 0, sizeof(*s));
}

kr_worker_t *kr_worker_new(int id, const kr_config_t *cfg, const char *lua_dir,
                           const kr_worker_states_t *prev, kr_errors_t *errs)
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
        /* state the route of the same name handed over (reload_state) */
        const char *state = NULL;
        for (size_t j = 0; prev && j < prev->cnt; j++) {
            if (strcmp(prev->names[j], r->name))
                continue;
            if (prev->errors[j]) {
                kr_errors_add(errs, "%s", prev->errors[j]);
                failed++;
                goto next;
            }
            state = prev->states[j].len ? prev->states[j].data : NULL;
        }
        w->vms[i] = kr_worker_build_vm(r, lua_dir, state, err, sizeof(err));
        if (!w->vms[i]) {
            kr_errors_add(errs, "%s", err);
            failed++;
        }
    next:;
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
