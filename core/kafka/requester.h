/* requester.h - the client side of NestJS request/reply for kroute.request.
 * One consumer in the "<group>-client" group reads the reply topics
 * ("<pattern>.reply") of the patterns routes declare in `requests:`; each
 * kroute instance uses the first partition it is assigned of each reply
 * topic as its kafka_replyPartition, as a NestJS ClientKafka does. Pending
 * requests are matched to replies by correlation id and expire. */
#ifndef KR_REQUESTER_H
#define KR_REQUESTER_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "config/config.h"
#include "kafka/consumer.h"

typedef struct kr_requester kr_requester_t;

/* A reply (value may be NULL: null value) or an error text for a request. */
typedef void(kr_reply_cb_t)(void *ctx, void *req_ctx, const void *value, size_t len,
                            const char *err);

kr_requester_t *kr_requester_new(const char *brokers, const char *group,
                                 const kr_props_t *props, const char *const *patterns,
                                 size_t pattern_cnt, char *errstr, size_t errsize);
/* The patterns the live generation declares (a reload): starts reading
 * the reply topics of new ones, and stops reading those of patterns no
 * longer declared once no request sent to them waits. Returns how many
 * were added, or -1. */
int kr_requester_set_patterns(kr_requester_t *rq, const char *const *patterns, size_t cnt,
                              char *errstr, size_t errsize);
/* The reply partition to put in a request for `pattern`: >= 0 when known,
 * -1 while the reply topic is not assigned yet, -2 when the pattern was
 * not declared. */
int32_t kr_requester_partition(const kr_requester_t *rq, const char *pattern);
/* Waits for the reply to `correlation`, a request sent to `pattern`, until
 * deadline_ms (monotonic). */
void kr_requester_track(kr_requester_t *rq, const char *pattern, const char *correlation,
                        void *req_ctx, int64_t deadline_ms);
/* Forgets every request of req_ctx (no callback). */
void kr_requester_cancel(kr_requester_t *rq, void *req_ctx);
/* Reads replies and calls cb for each one that completes a request. */
size_t kr_requester_poll(kr_requester_t *rq, kr_reply_cb_t *cb, void *ctx);
/* Calls cb with "timeout" for expired requests; returns ms until the next
 * deadline, or -1. */
int kr_requester_expire(kr_requester_t *rq, int64_t now_ms, kr_reply_cb_t *cb, void *ctx);
kr_consumer_t *kr_requester_consumer(kr_requester_t *rq);
void kr_requester_free(kr_requester_t *rq);

#endif
