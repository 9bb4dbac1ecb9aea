/* engine/internal.h - what the engine/ files share and nothing else
 * sees: the dispatcher, group, lane and in-flight message structs, and the
 * functions one engine file calls in another. dispatch.h is the public
 * API. Ownership: the dispatcher owns its groups, a group its lanes, a
 * lane its messages until their offset is stored (kr_lane_advance frees
 * them); a message whose lane was dropped is an orphan, freed by whatever
 * lets go of it last (a delivery report or its job: kr_inmsg_release).
 * Every path ends in kr_inmsg_free, the only function that frees one. */
#ifndef KR_ENGINE_INTERNAL_H
#define KR_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/nest.h"
#include "engine/dispatch.h"
#include "engine/outcome.h"
#include "engine/spares.h"
#include "hash.h"
#include "ops/metrics.h"
#include "runtime/message.h"
#include "runtime/pool.h"
#include "runtime/vm.h"

#define LANE_BUCKETS 1024 /* per group: lanes by topic and partition */

typedef struct kr_lane kr_lane_t;

/* One consumed message, from fetch to offset store. */
typedef struct kr_inmsg {
    rd_kafka_message_t *rkm;
    kr_msg_t view;
    kr_lane_t *lane;                /* NULL once orphaned by a revoke */
    kr_group_t *group;
    kr_gen_t *gen;                  /* bound when its first route starts */
    const kr_route_t *const *routes; /* routes matching its topic */
    size_t route_cnt;
    size_t route_pos;               /* next route to run */
    int attempt;                    /* failed runs of routes[route_pos] */
    int pending;                    /* outputs without a delivery report */
    int handled;                    /* every route finished */
    char *delivery_error;           /* first failed output, if any */
    const kr_route_t *failed_route; /* route whose output failed */
    kr_run_t *run;                  /* the route run in progress */
    kr_vm_t *vm;                    /* ...and the VM it runs in */
    int worker;                     /* ...which belongs to this pool thread */
    int running;                    /* a pool thread has its run (job) */
    int dropped;                    /* ...and the run is to be dropped when it ends */
    int unflushed;                  /* its job waits in a batch not yet handed over */
    kr_job_t job;
    int zombie;                     /* an abandoned thread still runs its old run (and
                                     * reads its view): memory kept until released */
    int freed;                      /* ...and it was freed meanwhile */
    int waiting;                    /* run suspended in kroute.request */
    int parked;                     /* ...until its reply topic is assigned */
    int64_t request_deadline_ms;
    int64_t retry_at_ms;            /* > 0: waits for a retry of routes[route_pos] */
    uint32_t key_hash;              /* ordering: key blocks messages of equal hash */
    int is_request;                 /* a NestJS request (correlation + reply topic) */
    int request_known;              /* ...is_request and nest are set: see kr_inmsg_is_request */
    kr_nest_req_t nest;
    struct kr_inmsg *next;  /* lane order: every message not yet stored */
    struct kr_inmsg *tnext; /* todo order: messages not yet handled */
} kr_inmsg_t;

/* Per produced record: who it belongs to, whether it is a DLQ copy, and
 * where it went and how big it was (for the reason when it fails). */
typedef struct kr_out {
    kr_inmsg_t *m;
    const kr_route_t *route;
    int is_dlq;
    size_t size;  /* key + value bytes */
    char *topic;  /* short_topic, or a copy of a longer name */
    char short_topic[64];
} kr_out_t;

struct kr_lane {
    kr_group_t *group;
    int pump_mark;           /* listed for a pump after a batch came back */
    char *topic;
    int32_t partition;
    kr_inmsg_t *head, *tail; /* every message not yet stored, offset order */
    kr_inmsg_t *todo, *todo_tail; /* the unhandled ones among them (tnext) */
    size_t queued;           /* messages in it */
    size_t retry_cnt;        /* todo messages waiting for a retry */
    kr_ordering_t ordering;  /* the strictest of its routes' */
    uint32_t *key_cnt;       /* ordering: key: unhandled messages per key slot */
    int paused;              /* its partition is paused: the in-flight budget is spent */
    int forwarded;           /* assigned: its messages go to its worker's queue */
    int64_t next_offset;     /* offset after everything taken in, or the group's committed
                              * offset at assignment; -1: unknown (lanes.c: is_refetch) */
    size_t refetched;        /* messages skipped since the last one taken in */
    kr_lane_t *hnext;
};

