/* record.c - Lua values -> kr_record_t, and the per-run output list.
 * Each coroutine's LUA_EXTRASPACE holds the kr_run_t it serves, so
 * kroute.emit finds its message without globals and several suspended
 * handlers in one VM never mix their outputs. A record is built in a
 * to-be-closed box on the Lua stack and joins the run only when complete. */
#include "runtime/record.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "codec/nest.h"
#include "grow.h"

#define RECORD_MT "kroute.record"
#define BOX_MT "kroute.record.box"

/* Bookkeeping librdkafka keeps per header besides name and value. */
#define HEADER_OVERHEAD 32

static kr_record_t *run_add(kr_run_t *run)
{
    run->recs = kr_grow(run->recs, &run->cap, run->cnt, sizeof(*run->recs), 4);
    return &run->recs[run->cnt++];
}

void kr_record_free(kr_record_t *rec)
{
    free(rec->topic);
    kr_buf_free(&rec->key);
    if (!rec->value_borrowed)
        kr_buf_free(&rec->value);
    if (rec->headers)
        rd_kafka_headers_destroy(rec->headers);
    memset(rec, 0, sizeof(*rec));
}

void kr_run_clear(kr_run_t *run)
{
    for (size_t i = 0; i < run->cnt; i++)
        kr_record_free(&run->recs[i]);
    for (int i = 0; i < run->kept_cnt; i++)
        kr_buf_free(&run->kept[i]);
    free(run->recs);
    free(run->error);
    free(run->trace);
    run->recs = NULL;
    run->cnt = run->cap = 0;
    run->kept_cnt = 0;
    run->out_bytes = 0;
    run->error = run->trace = NULL;
    run->no_handler = 0;
}

/* Keeps buf's memory in run->kept when there is room and it is small;
 * frees it otherwise. Leaves buf empty either way. */
static void keep_buf(kr_run_t *run, kr_buf_t *buf)
{
    if (buf->data && buf->cap <= KR_RUN_KEPT_BUF_MAX && run->kept_cnt < KR_RUN_KEPT_BUFS) {
        buf->len = 0;
        run->kept[run->kept_cnt++] = *buf;
        memset(buf, 0, sizeof(*buf));
    } else {
        kr_buf_free(buf);
    }
}

size_t kr_run_kept_bytes(const kr_run_t *run)
{
    size_t n = run->cap * sizeof(*run->recs);
    for (int i = 0; i < run->kept_cnt; i++)
        n += run->kept[i].cap;
    return n;
}

void kr_run_recycle(kr_run_t *run, int keep)
{
    if (!keep) {
        kr_run_clear(run);
        memset(run, 0, sizeof(*run));
        return;
    }
    for (size_t i = 0; i < run->cnt; i++) {
        kr_record_t *rec = &run->recs[i];
        keep_buf(run, &rec->key);
        if (rec->value_borrowed)
            memset(&rec->value, 0, sizeof(rec->value));
        else
            keep_buf(run, &rec->value);
        kr_record_free(rec); /* what is left: topic, headers */
    }
    kr_record_t *recs = run->recs;
    size_t cap = run->cap;
    if (cap > KR_RUN_KEPT_RECS) {
        free(recs);
        recs = NULL;
        cap = 0;
    }
    kr_buf_t kept[KR_RUN_KEPT_BUFS];
    int kept_cnt = run->kept_cnt;
    memcpy(kept, run->kept, sizeof(kept));
    free(run->error);
    free(run->trace);
    memset(run, 0, sizeof(*run));
    run->recs = recs;
    run->cap = cap;
    memcpy(run->kept, kept, sizeof(kept));
    run->kept_cnt = kept_cnt;
}

kr_run_t *kr_run_current(lua_State *L)
{
    kr_run_t *run;
    memcpy(&run, lua_getextraspace(L), sizeof(run));
    return run;
}

void kr_run_set_current(lua_State *L, kr_run_t *run)
{
    memcpy(lua_getextraspace(L), &run, sizeof(run));
}

