/* passthrough.c - the reference `make bench` measures kroute against: a
 * plain librdkafka program that consumes, copies and produces with the
 * same at-least-once discipline as kroute (idempotent producer, an input
 * offset stored only after its copy's delivery report, commits of stored
 * offsets), and nothing else: no Lua, no routing.
 *   passthrough BROKERS GROUP IN_TOPIC OUT_TOPIC [SCRIPT.lua]
 * With SCRIPT it is the second reference, the naive loop a user could
 * write instead of kroute: one thread, one Lua 5.4 state, the script's
 * function(value) -> key, value (spec/bench/naive_transform.lua, with
 * lua-cjson) called on every record, no sandbox, no limits.
 * Each record goes to the output partition of the same number as its
 * input partition, so delivery reports arrive in input order and each
 * one can store its input's offset. Runs until SIGTERM. */
#include <lauxlib.h>
#include <librdkafka/rdkafka.h>
#include <lualib.h>
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

/* The script's function, at stack index 1 of L. */
static lua_State *script_load(const char *path)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_loadfile(L, path) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK ||
        !lua_isfunction(L, -1)) {
        fprintf(stderr, "passthrough: %s: %s\n", path,
                lua_isstring(L, -1) ? lua_tostring(L, -1) : "does not return a function");
        exit(2);
    }
    return L;
}

static rd_kafka_resp_err_t produce(rd_kafka_t *producer, const char *topic,
                                   const rd_kafka_message_t *m, lua_State *L, origin_t *o)
{
    const void *key = m->key, *value = m->payload;
    size_t key_len = m->key_len, value_len = m->len;
    if (L) {
        lua_settop(L, 1);
        lua_pushvalue(L, 1);
        lua_pushlstring(L, m->payload ? m->payload : "", m->len);
        if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
            fprintf(stderr, "passthrough: script: %s\n", lua_tostring(L, -1));
            lua_settop(L, 1);
        } else {
            key = lua_tolstring(L, 2, &key_len);
            value = lua_tolstring(L, 3, &value_len);
        }
    }
    rd_kafka_resp_err_t err;
    while ((err = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
                                    RD_KAFKA_V_PARTITION(m->partition),
                                    RD_KAFKA_V_KEY((void *)key, key_len),
                                    RD_KAFKA_V_VALUE((void *)value, value_len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_OPAQUE(o), RD_KAFKA_V_END)) ==
           RD_KAFKA_RESP_ERR__QUEUE_FULL)
        rd_kafka_poll(producer, 10);
    return err;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: passthrough BROKERS GROUP IN_TOPIC OUT_TOPIC [SCRIPT.lua]\n");
        return 2;
    }
    lua_State *L = argc == 6 ? script_load(argv[5]) : NULL;
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
                if (produce(producer, argv[4], m, L, o)) {
                    fprintf(stderr, "passthrough: produce failed\n");
                    free(o);
                }
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
    if (L)
        lua_close(L);
    return 0;
}