typedef struct topic_routes {
    char *topic;
    uint32_t hash;             /* of topic (kr_hash_bytes) */
    const kr_route_t **routes; /* owned by the generation */
    size_t cnt;
    kr_ordering_t ordering;    /* the strictest of the routes' */
} topic_routes_t;

struct kr_group {
    kr_dispatch_t *d;
    char *name;
    kr_consumer_t *c;
    const kr_route_t **routes; /* of the live generation */
    size_t route_cnt;
    const char **subs;
    size_t sub_cnt;
    topic_routes_t *cache;     /* topic -> routes, for the live generation */
    size_t cache_cnt, cache_cap;
    uint32_t *cache_index;     /* open addressing: cache position + 1, 0 empty */
    size_t index_size;         /* a power of two, over twice cache_cnt */
    kr_lane_t *buckets[LANE_BUCKETS];
};

struct kr_dispatch {
    pthread_mutex_t mu; /* the engine lock: held by the router's loop, or a pass */
    int64_t reforward_at;
    uint64_t *taken;    /* messages consumed, by thread: the workers, then the router */
    int router_slot;    /* the router's index in taken: the pool's thread count */
    kr_gen_t *gen; /* the live generation (one reference) */
    kr_metrics_t metrics;
    kr_pool_t *pool;
    size_t running;  /* messages with a job in the pool */
    kr_job_t **batch_head, **batch_tail; /* per pool thread: jobs not yet handed over */
    size_t *batch_len;
    int draining;
    kr_producer_t *p;
    kr_group_t **groups;
    size_t group_cnt;
    size_t inflight;
    size_t inflight_bytes; /* their kr_inmsg_size()s */
    size_t budget;    /* in-flight bytes before consuming waits (--max-inflight) */
    int budget_spent; /* spent for longer than KR_BUDGET_HOLD_MS: partitions pause */
    int64_t held_since; /* when consuming last stopped for it (0: it is not spent) */
    uint64_t holds;   /* times consuming stopped for it */
    uint64_t pauses;  /* partitions paused for it so far */
    uint64_t refetched; /* messages librdkafka delivered again, skipped */
    size_t retrying;  /* messages waiting for a retry */
    int fatal;
    int rewind;       /* an output failed by the producer: kr_dispatch_rewind */
    size_t rewinds;   /* ...done so far */
    unsigned rr;      /* ordering: none round robin */
    kr_requester_t *rq;
    kr_inmsg_t **parked; /* requests waiting for their reply partition */
    size_t parked_cnt, parked_cap;
    /* what every message makes and ends, kept for the next ones */
    kr_spares_t spare_msgs, spare_outs, spare_runs;
    size_t runs_kept_bytes; /* record memory the parked runs keep (RUNS_KEPT_MAX) */
    kr_lane_t **pump_lanes; /* kr_dispatch_poll_jobs' list, kept */
    size_t pump_cap;
};

static inline void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static inline kr_route_stats_t *stats(const kr_inmsg_t *m, const kr_route_t *route)
{
    return m->gen->stats[route->index];
}

/* The worker thread a partition belongs to: its messages are forwarded to
 * that thread's queue, and `ordering: partition` runs them on its VMs. */
static inline int kr_partition_worker(const char *topic, int32_t partition, int workers)
{
    uint32_t h = kr_hash_bytes(topic, strlen(topic), (uint32_t)partition);
    return (int)(h % (uint32_t)(workers > 0 ? workers : 1));
}

/* pass.c */
int kr_dispatch_partition_worker(const kr_dispatch_t *d, const char *topic, int32_t partition);
/* Hands the offsets advanced so far to librdkafka (and resumes partitions
 * the budget paused once it allows). */
