/* router.h - `kroute run`: wires config, workers, broker, producer,
 * consumers and the dispatcher together and runs the event loop until a
 * signal or a fatal error. */
#ifndef KR_ROUTER_H
#define KR_ROUTER_H

#include <stddef.h>

typedef struct kr_router_opts {
    const char *const *paths;
    size_t path_cnt;
    const char *brokers;   /* --brokers, overrides kafka.brokers */
    const char *group;     /* --group, overrides kafka.group */
    int workers;           /* --workers */
    const char *admin;     /* --admin HOST:PORT or off (default 127.0.0.1:9464) */
    const char *admin_token_file; /* --admin-token-file (NULL: $KROUTE_ADMIN_TOKEN) */
    int drain_timeout_ms;  /* --drain-timeout: shutdown gives up past it (0: 25 s) */
    size_t max_inflight;   /* --max-inflight: the in-flight budget in bytes (0: 64 MiB) */
    int watch;             /* !--no-watch */
    const char *lua_dir;   /* kroute's lua/ folder */
} kr_router_opts_t;

/* Returns the process exit code: 0 after a clean shutdown, 1 after a
 * runtime failure or a shutdown that gave up at drain_timeout_ms, 2 for a
 * configuration error. */
int kr_router_run(const kr_router_opts_t *opts);

/* Validates routes and handlers like a start would; prints problems. */
int kr_router_check(const kr_router_opts_t *opts);

#endif
