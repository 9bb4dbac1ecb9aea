/* replay.c - see replay.h. Reads each partition with a plain assigned
 * consumer from a start offset up to a stop offset fixed when replay
 * starts (so records produced meanwhile, e.g. new dead letters, wait for
 * the next run), re-produces every record with its key, value and headers
 * minus the kafka_dlt-* ones, and - once all are delivered - commits the
 * stop offsets in the group "kroute-replay.<topic>". A second plain run
 * therefore starts where the first ended and replays nothing twice; an
 * explicit --from-offset replays a range again on purpose. */
#include "commands/replay.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kafka/kafkaconf.h"
#include "kafka/watermarks.h"
#include "ops/log.h"

typedef struct part {
    int32_t id;
    int64_t start, stop; /* [start, stop) */
    int done;
} part_t;

typedef struct replay {
    const kr_replay_opts_t *o;
    rd_kafka_t *consumer, *producer;
    part_t *parts;
    int part_cnt;
    int64_t total, read, produced, skipped, failed;
    int tty;
} replay_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque)
{
    (void)rk;
    replay_t *r = opaque;
    if (rkm->err) {
        r->failed++;
        kr_error("replay", "delivery to %s failed: %s", rd_kafka_topic_name(rkm->rkt),
                 rd_kafka_err2str(rkm->err));
    }
}

