/* outcome.h - what a finished handler run becomes: outputs, a NestJS
 * reply, or a failure of the whole run. One rule, pure (no I/O, no
 * allocation), used by the dispatcher (production) and by kroute.testing's
 * vm:handle alike, so a handler spec sees what kroute would do. */
#ifndef KR_OUTCOME_H
#define KR_OUTCOME_H

#include <stddef.h>

#include "runtime/record.h"

/* The parts of a route the outcome depends on. */
typedef struct kr_outcome_route {
    int reply_nest;  /* `reply: nest` */
    const char *to;  /* the route's `to`, or NULL */
} kr_outcome_route_t;

typedef struct kr_outcome {
    const char *fail; /* non-NULL: the run fails as a whole (static text), nothing goes out */
    int reply;        /* a NestJS reply goes out (a request on a `reply: nest` route) */
    long reply_rec;   /* ... carrying this record of the run, or -1: a null reply */
    size_t outputs;   /* how many records go out as outputs (kr_outcome_is_output) */
    int filtered;     /* nothing at all goes out */
} kr_outcome_t;

/* 1 when the run's returned values answer a NestJS request: the handler
 * runs with run->nest_reply set (kroute.record envelopes, see record.c). */
int kr_outcome_answers(const kr_outcome_route_t *route, int is_request);

/* Plans a run that finished without error. The rules:
 * - on a `reply: nest` route, a request is answered by the first returned
 *   value (a null reply when nothing was returned); later returned values
 *   are dropped; emits are outputs;
 * - there, an event's returned values are outputs to `to`, or dropped when
 *   the route has none;
 * - elsewhere every record is an output, and a record with no topic of its
 *   own on a route without `to` fails the run (nothing half-sent). */
void kr_outcome_plan(const kr_run_t *run, const kr_outcome_route_t *route, int is_request,
                     kr_outcome_t *out);

/* 1 when run->recs[i] goes out as an output under the plan above. */
int kr_outcome_is_output(const kr_run_t *run, size_t i, const kr_outcome_route_t *route,
                         int is_request);

#endif
