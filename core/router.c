/* router.c - see router.h. Signal handlers only set flags and write to a
 * wake-up pipe; librdkafka queues write to the same pipe when they become
 * non-empty, so the loop sleeps in poll(2) until there is work. */
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "consumer.h"
#include "dispatch.h"
#include "log.h"
#include "producer.h"
#include "requester.h"
#include "worker.h"

#define BATCH 512
#define DRAIN_TIMEOUT_MS 10000

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

/* Leaving the group can block inside librdkafka (a rebalance the broker
 * holds open): past this many seconds of shutdown, exit anyway. What was
 * delivered has been committed or will be redelivered - never lost. */
#define SHUTDOWN_LIMIT_S 25

static void on_shutdown_timeout(int sig)
{
    (void)sig;
    static const char msg[] = "kroute: shutdown took longer than 25 s (leaving the consumer "
                              "group did not finish); exiting, uncommitted messages will be "
                              "redelivered\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)w;
    _exit(0);
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

/* Loads the config with command-line overrides applied. */
static kr_config_t *load_config(const kr_router_opts_t *o, kr_errors_t *errs)
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
    return cfg;
}

int kr_router_check(const kr_router_opts_t *o)
{
    kr_errors_t errs = {0};
    kr_config_t *cfg = load_config(o, &errs);
    kr_worker_t *w = cfg ? kr_worker_new(0, cfg, o->lua_dir, &errs) : NULL;
    int rc = errs.cnt ? 2 : 0;
    print_errors(&errs);
    if (!rc)
        printf("ok: %zu route(s) in %zu file(s), every handler loaded\n", cfg->route_cnt,
               cfg->file_cnt);
    kr_worker_free(w);
    kr_config_free(cfg);
    kr_errors_free(&errs);
    return rc;
}

static void log_summary(const kr_config_t *cfg, const char *brokers, int workers)
{
    kr_info("router", "serving %zu route(s) from %zu file(s); brokers=%s group=%s workers=%d",
            cfg->route_cnt, cfg->file_cnt, brokers, cfg->group, workers);
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        char match[512];
        size_t len = 0;
        match[0] = '\0';
        for (size_t j = 0; j < r->pattern_cnt && len < sizeof(match) - 64; j++)
            len += (size_t)snprintf(match + len, sizeof(match) - len, "%s%s", j ? "," : "",
                                    r->patterns[j].text);
        kr_info("router", "  route %s: %s -> %s (group %s, handler %s)", r->name, match,
                r->to ? r->to : "(handler chooses)", r->group ? r->group : cfg->group,
                r->handler);
    }
}

/* The reply consumer for every pattern routes declare in `requests:`, or
 * NULL (errstr empty) when none does. */
static kr_requester_t *start_requester(const kr_config_t *cfg, const char *brokers,
                                       char *errstr, size_t errsize)
{
    errstr[0] = '\0';
    const char **patterns = NULL;
    size_t cnt = 0;
    for (size_t i = 0; i < cfg->route_cnt; i++)
        for (size_t j = 0; j < cfg->routes[i].request_cnt; j++) {
            const char *p = cfg->routes[i].requests[j];
            size_t k;
            for (k = 0; k < cnt && strcmp(patterns[k], p); k++)
                ;
            if (k < cnt)
                continue;
            patterns = realloc(patterns, (cnt + 1) * sizeof(*patterns));
            patterns[cnt++] = p;
        }
    kr_requester_t *rq = NULL;
    if (cnt) {
        rq = kr_requester_new(brokers, cfg->group, &cfg->consumer, patterns, cnt, errstr,
                              errsize);
        if (rq)
            kr_info("router", "requests: %zu pattern(s), replies read in group %s-client", cnt,
                    cfg->group);
    }
    free(patterns);
    return rq;
}

/* Serves the groups until a stop signal or a fatal error. */
static void event_loop(kr_dispatch_t *d, kr_producer_t *p, kr_consumer_t **consumers,
                       kr_group_t **groups, size_t group_cnt)
{
    rd_kafka_message_t *rkms[BATCH];
    while (!stop_requested && !kr_dispatch_fatal(d)) {
        if (reload_requested) {
            reload_requested = 0;
            kr_warn("router", "SIGHUP received: hot reload is not available in this version; "
                              "restart kroute to apply route changes");
        }
        size_t got = 0;
        for (size_t i = 0; i < group_cnt; i++) {
            ssize_t n;
            /* a full queue is handled batch by batch so a stop request is
             * seen within one batch, not after everything prefetched */
            while (!stop_requested && (n = kr_consumer_poll(consumers[i], 0, rkms, BATCH)) > 0) {
                for (ssize_t j = 0; j < n; j++)
                    kr_dispatch_message(groups[i], rkms[j]);
                got += (size_t)n;
                if (n < BATCH)
                    break;
            }
        }
        got += kr_dispatch_poll_replies(d);
        kr_producer_poll(p, 0);
        int next = kr_dispatch_tick(d);
        char pfatal[256];
        if (kr_producer_fatal(p, pfatal, sizeof(pfatal))) {
            kr_error("router", "fatal producer error: %s", pfatal);
            kr_dispatch_set_fatal(d);
            break;
        }
        if (got)
            continue;
        int timeout = next >= 0 && next < 100 ? next : 100;
        struct pollfd pfd = {.fd = wake_pipe[0], .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            char buf[256];
            while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
                ;
        }
    }
}

