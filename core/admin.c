/* admin.c - see admin.h. */
#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_TIMEOUT_S 60 /* a reload of many handlers can take a while */

typedef struct job {
    char method[16];
    char path[256];
    int status;
    kr_buf_t body;
    const char *content_type;
    int taken; /* the router thread is answering it */
    int done;
    struct job *next;
} job_t;

struct kr_admin {
    struct MHD_Daemon *mhd;
    int wake_fd;
    char url[128];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *queue;  /* waiting for the router thread */
    int stopping;
};

/* Connection thread: queue the job, wake the router, wait for it. */
static void ask_router(kr_admin_t *a, job_t *j)
{
    pthread_mutex_lock(&a->mu);
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    j->next = a->queue;
    a->queue = j;
    ssize_t w = write(a->wake_fd, "a", 1);
    (void)w;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ANSWER_TIMEOUT_S;
    /* once taken, the router writes into j: wait for it whatever the time */
    while (!j->done && (j->taken || !a->stopping))
        if (pthread_cond_timedwait(&a->cv, &a->mu, &until) == ETIMEDOUT && !j->taken)
            break;
    if (!j->done && !j->taken) { /* give up: take it back out of the queue */
        for (job_t **p = &a->queue; *p; p = &(*p)->next)
            if (*p == j) {
                *p = j->next;
                break;
            }
    }
    pthread_mutex_unlock(&a->mu);
}

static enum MHD_Result send_text(struct MHD_Connection *conn, int status, const char *type,
                                 const void *data, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    static int first;
    if (!*con_cls) { /* headers only so far: wait for the (ignored) body */
        *con_cls = &first;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    kr_admin_t *a = cls;
    job_t j;
    memset(&j, 0, sizeof(j));
    snprintf(j.method, sizeof(j.method), "%s", method);
    snprintf(j.path, sizeof(j.path), "%s", url);
    ask_router(a, &j);
    enum MHD_Result ret;
    if (j.done) {
        ret = send_text(conn, j.status, j.content_type ? j.content_type : "text/plain",
                        j.body.data ? j.body.data : "", j.body.len);
    } else {
        static const char busy[] = "{\"error\":\"kroute is stopping or did not answer\"}\n";
        ret = send_text(conn, 503, "application/json", busy, sizeof(busy) - 1);
    }
    kr_buf_free(&j.body);
    return ret;
}

/* "HOST:PORT" -> IPv4/IPv6 socket address. */
static int parse_hostport(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
                          char *err, size_t errsize)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || !colon[1]) {
        snprintf(err, errsize, "--admin: expected HOST:PORT or off, got '%s'", hostport);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errsize, "--admin: cannot resolve '%s': %s", hostport, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

kr_admin_t *kr_admin_start(const char *hostport, int wake_fd, char *err, size_t errsize)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_hostport(hostport, &ss, &sslen, err, errsize) < 0)
        return NULL;
    kr_admin_t *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->wake_fd = wake_fd;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)ANSWER_TIMEOUT_S + 10, MHD_OPTION_END);
    if (!a->mhd) {
        snprintf(err, errsize,
                 "admin endpoint: cannot listen on %s: %s (choose another with --admin "
                 "HOST:PORT, or --admin off)",
                 hostport, errno ? strerror(errno) : "unknown error");
        pthread_mutex_destroy(&a->mu);
        pthread_cond_destroy(&a->cv);
        free(a);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
    char host[128];
    if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
    snprintf(a->url, sizeof(a->url), ss.ss_family == AF_INET6 ? "http://[%s]:%u" : "http://%s:%u",
             host, info ? (unsigned)info->port : 0u);
    return a;
}

const char *kr_admin_url(const kr_admin_t *a)
{
    return a->url;
}

size_t kr_admin_serve(kr_admin_t *a, kr_admin_handler_t handler, void *ctx)
{
    if (!a)
        return 0;
    size_t n = 0;
    pthread_mutex_lock(&a->mu);
    while (a->queue) {
        job_t *j = a->queue;
        a->queue = j->next;
        j->taken = 1;
        /* the handler may take long (a reload): other requests keep
         * queueing meanwhile; this one is ours until marked done */
        pthread_mutex_unlock(&a->mu);
        j->status = handler(ctx, j->method, j->path, &j->body, &j->content_type);
        pthread_mutex_lock(&a->mu);
        j->done = 1;
        n++;
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return n;
}

void kr_admin_stop(kr_admin_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    a->queue = NULL; /* their threads see `stopping` and answer 503 */
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    MHD_stop_daemon(a->mhd);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
}