int kr_record_resolve(kr_record_t *rec, const kr_msg_t *msg, const char *default_topic,
                      kr_resolved_t *out)
{
    memset(out, 0, sizeof(*out));
    out->topic = rec->topic ? rec->topic : default_topic;
    if (!out->topic)
        return -1;
    out->partition = rec->partition;
    if (rec->key_mode == KR_KEY_INHERIT) {
        out->key = msg->key;
        out->key_len = msg->key_len;
    } else if (rec->key_mode == KR_KEY_SET) {
        out->key = rec->key.data ? rec->key.data : "";
        out->key_len = rec->key.len;
    }
    if (!rec->value_null) {
        out->value = rec->value.data ? rec->value.data : "";
        out->value_len = rec->value.len;
    }
    if (rec->inherit_headers) {
        out->headers = msg->headers ? rd_kafka_headers_copy(msg->headers) : NULL;
    } else {
        out->headers = rec->headers;
        rec->headers = NULL; /* ownership moves to the caller */
    }
    return 0;
}

/* ---------- building a record ---------- */

/* __close of a box: frees whatever a build that raised left in it (a
 * committed box is empty, so this frees nothing). */
static int box_close(lua_State *L)
{
    kr_record_free(lua_touserdata(L, 1));
    return 0;
}

kr_record_t *kr_record_begin(lua_State *L)
{
    luaL_checkstack(L, 1, "record");
    kr_record_t *rec = lua_newuserdatauv(L, sizeof(*rec), 0);
    memset(rec, 0, sizeof(*rec));
    rec->partition = RD_KAFKA_PARTITION_UA;
    rec->inherit_headers = 1;
    luaL_setmetatable(L, BOX_MT);
    lua_toclose(L, -1);
    return rec;
}

static int over_limit(lua_State *L, const kr_run_t *run, size_t bytes)
{
    int kb = lua_gc(L, LUA_GCCOUNT), b = lua_gc(L, LUA_GCCOUNTB);
    size_t heap = kb > 0 ? (size_t)kb * 1024 + (size_t)(b > 0 ? b : 0) : 0;
    return bytes > run->mem_limit || heap + run->out_bytes + bytes > run->mem_limit;
}

/* Counts n more bytes of C memory for `rec` before they are allocated:
 * raises when the VM's Lua heap plus the outputs the run holds would pass
 * the route's cap (the same cap as the heap's, so a handler cannot pile up
 * emits in C memory that the cap never sees). Like Lua's allocator, it
 * collects garbage once before giving up. */
static void charge(lua_State *L, kr_record_t *rec, size_t n)
{
    rec->bytes += n;
    const kr_run_t *run = kr_run_current(L);
    if (!run || !run->mem_limit || !over_limit(L, run, rec->bytes))
        return;
    lua_gc(L, LUA_GCCOLLECT);
    if (over_limit(L, run, rec->bytes))
        luaL_error(L, "out of memory: the records of this run would pass the route's memory "
                      "limit (%I bytes)",
                   (lua_Integer)run->mem_limit);
}

/* The built record in the box at the top, taken out of the box. */
static kr_record_t take_box(lua_State *L)
{
    kr_record_t *box = luaL_checkudata(L, -1, BOX_MT);
    charge(L, box, sizeof(*box));
    kr_record_t rec = *box;
    memset(box, 0, sizeof(*box));
    lua_pop(L, 1); /* closes the (now empty) box */
    return rec;
}

void kr_run_commit(lua_State *L, kr_run_t *run)
{
    kr_record_t rec = take_box(L);
    run->out_bytes += rec.bytes;
    *run_add(run) = rec;
}

kr_record_t *kr_run_commit_request(lua_State *L)
{
    kr_record_t *req = malloc(sizeof(*req));
    if (!req)
        abort();
    *req = take_box(L);
    return req;
}

static void copy_bytes(lua_State *L, kr_record_t *rec, kr_buf_t *dst, const char *s, size_t len)
{
    charge(L, rec, len);
    if (!dst->data && len) { /* a buffer an earlier run of this one left */
        kr_run_t *run = kr_run_current(L);
        if (run && run->kept_cnt)
            *dst = run->kept[--run->kept_cnt];
    }
    dst->len = 0;
    if (len)
        kr_buf_add(dst, s, len);
}

/* Where a record's bytes go: its key or value buffer, or (the value) the
 * consumed message's own bytes when they are the same. */
typedef struct bytes_dst {
    kr_record_t *rec;
    kr_buf_t *buf;
    const kr_msg_t *in; /* set for the value: the run's input */
} bytes_dst_t;

