/* record.c - Lua values -> kr_record_t, and the per-run output list.
 * Each coroutine's LUA_EXTRASPACE holds the kr_run_t it serves, so
 * kroute.emit finds its message without globals and several suspended
 * handlers in one VM never mix their outputs. */
#include "record.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define RECORD_MT "kroute.record"

kr_record_t *kr_run_add(kr_run_t *run)
{
    if (run->cnt == run->cap) {
        run->cap = run->cap ? run->cap * 2 : 4;
        run->recs = realloc(run->recs, run->cap * sizeof(*run->recs));
        if (!run->recs)
            abort();
    }
    kr_record_t *rec = &run->recs[run->cnt++];
    memset(rec, 0, sizeof(*rec));
    rec->partition = RD_KAFKA_PARTITION_UA;
    rec->inherit_headers = 1;
    return rec;
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
    free(run->recs);
    free(run->error);
    free(run->trace);
    run->recs = NULL;
    run->cnt = run->cap = 0;
    run->error = run->trace = NULL;
    run->no_handler = 0;
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

const char *kr_run_missing_topic(const kr_run_t *run, const char *default_topic)
{
    for (size_t i = 0; i < run->cnt && !default_topic; i++)
        if (!run->recs[i].topic)
            return "the handler returned a value but the route has no 'to' topic (set `to:` "
                   "or return kroute.record{topic=...})";
    return NULL;
}

/* Bytes of a value on the wire: string raw, else JSON text. */
static void value_bytes(lua_State *L, int idx, kr_buf_t *out, const char *what)
{
    out->len = 0;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        kr_buf_add(out, s, len);
        return;
    }
    char err[256];
    if (kr_json_encode(L, idx, out, err, sizeof(err)) < 0)
        luaL_error(L, "%s: %s", what, err);
}

static void set_value(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx) || kr_json_is_null(L, idx)) {
        rec->value_null = 1;
        return;
    }
    /* the input's value handed back unchanged (a pass-through): point at
     * the consumed message's bytes, which outlive every record of its run,
     * instead of copying them */
    const kr_run_t *run = kr_run_current(L);
    size_t len;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
    if (s && run && run->msg && run->msg->value && len && len == run->msg->value_len &&
        !memcmp(s, run->msg->value, len) && !rec->value_borrowed) {
        kr_buf_free(&rec->value);
        rec->value.data = (char *)run->msg->value; /* read only: never written or freed */
        rec->value.len = rec->value.cap = len;
        rec->value_borrowed = 1;
        return;
    }
    if (rec->value_borrowed) { /* set twice: forget the borrowed bytes first */
        memset(&rec->value, 0, sizeof(rec->value));
        rec->value_borrowed = 0;
    }
    value_bytes(L, idx, &rec->value, "value");
}

static void set_key(lua_State *L, int idx, kr_record_t *rec)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNIL || t == LUA_TNONE) {
        rec->key_mode = KR_KEY_INHERIT;
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, idx)) {
        rec->key_mode = KR_KEY_NONE; /* key = false: explicitly no key */
    } else {
        rec->key_mode = KR_KEY_SET;
        value_bytes(L, idx, &rec->key, "key");
    }
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void add_header(lua_State *L, rd_kafka_headers_t *hdrs, const char *name, int idx)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "header '%s' must be a string or a list of strings, not %s", name,
                   luaL_typename(L, idx));
    const char *v = lua_tolstring(L, idx, &len);
    rd_kafka_header_add(hdrs, name, -1, v, (ssize_t)len);
}

/* headers table: name -> string | number | {string, ...}; names are added
 * in sorted order so the same table always gives the same record bytes. */
static void set_headers(lua_State *L, int idx, kr_record_t *rec)
{
    if (lua_isnoneornil(L, idx)) {
        rec->inherit_headers = 1;
        return;
    }
    luaL_checktype(L, idx, LUA_TTABLE);
    idx = lua_absindex(L, idx);
    rec->inherit_headers = 0;
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "header names must be strings");
        n++;
    }
    rec->headers = rd_kafka_headers_new(n ? n : 1);
    if (n == 0)
        return;
    /* names live in a Lua table (no malloc'd array to leak if we raise) */
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
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer j = 1; j <= len; j++) {
                lua_rawgeti(L, -1, j);
                add_header(L, rec->headers, names[i], -1);
                lua_pop(L, 1);
            }
        } else {
            add_header(L, rec->headers, names[i], -1);
        }
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

/* Fill from a kroute.record table's fields. */
static void from_record_table(lua_State *L, int idx, kr_record_t *rec)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, "topic");
    set_topic(L, -1, rec);
    lua_getfield(L, idx, "key");
    set_key(L, -1, rec);
    lua_getfield(L, idx, "value");
    set_value(L, -1, rec);
    lua_getfield(L, idx, "headers");
    set_headers(L, -1, rec);
    lua_getfield(L, idx, "partition");
    set_partition(L, -1, rec);
    lua_pop(L, 5);
}

void kr_record_from_lua(lua_State *L, int idx, kr_record_t *rec)
{
    if (is_record(L, idx))
        from_record_table(L, idx, rec);
    else
        set_value(L, idx, rec);
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
    static const char *const fields[] = {"topic", "key", "value", "headers", "partition", NULL};
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *f = fields; *f; f++)
                if (!strcmp(*f, lua_tostring(L, -1)))
                    known = 1;
        if (!known)
            return luaL_error(L, "kroute.record: unknown field '%s' (expected topic, key, "
                                 "value, headers, partition)",
                              luaL_tolstring(L, -1, NULL));
    }
    /* validate now so the mistake points at the handler's line */
    kr_record_t probe = {0};
    probe.partition = RD_KAFKA_PARTITION_UA;
    lua_getfield(L, 1, "partition");
    set_partition(L, -1, &probe);
    lua_getfield(L, 1, "topic");
    if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0))
        return luaL_error(L, "kroute.record: topic must be a non-empty string");
    lua_getfield(L, 1, "headers");
    if (!lua_isnil(L, -1) && !lua_istable(L, -1))
        return luaL_error(L, "kroute.record: headers must be a table");
    lua_pop(L, 3);
    lua_createtable(L, 0, 5);
    for (const char *const *f = fields; *f; f++) {
        lua_getfield(L, 1, *f);
        lua_setfield(L, -2, *f);
    }
    luaL_setmetatable(L, RECORD_MT);
    return 1;
}

void kr_record_register(lua_State *L)
{
    luaL_newmetatable(L, RECORD_MT);
    lua_pushliteral(L, "kroute.record");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
