/* main.c - the kroute command line: run, check, broker, version, help.
 * Parses flags, finds kroute's lua/ folder, and hands over to the router
 * or the broker; signal handling lives with the code that owns the loop. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands/graph.h"
#include "commands/replay.h"
#include "commands/spectest.h"
#include "config/config.h"
#include "config/errors.h"
#include "kafka/broker.h"
#include "ops/log.h"
#include "router.h"

#ifndef KR_VERSION
#define KR_VERSION "0.1.0"
#endif
#ifndef KR_LUA_DIR
#define KR_LUA_DIR "/usr/local/share/kroute/lua"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "kroute %s - a Kafka event router with Lua handlers\n"
            "\n"
            "usage:\n"
            "  kroute run [options] [PATH...]     serve route files (default: routes/)\n"
            "  kroute check [options] [PATH...]   validate routes and handlers, exit 2 on errors\n"
            "  kroute broker [--port N] [TOPIC:PARTITIONS...]\n"
            "                                     run a standalone embedded broker\n"
            "  kroute replay --brokers LIST [--to TOPIC] [--partition P] [--from-offset N]\n"
            "                [--until-offset N] [--dry-run] TOPIC\n"
            "                                     re-produce a DLQ (or a range of any topic)\n"
            "  kroute graph [--format mermaid|dot] [PATH...]\n"
            "                                     print the topology of route files\n"
            "  kroute test [PATH...]              run the handler specs beside route files\n"
            "  kroute version | help\n"
            "\n"
            "run options:\n"
            "  --brokers LIST     bootstrap servers, or 'embedded' (overrides kafka.brokers)\n"
            "  --group NAME       default consumer group (overrides kafka.group)\n"
            "  --workers N        Lua worker threads, one VM per route each (default: cores)\n"
            "  --admin HOST:PORT  admin endpoint address, or 'off' (default 127.0.0.1:9464)\n"
            "  --admin-token-file PATH\n"
            "                     token POST /reload must send as 'Authorization: Bearer'\n"
            "                     (default: $KROUTE_ADMIN_TOKEN); without one, an endpoint\n"
            "                     reachable from the network refuses POST /reload\n"
            "  --max-inflight SIZE\n"
            "                     bytes of consumed messages held at once (default 64MiB):\n"
            "                     past it, consuming waits (partitions pause if that\n"
            "                     lasts over 500 ms, until half of it is free); also\n"
            "                     librdkafka's prefetch, up to 64MiB\n"
            "  --drain-timeout D  on stop, wait up to D (default 25s) for handlers and\n"
            "                     outputs in flight; past it, give up and exit 1\n"
            "  --no-watch         do not watch route files for changes\n"
            "  --log-level LEVEL  debug, info, warn, error (default info)\n"
            "  --log-format FMT   text (default) or json: one object per line\n"
            "\n"
            "exit codes: 0 ok, 1 runtime failure or a stop past --drain-timeout, 2 usage or\n"
            "configuration error\n",
            KR_VERSION);
}

/* kroute's lua/ folder: $KROUTE_LUA_DIR, else ../lua next to the binary
 * (a build tree), else ../share/kroute/lua (an install), else the
 * compiled-in default. */
static const char *find_lua_dir(void)
{
    static char path[PATH_MAX + 64];
    const char *env = getenv("KROUTE_LUA_DIR");
    if (env && *env)
        return env;
    char exe[PATH_MAX - 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        const char *rels[] = {"../lua", "../share/kroute/lua"};
        for (size_t i = 0; i < 2; i++) {
            struct stat st;
            snprintf(path, sizeof(path), "%s/%s/kroute", exe, rels[i]);
            if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                snprintf(path, sizeof(path), "%s/%s", exe, rels[i]);
                return path;
            }
        }
    }
    return KR_LUA_DIR;
}

