/* router.c - see router.h. Signal handlers only set flags and write to a
 * wake-up pipe; librdkafka queues write to the same pipe when they become
 * non-empty, so the loop sleeps in poll(2) until there is work. */
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec/json.h"
#include "config/config.h"
#include "config/pattern.h"
#include "engine/dispatch.h"
#include "kafka/broker.h"
#include "kafka/consumer.h"
#include "kafka/health.h"
#include "kafka/producer.h"
#include "kafka/requester.h"
#include "ops/admin.h"
#include "ops/log.h"
#include "ops/metrics.h"
#include "ops/watch.h"
#include "runtime/generation.h"
#include "runtime/pool.h"

static volatile sig_atomic_t stop_requested, reload_requested;
static int wake_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        reload_requested = 1;
    else
        stop_requested = 1;
    int saved = errno;
    ssize_t w = write(wake_pipe[1], "s", 1);
    (void)w;
    errno = saved;
}

/* Shutdown gives up past --drain-timeout (default 25 s): a handler still
 * running, outputs undelivered, or leaving the group blocked inside
 * librdkafka (a rebalance the broker holds open). What was delivered has
 * been committed or will be redelivered - never lost - but the drain was
 * not complete, so the exit status is 1. A timer thread acts, since the
 * router thread is the one stuck. */
#define DRAIN_TIMEOUT_MS 25000
/* The drain itself gets the limit less what closing needs: committing
 * what was delivered meanwhile and leaving the groups (a quarter of the
 * limit, at most CLOSE_RESERVE_MS). A drain that gives up still commits
 * the outputs it saw delivered; only the timer's _exit(1) skips that. */
#define CLOSE_RESERVE_MS 5000

static int drain_budget_ms(int limit_ms)
{
    int reserve = limit_ms / 4 < CLOSE_RESERVE_MS ? limit_ms / 4 : CLOSE_RESERVE_MS;
    return limit_ms - reserve;
}

static int drain_limit_ms;
/* messages consumed but not committable, as counted before and after the
 * drain (the timer thread reads it) */
static atomic_size_t drain_inflight;

static void on_drain_timeout(union sigval sv)
{
    (void)sv;
    kr_error("router",
             "shutdown gave up after %d ms with %zu message(s) still in flight: their offsets "
             "are not committed, so they will be redelivered; exiting 1",
             drain_limit_ms, atomic_load(&drain_inflight));
    _exit(1);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void print_errors(const kr_errors_t *errs)
{
    for (size_t i = 0; i < errs->cnt; i++)
        fprintf(stderr, "%s\n", errs->msgs[i]);
}

static kr_gen_opts_t gen_opts(const kr_router_opts_t *o)
{
    return (kr_gen_opts_t){.paths = o->paths,
                           .path_cnt = o->path_cnt,
                           .brokers = o->brokers,
                           .group = o->group,
                           .lua_dir = o->lua_dir,
                           .workers = o->workers > 0 ? o->workers : 1};
}

int kr_router_check(const kr_router_opts_t *o)
{
    /* exactly what a start or a reload builds, minus Kafka */
    kr_errors_t errs = {0};
    kr_gen_opts_t go = gen_opts(o);
    go.workers = 1;
    kr_gen_t *gen = kr_gen_build(&go, NULL, NULL, &errs);
    int rc = gen ? 0 : 2;
    print_errors(&errs);
    if (gen)
        printf("ok: %zu route(s) in %zu file(s), every handler loaded\n", gen->cfg->route_cnt,
               gen->cfg->file_cnt);
    kr_gen_unref(gen);
    kr_errors_free(&errs);
    return rc;
}

static void log_routes(const kr_config_t *cfg, int level)
{
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        char match[512];
        size_t len = 0;
        match[0] = '\0';
        for (size_t j = 0; j < r->pattern_cnt && len < sizeof(match) - 64; j++)
            len += (size_t)snprintf(match + len, sizeof(match) - len, "%s%s", j ? "," : "",
                                    r->patterns[j].text);
        kr_log(level, "router", "  route %s: %s -> %s (group %s, handler %s)", r->name, match,
               r->to ? r->to : "(handler chooses)", kr_route_group(cfg, r),
               r->handler);
    }
}

/* Every pattern routes declare in `requests:`, without repeats; the
 * strings belong to cfg. */