static void put_bytes(lua_State *L, void *ctx, const char *s, size_t len)
{
    bytes_dst_t *d = ctx;
    /* the input's value handed back unchanged (a pass-through): point at
     * the consumed message's bytes, which outlive every record of its run,
     * instead of copying them */
    if (d->in && d->in->value &&
        (s == d->in->value || (len && len == d->in->value_len && !memcmp(s, d->in->value, len)))) {
        kr_buf_t *v = &d->rec->value;
        v->data = (char *)d->in->value; /* read only: never written or freed */
        v->len = v->cap = d->in->value_len;
        d->rec->value_borrowed = 1;
    } else {
        copy_bytes(L, d->rec, d->buf, s, len);
    }
}

/* The bytes of the value at idx on the wire, into d: a string as it is,
 * any other value as its JSON text (encoded straight into the record,
 * without a Lua string in between). [-0, +0, e] */
static void set_bytes(lua_State *L, int idx, bytes_dst_t *d, const char *what)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        put_bytes(L, d, s, len);
        return;
    }
    char err[256];
    if (kr_json_encode_to(L, idx, put_bytes, d, err, sizeof(err)) < 0)
        luaL_error(L, "%s: %s", what, err);
}

/* value: nil or kroute.null -> null; a kroute.message -> its value (so
 * `return msg` forwards a tombstone as a tombstone); else set_bytes. */
static void set_value(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx) || kr_json_is_null(L, idx)) {
        rec->value_null = 1;
        return;
    }
    const kr_run_t *run = kr_run_current(L);
    bytes_dst_t d = {rec, &rec->value, run ? run->msg : NULL};
    const kr_msg_t *m = kr_message_test(L, idx);
    if (!m) {
        set_bytes(L, idx, &d, "value");
    } else if (!m->value) {
        rec->value_null = 1;
    } else {
        put_bytes(L, &d, m->value, m->value_len); /* the input itself is borrowed */
    }
}

static void set_key(lua_State *L, int idx, kr_record_t *rec)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNIL || t == LUA_TNONE) {
        rec->key_mode = KR_KEY_INHERIT;
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, idx)) {
        rec->key_mode = KR_KEY_NONE; /* key = false: explicitly no key */
    } else {
        bytes_dst_t d = {rec, &rec->key, NULL};
        set_bytes(L, idx, &d, "key");
        rec->key_mode = KR_KEY_SET;
    }
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* One header value at idx: a string, a number (as text) or kroute.null (a
 * null value, which Kafka keeps apart from ""). Adds it to hdrs unless
 * hdrs is NULL (checking only); returns the bytes it takes. */
static size_t header_value(lua_State *L, rd_kafka_headers_t *hdrs, const char *name, int idx)
{
    if (kr_json_is_null(L, idx)) {
        if (hdrs)
            rd_kafka_header_add(hdrs, name, -1, NULL, 0);
        return strlen(name) + HEADER_OVERHEAD;
    }
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "header '%s' must be a string or a list of strings, not %s "
                      "(kroute.null stands for a null value)",
                   name, luaL_typename(L, idx));
    size_t len;
    char num[KR_JSNUM_MAX];
    const char *v = num;
    if (lua_type(L, idx) == LUA_TNUMBER) /* as JavaScript writes it: 3, not 3.0 */
        len = kr_json_number_text(L, idx, num);
    else
        v = lua_tolstring(L, idx, &len);
    if (hdrs)
        rd_kafka_header_add(hdrs, name, -1, v, (ssize_t)len);
    return strlen(name) + len + HEADER_OVERHEAD;
}

/* The header value(s) at the top for `name`: one value, or a list of them
 * for a repeated name. */
static size_t header_values(lua_State *L, rd_kafka_headers_t *hdrs, const char *name)
{
    if (lua_type(L, -1) != LUA_TTABLE)
        return header_value(L, hdrs, name, -1);
    size_t bytes = 0;
    lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer j = 1; j <= len; j++) {
        lua_rawgeti(L, -1, j);
        bytes += header_value(L, hdrs, name, -1);
        lua_pop(L, 1);
    }
    return bytes;
}

/* Checks a headers table (string names; values as header_values takes
 * them); sets *count to its names and returns the bytes it takes. */
static size_t check_headers(lua_State *L, int idx, size_t *count)
{
    size_t n = 0, bytes = 0;
    luaL_checkstack(L, 4, "headers");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "header names must be strings");
        bytes += header_values(L, NULL, lua_tostring(L, -2));
        lua_pop(L, 1);
        n++;
    }
    *count = n;
    return bytes;
}

/* headers table: name -> value | {value, ...}; names are added in sorted
 * order so the same table always gives the same record bytes. */
