/* engine/groups.c - consumer groups: one per group name the routes use,
 * its routes and subscriptions for the live generation, the topic ->
 * routes cache, and the rebalance hooks (an assignment starts each lane at
 * the committed offset; a revoke commits what is done, then drops the
 * partitions' lanes). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "grow.h"

static void cache_clear(kr_group_t *g)
{
    for (size_t i = 0; i < g->cache_cnt; i++)
        free(g->cache[i].topic);
    free(g->cache);
    free(g->cache_index);
    g->cache = NULL;
    g->cache_index = NULL;
    g->cache_cnt = g->cache_cap = g->index_size = 0;
}

/* Recomputes the group's routes and subscriptions from the live
 * generation. Returns 1 when the subscription set changed. */
int kr_group_refresh(kr_group_t *g)
{
    kr_dispatch_t *d = g->d;
    const char **old = g->subs;
    size_t old_cnt = g->sub_cnt;
    free(g->routes);
    cache_clear(g);
    g->subs = NULL;
    g->sub_cnt = g->route_cnt = 0;
    const kr_config_t *cfg = d->gen->cfg;
    g->routes = xcalloc(cfg->route_cnt, sizeof(*g->routes));
    for (size_t i = 0; i < cfg->route_cnt; i++) {
        const kr_route_t *r = &cfg->routes[i];
        if (strcmp(kr_route_group(cfg, r), g->name) != 0)
            continue;
        g->routes[g->route_cnt++] = r;
        for (size_t j = 0; j < r->pattern_cnt; j++) {
            const char *sub = r->patterns[j].subscription;
            int dup = 0;
            for (size_t k = 0; k < g->sub_cnt; k++)
                dup |= !strcmp(g->subs[k], sub);
            if (dup)
                continue;
            g->subs = realloc(g->subs, (g->sub_cnt + 1) * sizeof(*g->subs));
            if (!g->subs)
                abort();
            g->subs[g->sub_cnt++] = sub;
        }
    }
    /* the old strings belong to the previous generation: compare first */
    int changed = old_cnt != g->sub_cnt;
    for (size_t i = 0; !changed && i < old_cnt; i++) {
        int found = 0;
        for (size_t j = 0; j < g->sub_cnt && !found; j++)
            found = !strcmp(old[i], g->subs[j]);
        changed = !found;
    }
    free(old);
    return changed;
}

kr_group_t *kr_dispatch_group(kr_dispatch_t *d, const char *group)
{
    for (size_t i = 0; i < d->group_cnt; i++)
        if (!strcmp(d->groups[i]->name, group))
            return d->groups[i];
    kr_group_t *g = xcalloc(1, sizeof(*g));
    g->d = d;
    g->name = strdup(group);
    kr_group_refresh(g);
    d->groups = realloc(d->groups, (d->group_cnt + 1) * sizeof(*d->groups));
    if (!d->groups)
        abort();
    d->groups[d->group_cnt++] = g;
    return g;
}

size_t kr_dispatch_group_count(const kr_dispatch_t *d)
{
    return d->group_cnt;
}

kr_group_t *kr_dispatch_group_at(const kr_dispatch_t *d, size_t i)
{
    return d->groups[i];
}

kr_consumer_t *kr_group_consumer(const kr_group_t *g)
{
    return g->c;
}

size_t kr_group_route_count(const kr_group_t *g)
{
    return g->route_cnt;
}

void kr_group_set_consumer(kr_group_t *g, kr_consumer_t *c)
{
    g->c = c;
}

const char *const *kr_group_subscriptions(kr_group_t *g, size_t *cnt)
{
    *cnt = g->sub_cnt;
    return g->subs;
}

const char *kr_group_name(const kr_group_t *g)
{
    return g->name;
}

/* Puts cache position pos into the index (which has room). */
static void index_put(kr_group_t *g, size_t pos)
{
    size_t mask = g->index_size - 1;
    size_t i = g->cache[pos].hash & mask;
    while (g->cache_index[i])
        i = (i + 1) & mask;
    g->cache_index[i] = (uint32_t)pos + 1;
}

/* Routes of the group whose patterns match `topic`, computed once. Looked
 * up twice per message, so by hash: a glob or regex route may match
 * hundreds of topics. */