static const char **request_patterns(const kr_config_t *cfg, size_t *cnt)
{
    const char **patterns = NULL;
    *cnt = 0;
    for (size_t i = 0; i < cfg->route_cnt; i++)
        for (size_t j = 0; j < cfg->routes[i].request_cnt; j++) {
            const char *p = cfg->routes[i].requests[j];
            size_t k;
            for (k = 0; k < *cnt && strcmp(patterns[k], p); k++)
                ;
            if (k < *cnt)
                continue;
            patterns = realloc(patterns, (*cnt + 1) * sizeof(*patterns));
            if (!patterns)
                abort();
            patterns[(*cnt)++] = p;
        }
    return patterns;
}

/* The router: one live generation in the dispatcher, one consumer per
 * group, the producer, the requester, and the reload triggers. */
typedef struct router {
    const kr_router_opts_t *o;
    kr_gen_opts_t gopts;
    char *brokers;            /* resolved: the embedded broker's address */
    kr_dispatch_t *d;
    kr_pool_t *pool;
    kr_producer_t *p;
    kr_health_t *health_probe; /* broker reachability for /healthz */
    kr_requester_t *rq;
    kr_watch_t *watch;
    kr_admin_t *admin;
    int64_t reload_at_ms;     /* > 0: a file changed; reload then (debounce) */
    int64_t files_at_ms;      /* when the VMs' loaded files were last looked at */
    uint64_t reloads, reload_failures;
    char *last_reload;        /* JSON of the last reload's outcome */
    char health[512];         /* the last /healthz reason built on the fly */
    kr_gen_export_t *export;  /* a reload waiting for reload_state() on the workers */
    kr_gen_t *export_gen;     /* ...in this generation's VMs (a reference) */
    int64_t export_t0;
    char export_why[64];
    char queued_why[64];      /* a trigger that came meanwhile ("" = none) */
    time_t started;
} router_t;

#define DEBOUNCE_MS 50

/* kr_consumer_wake_fn: a worker's partitions have messages. */
static void poke_worker(void *pool, int worker)
{
    kr_pool_poke(pool, worker);
}

/* Gives a group a consumer subscribed to its topics, each partition's
 * messages going to its worker thread (engine/pass.c). */
static int open_group(router_t *rt, kr_group_t *g, char *err, size_t errsize)
{
    const kr_config_t *cfg = kr_dispatch_gen(rt->d)->cfg;
    kr_consumer_hooks_t hooks = {kr_dispatch_assigned, kr_dispatch_revoked, g, 1};
    kr_consumer_t *c = kr_consumer_new(rt->brokers, kr_group_name(g), &cfg->consumer,
                                       kr_dispatch_prefetch_kb(rt->d), &hooks, err, errsize);
    if (!c)
        return -1;
    kr_group_set_consumer(g, c);
    kr_consumer_wake_fd(c, wake_pipe[1]);
    kr_consumer_split(c, kr_pool_threads(rt->pool), poke_worker, rt->pool);
    size_t sub_cnt;
    const char *const *subs = kr_group_subscriptions(g, &sub_cnt);
    return kr_consumer_subscribe(c, subs, sub_cnt, err, errsize);
}

/* Makes sure every group of the live generation has a consumer, and
 * that the requester reads every declared reply topic. */
static int open_groups(router_t *rt, char *err, size_t errsize)
{
    const kr_config_t *cfg = kr_dispatch_gen(rt->d)->cfg;
    /* every group first: each consumer's prefetch is a share of the
     * budget by the number of groups */
    for (size_t i = 0; i < cfg->route_cnt; i++)
        kr_dispatch_group(rt->d, kr_route_group(cfg, &cfg->routes[i]));
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        kr_group_t *g = kr_dispatch_group(rt->d, kr_route_group(cfg, &cfg->routes[i]));
        if (!kr_group_consumer(g) && open_group(rt, g, err, errsize) < 0)
            return -1;
    }
    size_t cnt;
    const char **patterns = request_patterns(cfg, &cnt);
    int rc = 0;
    if (cnt && !rt->rq) {
        rt->rq = kr_requester_new(rt->brokers, cfg->group, &cfg->consumer, patterns, cnt, err,
                                  errsize);
        if (rt->rq) {
            kr_info("router", "requests: %zu pattern(s), replies read in group %s-client", cnt,
                    cfg->group);
            kr_dispatch_set_requester(rt->d, rt->rq);
            kr_consumer_wake_fd(kr_requester_consumer(rt->rq), wake_pipe[1]);
        } else {
            rc = -1;
        }
    } else if (rt->rq && kr_requester_set_patterns(rt->rq, patterns, cnt, err, errsize) < 0) {
        rc = -1;
    }
    free(patterns);
    return rc;
}

