/* testsupport/internal.h - what the files of the test-only module
 * `kroute.testsupport` share: the per-call resource holder, the `nil, err`
 * return, librdkafka client glue, and each file's registration function.
 * Not a public interface: only the files of core/testsupport/ include it (the
 * module's entry point is core/testsupport/testsupport.h). */
#ifndef KR_TS_INTERNAL_H
#define KR_TS_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <lua.h>

#include <librdkafka/rdkafka.h>

/* Upper bounds so an unreachable broker fails a spec instead of hanging it. */
#define KR_TS_FLUSH_MS 30000
#define KR_TS_COMMITTED_MS 10000
#define KR_TS_META_MS 10000

/* ------------------------------------------------------------ call.c */

/* Everything one call holds (client handle, topic, metadata, a message,
 * admin request objects...) lives in a to-be-closed userdata, so luaL_error
 * or an out-of-memory error raised half-way through can never leak it: Lua
 * closes the slot on error and on return. __gc repeats the release as a
 * backstop; release is idempotent. */
typedef struct kr_ts_res {
    rd_kafka_t *rk;
    int is_consumer;
    rd_kafka_topic_t *rkt;
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_message_t *msg;
    rd_kafka_headers_t *hdrs; /* headers built but not yet owned by librdkafka */
    int fd;
    /* produce() delivery accounting, written by the dr_msg_cb, which runs on
     * this thread inside rd_kafka_poll/flush. */
    long dr_ok, dr_failed;
    char dr_err[256];
    /* admin calls (admin.c); newts/delts are malloc'd arrays of ntopics
     * entries, each entry owned here until release */
    rd_kafka_queue_t *rkqu;
    rd_kafka_event_t *rkev;
    rd_kafka_AdminOptions_t *aopts;
    rd_kafka_NewTopic_t **newts;
    rd_kafka_DeleteTopic_t **delts;
    size_t ntopics;
    /* the client's latest error (error_cb, served by rd_kafka_poll on this
     * thread), e.g. why the brokers cannot be reached; "" when none */
    char last_err[256];
} kr_ts_res_t;

/* [-0, +1, m] Pushes a fresh resource holder and marks its stack slot
 * to-be-closed. Callers must not move or remove stack slots below it
 * afterwards. */
kr_ts_res_t *kr_ts_res_new(lua_State *L);

/* [-0, +2, m] Operational failures are reported Lua-style: pushes nil and
 * the formatted message, returns 2. */
int kr_ts_fail(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* [-0, +0, m] Sets `release` as both __gc and __close of the metatable on
 * top of the stack: an object is released when its scope closes or, as a
 * backstop, when it is collected; release must be idempotent. */
void kr_ts_set_release(lua_State *L, lua_CFunction release);

/* [-0, +0, -] Optional integer field of the table at t: 1 = found, 0 =
 * absent, -1 = not an integer (the caller raises, naming the field). */
int kr_ts_int_field(lua_State *L, int t, const char *field, lua_Integer *out);

/* Sleeps the full duration even when a signal (e.g. SIGCHLD) interrupts. */
static inline void kr_ts_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec req = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&req, &req) != 0 && errno == EINTR) {
    }
}

/* Wall-clock milliseconds (ts.now, unique group names); every timeout reads
 * core/clock.h's monotonic kr_clock_ms instead. */
static inline int64_t kr_ts_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------- kafka.c */

/* Adds callbacks to a conf before kr_ts_connect makes the handle. */
typedef void kr_ts_conf_fn(rd_kafka_conf_t *conf);

/* Creates res->rk. kv is a NULL-terminated list of name, value pairs set on
 * top of the defaults every handle here shares; `setup`, when not NULL, adds
 * callbacks. The conf's opaque is res. Returns 0, or -1 with err filled. */
int kr_ts_connect(kr_ts_res_t *res, rd_kafka_type_t type, const char *brokers,
                  const char *const *kv, kr_ts_conf_fn *setup, char *err, size_t errsz);

/* error_cb recording the client's latest error in res->last_err. */
void kr_ts_conf_error_cb(rd_kafka_conf_t *conf);

/* Fills res->parts with every partition of `topic`, sorted by id, retrying
 * until timeout_ms while the topic has no partitions yet. Returns 0 or -1
 * with err filled. */
int kr_ts_load_partitions(kr_ts_res_t *res, const char *topic, int64_t timeout_ms, char *err,
                          size_t errsz);

/* ------------------------------------------------ registration (each file) */

/* [-0, +0, m] Registers the resource holder's metatable; call first. */
void kr_ts_call_open(lua_State *L);

/* [-0, +0, m] Each adds its functions to the module table on top of the
 * stack and registers the metatables it needs. */
void kr_ts_process_open(lua_State *L);
void kr_ts_client_open(lua_State *L);
void kr_ts_mock_open(lua_State *L);
void kr_ts_admin_open(lua_State *L);
void kr_ts_bounded_open(lua_State *L);

#endif
