/* generation.c - see generation.h. */
#include "generation.h"

#include "pool.h"

#include <stdlib.h>
#include <string.h>

static void add_file(kr_gen_t *g, const char *path)
{
    for (size_t i = 0; i < g->file_cnt; i++)
        if (!strcmp(g->files[i], path))
            return;
    char **files = realloc(g->files, (g->file_cnt + 1) * sizeof(*files));
    if (!files || !(files[g->file_cnt] = strdup(path)))
        abort();
    g->files = files;
    g->file_cnt++;
}

static void gen_free(kr_gen_t *g)
{
    for (int i = 0; i < g->worker_cnt; i++)
        kr_worker_free(g->workers[i]);
    free(g->workers);
    kr_config_free(g->cfg);
    for (size_t i = 0; i < g->file_cnt; i++)
        free(g->files[i]);
    free(g->files);
    for (size_t i = 0; i < g->owned_cnt; i++)
        free(g->owned[i]);
    free(g->owned);
    free(g);
}

kr_gen_t *kr_gen_build(const kr_gen_opts_t *o, const kr_gen_t *prev, kr_errors_t *errs)
{
    kr_config_t *cfg = kr_config_load(o->paths, o->path_cnt, errs);
    if (!cfg)
        return NULL;
    if (o->brokers) {
        free(cfg->brokers);
        cfg->brokers = strdup(o->brokers);
    }
    if (o->group) {
        free(cfg->group);
        cfg->group = strdup(o->group);
    }
    kr_gen_t *g = calloc(1, sizeof(*g));
    if (!g)
        abort();
    g->id = prev ? prev->id + 1 : 1;
    g->cfg = cfg;
    g->refs = 1;
    g->worker_cnt = o->workers > 0 ? o->workers : 1;
    g->workers = calloc((size_t)g->worker_cnt, sizeof(*g->workers));
    if (!g->workers)
        abort();
    for (int i = 0; i < g->worker_cnt; i++) {
        const kr_worker_t *pw = prev && i < prev->worker_cnt ? prev->workers[i] : NULL;
        /* reload_state() runs in the previous VMs: not while their thread does */
        if (pw && o->pool)
            kr_pool_lock(o->pool, i);
        g->workers[i] = kr_worker_new(i, cfg, o->lua_dir, pw, prev ? prev->cfg : NULL, errs);
        if (pw && o->pool)
            kr_pool_unlock(o->pool, i);
        if (!g->workers[i]) {
            gen_free(g);
            return NULL;
        }
    }
    for (size_t i = 0; i < cfg->file_cnt; i++)
        add_file(g, cfg->files[i]);
    for (size_t i = 0; i < g->workers[0]->vm_cnt; i++) {
        size_t n;
        const char *const *files = kr_vm_files(g->workers[0]->vms[i], &n);
        for (size_t j = 0; j < n; j++)
            add_file(g, files[j]);
    }
    return g;
}

void *kr_gen_alloc(kr_gen_t *g, size_t size)
{
    void *p = calloc(1, size ? size : 1);
    void **owned = realloc(g->owned, (g->owned_cnt + 1) * sizeof(*owned));
    if (!p || !owned)
        abort();
    g->owned = owned;
    g->owned[g->owned_cnt++] = p;
    return p;
}

void kr_gen_ref(kr_gen_t *g)
{
    g->refs++;
}

void kr_gen_unref(kr_gen_t *g)
{
    if (g && --g->refs == 0)
        gen_free(g);
}