static void set_headers(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx)) {
        rec->inherit_headers = 1;
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    idx = lua_absindex(L, idx);
    rec->inherit_headers = 0;
    size_t n;
    charge(L, rec, check_headers(L, idx, &n));
    rec->headers = rd_kafka_headers_new(n ? n : 1);
    if (n == 0)
        return;
    /* names live in a Lua userdata (no malloc'd array to leak if we raise) */
    const char **names = lua_newuserdatauv(L, n * sizeof(char *), 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        names[i++] = lua_tostring(L, -1);
    }
    qsort(names, n, sizeof(char *), cmp_name);
    for (i = 0; i < n; i++) {
        lua_getfield(L, idx, names[i]);
        header_values(L, rec->headers, names[i]);
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* names */
}

static void set_partition(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx))
        return;
    int ok;
    lua_Integer p = lua_tointegerx(L, idx, &ok);
    if (!ok || p < 0 || p > INT32_MAX)
        luaL_error(L, "partition must be a non-negative integer");
    rec->partition = (int32_t)p;
}

static void set_topic(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx))
        return;
    if (lua_type(L, idx) != LUA_TSTRING || lua_rawlen(L, idx) == 0)
        luaL_error(L, "topic must be a non-empty string");
    charge(L, rec, lua_rawlen(L, idx) + 1);
    rec->topic = strdup(lua_tostring(L, idx));
    if (!rec->topic)
        abort();
}

static int is_record(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, RECORD_MT);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* A kroute.record's fields, in this order at integer keys 1..5 of its
 * metatable as interned strings: the per-event paths push them from there
 * instead of naming them (lua_getfield looks a C string up with strcmp). */
enum { F_TOPIC = 1, F_KEY, F_VALUE, F_HEADERS, F_PARTITION, F_COUNT = F_PARTITION };
static const char *const record_fields[] = {"topic", "key", "value", "headers", "partition"};

/* [-0, +1, e] pushes field f of the table at idx; mt is its metatable. */
static int get_field(lua_State *L, int idx, int mt, int f)
{
    lua_rawgeti(L, mt, f);
    return lua_gettable(L, idx);
}

/* Fill from a kroute.record table's fields. */
static void from_record_table(lua_State *L, int idx, kr_record_t *rec)
{
    idx = lua_absindex(L, idx);
    lua_getmetatable(L, idx); /* RECORD_MT: is_record said so */
    int mt = lua_gettop(L);
    get_field(L, idx, mt, F_TOPIC);
    set_topic(L, -1, rec);
    get_field(L, idx, mt, F_KEY);
    set_key(L, -1, rec);
    get_field(L, idx, mt, F_VALUE);
    set_value(L, -1, rec);
    get_field(L, idx, mt, F_HEADERS);
    set_headers(L, -1, rec);
    get_field(L, idx, mt, F_PARTITION);
    set_partition(L, -1, rec);
    lua_pop(L, 6);
}

void kr_record_from_lua(lua_State *L, int idx, kr_record_t *rec)
{
    if (is_record(L, idx))
        from_record_table(L, idx, rec);
    else
        set_value(L, idx, rec);
}

/* KafkaRequestSerializer.encode: an object with its own toString() is
 * sent as that text; everything else as set_value. */
static void set_nest_value(lua_State *L, int idx, kr_record_t *rec, kr_buf_t *dst)
{
    int pushed = 0;
    if (lua_type(L, idx) == LUA_TTABLE && luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        luaL_tolstring(L, idx, NULL);
        idx = lua_gettop(L);
        pushed = 1;
    }
    if (dst == &rec->value) {
        set_value(L, idx, rec);
    } else if (!lua_isnil(L, idx) && !kr_json_is_null(L, idx)) {
        /* an envelope's key: only a null one is no key (false is "false") */
        bytes_dst_t d = {rec, &rec->key, NULL};
        set_bytes(L, idx, &d, "key");
        rec->key_mode = KR_KEY_SET;
    }
    if (pushed)
        lua_pop(L, 1);
}