static void watch_generation(router_t *rt);

/* A module a handler requires only inside its function is loaded at the
 * first event that calls it, on a worker: twice a second, the files the
 * live generation's VMs loaded since are added to the watch. */
static void watch_new_files(router_t *rt)
{
    int64_t now = kr_clock_ms();
    if (!rt->watch || now - rt->files_at_ms < 500)
        return;
    rt->files_at_ms = now;
    kr_gen_t *gen = kr_dispatch_gen(rt->d);
    size_t before = gen->file_cnt;
    if (kr_gen_take_new_files(gen) == 0)
        return;
    for (size_t i = before; i < gen->file_cnt; i++)
        kr_info("router", "watching %s (first required while handling an event)",
                gen->files[i]);
    watch_generation(rt);
}

/* Route folders on the command line: a .yaml file added there counts. */
static void watch_generation(router_t *rt)
{
    if (!rt->watch)
        return;
    const kr_gen_t *gen = kr_dispatch_gen(rt->d);
    const char **folders = calloc(rt->o->path_cnt + 1, sizeof(*folders));
    if (!folders)
        abort();
    size_t folder_cnt = 0;
    for (size_t i = 0; i < rt->o->path_cnt; i++) {
        struct stat st;
        if (stat(rt->o->paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            folders[folder_cnt++] = rt->o->paths[i];
    }
    kr_watch_set(rt->watch, (const char *const *)gen->files, gen->file_cnt, folders, folder_cnt);
    free(folders);
}

static void set_last_reload(router_t *rt, const char *why, int ok, const kr_errors_t *errs)
{
    kr_buf_t b = {0};
    char head[256];
    snprintf(head, sizeof(head), "{\"generation\":%llu,\"ok\":%s,\"trigger\":",
             (unsigned long long)kr_dispatch_gen(rt->d)->id, ok ? "true" : "false");
    kr_buf_add(&b, head, strlen(head));
    kr_json_add_string(&b, why, strlen(why));
    snprintf(head, sizeof(head), ",\"reloads\":%llu,\"failures\":%llu,\"errors\":[",
             (unsigned long long)rt->reloads, (unsigned long long)rt->reload_failures);
    kr_buf_add(&b, head, strlen(head));
    for (size_t i = 0; errs && i < errs->cnt; i++) {
        if (i)
            kr_buf_addc(&b, ',');
        kr_json_add_string(&b, errs->msgs[i], strlen(errs->msgs[i]));
    }
    kr_buf_add(&b, "]}", 2);
    kr_buf_addc(&b, '\0');
    free(rt->last_reload);
    rt->last_reload = b.data;
}

static const char *prop_value(const kr_props_t *props, const char *name)
{
    for (size_t i = 0; i < props->cnt; i++)
        if (!strcmp(props->v[i].name, name))
            return props->v[i].value;
    return NULL;
}

/* librdkafka clients keep the settings they were made with: a reload
 * cannot apply a changed kafka.consumer/producer property. Each one that
 * was set, changed or removed is named (never its value: it may be a
 * secret) with when it takes effect. */
static void warn_restart_props(const char *section, const kr_props_t *was,
                               const kr_props_t *now)
{
    for (size_t i = 0; i < now->cnt; i++) {
        const char *old = prop_value(was, now->v[i].name);
        if (!old || strcmp(old, now->v[i].value) != 0)
            kr_warn("reload", "kafka.%s.%s %s: it takes effect only after a restart", section,
                    now->v[i].name, old ? "changed" : "added");
    }
    for (size_t i = 0; i < was->cnt; i++)
        if (!prop_value(now, was->v[i].name))
            kr_warn("reload", "kafka.%s.%s removed: it takes effect only after a restart",
                    section, was->v[i].name);
}

/* Builds a new generation off to the side (with the route state `states`
 * exported from the live one, or none) and swaps it in at message
 * boundaries; on any error the live one keeps serving. 0 or -1. */
static int reload_build(router_t *rt, const char *why, kr_gen_export_t *states, int64_t t0)
{
    kr_errors_t errs = {0};
    kr_gen_t *cur = kr_dispatch_gen(rt->d);
    kr_gen_t *gen = kr_gen_build(&rt->gopts, cur, states, &errs);
    if (!gen) {
        rt->reload_failures++;
        kr_error("reload", "%s: rejected, generation %llu keeps serving:", why,
                 (unsigned long long)cur->id);
        for (size_t i = 0; i < errs.cnt; i++)
            kr_error("reload", "  %s", errs.msgs[i]);
        set_last_reload(rt, why, 0, &errs);
        kr_errors_free(&errs);
        watch_generation(rt); /* a deleted file may have moved a watch */
        return -1;
    }
    if (strcmp(gen->cfg->brokers, cur->cfg->brokers) != 0)
        kr_warn("reload", "kafka.brokers changed: restart kroute to connect elsewhere");
    warn_restart_props("consumer", &cur->cfg->consumer, &gen->cfg->consumer);
    warn_restart_props("producer", &cur->cfg->producer, &gen->cfg->producer);
    size_t group_cnt = kr_dispatch_group_count(rt->d);
    kr_group_t **changed = calloc(group_cnt + 1, sizeof(*changed));
    if (!changed)
        abort();
    size_t changed_cnt;
    kr_dispatch_swap(rt->d, gen, changed, &changed_cnt);
    char err[1024];
    /* a group whose topics changed resubscribes (its own rebalance);
     * the others go on untouched */
    for (size_t i = 0; i < changed_cnt; i++) {
        kr_group_t *g = changed[i];
        if (!kr_group_route_count(g) || !kr_group_consumer(g))
            continue;
        size_t sub_cnt;
        const char *const *subs = kr_group_subscriptions(g, &sub_cnt);
        kr_info("reload", "group=%s: subscription changed, resubscribing", kr_group_name(g));
        if (kr_consumer_subscribe(kr_group_consumer(g), subs, sub_cnt, err, sizeof(err)) < 0)
            kr_error("reload", "group=%s: %s", kr_group_name(g), err);
    }
    free(changed);
    /* groups left without routes commit what they finished and leave */
    for (size_t i = kr_dispatch_group_count(rt->d); i-- > 0;) {
        kr_group_t *g = kr_dispatch_group_at(rt->d, i);
        if (kr_group_route_count(g))
            continue;
        kr_info("reload", "group=%s: no routes left; committing and leaving the group",
                kr_group_name(g));
        if (kr_group_consumer(g))
            kr_consumer_close(kr_group_consumer(g));
        kr_group_set_consumer(g, NULL);
        kr_dispatch_group_remove(rt->d, g);
    }
    if (open_groups(rt, err, sizeof(err)) < 0)
        kr_error("reload", "%s", err);
    kr_info("reload", "%s: generation %llu live (%zu route(s), built in %lld ms)", why,
            (unsigned long long)gen->id, gen->cfg->route_cnt, (long long)(kr_clock_ms() - t0));
    if (kr_log_enabled(KR_LOG_DEBUG))
        log_routes(gen->cfg, KR_LOG_DEBUG);
    set_last_reload(rt, why, 1, NULL);
    watch_generation(rt);
    return 0;
}

/* A reload. When a live route hands state over (reload_state), that runs
 * on the worker threads first, between their runs; the router goes on
 * serving meanwhile and builds in reload_poll. A trigger while one waits
 * is kept and runs after it. Returns 1 while waiting, else as
 * reload_build. */
static int reload(router_t *rt, const char *why)
{
    if (rt->export) {
        snprintf(rt->queued_why, sizeof(rt->queued_why), "%s", why);
        return 1;
    }
    rt->reloads++;
    kr_gen_t *cur = kr_dispatch_gen(rt->d);
    kr_gen_export_t *x = kr_gen_export_start(cur, rt->pool, wake_pipe[1]);
    if (!x)
        return reload_build(rt, why, NULL, kr_clock_ms());
    rt->export = x;
    rt->export_gen = cur; /* the export runs in its VMs: kept alive */
    kr_gen_ref(cur);
    rt->export_t0 = kr_clock_ms();
    snprintf(rt->export_why, sizeof(rt->export_why), "%s", why);
    kr_debug("reload", "%s: reload_state() queued on the workers", why);
    return 1;
}

/* Builds the reload whose state export has finished. */
static void reload_poll(router_t *rt)
{
    if (!rt->export || !kr_gen_export_done(rt->export))
        return;
    kr_gen_export_t *x = rt->export;
    reload_build(rt, rt->export_why, x, rt->export_t0);
    rt->export = NULL;
    kr_gen_export_free(x);
    kr_gen_unref(rt->export_gen);
    rt->export_gen = NULL;
    if (rt->queued_why[0]) {
        char why[64];
        snprintf(why, sizeof(why), "%s", rt->queued_why);
        rt->queued_why[0] = '\0';
        reload(rt, why);
    }
}

/* ---------- admin endpoint answers (router thread) ---------- */

/* Why kroute is not healthy, or NULL. Asks the cluster for metadata
 * (at most 1 s, on the router thread: it is idle anyway when no broker
 * answers). */
static const char *unhealthy(router_t *rt)
{
    if (stop_requested)
        return "draining: kroute is stopping";
    if (kr_dispatch_fatal(rt->d))
        return "fatal error: kroute stopped storing offsets and is exiting";
    char route[128] = "?";
    double seconds = 0;
    int wedged = rt->pool ? kr_pool_wedged(rt->pool, route, sizeof(route), &seconds) : 0;
    if (wedged) {
        snprintf(rt->health, sizeof(rt->health),
                 "wedged: %d handler run(s) stuck in a call past their deadline (oldest: route "
                 "%s, %.1f s); abandoned runs keep a CPU busy until they end",
                 wedged, route, seconds);
        return rt->health;
    }
    if (rt->health_probe && kr_health_check(rt->health_probe, rt->health, sizeof(rt->health)) < 0)
        return rt->health;
    return NULL;
}

static void json_str(kr_buf_t *b, const char *s)
{
    if (s)
        kr_json_add_string(b, s, strlen(s));
    else
        kr_buf_add(b, "null", 4);
}

/* GET /routes: the live routes and the assigned topics each matches. */
static void render_routes(router_t *rt, kr_buf_t *b)
{
    const kr_gen_t *gen = kr_dispatch_gen(rt->d);
    const kr_config_t *cfg = gen->cfg;
    static const char *const orderings[] = {"partition", "key", "none"};
    char num[64];
    snprintf(num, sizeof(num), "{\"generation\":%llu,\"routes\":[", (unsigned long long)gen->id);
    kr_buf_add(b, num, strlen(num));
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        const char *gname = kr_route_group(cfg, r);
        kr_buf_add(b, i ? ",{\"name\":" : "{\"name\":", i ? 9 : 8);
        json_str(b, r->name);
        kr_buf_add(b, ",\"match\":[", 10);
        for (size_t j = 0; j < r->pattern_cnt; j++) {
            if (j)
                kr_buf_addc(b, ',');
            json_str(b, r->patterns[j].text);
        }
        kr_buf_add(b, "],\"handler\":", 12);
        json_str(b, r->handler);
        kr_buf_add(b, ",\"to\":", 6);
        json_str(b, r->to);
        kr_buf_add(b, ",\"group\":", 9);
        json_str(b, gname);
        kr_buf_add(b, ",\"ordering\":", 12);
        json_str(b, orderings[r->ordering]);
        kr_buf_add(b, ",\"reply\":", 9);
        json_str(b, r->reply_nest ? "nest" : NULL);
        kr_buf_add(b, ",\"dlq\":", 7);
        if (r->dlq_off)
            kr_buf_add(b, "false", 5);
        else
            json_str(b, r->dlq ? r->dlq : "<topic>.dlq");
        kr_buf_add(b, ",\"topics\":[", 11);
        /* the topics of the group's current assignment this route matches */
        int first = 1;
        for (size_t g = 0; g < kr_dispatch_group_count(rt->d); g++) {
            kr_group_t *grp = kr_dispatch_group_at(rt->d, g);
            if (strcmp(kr_group_name(grp), gname) || !kr_group_consumer(grp))
                continue;
            size_t n;
            char **topics = kr_consumer_assigned_topics(kr_group_consumer(grp), &n);
            for (size_t t = 0; t < n; t++) {
                int hit = 0;
                for (size_t j = 0; j < r->pattern_cnt && !hit; j++)
                    hit = kr_pattern_match(&r->patterns[j], topics[t]);
                if (hit) {
                    if (!first)
                        kr_buf_addc(b, ',');
                    json_str(b, topics[t]);
                    first = 0;
                }
                free(topics[t]);
            }
            free(topics);
        }
        kr_buf_add(b, "]}", 2);
    }
    kr_buf_add(b, "]}\n", 3);
}

static int admin_answer(void *ctx, const char *method, const char *path, int again,
                        kr_buf_t *body, const char **type)
{
    router_t *rt = ctx;
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!strcmp(path, "/reload")) {
        *type = "application/json";
        if (!strcmp(method, "POST")) {
            if (!again)
                reload(rt, "POST /reload");
            if (rt->export || rt->queued_why[0])
                return KR_ADMIN_LATER; /* answered once its reload is built */
        } else if (!is_get) {
            kr_buf_add(body, "{\"error\":\"use GET or POST\"}\n", 27);
            return 405;
        }
        if (!rt->last_reload)
            set_last_reload(rt, "start", 1, NULL);
        kr_buf_add(body, rt->last_reload, strlen(rt->last_reload));
        kr_buf_addc(body, '\n');
        return 200;
    }
    if (!is_get) {
        *type = "text/plain";
        kr_buf_add(body, "use GET\n", 8);
        return 405;
    }
    if (!strcmp(path, "/metrics")) {
        *type = "text/plain; version=0.0.4";
        kr_dispatch_render_metrics(rt->d, body);
        kr_metrics_single(body, "kroute_config_generation", "gauge",
                          "Generation of the live routes", (double)kr_dispatch_gen(rt->d)->id);
        kr_metrics_single(body, "kroute_reloads_total", "counter", "Reloads attempted",
                          (double)rt->reloads);
        kr_metrics_single(body, "kroute_reload_failures_total", "counter",
                          "Reloads rejected (the previous generation kept serving)",
                          (double)rt->reload_failures);
        kr_metrics_single(body, "kroute_uptime_seconds", "gauge",
                          "Seconds since kroute started", (double)(time(NULL) - rt->started));
        return 200;
    }
    if (!strcmp(path, "/healthz")) {
        *type = "text/plain";
        const char *why = unhealthy(rt);
        if (why) {
            kr_buf_add(body, why, strlen(why));
            kr_buf_addc(body, '\n');
            return 503;
        }
        kr_buf_add(body, "ok\n", 3);
        return 200;
    }
    if (!strcmp(path, "/routes")) {
        *type = "application/json";
        render_routes(rt, body);
        return 200;
    }
    *type = "text/plain";
    static const char nf[] = "not found: try /metrics, /healthz, /routes or /reload\n";
    kr_buf_add(body, nf, sizeof(nf) - 1);
    return 404;
}

