/* nest.h - the NestJS Kafka wire format (the README's NestJS section).
 * Header names, recognising a request, the headers of a reply, and
 * correlation ids. Only byte-level rules live here; routing them is the
 * dispatcher's job and matching replies the requester's. */
#ifndef KR_NEST_H
#define KR_NEST_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

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

/* Fills `req` when `hdrs` carry a correlation id and a reply topic (a
 * ClientKafka.send); returns 0 for an event (ClientKafka.emit). */
int kr_nest_parse_request(const rd_kafka_headers_t *hdrs, kr_nest_req_t *req);
void kr_nest_req_free(kr_nest_req_t *req);
/* Headers of the final reply: correlation id, is-disposed (one 0x00
 * byte), and kafka_nest-err when `err` is given. */
rd_kafka_headers_t *kr_nest_reply_headers(const kr_nest_req_t *req, const char *err);
/* A fresh random (v4) UUID as text, 36 chars + NUL. */
void kr_nest_correlation_id(char out[37]);
/* The value of header `name` as a NUL-terminated copy, or NULL. */
char *kr_nest_header(const rd_kafka_headers_t *hdrs, const char *name);

#endif
