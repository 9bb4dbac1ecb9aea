/* admin.c - see admin.h. Two threads meet here: MHD's polling thread
 * (every MHD callback; it alone touches the connection list) and the
 * router thread (kr_admin_serve, kr_admin_stop). `mu` guards what they
 * share: the queue and `stopping`. A queued job belongs to the router
 * thread until it resumes the job's connection. */
#include "ops/admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ops/log.h"

/* Probes, scrapes and the odd reload need a handful of connections; these
 * bounds keep a flood from taking the descriptors Kafka needs. */
#define MAX_CONNECTIONS 128     /* MHD refuses (leaves in the backlog) beyond */
#define EVICT_ABOVE 96          /* past this many, a new one closes the oldest idle */
#define IDLE_TIMEOUT_S 10       /* no byte for this long: closed (never while answering) */
#define CONNECTION_MEMORY 16384 /* request line, headers and read buffer */
#define MAX_TOKEN 4096

typedef struct job {
    char method[16];
    char path[256];
    int status;
    kr_buf_t body;
    const char *content_type;
    int done; /* set by the router thread before it resumes `conn` */
    struct MHD_Connection *conn;
    struct job *next;
} job_t;

/* One open connection, oldest first (MHD's thread only). */
typedef struct conn {
    int fd;
    int busy;    /* its request is being answered: never evicted */
    int evicted; /* shut down, MHD closes it on its next turn */
    struct conn *prev, *next;
} conn_t;

struct kr_admin {
    struct MHD_Daemon *mhd;
    int wake_fd;
    char url[128];
    char *token;  /* NULL: none set */
    int loopback; /* bound to loopback only */
    pthread_mutex_t mu;
    job_t *queue; /* suspended, waiting for the router thread */
    job_t *held;  /* ...and those its handler held (router thread only) */
    int stopping;
    conn_t *conns, *conns_tail;
    size_t open; /* connections not evicted */
};

static conn_t *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Closes the connection idle the longest. MHD offers no way to close one
 * of its connections, so its socket is shut down: MHD sees the end of the
 * stream on its next turn and closes it as if the client had gone. */
static void evict_idle(kr_admin_t *a)
{
    for (conn_t *c = a->conns; c; c = c->next)
        if (!c->busy && !c->evicted && c->fd >= 0) {
            shutdown(c->fd, SHUT_RDWR);
            c->evicted = 1;
            a->open--;
            return;
        }
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    kr_admin_t *a = cls;
    conn_t *c = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        c = calloc(1, sizeof(*c));
        if (!c)
            abort();
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->prev = a->conns_tail;
        if (a->conns_tail)
            a->conns_tail->next = c;
        else
            a->conns = c;
        a->conns_tail = c;
        *socket_context = c;
        if (++a->open > EVICT_ABOVE)
            evict_idle(a);
        return;
    }
    if (!c) /* MHD_CONNECTION_NOTIFY_CLOSED: its socket is closed after this */
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        a->conns_tail = c->prev;
    if (!c->evicted)
        a->open--;
    free(c);
    *socket_context = NULL;
}

static enum MHD_Result send_text(struct MHD_Connection *conn, int status, const char *type,
                                 const void *data, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"kroute\"");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, int status, const char *json)
{
    return send_text(conn, status, "application/json", json, strlen(json));
}

/* Equal in a time that depends on the token's length only, never on where
 * the first wrong byte is, so guesses cannot be refined byte by byte. */
static int token_equal(const char *given, size_t glen, const char *want)
{
    size_t wlen = strlen(want);
    unsigned char diff = glen != wlen;
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)((i < glen ? (unsigned char)given[i] : 0u) ^ (unsigned char)want[i]);
    return diff == 0;
}

/* 0 when a request that changes something may go on, else the status
 * already queued (401 without the right token, 403 without any token on
 * an endpoint reachable from the network). */
