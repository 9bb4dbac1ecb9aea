/* message.h - the message handlers see: a borrowed view of one Kafka record.
 * C owns the bytes (an rd_kafka_message_t, or a test's fake); Lua gets a
 * userdata that points at the view and is invalidated once the handler has
 * finished, so a message kept in a global raises instead of reading freed
 * memory. Accessors copy bytes into fresh Lua strings and tables. */
#ifndef KR_MESSAGE_H
#define KR_MESSAGE_H

#include <librdkafka/rdkafka.h>
#include <lua.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct kr_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;       /* NULL: no key */
    size_t key_len;
    const void *value;     /* NULL: null value (tombstone) */
    size_t value_len;
    int64_t timestamp;     /* ms since epoch, -1 if none */
    /* Read them through kr_msg_headers: a consumed message's headers are
     * parsed on first use (librdkafka allocates a list for every record
     * that has a header section, even an empty one, and most routes never
     * look). rkm NULL: `headers` was set directly (a test's fake). */
    rd_kafka_headers_t *headers; /* may be NULL; borrowed */
    rd_kafka_message_t *rkm;
    atomic_int headers_once;     /* 0 not parsed, 1 being parsed, 2 parsed */
} kr_msg_t;

/* Fill a view from a consumed message (headers are borrowed from rkm). */
void kr_msg_from_rkm(kr_msg_t *msg, rd_kafka_message_t *rkm);
/* The message's headers, or NULL when it has none. Safe from any thread:
 * the first caller parses them, a concurrent one waits for it (the router
 * and a handler's thread may both ask, e.g. for a DLQ copy while an
 * abandoned run still reads the view). */
rd_kafka_headers_t *kr_msg_headers(const kr_msg_t *msg);

/* [-0, +1, m] push a userdata viewing `msg`; `msg` must outlive it until
 * kr_message_invalidate(). */
void kr_message_push(lua_State *L, const kr_msg_t *msg);
/* The view behind the kroute.message userdata at idx, or NULL when idx
 * holds something else; raises when that message's handler finished. */
const kr_msg_t *kr_message_test(lua_State *L, int idx);
/* Make the userdata at idx unusable: later access raises. */
void kr_message_invalidate(lua_State *L, int idx);
/* Registers the "kroute.message" metatable in L. */
void kr_message_register(lua_State *L);

#endif
