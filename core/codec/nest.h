/* nest.h - the NestJS Kafka wire format (examples/nestjs/README.md, "Wire details").
 * Header names, recognising a request, the headers of a reply, and
 * correlation ids; and the Lua side of NestJS's own classes: what its
 * KafkaParser makes of a message, and which values its
 * KafkaRequestSerializer treats as a {key, value, headers} envelope.
 * Only these rules live here; routing them is the dispatcher's job,
 * matching replies the requester's, building records record.c's. */
#ifndef KR_NEST_H
#define KR_NEST_H

#include <librdkafka/rdkafka.h>
#include <lua.h>
#include <stdint.h>

#include "runtime/message.h"

#define KR_NEST_CORRELATION "kafka_correlationId"
#define KR_NEST_REPLY_TOPIC "kafka_replyTopic"
#define KR_NEST_REPLY_PARTITION "kafka_replyPartition"
#define KR_NEST_ERR "kafka_nest-err"
#define KR_NEST_DISPOSED "kafka_nest-is-disposed"
#define KR_NEST_NO_HANDLER "There is no matching message handler defined in the remote service."

/* Where a NestJS request wants its reply. */
typedef struct kr_nest_req {
    char *correlation;     /* owned; the header value, text */
    char *reply_topic;     /* owned */
    int32_t reply_partition; /* RD_KAFKA_PARTITION_UA when not given */
} kr_nest_req_t;

/* Fills `req` when `hdrs` carry a non-empty correlation id and reply topic
 * (a ClientKafka.send); returns 0 for an event (ClientKafka.emit, or
 * either header empty: NestJS's ServerKafka tests them for truthiness). */
int kr_nest_parse_request(const rd_kafka_headers_t *hdrs, kr_nest_req_t *req);
void kr_nest_req_free(kr_nest_req_t *req);
/* Headers of a reply, as ServerKafka.sendMessage sets them: `base` (the
 * handler's own headers, taken; may be NULL) with kafka_correlationId set
 * to `correlation` (left out when NULL), kafka_nest-err when `err` is
 * given, and kafka_nest-is-disposed (one 0x00 byte) when `disposed`.
 * Each of these replaces a header of that name in `base`. */
rd_kafka_headers_t *kr_nest_reply_headers(rd_kafka_headers_t *base, const char *correlation,
                                          const char *err, int disposed);
/* The kafka_nest-err text of a failed request (malloc'd): NestJS's own
 * no-handler text, or a handler error shaped as a NestJS server sends an
 * RpcException, {"status":"error","message":"<reason>"}. */
char *kr_nest_error_text(const char *reason, int no_handler);
/* A fresh random (v4) UUID as text, 36 chars + NUL. */
void kr_nest_correlation_id(char out[37]);
/* The value of header `name` as a NUL-terminated copy, or NULL. */
char *kr_nest_header(const rd_kafka_headers_t *hdrs, const char *name);

/* [-0, +1, m] KafkaParser.decode of one value: a value starting with a
 * 0x00 byte stays bytes; anything else is read as UTF-8 text (ill-formed
 * bytes become U+FFFD, as Buffer.toString does), and text starting with
 * { or [ that parses as JSON becomes a table. NULL pushes nil. */
void kr_nest_push_decoded(lua_State *L, const char *p, size_t len);
/* [-0, +1, m] the message as KafkaParser.parse hands it to a NestJS
 * handler (KafkaContext.getMessage()): {key=, value=, headers=}, each
 * decoded as above; a null header value is kroute.null; a repeated header
 * name is, as in kafkajs + NestJS, its values joined with "," and decoded
 * as text. */
void kr_nest_push_message(lua_State *L, const kr_msg_t *msg);
/* 1 when the value at idx is what KafkaRequestSerializer takes for a
 * Kafka message: a table with a `key` or a `value` field. */
int kr_nest_is_envelope(lua_State *L, int idx);

#endif
