/* message.c - the kroute.message userdata (see message.h).
 * Fields are read through __index: topic, partition, offset, key, value,
 * timestamp, headers, data (the value as a NestJS handler's payload),
 * nest (key, value and headers as NestJS's KafkaParser gives them), and
 * the method json(). Headers come back as a fresh
 * table: name -> string, or name -> list of strings when a name repeats; a
 * header whose value is null (not empty) reads as kroute.json.null. */
#include "runtime/message.h"

#include <lauxlib.h>
#include <sched.h>
#include <string.h>

#include "codec/json.h"
#include "codec/nest.h"

#define MESSAGE_MT "kroute.message"

typedef struct msg_ud {
    const kr_msg_t *msg; /* NULL once the handler finished */
} msg_ud_t;

void kr_msg_from_rkm(kr_msg_t *msg, rd_kafka_message_t *rkm)
{
    rd_kafka_timestamp_type_t tstype;
    msg->topic = rd_kafka_topic_name(rkm->rkt);
    msg->partition = rkm->partition;
    msg->offset = rkm->offset;
    msg->key = rkm->key;
    msg->key_len = rkm->key_len;
    msg->value = rkm->payload;
    msg->value_len = rkm->len;
    msg->timestamp = rd_kafka_message_timestamp(rkm, &tstype);
    msg->headers = NULL;
    msg->rkm = rkm;
    atomic_init(&msg->headers_once, 0);
}

rd_kafka_headers_t *kr_msg_headers(const kr_msg_t *msg)
{
    kr_msg_t *m = (kr_msg_t *)msg; /* the cache is not part of what a view says */
    if (!m->rkm || atomic_load_explicit(&m->headers_once, memory_order_acquire) == 2)
        return m->headers;
    int expect = 0;
    if (atomic_compare_exchange_strong(&m->headers_once, &expect, 1)) {
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(m->rkm, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
            h = NULL;
        m->headers = h;
        atomic_store_explicit(&m->headers_once, 2, memory_order_release);
        return h;
    }
    while (atomic_load_explicit(&m->headers_once, memory_order_acquire) != 2)
        sched_yield(); /* another thread is parsing: microseconds */
    return m->headers;
}

void kr_message_push(lua_State *L, const kr_msg_t *msg)
{
    msg_ud_t *ud = lua_newuserdatauv(L, sizeof(*ud), 0);
    ud->msg = msg;
    luaL_setmetatable(L, MESSAGE_MT);
}

void kr_message_invalidate(lua_State *L, int idx)
{
    msg_ud_t *ud = luaL_testudata(L, idx, MESSAGE_MT);
    if (ud)
        ud->msg = NULL;
}

static const kr_msg_t *check_msg(lua_State *L, int idx)
{
    msg_ud_t *ud = luaL_checkudata(L, idx, MESSAGE_MT);
    if (!ud->msg)
        luaL_error(L, "message used after its handler finished");
    return ud->msg;
}

const kr_msg_t *kr_message_test(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, MESSAGE_MT) ? check_msg(L, idx) : NULL;
}

static void push_bytes(lua_State *L, const void *p, size_t len)
{
    if (p)
        lua_pushlstring(L, (const char *)p, len);
    else
        lua_pushnil(L);
}

/* [-0, +1, m] headers as name -> value | {value, ...}, where a value is a
 * string, or kroute.json.null for a null header value */
static void push_headers(lua_State *L, rd_kafka_headers_t *hdrs)
{
    lua_newtable(L);
    if (!hdrs)
        return;
    const char *name;
    const void *val;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) == 0; i++) {
        if (val)
            lua_pushlstring(L, (const char *)val, size);
        else
            kr_json_push_null(L);
        int t = lua_getfield(L, -2, name);
        if (t == LUA_TNIL) {
            lua_pop(L, 1);
            lua_setfield(L, -2, name);
        } else if (t != LUA_TTABLE) {
            /* second occurrence: turn the value into a list */
            lua_createtable(L, 2, 0);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 1);
            lua_insert(L, -2);
            lua_rawseti(L, -2, 2);
            lua_setfield(L, -2, name);
        } else {
            lua_insert(L, -2);
            lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
            lua_pop(L, 1);
        }
    }
}

/* msg:json([key...]) -> value | nil, err  [-0, +(1|2), e]
 * With keys, only the member at that path is built (nil when absent): the
 * cheap way to read a field or two of a big event. */
static int msg_json(lua_State *L)
{
    const kr_msg_t *msg = check_msg(L, 1);
    if (!msg->value) {
        lua_pushnil(L);
        lua_pushliteral(L, "message has no value");
        return 2;
    }
    return kr_json_push_path(L, 2, msg->value, msg->value_len);
}

static int msg_index(lua_State *L)
{
    const kr_msg_t *msg = check_msg(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (!strcmp(k, "value"))
        push_bytes(L, msg->value, msg->value_len);
    else if (!strcmp(k, "key"))
        push_bytes(L, msg->key, msg->key_len);
    else if (!strcmp(k, "topic"))
        lua_pushstring(L, msg->topic);
    else if (!strcmp(k, "partition"))
        lua_pushinteger(L, msg->partition);
    else if (!strcmp(k, "offset"))
        lua_pushinteger(L, msg->offset);
    else if (!strcmp(k, "timestamp"))
        lua_pushinteger(L, msg->timestamp);
    else if (!strcmp(k, "headers"))
        push_headers(L, kr_msg_headers(msg));
    else if (!strcmp(k, "data"))
        kr_nest_push_decoded(L, msg->value, msg->value_len);
    else if (!strcmp(k, "nest"))
        kr_nest_push_message(L, msg);
    else if (!strcmp(k, "json"))
        lua_pushcfunction(L, msg_json);
    else
        lua_pushnil(L);
    return 1;
}

static int msg_newindex(lua_State *L)
{
    return luaL_error(L, "message fields are read-only (build a new value or kroute.record)");
}

static int msg_tostring(lua_State *L)
{
    msg_ud_t *ud = luaL_checkudata(L, 1, MESSAGE_MT);
    if (!ud->msg)
        lua_pushliteral(L, "kroute.message (finished)");
    else
        lua_pushfstring(L, "kroute.message(%s/%d@%I)", ud->msg->topic, (int)ud->msg->partition,
                        (lua_Integer)ud->msg->offset);
    return 1;
}

void kr_message_register(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__index", msg_index},
                                    {"__newindex", msg_newindex},
                                    {"__tostring", msg_tostring},
                                    {NULL, NULL}};
    luaL_newmetatable(L, MESSAGE_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, "kroute.message");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}
