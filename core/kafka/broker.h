/* broker.h - the embedded Kafka broker: librdkafka's mock cluster, in
 * process. `brokers: embedded` and `kroute broker` use it; it speaks the
 * real protocol on loopback so kcat, kafkajs or librdkafka clients work. */
#ifndef KR_BROKER_H
#define KR_BROKER_H

#include <stddef.h>

typedef struct kr_broker kr_broker_t;

/* Starts a cluster of `broker_cnt` brokers. With port > 0 the bootstrap
 * address is 127.0.0.1:port (forwarded to the first broker; metadata then
 * points clients at the brokers' own ports). */
kr_broker_t *kr_broker_start(int broker_cnt, int port, char *errstr, size_t errsize);
/* "127.0.0.1:PORT[,...]" */
const char *kr_broker_bootstraps(const kr_broker_t *b);
/* Creates a topic with `partitions` partitions (before anyone auto-creates
 * it with the mock's default of 4). */
int kr_broker_create_topic(kr_broker_t *b, const char *topic, int partitions, char *errstr,
                           size_t errsize);
void kr_broker_stop(kr_broker_t *b);

#endif
