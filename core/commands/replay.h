/* replay.h - `kroute replay`: re-produce records of a topic (a DLQ, or a
 * range of any topic) to their original topics or to --to. */
#ifndef KR_REPLAY_H
#define KR_REPLAY_H

#include <stdint.h>

typedef struct kr_replay_opts {
    const char *brokers;
    const char *topic;      /* what to read */
    const char *to;         /* destination; NULL: each record's kafka_dlt-original-topic */
    int32_t partition;      /* -1: all */
    int64_t from_offset;    /* -1: where the last replay of this topic stopped */
    int64_t until_offset;   /* -1: the end of each partition when replay starts */
    int dry_run;
} kr_replay_opts_t;

/* Returns the exit code: 0 done, 1 failure, 2 usage. */
int kr_replay_run(const kr_replay_opts_t *opts);

#endif