void kr_record_from_nest(lua_State *L, int idx, kr_record_t *rec, int records)
{
    idx = lua_absindex(L, idx);
    if (records && is_record(L, idx)) {
        from_record_table(L, idx, rec);
    } else if (kr_nest_is_envelope(L, idx)) {
        rec->key_mode = KR_KEY_NONE;
        lua_getfield(L, idx, "value");
        set_nest_value(L, -1, rec, &rec->value);
        lua_getfield(L, idx, "key");
        set_nest_value(L, -1, rec, &rec->key);
        lua_getfield(L, idx, "headers");
        if (!kr_json_is_null(L, -1))
            set_headers(L, -1, rec);
        lua_getfield(L, idx, "partition");
        set_partition(L, -1, rec);
        lua_pop(L, 4);
    } else {
        set_nest_value(L, idx, rec, &rec->value);
    }
    /* a reply or a request carries only what the handler gave */
    if (rec->key_mode == KR_KEY_INHERIT)
        rec->key_mode = KR_KEY_NONE;
    rec->inherit_headers = 0;
}

static void from_request_args(lua_State *L, kr_record_t *rec)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    set_topic(L, 1, rec);
    kr_record_from_nest(L, 2, rec, 0);
    if (lua_isnoneornil(L, 3))
        return;
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "key");
    if (!lua_isnil(L, -1))
        set_key(L, -1, rec);
    lua_getfield(L, 3, "headers");
    if (!lua_isnil(L, -1)) {
        if (rec->headers)
            rd_kafka_headers_destroy(rec->headers);
        rec->headers = NULL;
        set_headers(L, -1, rec);
    }
    lua_getfield(L, 3, "partition");
    set_partition(L, -1, rec);
    lua_pop(L, 3);
    if (rec->key_mode == KR_KEY_INHERIT)
        rec->key_mode = KR_KEY_NONE;
}

/* The dispatcher adds these to every request: the caller's own would be
 * duplicates that ClientKafka overwrites. */
static void drop_request_headers(kr_record_t *rec)
{
    static const char *const names[] = {KR_NEST_CORRELATION, KR_NEST_REPLY_TOPIC,
                                        KR_NEST_REPLY_PARTITION};
    for (size_t i = 0; rec->headers && i < sizeof(names) / sizeof(*names); i++)
        rd_kafka_header_remove(rec->headers, names[i]);
}

void kr_record_from_request(lua_State *L, kr_record_t *rec)
{
    from_request_args(L, rec);
    drop_request_headers(rec);
}

void kr_record_from_emit(lua_State *L, kr_record_t *rec)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    set_topic(L, 1, rec);
    set_value(L, 2, rec);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "key");
        set_key(L, -1, rec);
        lua_getfield(L, 3, "headers");
        set_headers(L, -1, rec);
        lua_getfield(L, 3, "partition");
        set_partition(L, -1, rec);
        lua_pop(L, 3);
    }
}

int kr_record_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, RECORD_MT); /* 2: the metatable, with the field names */
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        for (int f = 1; f <= F_COUNT && !known; f++) {
            lua_rawgeti(L, 2, f);
            known = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        if (!known)
            return luaL_error(L, "kroute.record: unknown field '%s' (expected topic, key, "
                                 "value, headers, partition)",
                              luaL_tolstring(L, -1, NULL));
    }
    /* validate now so the mistake points at the handler's line */
    kr_record_t probe = {0};
    probe.partition = RD_KAFKA_PARTITION_UA;
    get_field(L, 1, 2, F_PARTITION);
    set_partition(L, -1, &probe);
    get_field(L, 1, 2, F_TOPIC);
    if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0))
        return luaL_error(L, "kroute.record: topic must be a non-empty string");
    get_field(L, 1, 2, F_HEADERS);
    if (!lua_isnil(L, -1)) {
        size_t n;
        if (!lua_istable(L, -1))
            return luaL_error(L, "kroute.record: headers must be a table");
        check_headers(L, lua_gettop(L), &n);
    }
    lua_pop(L, 3);
    lua_createtable(L, 0, F_COUNT);
    for (int f = 1; f <= F_COUNT; f++) {
        lua_rawgeti(L, 2, f);
        lua_pushvalue(L, -1);
        lua_gettable(L, 1);
        lua_rawset(L, -3);
    }
    lua_pushvalue(L, 2);
    lua_setmetatable(L, -2);
    return 1;
}

void kr_record_register(lua_State *L)
{
    luaL_newmetatable(L, RECORD_MT);
    lua_pushliteral(L, "kroute.record");
    lua_setfield(L, -2, "__name");
    for (int f = 1; f <= F_COUNT; f++) {
        lua_pushstring(L, record_fields[f - 1]);
        lua_rawseti(L, -2, f);
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, BOX_MT);
    lua_pushcfunction(L, box_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
}