/* Gives the dispatcher a producer made from the live generation's
 * settings. Its delivery reports are served by the workers' passes and the
 * event loop's turns (at least every 100 ms), not by a wake-up each. */
static int open_producer(router_t *rt, char *err, size_t errsize)
{
    const kr_config_t *cfg = kr_dispatch_gen(rt->d)->cfg;
    rt->p = kr_producer_new(rt->brokers, &cfg->producer, kr_dispatch_delivered, rt->d, err,
                            errsize);
    if (!rt->p)
        return -1;
    kr_dispatch_set_producer(rt->d, rt->p);
    return 0;
}

static void close_producer(router_t *rt)
{
    kr_producer_free(rt->p);
    rt->p = NULL;
}

/* A fatal producer error (librdkafka gives up an idempotent producer whose
 * sequence the broker no longer agrees with, e.g. after a leader change)
 * need not end kroute: what it still held is failed and reported (each
 * report asks for a rewind), a new producer takes over, and the unfinished
 * inputs are handled again. Returns -1 if no producer can be made. */
static int replace_producer(router_t *rt, const char *why)
{
    kr_error("router", "fatal producer error: %s; replacing the producer and handling the "
                       "unfinished inputs again", why);
    int left = kr_producer_purge(rt->p, 10000);
    if (left)
        kr_warn("router", "%d output(s) of the failed producer unreported after 10 s", left);
    kr_dispatch_set_producer(rt->d, NULL);
    close_producer(rt);
    char err[512];
    if (open_producer(rt, err, sizeof(err)) < 0) {
        kr_error("router", "cannot make a new producer: %s", err);
        return -1;
    }
    return 0;
}

