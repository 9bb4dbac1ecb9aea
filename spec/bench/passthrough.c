/* passthrough.c - the reference `make bench` measures kroute against: a
 * plain librdkafka program that consumes, copies and produces with the
 * same at-least-once discipline as kroute (idempotent producer, an input
 * offset stored only after its copy's delivery report, commits of stored
 * offsets), and nothing else: no Lua, no routing.
 *   passthrough BROKERS GROUP IN_TOPIC OUT_TOPIC
 * Each record goes to the output partition of the same number as its
 * input partition, so delivery reports arrive in input order and each
 * one can store its input's offset. Runs until SIGTERM. */
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

typedef struct origin {
    int32_t partition;
    int64_t offset;
} origin_t;

static rd_kafka_t *consumer;
static const char *in_topic;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    origin_t *o = m->_private;
    if (!m->err) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, in_topic, o->partition)
            ->offset = o->offset + 1;
        rd_kafka_offsets_store(consumer, l);
        rd_kafka_topic_partition_list_destroy(l);
    } else {
        fprintf(stderr, "passthrough: delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
    free(o);
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "passthrough: %s\n", err);
        exit(2);
    }
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: passthrough BROKERS GROUP IN_TOPIC OUT_TOPIC\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    in_topic = argv[3];
    char err[512];
    rd_kafka_conf_t *pc = rd_kafka_conf_new();
    set(pc, "bootstrap.servers", argv[1]);
    set(pc, "enable.idempotence", "true");
    set(pc, "linger.ms", "5");
    rd_kafka_conf_set_dr_msg_cb(pc, on_delivery);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, err, sizeof(err));
    rd_kafka_conf_t *cc = rd_kafka_conf_new();
    set(cc, "bootstrap.servers", argv[1]);
    set(cc, "group.id", argv[2]);
    set(cc, "auto.offset.reset", "earliest");
    set(cc, "enable.auto.offset.store", "false");
    set(cc, "fetch.wait.max.ms", "10");
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, err, sizeof(err));
    if (!producer || !consumer) {
        fprintf(stderr, "passthrough: %s\n", err);
        return 1;
    }
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, argv[3], RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(consumer);
    rd_kafka_message_t *batch[512];
    while (!stop) {
        /* what is there now; if nothing, wait for one message (a batch
         * call with a timeout would hold early messages back) */
        ssize_t n = rd_kafka_consume_batch_queue(q, 0, batch, 512);
        if (n == 0)
            n = rd_kafka_consume_batch_queue(q, 10, batch, 1);
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = batch[i];
            if (!m->err) {
                origin_t *o = malloc(sizeof(*o));
                o->partition = m->partition;
                o->offset = m->offset;
                while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(argv[4]),
                                         RD_KAFKA_V_PARTITION(m->partition),
                                         RD_KAFKA_V_KEY(m->key, m->key_len),
                                         RD_KAFKA_V_VALUE(m->payload, m->len),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_OPAQUE(o), RD_KAFKA_V_END) ==
                       RD_KAFKA_RESP_ERR__QUEUE_FULL)
                    rd_kafka_poll(producer, 10);
            }
            rd_kafka_message_destroy(m);
        }
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_flush(producer, 10000);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_destroy(producer);
    return 0;
}