static int parse_run_opts(int argc, char **argv, kr_router_opts_t *o)
{
    enum {
        OPT_BROKERS = 1,
        OPT_GROUP,
        OPT_WORKERS,
        OPT_ADMIN,
        OPT_ADMIN_TOKEN_FILE,
        OPT_DRAIN_TIMEOUT,
        OPT_MAX_INFLIGHT,
        OPT_NO_WATCH,
        OPT_LOG_LEVEL,
        OPT_LOG_FORMAT
    };
    static const struct option longopts[] = {{"brokers", required_argument, NULL, OPT_BROKERS},
                                             {"group", required_argument, NULL, OPT_GROUP},
                                             {"workers", required_argument, NULL, OPT_WORKERS},
                                             {"admin", required_argument, NULL, OPT_ADMIN},
                                             {"admin-token-file", required_argument, NULL,
                                              OPT_ADMIN_TOKEN_FILE},
                                             {"max-inflight", required_argument, NULL,
                                              OPT_MAX_INFLIGHT},
                                             {"drain-timeout", required_argument, NULL,
                                              OPT_DRAIN_TIMEOUT},
                                             {"no-watch", no_argument, NULL, OPT_NO_WATCH},
                                             {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
                                             {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    o->watch = 1;
    /* one Lua thread per core by default */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o->workers = cores > 0 && cores <= 1024 ? (int)cores : 1;
    o->lua_dir = find_lua_dir();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS: o->brokers = optarg; break;
        case OPT_GROUP: o->group = optarg; break;
        case OPT_WORKERS: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 1024) {
                fprintf(stderr, "kroute: --workers takes a number from 1 to 1024\n");
                return -1;
            }
            o->workers = (int)n;
            break;
        }
        case OPT_ADMIN: o->admin = optarg; break;
        case OPT_ADMIN_TOKEN_FILE: o->admin_token_file = optarg; break;
        case OPT_DRAIN_TIMEOUT: {
            int64_t ms = kr_config_parse_duration(optarg);
            if (ms < 1 || ms > 3600000) {
                fprintf(stderr, "kroute: --drain-timeout takes a duration from 1ms to 1h, like "
                                "25s or 500ms; got '%s'\n", optarg);
                return -1;
            }
            o->drain_timeout_ms = (int)ms;
            break;
        }
        case OPT_MAX_INFLIGHT: {
            size_t bytes = kr_config_parse_size(optarg);
            if (bytes < (64u << 10)) {
                fprintf(stderr, "kroute: --max-inflight takes a size of at least 64KiB, like "
                                "64MiB or 512MiB; got '%s'\n", optarg);
                return -1;
            }
            o->max_inflight = bytes;
            break;
        }
        case OPT_NO_WATCH: o->watch = 0; break;
        case OPT_LOG_LEVEL: {
            int level = kr_log_parse_level(optarg);
            if (level < 0) {
                fprintf(stderr, "kroute: --log-level takes debug, info, warn or error\n");
                return -1;
            }
            kr_log_set_level(level);
            break;
        }
        case OPT_LOG_FORMAT:
            if (strcmp(optarg, "text") && strcmp(optarg, "json")) {
                fprintf(stderr, "kroute: --log-format takes text or json\n");
                return -1;
            }
            kr_log_set_json(!strcmp(optarg, "json"));
            break;
        case 'h': usage(stdout); exit(0);
        default: return -1;
        }
    }
    static const char *const default_paths[] = {"routes"};
    if (optind < argc) {
        o->paths = (const char *const *)&argv[optind];
        o->path_cnt = (size_t)(argc - optind);
    } else {
        o->paths = default_paths;
        o->path_cnt = 1;
    }
    return 0;
}

static int parse_offset(const char *opt, const char *arg, int64_t *out)
{
    char *end;
    long long v = strtoll(arg, &end, 10);
    if (*end || v < 0) {
        fprintf(stderr, "kroute replay: %s takes an offset (0 or more)\n", opt);
        return -1;
    }
    *out = v;
    return 0;
}

static int cmd_replay(int argc, char **argv)
{
    enum { OPT_BROKERS = 1, OPT_TO, OPT_PARTITION, OPT_FROM, OPT_UNTIL, OPT_DRY, OPT_LOG };
    static const struct option longopts[] = {{"brokers", required_argument, NULL, OPT_BROKERS},
                                             {"to", required_argument, NULL, OPT_TO},
                                             {"partition", required_argument, NULL, OPT_PARTITION},
                                             {"from-offset", required_argument, NULL, OPT_FROM},
                                             {"until-offset", required_argument, NULL, OPT_UNTIL},
                                             {"dry-run", no_argument, NULL, OPT_DRY},
                                             {"log-level", required_argument, NULL, OPT_LOG},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    kr_replay_opts_t o = {.partition = -1, .from_offset = -1, .until_offset = -1};
    int64_t part;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKERS: o.brokers = optarg; break;
        case OPT_TO: o.to = optarg; break;
        case OPT_PARTITION:
            if (parse_offset("--partition", optarg, &part) < 0)
                return 2;
            o.partition = (int32_t)part;
            break;
        case OPT_FROM:
            if (parse_offset("--from-offset", optarg, &o.from_offset) < 0)
                return 2;
            break;
        case OPT_UNTIL:
            if (parse_offset("--until-offset", optarg, &o.until_offset) < 0)
                return 2;
            break;
        case OPT_DRY: o.dry_run = 1; break;
        case OPT_LOG:
            if (kr_log_parse_level(optarg) < 0)
                return 2;
            kr_log_set_level(kr_log_parse_level(optarg));
            break;
        case 'h': usage(stdout); return 0;
        default: return 2;
        }
    }
    if (optind != argc - 1 || !o.brokers) {
        fprintf(stderr, "kroute replay: needs --brokers and exactly one TOPIC to read\n");
        return 2;
    }
    o.topic = argv[optind];
    return kr_replay_run(&o);
}