static int refuse_write(kr_admin_t *a, struct MHD_Connection *conn, enum MHD_Result *ret)
{
    if (a->token) {
        const char *auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (auth && !strncasecmp(auth, "Bearer ", 7)) {
            const char *t = auth + 7;
            while (*t == ' ')
                t++;
            size_t n = strlen(t);
            while (n && isspace((unsigned char)t[n - 1]))
                n--;
            if (token_equal(t, n, a->token))
                return 0;
        }
        *ret = send_json(conn, 401,
                         "{\"error\":\"this request needs the admin token: send "
                         "'Authorization: Bearer <token>'\"}\n");
        return 401;
    }
    if (!a->loopback) {
        *ret = send_json(conn, 403,
                         "{\"error\":\"the admin endpoint is reachable from the network and has "
                         "no token, so it is read-only: set one with --admin-token-file or "
                         "KROUTE_ADMIN_TOKEN\"}\n");
        return 403;
    }
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    kr_admin_t *a = cls;
    job_t *j = *con_cls;
    if (!j) { /* headers only so far: check the token before any body */
        enum MHD_Result ret;
        if (strcmp(method, "GET") && strcmp(method, "HEAD") && refuse_write(a, conn, &ret))
            return ret;
        j = calloc(1, sizeof(*j)); /* freed in on_completed */
        if (!j)
            abort();
        *con_cls = j;
        return MHD_YES;
    }
    if (*upload_data_size) { /* the body is ignored */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (j->done) { /* resumed by the router thread */
        return send_text(conn, j->status, j->content_type ? j->content_type : "text/plain",
                         j->body.data ? j->body.data : "", j->body.len);
    }
    snprintf(j->method, sizeof(j->method), "%s", method);
    snprintf(j->path, sizeof(j->path), "%s", url);
    j->conn = conn;
    pthread_mutex_lock(&a->mu);
    if (a->stopping) {
        pthread_mutex_unlock(&a->mu);
        return send_json(conn, 503, "{\"error\":\"kroute is stopping\"}\n");
    }
    conn_t *c = conn_of(conn);
    if (c)
        c->busy = 1;
    /* suspended before it is queued, so the router can never resume it
     * first; from here the router owns j until it resumes the connection */
    MHD_suspend_connection(conn);
    j->next = a->queue;
    a->queue = j;
    pthread_mutex_unlock(&a->mu);
    ssize_t w = write(a->wake_fd, "a", 1);
    (void)w;
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)toe;
    job_t *j = *con_cls;
    conn_t *c = conn_of(conn);
    if (c)
        c->busy = 0; /* idle again (keep-alive) */
    if (j) {
        kr_buf_free(&j->body);
        free(j);
        *con_cls = NULL;
    }
}

/* "HOST:PORT" -> socket address; `*` is every IPv4 interface. */
static int parse_hostport(const char *hostport, struct sockaddr_storage *ss, socklen_t *len,
                          char *err, size_t errsize)
{
    const char *colon = strrchr(hostport, ':');
    if (!colon || colon == hostport || !colon[1]) {
        snprintf(err, errsize, "--admin: expected HOST:PORT or off, got '%s'", hostport);
        return -1;
    }
    /* getaddrinfo takes 99999 and keeps its low 16 bits: check it here */
    const char *port = colon + 1;
    size_t digits = strspn(port, "0123456789");
    if (port[digits] || digits > 5 || strtol(port, NULL, 10) > 65535) {
        snprintf(err, errsize,
                 "--admin: port must be 0 to 65535 (0 picks a free one), got '%s'", hostport);
        return -1;
    }
    char host[256];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:9464 */
        memmove(host, host + 1, hl);
        host[hl - 2] = '\0';
    } else if (!strcmp(host, "*")) {
        strcpy(host, "0.0.0.0");
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errsize, "--admin: cannot resolve the host of '%s': %s", hostport,
                 gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6))
        return a6->s6_addr[12] == 127;
    return IN6_IS_ADDR_LOOPBACK(a6);
}

/* A token is one line of visible characters: anything else in the file is
 * more likely a mistake than part of a secret. */
static int check_token(const char *t, const char *from, char *err, size_t errsize)
{
    if (!*t) {
        snprintf(err, errsize, "%s: the admin token is empty", from);
        return -1;
    }
    for (const char *p = t; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p == 0x7f) {
            snprintf(err, errsize,
                     "%s: the admin token must be one line without spaces or control characters",
                     from);
            return -1;
        }
    return 0;
}

/* The token from --admin-token-file or $KROUTE_ADMIN_TOKEN into *token
 * (NULL when neither is set). */