const topic_routes_t *kr_group_routes_for(kr_group_t *g, const char *topic)
{
    uint32_t hash = kr_hash_bytes(topic, strlen(topic), KR_HASH_SEED);
    if (g->index_size) {
        size_t mask = g->index_size - 1;
        for (size_t i = hash & mask; g->cache_index[i]; i = (i + 1) & mask) {
            topic_routes_t *tr = &g->cache[g->cache_index[i] - 1];
            if (tr->hash == hash && !strcmp(tr->topic, topic))
                return tr;
        }
    }
    g->cache = kr_grow(g->cache, &g->cache_cap, g->cache_cnt, sizeof(*g->cache), 8);
    if (2 * (g->cache_cnt + 1) > g->index_size) { /* keep it under half full */
        free(g->cache_index);
        g->index_size = g->index_size ? g->index_size * 2 : 16;
        g->cache_index = xcalloc(g->index_size, sizeof(*g->cache_index));
        for (size_t i = 0; i < g->cache_cnt; i++)
            index_put(g, i);
    }
    topic_routes_t *tr = &g->cache[g->cache_cnt];
    tr->topic = strdup(topic);
    tr->hash = hash;
    index_put(g, g->cache_cnt++);
    /* messages keep pointing at this array after a reload: the
     * generation it was made for frees it */
    tr->routes = kr_gen_alloc(g->d->gen, g->route_cnt * sizeof(*tr->routes));
    tr->cnt = 0;
    /* a message runs all its routes in turn, so one route that keeps
     * partition order makes the whole partition keep it */
    tr->ordering = KR_ORDER_NONE;
    for (size_t i = 0; i < g->route_cnt; i++)
        for (size_t j = 0; j < g->routes[i]->pattern_cnt; j++)
            if (kr_pattern_match(&g->routes[i]->patterns[j], topic)) {
                tr->routes[tr->cnt++] = g->routes[i];
                if (g->routes[i]->ordering < tr->ordering)
                    tr->ordering = g->routes[i]->ordering;
                break;
            }
    return tr;
}

/* ---------- rebalance ---------- */

static int lanes_pending(kr_group_t *g, const rd_kafka_topic_partition_list_t *parts)
{
    int pending = 0;
    for (int i = 0; i < parts->cnt; i++) {
        kr_lane_t *lane = *kr_lane_slot(g, parts->elems[i].topic, parts->elems[i].partition);
        for (kr_inmsg_t *m = lane ? lane->head : NULL; m; m = m->next)
            if (m->handled && m->pending)
                pending++;
    }
    return pending;
}

/* Each partition's lane starts at the group's committed offset: what
 * librdkafka delivers below it was handled (here or by the member that
 * had the partition) and is skipped (lanes.c). Its messages are forwarded
 * to its worker thread's queue (engine/pass.c). */
void kr_dispatch_assigned(void *ctx, const rd_kafka_topic_partition_list_t *parts)
{
    kr_group_t *g = ctx;
    for (int i = 0; i < parts->cnt; i++) {
        const char *topic = parts->elems[i].topic;
        int32_t partition = parts->elems[i].partition;
        kr_lane_t *lane = kr_lane_get(g, topic, partition);
        if (parts->elems[i].offset > lane->next_offset)
            lane->next_offset = parts->elems[i].offset;
        /* before librdkafka assigns it: its first message goes there too */
        if (g->c)
            kr_consumer_forward(g->c, topic, partition,
                                kr_dispatch_partition_worker(g->d, topic, partition));
        lane->forwarded = 1;
    }
}

void kr_dispatch_revoked(void *ctx, const rd_kafka_topic_partition_list_t *parts, int lost)
{
    kr_group_t *g = ctx;
    kr_dispatch_t *d = g->d;
    if (!lost && d->p) {
        /* let the outputs of handled messages land so their offsets can be
         * committed before another member takes the partitions over */
        int64_t until = kr_clock_ms() + 10000;
        while (lanes_pending(g, parts) && kr_clock_ms() < until && !d->fatal)
            kr_producer_poll(d->p, 20);
        if (g->c)
            kr_consumer_commit(g->c);
    }
    for (int i = 0; i < parts->cnt; i++) {
        kr_lane_t **slot = kr_lane_slot(g, parts->elems[i].topic, parts->elems[i].partition);
        kr_lane_t *lane = *slot;
        if (!lane)
            continue;
        *slot = lane->hnext;
        kr_lane_drop(d, lane);
    }
}

void kr_group_free(kr_dispatch_t *d, kr_group_t *g)
{
    for (size_t b = 0; b < LANE_BUCKETS; b++) {
        kr_lane_t *lane = g->buckets[b];
        while (lane) {
            kr_lane_t *next = lane->hnext;
            for (kr_inmsg_t *m = lane->head; m;) {
                kr_inmsg_t *mn = m->next;
                if (m->retry_at_ms)
                    kr_inmsg_set_retry(d, m, 0);
                m->running = 0; /* the pool is joined before the dispatcher is freed */
                kr_inmsg_free(d, m);
                m = mn;
            }
            free(lane->key_cnt);
            free(lane->topic);
            free(lane);
            lane = next;
        }
    }
    cache_clear(g);
    free(g->subs);
    free(g->routes);
    free(g->name);
    free(g);
}

void kr_dispatch_group_remove(kr_dispatch_t *d, kr_group_t *g)
{
    for (size_t i = 0; i < d->group_cnt; i++)
        if (d->groups[i] == g) {
            memmove(&d->groups[i], &d->groups[i + 1], (d->group_cnt - i - 1) * sizeof(g));
            d->group_cnt--;
            break;
        }
    kr_group_free(d, g);
}
