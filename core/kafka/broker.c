/* broker.c - see broker.h. The mock cluster binds random ports, so a fixed
 * --port is served by a small TCP relay thread in front of the first broker:
 * only the bootstrap connection goes through it. */
#include "kafka/broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ops/log.h"

#define RELAY_MAX_CONNS 64

struct kr_broker {
    rd_kafka_t *rk; /* the mock cluster needs a handle to live in */
    rd_kafka_mock_cluster_t *mcluster;
    char *bootstraps;
    int listen_fd;
    int stop_pipe[2];
    int target_port;
    pthread_t relay;
    int relay_started;
};

/* ---------- bootstrap relay ---------- */

typedef struct conn {
    int a, b; /* client side, broker side */
} conn_t;

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* Copies what is readable on `from` to `to`; -1 when either side closed. */
static int pump(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return -1;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

static void *relay_main(void *arg)
{
    kr_broker_t *b = arg;
    conn_t conns[RELAY_MAX_CONNS];
    int nconn = 0;
    for (;;) {
        struct pollfd pfd[2 + 2 * RELAY_MAX_CONNS];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = b->stop_pipe[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = b->listen_fd, .events = POLLIN};
        for (int i = 0; i < nconn; i++) {
            pfd[n++] = (struct pollfd){.fd = conns[i].a, .events = POLLIN};
            pfd[n++] = (struct pollfd){.fd = conns[i].b, .events = POLLIN};
        }
        if (poll(pfd, (nfds_t)n, -1) < 0 && errno != EINTR)
            break;
        if (pfd[0].revents)
            break;
        for (int i = nconn - 1; i >= 0; i--) {
            short ra = pfd[2 + 2 * i].revents, rb = pfd[3 + 2 * i].revents;
            int dead = 0;
            if (ra)
                dead |= pump(conns[i].a, conns[i].b) < 0;
            if (!dead && rb)
                dead |= pump(conns[i].b, conns[i].a) < 0;
            if (dead) {
                close(conns[i].a);
                close(conns[i].b);
                conns[i] = conns[--nconn];
            }
        }
        if (pfd[1].revents & POLLIN) {
            int a = accept(b->listen_fd, NULL, NULL);
            if (a < 0)
                continue;
            int bfd = nconn < RELAY_MAX_CONNS ? connect_local(b->target_port) : -1;
            if (bfd < 0) {
                close(a);
                continue;
            }
            conns[nconn++] = (conn_t){a, bfd};
        }
    }
    for (int i = 0; i < nconn; i++) {
        close(conns[i].a);
        close(conns[i].b);
    }
    return NULL;
}

static int start_relay(kr_broker_t *b, int port, char *errstr, size_t errsize)
{
    /* the first broker's port, from "127.0.0.1:PORT,..." */
    const char *colon = strchr(b->bootstraps, ':');
    b->target_port = colon ? atoi(colon + 1) : 0;
    b->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(b->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(b->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(b->listen_fd, 64) < 0) {
        snprintf(errstr, errsize, "cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
        return -1;
    }
    if (pipe(b->stop_pipe) < 0 || pthread_create(&b->relay, NULL, relay_main, b) != 0) {
        snprintf(errstr, errsize, "cannot start the bootstrap relay: %s", strerror(errno));
        return -1;
    }
    b->relay_started = 1;
    char *boot;
    if (asprintf(&boot, "127.0.0.1:%d", port) < 0)
        abort();
    free(b->bootstraps);
    b->bootstraps = boot;
    return 0;
}

/* ---------- cluster ---------- */

kr_broker_t *kr_broker_start(int broker_cnt, int port, char *errstr, size_t errsize)
{
    kr_broker_t *b = calloc(1, sizeof(*b));
    if (!b)
        abort();
    b->listen_fd = -1;
    b->stop_pipe[0] = b->stop_pipe[1] = -1;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_set_log_cb(conf, kr_log_rdkafka);
    rd_kafka_conf_set(conf, "client.id", "kroute-broker", err, sizeof(err));
    /* this handle never connects anywhere: silence its "no bootstrap.servers" */
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!b->rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errsize, "cannot create the embedded broker: %s", err);
        goto fail;
    }
    b->mcluster = rd_kafka_mock_cluster_new(b->rk, broker_cnt);
    if (!b->mcluster) {
        snprintf(errstr, errsize, "cannot create the embedded broker (mock cluster)");
        goto fail;
    }
    b->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(b->mcluster));
    if (port > 0 && start_relay(b, port, errstr, errsize) < 0)
        goto fail;
    return b;
fail:
    kr_broker_stop(b);
    return NULL;
}

const char *kr_broker_bootstraps(const kr_broker_t *b)
{
    return b->bootstraps;
}

int kr_broker_create_topic(kr_broker_t *b, const char *topic, int partitions, char *errstr,
                           size_t errsize)
{
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(b->mcluster, topic, partitions, 1);
    if (err) {
        snprintf(errstr, errsize, "cannot create topic %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

void kr_broker_stop(kr_broker_t *b)
{
    if (!b)
        return;
    if (b->relay_started) {
        ssize_t w = write(b->stop_pipe[1], "x", 1);
        (void)w;
        pthread_join(b->relay, NULL);
    }
    if (b->stop_pipe[0] >= 0) {
        close(b->stop_pipe[0]);
        close(b->stop_pipe[1]);
    }
    if (b->listen_fd >= 0)
        close(b->listen_fd);
    if (b->mcluster)
        rd_kafka_mock_cluster_destroy(b->mcluster);
    if (b->rk)
        rd_kafka_destroy(b->rk);
    free(b->bootstraps);
    free(b);
}
