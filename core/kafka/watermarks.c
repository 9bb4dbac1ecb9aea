/* watermarks.c - low/high watermarks with a bounded wait (see watermarks.h for
 * why rd_kafka_query_watermark_offsets is not used). */
#include "kafka/watermarks.h"

#include <stdio.h>

#include "clock.h"

/* One ListOffsets round for every partition: marker is RD_KAFKA_OFFSET_BEGINNING
 * (earliest) or RD_KAFKA_OFFSET_END (latest); the answers land in out[]. */
static int list_offsets(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                        int64_t marker, int64_t *out, int timeout_ms, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, topic, partitions[i])->offset = marker;
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, timeout_ms);
    int rc = 0;
    if (e) {
        snprintf(err, errlen, "%s: %s", topic, rd_kafka_err2str(e));
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < l->cnt; i++) {
        if (l->elems[i].err) {
            snprintf(err, errlen, "%s[%d]: %s", topic, (int)l->elems[i].partition,
                     rd_kafka_err2str(l->elems[i].err));
            rc = -1;
        } else {
            out[i] = l->elems[i].offset;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int kr_watermarks_query(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                        int64_t *lo, int64_t *hi, int timeout_ms, char *err, size_t errlen)
{
    int64_t deadline = kr_clock_ms() + timeout_ms;
    if (lo && list_offsets(rk, topic, partitions, n, RD_KAFKA_OFFSET_BEGINNING, lo, timeout_ms,
                           err, errlen) != 0)
        return -1;
    int64_t left = deadline - kr_clock_ms();
    return list_offsets(rk, topic, partitions, n, RD_KAFKA_OFFSET_END, hi,
                        left > 0 ? (int)left : 1, err, errlen);
}
