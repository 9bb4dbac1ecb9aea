/* health.h - is the cluster reachable? A thread of its own asks for
 * metadata once a second through a client of its own, so /healthz answers
 * at once from the last answer instead of making the router thread wait up
 * to a second for the broker (and it keeps working while the router's
 * producer is being replaced). */
#ifndef KR_HEALTH_H
#define KR_HEALTH_H

#include <stddef.h>

#include "config/config.h"

typedef struct kr_health kr_health_t;

/* Starts probing brokers with the producer settings in props (the same
 * security settings reach the same listeners). NULL with err on failure. */
kr_health_t *kr_health_start(const char *brokers, const kr_props_t *props, char *err,
                             size_t errsize);
/* 0 while the last probe was answered; else -1 with the reason in why. */
int kr_health_check(kr_health_t *h, char *why, size_t whysize);
/* Stops and joins the thread, frees h. NULL is a no-op. */
void kr_health_stop(kr_health_t *h);

#endif
