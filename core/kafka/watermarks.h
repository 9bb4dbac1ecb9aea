/* watermarks.h - a partition's low and high watermarks, asked of its leader
 * with a deadline that holds.
 *
 * librdkafka before 2.3.0 loops forever in rd_kafka_query_watermark_offsets
 * while a partition has no reachable leader (librdkafka #2588, fixed by #4460),
 * whatever timeout it is given; Debian 12 ships 2.0.2. This asks the same
 * question through rd_kafka_offsets_for_times (ListOffsets with the EARLIEST
 * and LATEST markers), whose wait is bounded. Used by `kroute replay` and by
 * the test support module alike. */
#ifndef KR_WATERMARKS_H
#define KR_WATERMARKS_H

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

/* Fills lo[i] and hi[i] for partitions[0..n-1] of topic within timeout_ms in
 * all; lo may be NULL when only the high watermarks are wanted (one round
 * trip instead of two). Returns 0, or -1 with a message in err (naming the
 * partition when one partition failed). rk is any client handle; it is
 * borrowed. */
int kr_watermarks_query(rd_kafka_t *rk, const char *topic, const int32_t *partitions, int n,
                        int64_t *lo, int64_t *hi, int timeout_ms, char *err, size_t errlen);

#endif
