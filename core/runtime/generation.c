/* generation.c - see generation.h. */
#include "runtime/generation.h"

#include "runtime/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A reload's state export: reload_state() runs in the previous VMs on the
 * threads that own them, queued ahead of their waiting runs, so a reload
 * never enters a VM a thread is running, and the router never waits: it
 * polls kr_gen_export_done() and builds once every call is back. */
typedef struct export_call {
    kr_job_t job;
    kr_gen_export_t *x;
    const kr_worker_t *w;
    const kr_config_t *cfg;
    kr_worker_states_t states;
} export_call_t;

struct kr_gen_export {
    pthread_mutex_t mu;
    int left;               /* calls not finished (under mu) */
    int n;
    export_call_t *calls;   /* by previous worker index */
    kr_pool_t *pool;
    int wake_fd;
};

static int vm_abandoned(const kr_vm_t *vm, void *ud)
{
    return ud && kr_pool_vm_abandoned(ud, vm);
}

static void export_on_thread(kr_job_t *job)
{
    export_call_t *c = (export_call_t *)job;
    kr_gen_export_t *x = c->x;
    kr_worker_export(c->w, c->cfg, vm_abandoned, x->pool, &c->states);
    pthread_mutex_lock(&x->mu);
    int last = --x->left == 0;
    pthread_mutex_unlock(&x->mu);
    if (last && x->wake_fd >= 0) {
        ssize_t w = write(x->wake_fd, "x", 1);
        (void)w;
    }
}

kr_gen_export_t *kr_gen_export_start(const kr_gen_t *prev, kr_pool_t *pool, int wake_fd)
{
    int need = 0;
    for (int i = 0; i < prev->worker_cnt; i++)
        need += kr_worker_has_state(prev->workers[i]);
    if (!need)
        return NULL;
    kr_gen_export_t *x = calloc(1, sizeof(*x));
    if (!x || !(x->calls = calloc((size_t)prev->worker_cnt, sizeof(*x->calls))))
        abort();
    pthread_mutex_init(&x->mu, NULL);
    x->n = prev->worker_cnt;
    x->left = need;
    x->pool = pool;
    x->wake_fd = wake_fd;
    for (int i = 0; i < prev->worker_cnt; i++) {
        export_call_t *c = &x->calls[i];
        c->x = x;
        c->w = prev->workers[i];
        c->cfg = prev->cfg;
        if (!kr_worker_has_state(c->w))
            continue;
        c->job.fn = export_on_thread;
        if (pool)
            kr_pool_call(pool, i, &c->job);
        else /* no threads (a test): this thread owns the VMs */
            export_on_thread(&c->job);
    }
    return x;
}

int kr_gen_export_done(kr_gen_export_t *x)
{
    pthread_mutex_lock(&x->mu);
    int done = x->left == 0;
    pthread_mutex_unlock(&x->mu);
    return done;
}

void kr_gen_export_free(kr_gen_export_t *x)
{
    if (!x)
        return;
    for (int i = 0; i < x->n; i++)
        kr_worker_states_free(&x->calls[i].states);
    free(x->calls);
    pthread_mutex_destroy(&x->mu);
    free(x);
}

/* Adds path (taking it over) to the files unless it is there; returns 1
 * when added. */
static int add_file(kr_gen_t *g, char *path)
{
    for (size_t i = 0; i < g->file_cnt; i++) {
        if (!strcmp(g->files[i], path)) {
            free(path);
            return 0;
        }
    }
    char **files = realloc(g->files, (g->file_cnt + 1) * sizeof(*files));
    if (!files)
        abort();
    files[g->file_cnt++] = path;
    g->files = files;
    return 1;
}

size_t kr_gen_take_new_files(kr_gen_t *g)
{
    size_t added = 0;
    char *path;
    for (int w = 0; w < g->worker_cnt; w++)
        for (size_t i = 0; i < g->workers[w]->vm_cnt; i++)
            while ((path = kr_vm_take_file(g->workers[w]->vms[i])))
                added += (size_t)add_file(g, path);
    return added;
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
    for (size_t i = 0; i < g->retired_cnt; i++)
        kr_vm_free(g->retired[i]);
    free(g->retired);
    free(g);
}

kr_gen_t *kr_gen_build(const kr_gen_opts_t *o, const kr_gen_t *prev, kr_gen_export_t *states,
                       kr_errors_t *errs)
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
    g->lua_dir = o->lua_dir;
    g->cfg = cfg;
    g->refs = 1;
    g->worker_cnt = o->workers > 0 ? o->workers : 1;
    g->workers = calloc((size_t)g->worker_cnt, sizeof(*g->workers));
    if (!g->workers)
        abort();
    int failed = 0;
    for (int i = 0; i < g->worker_cnt && !failed; i++) {
        const kr_worker_states_t *st = states && i < states->n ? &states->calls[i].states : NULL;
        g->workers[i] = kr_worker_new(i, cfg, o->lua_dir, st, errs);
        failed = !g->workers[i];
    }
    if (failed) {
        gen_free(g);
        return NULL;
    }
    for (size_t i = 0; i < cfg->file_cnt; i++) {
        char *path = strdup(cfg->files[i]);
        if (!path)
            abort();
        add_file(g, path);
    }
    kr_gen_take_new_files(g);
    return g;
}

int kr_gen_retire_vm(kr_gen_t *g, int worker, size_t route_index, char *errstr,
                     size_t errsize)
{
    kr_worker_t *w = g->workers[worker];
    kr_vm_t *fresh =
        kr_worker_build_vm(&g->cfg->routes[route_index], g->lua_dir, NULL, errstr, errsize);
    if (!fresh)
        return -1;
    kr_vm_t **retired = realloc(g->retired, (g->retired_cnt + 1) * sizeof(*retired));
    if (!retired)
        abort();
    g->retired = retired;
    kr_vm_retire(w->vms[route_index]);
    g->retired[g->retired_cnt++] = w->vms[route_index];
    w->vms[route_index] = fresh;
    return 0;
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
