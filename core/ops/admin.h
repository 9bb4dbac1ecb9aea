/* admin.h - the admin HTTP endpoint (--admin HOST:PORT, default
 * 127.0.0.1:9464). libmicrohttpd serves every connection from one polling
 * thread, but every answer is made on the router's thread: a complete
 * request is suspended and queued, the router is woken through its
 * wake-up pipe, kr_admin_serve() runs the handler there and resumes the
 * connection with the result. So the core needs no locks, POST /reload
 * answers only once the reload is done, and a waiting request costs no
 * thread.
 *
 * Defences: a bounded number of connections, a short idle timeout, small
 * per-connection buffers, and when the endpoint fills up the connection
 * idle the longest (nothing sent, half a request, or keep-alive) is closed,
 * so a flood of idle sockets cannot lock out /healthz. Requests other than
 * GET and HEAD (POST /reload) need `Authorization: Bearer TOKEN` when a
 * token is set, and are refused (403) on an endpoint reachable from the
 * network without one. */
#ifndef KR_ADMIN_H
#define KR_ADMIN_H

#include <stddef.h>

#include "buf.h"

typedef struct kr_admin kr_admin_t;

/* Answers one request on the router's thread: fills body, sets
 * *content_type, returns the HTTP status - or KR_ADMIN_LATER to hold the
 * request (say, a reload still waiting on the workers): it is asked again,
 * with `again` set, at every later kr_admin_serve until it answers. */
#define KR_ADMIN_LATER 0
typedef int (*kr_admin_handler_t)(void *ctx, const char *method, const char *path, int again,
                                  kr_buf_t *body, const char **content_type);

/* Listens on "HOST:PORT": a numeric address or a name, `*` for every IPv4
 * interface, [IPv6]; port 0 picks a free one. The token is read from
 * `token_file` (--admin-token-file) when given, else from
 * $KROUTE_ADMIN_TOKEN when set and not empty. A bad address or token file
 * returns NULL with the reason in err (a configuration error). Logs a
 * warning when the address is not loopback-only. `wake_fd` is written to
 * when a request waits. */
kr_admin_t *kr_admin_start(const char *hostport, const char *token_file, int wake_fd, char *err,
                           size_t errsize);
/* "http://HOST:PORT" actually bound. */
const char *kr_admin_url(const kr_admin_t *a);
/* Answers every queued (and held) request with `handler`; returns how
 * many were answered. */
size_t kr_admin_serve(kr_admin_t *a, kr_admin_handler_t handler, void *ctx);
/* Answers what is still queued with 503 and stops listening. */
void kr_admin_stop(kr_admin_t *a);

#endif