int kr_router_run(const kr_router_opts_t *o)
{
    int rc = 1;
    kr_errors_t errs = {0};
    kr_broker_t *broker = NULL;
    kr_producer_t *p = NULL;
    kr_dispatch_t *d = NULL;
    rd_kafka_queue_t *pq = NULL;
    int nworkers = o->workers > 0 ? o->workers : 1;
    kr_worker_t **workers = calloc((size_t)nworkers, sizeof(*workers));
    kr_consumer_t **consumers = NULL;
    kr_requester_t *rq = NULL;
    kr_group_t **groups = NULL;
    size_t group_cnt = 0;
    char err[1024];

    kr_config_t *cfg = load_config(o, &errs);
    for (int i = 0; cfg && i < nworkers && !errs.cnt; i++)
        workers[i] = kr_worker_new(i, cfg, o->lua_dir, &errs);
    if (errs.cnt) {
        print_errors(&errs);
        rc = 2;
        goto out;
    }
    if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        kr_error("router", "pipe: %s", strerror(errno));
        goto out;
    }
    install_signals();
    if (o->admin && strcmp(o->admin, "off") != 0)
        kr_info("router", "--admin %s: the admin endpoint is not built in this version", o->admin);

    const char *brokers = cfg->brokers;
    if (!strcmp(brokers, "embedded")) {
        broker = kr_broker_start(1, 0, err, sizeof(err));
        if (!broker) {
            kr_error("router", "%s", err);
            goto out;
        }
        brokers = kr_broker_bootstraps(broker);
        kr_info("router", "embedded broker listening on %s", brokers);
    }
    log_summary(cfg, brokers, nworkers);

    d = kr_dispatch_new(cfg, workers, nworkers);
    p = kr_producer_new(brokers, &cfg->producer, kr_dispatch_delivered, d, err, sizeof(err));
    if (!p) {
        kr_error("router", "%s", err);
        goto out;
    }
    kr_dispatch_set_producer(d, p);
    pq = rd_kafka_queue_get_main(kr_producer_handle(p));
    rd_kafka_queue_io_event_enable(pq, wake_pipe[1], "p", 1);

    /* one consumer per group: the default group and every route's own */
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const char *gname = cfg->routes[i].group ? cfg->routes[i].group : cfg->group;
        kr_group_t *g = kr_dispatch_group(d, gname);
        size_t j;
        for (j = 0; j < group_cnt && groups[j] != g; j++)
            ;
        if (j < group_cnt)
            continue;
        groups = realloc(groups, (group_cnt + 1) * sizeof(*groups));
        consumers = realloc(consumers, (group_cnt + 1) * sizeof(*consumers));
        kr_consumer_hooks_t hooks = {kr_dispatch_assigned, kr_dispatch_revoked, g};
        kr_consumer_t *c = kr_consumer_new(brokers, gname, &cfg->consumer, &hooks, err,
                                           sizeof(err));
        if (!c) {
            kr_error("router", "%s", err);
            goto out;
        }
        groups[group_cnt] = g;
        consumers[group_cnt++] = c;
        kr_group_set_consumer(g, c);
        size_t sub_cnt;
        const char *const *subs = kr_group_subscriptions(g, &sub_cnt);
        if (kr_consumer_subscribe(c, subs, sub_cnt, err, sizeof(err)) < 0) {
            kr_error("router", "%s", err);
            goto out;
        }
        kr_consumer_wake_fd(c, wake_pipe[1]);
    }
    rq = start_requester(cfg, brokers, err, sizeof(err));
    if (!rq && err[0]) {
        kr_error("router", "%s", err);
        goto out;
    }
    if (rq) {
        kr_dispatch_set_requester(d, rq);
        kr_consumer_wake_fd(kr_requester_consumer(rq), wake_pipe[1]);
    }
    kr_info("router", "running (pid %d); SIGTERM or Ctrl-C to stop", (int)getpid());

    event_loop(d, p, consumers, groups, group_cnt);

    int fatal = kr_dispatch_fatal(d) || kr_producer_fatal(p, err, sizeof(err));
    kr_info("router", "stopping: waiting for outputs in flight, then committing");
    signal(SIGALRM, on_shutdown_timeout);
    alarm(SHUTDOWN_LIMIT_S);
    int undelivered = kr_dispatch_drain(d, DRAIN_TIMEOUT_MS);
    if (undelivered)
        kr_warn("router", "%d output(s) still undelivered after %d ms; their inputs stay "
                          "uncommitted and will be redelivered",
                undelivered, DRAIN_TIMEOUT_MS);
    rc = fatal ? 1 : 0;
out:
    if (d)
        kr_dispatch_set_requester(d, NULL);
    kr_requester_free(rq);
    for (size_t i = 0; i < group_cnt; i++) {
        kr_consumer_close(consumers[i]);
        kr_group_set_consumer(groups[i], NULL);
    }
    free(consumers);
    free(groups);
    if (pq) {
        rd_kafka_queue_io_event_enable(pq, -1, NULL, 0);
        rd_kafka_queue_destroy(pq);
    }
    kr_producer_free(p);
    kr_dispatch_free(d);
    for (int i = 0; i < nworkers; i++)
        kr_worker_free(workers[i]);
    free(workers);
    kr_broker_stop(broker);
    kr_config_free(cfg);
    kr_errors_free(&errs);
    if (wake_pipe[0] >= 0) {
        close(wake_pipe[0]);
        close(wake_pipe[1]);
    }
    if (rc == 0)
        kr_info("router", "stopped cleanly");
    return rc;
}