static volatile sig_atomic_t broker_stop;

static void on_broker_signal(int sig)
{
    (void)sig;
    broker_stop = 1;
}

static int cmd_broker(int argc, char **argv)
{
    int port = 0;
    static const struct option longopts[] = {{"port", required_argument, NULL, 'p'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:h", longopts, NULL)) != -1) {
        if (c == 'p') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 65535) {
                fprintf(stderr, "kroute broker: --port takes a TCP port (1-65535)\n");
                return 2;
            }
            port = (int)v;
        } else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            return 2;
        }
    }
    char err[512];
    kr_broker_t *b = kr_broker_start(1, port, err, sizeof(err));
    if (!b) {
        fprintf(stderr, "kroute broker: %s\n", err);
        return 1;
    }
    for (int i = optind; i < argc; i++) {
        char *spec = strdup(argv[i]);
        char *colon = strrchr(spec, ':');
        long parts = 0;
        if (colon) {
            *colon = '\0';
            char *end;
            parts = strtol(colon + 1, &end, 10);
            if (*end)
                parts = 0;
        }
        if (!colon || parts < 1 || parts > 10000 || !*spec) {
            fprintf(stderr, "kroute broker: '%s' is not TOPIC:PARTITIONS\n", argv[i]);
            free(spec);
            kr_broker_stop(b);
            return 2;
        }
        if (kr_broker_create_topic(b, spec, (int)parts, err, sizeof(err)) < 0) {
            fprintf(stderr, "kroute broker: %s\n", err);
            free(spec);
            kr_broker_stop(b);
            return 1;
        }
        free(spec);
    }
    printf("%s\n", kr_broker_bootstraps(b));
    fflush(stdout);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_broker_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    kr_info("broker", "embedded broker listening on %s", kr_broker_bootstraps(b));
    while (!broker_stop)
        pause();
    kr_broker_stop(b);
    return 0;
}

/* kroute graph [--format mermaid|dot] PATH...: no Kafka, no handlers run. */
static int cmd_graph(int argc, char **argv)
{
    int format = KR_GRAPH_MERMAID;
    static const struct option longopts[] = {{"format", required_argument, NULL, 'f'},
                                             {NULL, 0, NULL, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:", longopts, NULL)) != -1) {
        if (c != 'f')
            return 2;
        if (!strcmp(optarg, "dot")) {
            format = KR_GRAPH_DOT;
        } else if (strcmp(optarg, "mermaid") != 0) {
            fprintf(stderr, "kroute graph: --format takes mermaid or dot\n");
            return 2;
        }
    }
    const char *here[] = {"."};
    const char *const *paths = optind < argc ? (const char *const *)argv + optind : here;
    size_t cnt = optind < argc ? (size_t)(argc - optind) : 1;
    kr_errors_t errs = {0};
    kr_config_t *cfg = kr_config_load(paths, cnt, &errs);
    for (size_t i = 0; i < errs.cnt; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    kr_errors_free(&errs);
    if (!cfg)
        return 2;
    kr_graph_write(cfg, format, stdout);
    kr_config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run") || !strcmp(cmd, "check")) {
        kr_router_opts_t o = {0};
        if (parse_run_opts(argc - 1, argv + 1, &o) < 0) {
            fprintf(stderr, "run 'kroute help' for usage\n");
            return 2;
        }
        return !strcmp(cmd, "run") ? kr_router_run(&o) : kr_router_check(&o);
    }
    if (!strcmp(cmd, "broker"))
        return cmd_broker(argc - 1, argv + 1);
    if (!strcmp(cmd, "replay"))
        return cmd_replay(argc - 1, argv + 1);
    if (!strcmp(cmd, "graph"))
        return cmd_graph(argc - 1, argv + 1);
    if (!strcmp(cmd, "test"))
        return kr_spectest_run((const char *const *)argv + 2, argc - 2, find_lua_dir());
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("kroute %s\n", KR_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "kroute: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
