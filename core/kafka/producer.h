/* producer.h - the idempotent producer every output, emit, reply, request
 * and DLQ copy goes through: bulk records batch (linger.ms), replies and
 * requests leave at once (a second handle, see producer.c). Delivery
 * reports come back through a callback carrying the per-record opaque the
 * dispatcher passed in, on the thread that polls. */
#ifndef KR_PRODUCER_H
#define KR_PRODUCER_H

#include <librdkafka/rdkafka.h>

#include "config/config.h"

/* Called from kr_producer_poll/flush for each record, once. */
typedef void(kr_delivery_cb_t)(void *ctx, void *msg_opaque, rd_kafka_resp_err_t err);

typedef struct kr_producer kr_producer_t;

kr_producer_t *kr_producer_new(const char *brokers, const kr_props_t *props,
                               kr_delivery_cb_t *cb, void *ctx, char *errstr, size_t errsize);
/* Produces a copy of key/value; `prompt` (a reply or request someone waits
 * for) sends it without lingering. Takes `hdrs` (may be NULL) on success
 * and on failure. Waits (polling delivery reports) while the queue is full.
 * Returns 0 or an error code. */
rd_kafka_resp_err_t kr_producer_send(kr_producer_t *p, int prompt, const char *topic,
                                     int32_t partition, const void *key, size_t key_len,
                                     const void *value, size_t value_len,
                                     rd_kafka_headers_t *hdrs, void *msg_opaque);
/* Serves delivery reports (of both handles). */
void kr_producer_poll(kr_producer_t *p, int timeout_ms);
/* Waits up to timeout_ms for every outstanding record; returns how many
 * are still outstanding. */
int kr_producer_flush(kr_producer_t *p, int timeout_ms);
/* The largest record (key + value + headers + framing) the producer
 * accepts: its effective message.max.bytes. */
size_t kr_producer_max_message(const kr_producer_t *p);
/* The size librdkafka checks against message.max.bytes for a record
 * (an upper bound: key, value, headers and their framing). */
size_t kr_producer_record_size(size_t key_len, size_t value_len,
                               const rd_kafka_headers_t *hdrs);
/* Non-zero for errors that condemn one record, not the producer: it is
 * too large (client or broker limit) or invalid. Sending other records,
 * or a smaller copy of this one, can still succeed. */
int kr_producer_err_per_message(rd_kafka_resp_err_t err);
/* Non-zero for errors where the producer, not the record, failed: its
 * idempotence state was lost (a fatal error, an out-of-order or unknown
 * producer id after a leader change), the record was purged or timed out.
 * The same record, produced again, can succeed. */
int kr_producer_err_own(rd_kafka_resp_err_t err);
/* Non-zero once librdkafka raised a fatal (idempotence) error: the handle
 * accepts nothing more and must be replaced. errstr may be NULL. */
int kr_producer_fatal(kr_producer_t *p, char *errstr, size_t errsize);
/* Fails every record still queued or in flight (their reports come with
 * _PURGE_QUEUE/_PURGE_INFLIGHT on the next polls) and waits up to
 * timeout_ms for those reports; returns how many are still outstanding. */
int kr_producer_purge(kr_producer_t *p, int timeout_ms);
/* Makes a delivery report waiting on either handle write a byte to `fd`
 * (the event loop's wake pipe); undone by kr_producer_free. */
void kr_producer_wake_fd(kr_producer_t *p, int fd);
void kr_producer_free(kr_producer_t *p);

#endif