static rd_kafka_t *new_handle(rd_kafka_type_t type, const char *brokers, const char *group,
                              replay_t *r)
{
    static const char *const producer_defaults[] = {
        "enable.idempotence", "true", "acks", "all", "partitioner", "murmur2_random",
        "linger.ms", "5", "message.timeout.ms", "0", NULL};
    static const char *const consumer_defaults[] = {
        "enable.auto.commit", "false", "enable.partition.eof", "false",
        "fetch.wait.max.ms", "50", NULL};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    const char *base[] = {"bootstrap.servers", brokers, "client.id", "kroute-replay",
                          "group.id", group, NULL};
    if (type == RD_KAFKA_PRODUCER)
        base[4] = NULL; /* no group for the producer */
    if (kr_kafkaconf_apply(conf, type == RD_KAFKA_PRODUCER ? producer_defaults
                                                           : consumer_defaults,
                           NULL, err, sizeof(err)) < 0 ||
        kr_kafkaconf_apply(conf, base, NULL, err, sizeof(err)) < 0) {
        kr_error("replay", "%s", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (type == RD_KAFKA_PRODUCER) {
        rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
        rd_kafka_conf_set_opaque(conf, r);
    }
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof(err));
    if (!rk) {
        kr_error("replay", "%s", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Partitions, and for each the [start, stop) range to replay. */
static int plan(replay_t *r)
{
    const kr_replay_opts_t *o = r->o;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(r->consumer, o->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(r->consumer, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        kr_error("replay", "topic %s: %s", o->topic,
                 rd_kafka_err2str(err ? err : md->topic_cnt ? md->topics[0].err
                                                            : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    const struct rd_kafka_metadata_topic *t = &md->topics[0];
    r->parts = calloc((size_t)t->partition_cnt + 1, sizeof(*r->parts));
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_new(1);
    for (int i = 0; i < t->partition_cnt; i++) {
        int32_t id = t->partitions[i].id;
        if (o->partition >= 0 && id != o->partition)
            continue;
        part_t *p = &r->parts[r->part_cnt++];
        p->id = id;
        rd_kafka_topic_partition_list_add(committed, o->topic, id);
    }
    rd_kafka_metadata_destroy(md);
    if (o->from_offset < 0 && rd_kafka_committed(r->consumer, committed, 10000)) {
        kr_error("replay", "cannot read where the last replay stopped");
        rd_kafka_topic_partition_list_destroy(committed);
        return -1;
    }
    /* bounded even while a partition has no leader (see watermarks.h) */
    int32_t *ids = calloc((size_t)r->part_cnt + 1, sizeof(*ids));
    int64_t *lo = calloc((size_t)r->part_cnt + 1, sizeof(*lo));
    int64_t *hi = calloc((size_t)r->part_cnt + 1, sizeof(*hi));
    for (int i = 0; i < r->part_cnt; i++)
        ids[i] = r->parts[i].id;
    char why[512];
    int rc = kr_watermarks_query(r->consumer, o->topic, ids, r->part_cnt, lo, hi, 10000, why,
                                 sizeof(why));
    if (rc != 0)
        kr_error("replay", "cannot read the watermarks of %s", why);
    for (int i = 0; rc == 0 && i < r->part_cnt; i++) {
        part_t *p = &r->parts[i];
        int64_t last = o->from_offset < 0 ? committed->elems[i].offset : o->from_offset;
        p->start = last >= lo[i] ? last : lo[i];
        p->stop = o->until_offset >= 0 && o->until_offset < hi[i] ? o->until_offset : hi[i];
        if (p->start > p->stop)
            p->start = p->stop;
        r->total += p->stop - p->start;
        p->done = p->start >= p->stop;
    }
    free(ids);
    free(lo);
    free(hi);
    rd_kafka_topic_partition_list_destroy(committed);
    return rc;
}

static void show_progress(replay_t *r, int final)
{
    if (!r->tty)
        return;
    int width = 30, filled = r->total ? (int)(width * r->read / r->total) : width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "\rreplaying %s [%s] %" PRId64 "/%" PRId64 "%s", r->o->topic, bar, r->read,
            r->total, final ? "\n" : "");
    fflush(stderr);
}

/* Headers to carry over: everything but the dead-letter bookkeeping. */
static rd_kafka_headers_t *carried_headers(rd_kafka_message_t *rkm, char *orig, size_t origsz)
{
    rd_kafka_headers_t *in = NULL, *out = rd_kafka_headers_new(8);
    orig[0] = '\0';
    if (rd_kafka_message_headers(rkm, &in) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return out;
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(in, i, &name, &val, &size) == 0; i++) {
        if (!strcmp(name, "kafka_dlt-original-topic") && val && size < origsz) {
            memcpy(orig, val, size);
            orig[size] = '\0';
        }
        if (!strncmp(name, "kafka_dlt-", 10) || !strncmp(name, "kroute_dlt-", 11) ||
            !strcmp(name, "kroute_route"))
            continue;
        rd_kafka_header_add(out, name, -1, val, val ? (ssize_t)size : -1);
    }
    return out;
}

static void replay_one(replay_t *r, rd_kafka_message_t *rkm)
{
    char orig[512];
    rd_kafka_headers_t *in = NULL;
    const void *cut = NULL;
    size_t cut_size = 0;
    if (rd_kafka_message_headers(rkm, &in) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(in, "kroute_dlt-truncated", &cut, &cut_size) == 0 && cut &&
        memmem(cut, cut_size, "value", 5)) {
        /* the DLQ copy was cut to fit the producer: replaying it would
         * publish a different event */
        r->skipped++;
        kr_warn("replay", "%s[%d]@%" PRId64 ": value truncated in the DLQ (kroute_dlt-truncated); "
                "skipped", r->o->topic, (int)rkm->partition, rkm->offset);
        return;
    }
    rd_kafka_headers_t *hdrs = carried_headers(rkm, orig, sizeof(orig));
    const char *dest = r->o->to ? r->o->to : (orig[0] ? orig : NULL);
    if (!dest) {
        r->skipped++;
        kr_warn("replay", "%s[%d]@%" PRId64 ": no --to and no kafka_dlt-original-topic header; "
                "skipped", r->o->topic, (int)rkm->partition, rkm->offset);
        rd_kafka_headers_destroy(hdrs);
        return;
    }
    if (r->o->dry_run) {
        r->produced++;
        rd_kafka_headers_destroy(hdrs);
        return;
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            r->producer, RD_KAFKA_V_TOPIC(dest), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rkm->key, rkm->key_len), RD_KAFKA_V_VALUE(rkm->payload, rkm->len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(r->producer, 100);
            continue;
        }
        if (err) {
            r->failed++;
            rd_kafka_headers_destroy(hdrs);
            kr_error("replay", "produce to %s: %s", dest, rd_kafka_err2str(err));
        } else {
            r->produced++;
        }
        return;
    }
}

static int copy_records(replay_t *r)
{
    rd_kafka_topic_partition_list_t *assign = rd_kafka_topic_partition_list_new(r->part_cnt);
    int active = 0;
    for (int i = 0; i < r->part_cnt; i++)
        if (!r->parts[i].done) {
            rd_kafka_topic_partition_list_add(assign, r->o->topic, r->parts[i].id)->offset =
                r->parts[i].start;
            active++;
        }
    rd_kafka_assign(r->consumer, assign);
    rd_kafka_topic_partition_list_destroy(assign);
    while (active > 0 && !r->failed) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(r->consumer, 200);
        if (r->producer)
            rd_kafka_poll(r->producer, 0);
        if (!rkm)
            continue;
        if (rkm->err) {
            kr_warn("replay", "%s", rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        part_t *p = NULL;
        for (int i = 0; i < r->part_cnt; i++)
            if (r->parts[i].id == rkm->partition)
                p = &r->parts[i];
        if (p && !p->done && rkm->offset < p->stop) {
            replay_one(r, rkm);
            r->read++;
            if (rkm->offset + 1 >= p->stop) {
                p->done = 1;
                active--;
            }
            if (r->read % 500 == 0)
                show_progress(r, 0);
        }
        rd_kafka_message_destroy(rkm);
    }
    return r->failed ? -1 : 0;
}

/* Remembers where this replay stopped, once everything is delivered. */
static void commit_stop(replay_t *r)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(r->part_cnt);
    for (int i = 0; i < r->part_cnt; i++)
        rd_kafka_topic_partition_list_add(list, r->o->topic, r->parts[i].id)->offset =
            r->parts[i].stop;
    rd_kafka_resp_err_t err = rd_kafka_commit(r->consumer, list, 0);
    if (err)
        kr_warn("replay", "could not record where this replay stopped: %s",
                rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

int kr_replay_run(const kr_replay_opts_t *o)
{
    replay_t r = {.o = o, .tty = isatty(STDERR_FILENO)};
    char group[512];
    snprintf(group, sizeof(group), "kroute-replay.%s", o->topic);
    int rc = 1;
    r.consumer = new_handle(RD_KAFKA_CONSUMER, o->brokers, group, &r);
    if (!o->dry_run)
        r.producer = new_handle(RD_KAFKA_PRODUCER, o->brokers, NULL, &r);
    if (!r.consumer || (!o->dry_run && !r.producer) || plan(&r) < 0)
        goto out;
    if (copy_records(&r) == 0 && r.producer) {
        int left = 0;
        rd_kafka_flush(r.producer, 60000);
        left = rd_kafka_outq_len(r.producer);
        if (left) {
            kr_error("replay", "%d record(s) still undelivered after 60 s", left);
            r.failed += left;
        }
    }
    show_progress(&r, 1);
    if (!r.failed && !o->dry_run)
        commit_stop(&r);
    printf("%s %" PRId64 " of %" PRId64 " record(s) from %s to %s; %" PRId64 " skipped, %" PRId64
           " failed\n",
           o->dry_run ? "would replay" : "replayed", r.produced, r.total, o->topic,
           o->to ? o->to : "their original topics", r.skipped, r.failed);
    rc = r.failed ? 1 : 0;
out:
    if (r.consumer) {
        rd_kafka_consumer_close(r.consumer);
        rd_kafka_destroy(r.consumer);
    }
    if (r.producer)
        rd_kafka_destroy(r.producer);
    free(r.parts);
    return rc;
}
