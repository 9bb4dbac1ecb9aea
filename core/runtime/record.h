/* record.h - output records a handler run produces, and its run context.
 * Outputs are collected while the handler runs and produced only if it
 * finishes without error, so a retried handler never leaves half its output
 * behind. Each record is built whole before it joins the run, so an emit
 * that raises (even inside pcall) leaves nothing. Converting Lua values to
 * bytes follows the wire rules: strings are raw, nil and kroute.null are a
 * null value, the message itself is its value (null stays null),
 * numbers/booleans/tables are JSON text. The C memory records hold counts
 * against the route's memory cap, together with the Lua heap. */
#ifndef KR_RECORD_H
#define KR_RECORD_H

#include <librdkafka/rdkafka.h>
#include <lua.h>
#include <stdint.h>

#include "buf.h"
#include "runtime/message.h"

typedef enum { KR_KEY_INHERIT, KR_KEY_NONE, KR_KEY_SET } kr_key_mode_t;

/* What a recycled run keeps for the next one: a key and a value buffer for
 * a few records, each small enough that a run parked on a free list holds
 * little (kr_run_recycle). */
#define KR_RUN_KEPT_BUFS 4
#define KR_RUN_KEPT_BUF_MAX 2048
#define KR_RUN_KEPT_RECS 8

typedef struct kr_record {
    char *topic;                 /* NULL: the route's `to` */
    int32_t partition;           /* RD_KAFKA_PARTITION_UA: follow the key */
    kr_key_mode_t key_mode;
    kr_buf_t key;
    int value_null;
    kr_buf_t value;
    int value_borrowed;          /* value points at the input message's bytes */
    int inherit_headers;         /* copy the input's headers */
    rd_kafka_headers_t *headers; /* owned; used when !inherit_headers */
    int returned;                /* a return value (not an emit) */
    size_t bytes;                /* C memory it holds (for the cap) */
} kr_record_t;

struct kr_vm;

/* A record ready to produce: the input's key and headers filled in where
 * the handler left them out, the route's `to` where it gave no topic. */
typedef struct kr_resolved {
    const char *topic;
    int32_t partition;
    const void *key;
    size_t key_len;
    const void *value;           /* NULL: null value */
    size_t value_len;
    rd_kafka_headers_t *headers; /* owned by the caller */
} kr_resolved_t;

/* Resolves `rec` against its input. Moves rec's headers out (or copies the
 * input's). Returns -1 when neither rec nor default_topic names a topic. */
int kr_record_resolve(kr_record_t *rec, const kr_msg_t *msg, const char *default_topic,
                      kr_resolved_t *out);

/* One handler run over one message: its input, outputs and outcome. */
typedef struct kr_run {
    const kr_msg_t *msg;
    struct kr_vm *vm;
    kr_record_t *recs;
    size_t cnt, cap;
    char *error;        /* set when the run failed */
    char *trace;        /* Lua traceback of the failure */
    int no_handler;     /* a service table had no function for the topic */
    int nest_reply;     /* its returned values answer a NestJS request (kr_record_from_nest) */
    lua_State *co;      /* the handler's coroutine while it runs or waits */
    int co_ref, msg_ref;
    kr_record_t *request;       /* set while waiting in kroute.request */
    int64_t request_timeout_ms;
    size_t mem_limit;   /* the route's cap: Lua heap + out_bytes (0: none) */
    size_t out_bytes;   /* C memory held by recs */
    /* Empty byte buffers an earlier run's records left (kr_run_recycle):
     * a record being built takes one before it allocates. */
    kr_buf_t kept[KR_RUN_KEPT_BUFS];
    int kept_cnt;
} kr_run_t;

/* Frees outputs and outcome, and every buffer the run keeps; keeps msg
 * and vm. The run must not be suspended (see kr_vm_abandon). */
void kr_run_clear(kr_run_t *run);
/* Empties a finished run for the next message, as if it were new
 * (zeroed), except that with `keep` it holds on to its record array (up to
 * KR_RUN_KEPT_RECS) and up to KR_RUN_KEPT_BUFS of its records' byte
 * buffers (each at most KR_RUN_KEPT_BUF_MAX bytes): the steady state then
 * allocates nothing per record. Without `keep` it is kr_run_clear and
 * zeroed, also after an earlier recycle that kept. */
void kr_run_recycle(kr_run_t *run, int keep);
/* Bytes of record memory a recycled run keeps (its array and buffers). */
size_t kr_run_kept_bytes(const kr_run_t *run);

/* Building a record: kr_record_begin pushes a to-be-closed box holding an
 * empty record and returns it; fill it (kr_record_from_lua/_from_emit),
 * then kr_run_commit moves it into the run. If anything raises before the
 * commit, closing the box frees what was built, so no half-built record
 * ever reaches the run and nothing leaks. [-0, +1, m] */
kr_record_t *kr_record_begin(lua_State *L);
/* [-1, +0, e] Appends the record in the box at the top of the stack to
 * run->recs (counting it against the cap: raises when over). */
void kr_run_commit(lua_State *L, kr_run_t *run);
/* [-1, +0, e] The same for a request: returns the record malloc'd (for
 * run->request), checked against the cap but not counted as an output. */
kr_record_t *kr_run_commit_request(lua_State *L);

/* The run of the calling coroutine, or NULL outside a handler. */
kr_run_t *kr_run_current(lua_State *L);
void kr_run_set_current(lua_State *L, kr_run_t *run);

/* [-0, +0, e] fill `rec` from the handler value at idx: a kroute.record
 * table, or a plain value for the default topic. Raises on bad fields. */
void kr_record_from_lua(lua_State *L, int idx, kr_record_t *rec);
/* [-0, +0, e] fill `rec` from a value NestJS's KafkaRequestSerializer
 * would be given (a reply of a `reply: nest` route, the value of
 * kroute.request): a {key, value, headers[, partition]} envelope
 * (kr_nest_is_envelope) is unwrapped as it does; a table with __tostring
 * is that text, as an object with its own toString(); other values as
 * kr_record_from_lua. Nothing is inherited from the input message. With
 * `records`, a kroute.record keeps its own meaning (a reply); without, it
 * is read as an envelope (a request). */
void kr_record_from_nest(lua_State *L, int idx, kr_record_t *rec, int records);
/* [-0, +0, e] kroute.request(pattern, value, opts) arguments at 1..3:
 * the value as kr_record_from_nest; opts key=/headers=/partition= take
 * the place of the envelope's. */
void kr_record_from_request(lua_State *L, kr_record_t *rec);
/* [-0, +0, e] kroute.emit(topic, value, opts) arguments at 1..3 */
void kr_record_from_emit(lua_State *L, kr_record_t *rec);
/* kroute.record{...}  [-1, +1, e] */
int kr_record_new(lua_State *L);
/* Registers the "kroute.record" and record box metatables. */
void kr_record_register(lua_State *L);
void kr_record_free(kr_record_t *rec);

#endif
