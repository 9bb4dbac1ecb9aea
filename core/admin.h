/* admin.h - the admin HTTP endpoint (--admin HOST:PORT, default
 * 127.0.0.1:9464). libmicrohttpd serves connections on its own threads,
 * but every answer is made on the router's thread: a request is queued,
 * the router is woken through its wake-up pipe, kr_admin_serve() runs the
 * handler there, and the connection thread sends the result. So the core
 * needs no locks, and POST /reload answers only once the reload is done. */
#ifndef KR_ADMIN_H
#define KR_ADMIN_H

#include <stddef.h>

#include "buf.h"

typedef struct kr_admin kr_admin_t;

/* Answers one request on the router's thread: fills body, sets
 * *content_type, returns the HTTP status. */
typedef int (*kr_admin_handler_t)(void *ctx, const char *method, const char *path,
                                  kr_buf_t *body, const char **content_type);

/* Listens on "HOST:PORT" (port 0 picks a free one). Returns NULL with the
 * reason in err. `wake_fd` is written to when a request waits. */
kr_admin_t *kr_admin_start(const char *hostport, int wake_fd, char *err, size_t errsize);
/* "http://HOST:PORT" actually bound. */
const char *kr_admin_url(const kr_admin_t *a);
/* Answers every queued request with `handler`; returns how many. */
size_t kr_admin_serve(kr_admin_t *a, kr_admin_handler_t handler, void *ctx);
/* Answers what is still queued with 503 and stops listening. */
void kr_admin_stop(kr_admin_t *a);

#endif