/* Serves the groups until a stop signal or a fatal error; called and
 * returns with the engine lock held, which it lets go only to sleep. */
static void event_loop(router_t *rt)
{
    kr_dispatch_t *d = rt->d;
    while (!stop_requested && !kr_dispatch_fatal(d)) {
        if (reload_requested) {
            reload_requested = 0;
            reload(rt, "SIGHUP");
        }
        if (rt->reload_at_ms && kr_clock_ms() >= rt->reload_at_ms) {
            rt->reload_at_ms = 0;
            reload(rt, "file change");
        }
        reload_poll(rt);
        watch_new_files(rt);
        kr_admin_serve(rt->admin, admin_answer, rt);
        size_t got = kr_dispatch_poll_jobs(d);
        /* the workers take their partitions' messages in their passes */
        if (!stop_requested)
            got += kr_dispatch_take_unforwarded(d) + kr_dispatch_cover(d);
        got += kr_dispatch_poll_replies(d);
        kr_producer_poll(rt->p, 0);
        int next = kr_dispatch_tick(d);
        kr_dispatch_flush_jobs(d); /* anything a reply or a retry queued */
        char pfatal[256];
        if (kr_producer_fatal(rt->p, pfatal, sizeof(pfatal)) && replace_producer(rt, pfatal) < 0) {
            kr_dispatch_set_fatal(d);
            break;
        }
        if (kr_dispatch_rewind_wanted(d)) {
            kr_dispatch_rewind(d);
            continue;
        }
        if (got)
            continue;
        int timeout = next >= 0 && next < 100 ? next : 100;
        if (rt->reload_at_ms) {
            int64_t left = rt->reload_at_ms - kr_clock_ms();
            timeout = left < timeout ? (int)(left > 0 ? left : 0) : timeout;
        }
        struct pollfd pfd[2] = {{.fd = wake_pipe[0], .events = POLLIN},
                                {.fd = rt->watch ? kr_watch_fd(rt->watch) : -1,
                                 .events = POLLIN}};
        kr_dispatch_unlock(d); /* the workers' passes meanwhile */
        int woken = poll(pfd, 2, timeout);
        kr_dispatch_lock(d);
        if (woken > 0) {
            char buf[256];
            while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
                ;
            if (rt->watch && (pfd[1].revents & POLLIN) && kr_watch_read(rt->watch))
                rt->reload_at_ms = kr_clock_ms() + DEBOUNCE_MS; /* let the editor finish */
        }
    }
}