void kr_dispatch_flush_stores(kr_dispatch_t *d);
/* Forwards every assigned partition to its worker again, once a second. */
void kr_dispatch_reforward(kr_dispatch_t *d, int64_t now);
/* groups.c */
/* Recomputes g's routes and subscriptions from the live generation;
 * 1 when the subscription set changed. */
int kr_group_refresh(kr_group_t *g);
/* The routes of g whose patterns match `topic` (cached per topic). */
const topic_routes_t *kr_group_routes_for(kr_group_t *g, const char *topic);
/* Frees g with its lanes and their messages (the pool is joined). */
void kr_group_free(kr_dispatch_t *d, kr_group_t *g);
/* What an in-flight message counts against the budget: its key and value
 * plus an estimate of the bookkeeping around them (kr_inmsg_t, librdkafka's
 * message and headers), so the budget follows the memory held. */
#define KR_INMSG_OVERHEAD 512
/* lanes.c */
/* Where the lane of topic/partition is (or would be linked) in g. */
kr_lane_t **kr_lane_slot(kr_group_t *g, const char *topic, int32_t partition);
/* The partition's lane, made (empty, next_offset -1) if it has none. */
kr_lane_t *kr_lane_get(kr_group_t *g, const char *topic, int32_t partition);
/* Stores the offset past the finished messages at the lane's head. */
void kr_lane_advance(kr_dispatch_t *d, kr_lane_t *lane);
/* Runs what the lane's ordering lets run now, then advances it. */
void kr_lane_pump(kr_dispatch_t *d, kr_lane_t *lane);
/* Detaches and frees the lane; its messages become orphans. */
void kr_lane_drop(kr_dispatch_t *d, kr_lane_t *lane);
/* Resumes every paused partition once the in-flight bytes are down to
 * half the budget; a no-op otherwise. */
void kr_lane_budget_check(kr_dispatch_t *d);
/* inmsg.c: a message's life; the lane (or, once orphaned, kr_inmsg_release)
 * decides when it ends, kr_inmsg_free ends it */
kr_inmsg_t *kr_inmsg_new(kr_group_t *g, rd_kafka_message_t *rkm);
void kr_inmsg_unpark(kr_dispatch_t *d, kr_inmsg_t *m);
void kr_inmsg_drop_run(kr_dispatch_t *d, kr_inmsg_t *m);
void kr_inmsg_free(kr_dispatch_t *d, kr_inmsg_t *m);
int kr_inmsg_release(kr_dispatch_t *d, kr_inmsg_t *m);
void kr_inmsg_set_retry(kr_dispatch_t *d, kr_inmsg_t *m, int64_t at);
void kr_inmsg_settle(kr_dispatch_t *d, kr_inmsg_t *m);
/* Gives m a fresh run (from the free list) for its next route. */
void kr_inmsg_new_run(kr_dispatch_t *d, kr_inmsg_t *m);
void kr_inmsg_free_run(kr_dispatch_t *d, kr_inmsg_t *m);
/* Whether m is a NestJS request route answers: always 0 unless the route
 * has reply: nest; m's headers are read for it the first time one asks. */
int kr_inmsg_is_request(kr_inmsg_t *m, const kr_route_t *route);
/* outputs.c: every record sent for m (its `pending` counts the reports
 * still to come) */
void kr_out_dead_letter(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                        const char *reason, const char *trace);
void kr_out_run(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route, kr_run_t *run,
                const kr_outcome_t *plan);
const char *kr_out_request(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route);
void kr_out_give_up(kr_dispatch_t *d, kr_inmsg_t *m, const kr_route_t *route,
                    const char *reason, const char *trace, int no_handler);
/* runs.c: queues the run of m's next route; 0 when m is handled, 1 when
 * it waits (its run, a retry or a reply) */
int kr_runs_next(kr_dispatch_t *d, kr_inmsg_t *m);
/* Acts on finished jobs (linked by `next`, from the pool); how many. */
size_t kr_runs_finished(kr_dispatch_t *d, kr_job_t *jobs);

#endif