static int load_token(const char *file, char **token, char *err, size_t errsize)
{
    *token = NULL;
    char from[600];
    char buf[MAX_TOKEN + 2];
    if (file) {
        snprintf(from, sizeof(from), "--admin-token-file %s", file);
        int fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf(err, errsize, "%s: %s", from, strerror(errno));
            return -1;
        }
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        int eno = errno;
        close(fd);
        if (n < 0) {
            snprintf(err, errsize, "%s: %s", from, strerror(eno));
            return -1;
        }
        if ((size_t)n > MAX_TOKEN) {
            snprintf(err, errsize, "%s: longer than %d bytes", from, MAX_TOKEN);
            return -1;
        }
        buf[n] = '\0';
        while (n > 0 && isspace((unsigned char)buf[n - 1])) /* the file's newline */
            buf[--n] = '\0';
    } else {
        const char *env = getenv("KROUTE_ADMIN_TOKEN");
        if (!env || !*env)
            return 0;
        snprintf(from, sizeof(from), "KROUTE_ADMIN_TOKEN");
        if (strlen(env) > MAX_TOKEN) {
            snprintf(err, errsize, "%s: longer than %d bytes", from, MAX_TOKEN);
            return -1;
        }
        snprintf(buf, sizeof(buf), "%s", env);
    }
    if (check_token(buf, from, err, errsize) < 0)
        return -1;
    *token = strdup(buf);
    if (!*token)
        abort();
    return 0;
}

kr_admin_t *kr_admin_start(const char *hostport, const char *token_file, int wake_fd, char *err,
                           size_t errsize)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    char *token;
    if (parse_hostport(hostport, &ss, &sslen, err, errsize) < 0 ||
        load_token(token_file, &token, err, errsize) < 0)
        return NULL;
    kr_admin_t *a = calloc(1, sizeof(*a));
    if (!a)
        abort();
    a->wake_fd = wake_fd;
    a->token = token;
    a->loopback = is_loopback(&ss);
    pthread_mutex_init(&a->mu, NULL);
    /* one polling thread (epoll on Linux), not a thread per connection:
     * idle connections cost a descriptor and a small buffer, nothing more */
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    a->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, a, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, a, MHD_OPTION_END);
    if (!a->mhd) {
        snprintf(err, errsize,
                 "admin endpoint: cannot listen on %s: %s (choose another with --admin "
                 "HOST:PORT, or --admin off)",
                 hostport, errno ? strerror(errno) : "unknown error");
        pthread_mutex_destroy(&a->mu);
        free(a->token);
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
    if (!a->loopback)
        kr_warn("admin",
                "the admin endpoint %s is reachable from the network: its GET endpoints "
                "(/metrics, /healthz, /routes, /reload) answer anyone who can connect; %s",
                a->url,
                a->token ? "POST /reload needs the token"
                         : "POST /reload is refused (403) until a token is set with "
                           "--admin-token-file or KROUTE_ADMIN_TOKEN");
    return a;
}

const char *kr_admin_url(const kr_admin_t *a)
{
    return a->url;
}

/* Hands j's answer back to MHD's thread, which sends it and frees j. */
static void answer(job_t *j)
{
    struct MHD_Connection *conn = j->conn;
    j->done = 1;
    MHD_resume_connection(conn); /* j may be gone from here on */
}

size_t kr_admin_serve(kr_admin_t *a, kr_admin_handler_t handler, void *ctx)
{
    if (!a)
        return 0;
    size_t n = 0;
    job_t *held = a->held;
    a->held = NULL;
    for (;;) {
        job_t *j = held;
        int again = j != NULL;
        if (j) {
            held = j->next;
        } else {
            pthread_mutex_lock(&a->mu);
            j = a->queue;
            if (j)
                a->queue = j->next;
            pthread_mutex_unlock(&a->mu);
        }
        if (!j)
            return n;
        /* the handler may take long (building a reload): other requests
         * keep queueing meanwhile */
        j->status = handler(ctx, j->method, j->path, again, &j->body, &j->content_type);
        if (j->status == KR_ADMIN_LATER) {
            j->next = a->held;
            a->held = j;
            continue;
        }
        answer(j);
        n++;
    }
}

void kr_admin_stop(kr_admin_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    job_t *q = a->queue;
    a->queue = NULL;
    pthread_mutex_unlock(&a->mu);
    while (a->held) { /* held ones are answered the same way */
        job_t *h = a->held;
        a->held = h->next;
        h->next = q;
        q = h;
    }
    /* MHD must not be stopped with a connection suspended */
    while (q) {
        job_t *next = q->next;
        static const char busy[] = "{\"error\":\"kroute is stopping\"}\n";
        q->status = 503;
        q->content_type = "application/json";
        kr_buf_add(&q->body, busy, sizeof(busy) - 1);
        answer(q);
        q = next;
    }
    MHD_stop_daemon(a->mhd);
    pthread_mutex_destroy(&a->mu);
    free(a->token);
    free(a);
}