int kr_router_run(const kr_router_opts_t *o)
{
    int rc = 1;
    kr_errors_t errs = {0};
    kr_broker_t *broker = NULL;
    router_t rt_s, *rt = &rt_s;
    memset(rt, 0, sizeof(*rt));
    rt->o = o;
    rt->gopts = gen_opts(o);
    rt->started = time(NULL);
    char err[1024];
    timer_t drain_timer;
    int drain_armed = 0;
    int engine_locked = 0;

    kr_gen_t *gen = kr_gen_build(&rt->gopts, NULL, NULL, &errs);
    if (!gen) {
        print_errors(&errs);
        rc = 2;
        goto out;
    }
    rt->d = kr_dispatch_new(gen, o->max_inflight);
    const kr_config_t *cfg = gen->cfg;
    if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        kr_error("router", "pipe: %s", strerror(errno));
        goto out;
    }
    rt->pool = kr_pool_new(rt->gopts.workers, wake_pipe[1]);
        kr_dispatch_set_pool(rt->d, rt->pool);
    install_signals();
    const char *admin = o->admin ? o->admin : "127.0.0.1:9464";
    if (strcmp(admin, "off") != 0) {
        rt->admin = kr_admin_start(admin, o->admin_token_file, wake_pipe[1], err, sizeof(err));
        if (!rt->admin) {
            kr_error("router", "%s", err);
            rc = 2;
            goto out;
        }
    }
    if (o->watch) {
        rt->watch = kr_watch_new(err, sizeof(err));
        if (!rt->watch)
            kr_warn("router", "%s: file changes will not reload (SIGHUP still does)", err);
    }

    /* kept for the process's life: a reload frees the config it came from */
    rt->brokers = strdup(cfg->brokers);
    if (!strcmp(rt->brokers, "embedded")) {
        broker = kr_broker_start(1, 0, err, sizeof(err));
        if (!broker) {
            kr_error("router", "%s", err);
            goto out;
        }
        free(rt->brokers);
        rt->brokers = strdup(kr_broker_bootstraps(broker));
        kr_info("router", "embedded broker listening on %s", rt->brokers);
    }
    kr_info("router", "serving %zu route(s) from %zu file(s); brokers=%s group=%s workers=%d",
            cfg->route_cnt, cfg->file_cnt, rt->brokers, cfg->group, rt->gopts.workers);
    log_routes(cfg, KR_LOG_INFO);

    if (open_producer(rt, err, sizeof(err)) < 0) {
        kr_error("router", "%s", err);
        goto out;
    }
    if (rt->admin) {
        rt->health_probe = kr_health_start(rt->brokers, &cfg->producer, err, sizeof(err));
        if (!rt->health_probe) {
            kr_error("router", "%s", err);
            goto out;
        }
    }

    /* one consumer per group: the default group and every route's own */
    if (open_groups(rt, err, sizeof(err)) < 0) {
        kr_error("router", "%s", err);
        goto out;
    }
    watch_generation(rt);
    kr_info("router", "running (pid %d, generation 1); admin %s; watching %s; SIGTERM or "
                      "Ctrl-C to stop, SIGHUP to reload",
            (int)getpid(), rt->admin ? kr_admin_url(rt->admin) : "off",
            rt->watch ? "route and handler files" : "nothing (--no-watch)");

    /* from here on the engine is the router's but while it sleeps, when
     * an idle worker takes its lock for a pass */
    kr_dispatch_lock(rt->d);
    engine_locked = 1;
    kr_pool_set_pass(rt->pool, kr_dispatch_pass, rt->d);
    event_loop(rt);
    /* the drain waits for the runs in progress: the workers run them
     * without passing, which would wait for the lock the drain holds */
    kr_dispatch_unlock(rt->d);
    kr_pool_set_pass(rt->pool, NULL, NULL);
    kr_dispatch_lock(rt->d);

    int fatal = kr_dispatch_fatal(rt->d) || kr_producer_fatal(rt->p, err, sizeof(err));
    drain_limit_ms = o->drain_timeout_ms > 0 ? o->drain_timeout_ms : DRAIN_TIMEOUT_MS;
    kr_info("router", "stopping: waiting up to %d ms for handlers and outputs in flight, then "
                      "committing", drain_limit_ms);
    atomic_store(&drain_inflight, kr_dispatch_inflight(rt->d));
    struct sigevent sev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_drain_timeout};
    struct itimerspec its = {.it_value = {.tv_sec = drain_limit_ms / 1000,
                                          .tv_nsec = drain_limit_ms % 1000 * 1000000L}};
    if (timer_create(CLOCK_MONOTONIC, &sev, &drain_timer) == 0) {
        drain_armed = 1;
        timer_settime(drain_timer, 0, &its, NULL);
    } else {
        kr_warn("router", "timer_create: %s: shutdown has no time limit", strerror(errno));
    }
    /* what the drain leaves undone is given up in time to commit what it
     * finished (the consumers' close below) */
    int budget = drain_budget_ms(drain_limit_ms);
    int undelivered = kr_dispatch_drain(rt->d, budget);
    atomic_store(&drain_inflight, kr_dispatch_inflight(rt->d));
    if (undelivered)
        kr_error("router", "shutdown gave up with %d output(s) undelivered after %d ms: their "
                           "inputs are not committed, so they will be redelivered; committing "
                           "what was delivered",
                 undelivered, budget);
    rc = fatal || undelivered ? 1 : 0;
out:
    kr_admin_stop(rt->admin);
    if (rt->d)
        kr_dispatch_set_requester(rt->d, NULL);
    kr_requester_free(rt->rq);
    for (size_t i = 0; rt->d && i < kr_dispatch_group_count(rt->d); i++) {
        kr_group_t *g = kr_dispatch_group_at(rt->d, i);
        if (kr_group_consumer(g))
            kr_consumer_close(kr_group_consumer(g));
        kr_group_set_consumer(g, NULL);
    }
    kr_health_stop(rt->health_probe);
    close_producer(rt);
    kr_pool_free(rt->pool); /* joined: no VM is in use from here on */
    if (engine_locked)
        kr_dispatch_unlock(rt->d);
    if (rt->export) { /* a reload still waiting: its calls ran before the threads ended */
        kr_gen_export_free(rt->export);
        kr_gen_unref(rt->export_gen);
    }
    if (rt->d)
        kr_dispatch_free(rt->d);
    else
        kr_gen_unref(gen);
    kr_watch_free(rt->watch);
    free(rt->last_reload);
    free(rt->brokers);
    kr_broker_stop(broker);
    kr_errors_free(&errs);
    if (wake_pipe[0] >= 0) {
        close(wake_pipe[0]);
        close(wake_pipe[1]);
    }
    if (drain_armed)
        timer_delete(drain_timer);
    if (rc == 0)
        kr_info("router", "stopped cleanly");
    return rc;
}
