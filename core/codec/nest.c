/* nest.c - see nest.h. */
#include "codec/nest.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "codec/json.h"
#include "codec/utf8.h"

char *kr_nest_header(const rd_kafka_headers_t *hdrs, const char *name)
{
    const void *val;
    size_t size;
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, val, size);
    s[size] = '\0';
    return s;
}

int kr_nest_parse_request(const rd_kafka_headers_t *hdrs, kr_nest_req_t *req)
{
    memset(req, 0, sizeof(*req));
    req->reply_partition = RD_KAFKA_PARTITION_UA;
    req->correlation = kr_nest_header(hdrs, KR_NEST_CORRELATION);
    req->reply_topic = kr_nest_header(hdrs, KR_NEST_REPLY_TOPIC);
    if (!req->correlation || !*req->correlation || !req->reply_topic || !*req->reply_topic) {
        kr_nest_req_free(req);
        return 0;
    }
    char *part = kr_nest_header(hdrs, KR_NEST_REPLY_PARTITION);
    if (part) {
        char *end;
        long p = strtol(part, &end, 10);
        if (*part && !*end && p >= 0 && p <= INT32_MAX)
            req->reply_partition = (int32_t)p;
        free(part);
    }
    return 1;
}

void kr_nest_req_free(kr_nest_req_t *req)
{
    free(req->correlation);
    free(req->reply_topic);
    req->correlation = req->reply_topic = NULL;
}

/* Sets header `name` to the one value v (size n), in place of any. */
static void set_header(rd_kafka_headers_t *h, const char *name, const void *v, ssize_t n)
{
    rd_kafka_header_remove(h, name); /* NO_ENT when there was none */
    rd_kafka_header_add(h, name, -1, v, n);
}

rd_kafka_headers_t *kr_nest_reply_headers(rd_kafka_headers_t *base, const char *correlation,
                                          const char *err, int disposed)
{
    rd_kafka_headers_t *h = base ? base : rd_kafka_headers_new(3);
    if (correlation)
        set_header(h, KR_NEST_CORRELATION, correlation, -1);
    if (err)
        set_header(h, KR_NEST_ERR, *err ? err : "error", -1);
    if (disposed)
        set_header(h, KR_NEST_DISPOSED, "\0", 1);
    return h;
}

char *kr_nest_error_text(const char *reason, int no_handler)
{
    kr_buf_t err = {0};
    if (no_handler) {
        kr_buf_add(&err, KR_NEST_NO_HANDLER, strlen(KR_NEST_NO_HANDLER));
    } else {
        static const char head[] = "{\"status\":\"error\",\"message\":";
        kr_buf_add(&err, head, sizeof(head) - 1);
        kr_json_add_string(&err, reason, strlen(reason));
        kr_buf_addc(&err, '}');
    }
    kr_buf_addc(&err, '\0');
    return err.data;
}

void kr_nest_correlation_id(char out[37])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        for (size_t i = 0; i < sizeof(b); i++) /* getrandom cannot fail for 16 bytes */
            b[i] = (unsigned char)rand();
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

/* [-0, +1, m] decode() of text that is not a Buffer (or is one that does
 * not start with 0x00): UTF-8 repaired, then JSON when it looks like it */
static void push_text(lua_State *L, const char *p, size_t len)
{
    size_t good = kr_utf8_valid_prefix(p, len);
    if (good == len) {
        lua_pushlstring(L, p, len);
    } else {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, p, good);
        for (size_t i = good; i < len;) {
            int ok;
            size_t n = kr_utf8_next(p + i, len - i, &ok);
            if (ok)
                luaL_addlstring(&b, p + i, n);
            else
                luaL_addlstring(&b, KR_UTF8_REPLACEMENT, 3);
            i += n;
        }
        luaL_pushresult(&b);
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    char err[64];
    if (n && (s[0] == '{' || s[0] == '[') && kr_json_decode(L, s, n, err, sizeof(err)) == 0)
        lua_remove(L, -2);
}

void kr_nest_push_decoded(lua_State *L, const char *p, size_t len)
{
    if (!p)
        lua_pushnil(L);
    else if (len && p[0] == '\0') /* a schema-registry payload: left as bytes */
        lua_pushlstring(L, p, len);
    else
        push_text(L, p, len);
}

/* [-0, +1, m] one header name's NestJS value */
static void push_header(lua_State *L, const rd_kafka_headers_t *hdrs, const char *name)
{
    const void *v;
    size_t size;
    if (rd_kafka_header_get(hdrs, 1, name, &v, &size) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_header_get(hdrs, 0, name, &v, &size);
        if (v)
            kr_nest_push_decoded(L, v, size);
        else
            kr_json_push_null(L);
        return;
    }
    /* kafkajs hands a repeated name over as an array; decode() calls its
     * toString(), which joins the values with "," (null as "") */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; rd_kafka_header_get(hdrs, i, name, &v, &size) == 0; i++) {
        if (i)
            luaL_addchar(&b, ',');
        if (v)
            luaL_addlstring(&b, v, size);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    push_text(L, s, len);
    lua_remove(L, -2);
}

void kr_nest_push_message(lua_State *L, const kr_msg_t *msg)
{
    luaL_checkstack(L, 6, "nest");
    lua_createtable(L, 0, 3);
    kr_nest_push_decoded(L, msg->key, msg->key_len);
    lua_setfield(L, -2, "key");
    kr_nest_push_decoded(L, msg->value, msg->value_len);
    lua_setfield(L, -2, "value");
    lua_newtable(L);
    const char *name;
    const void *v;
    size_t size;
    rd_kafka_headers_t *hdrs = kr_msg_headers(msg);
    for (size_t i = 0; hdrs && rd_kafka_header_get_all(hdrs, i, &name, &v, &size) == 0; i++) {
        if (lua_getfield(L, -1, name) != LUA_TNIL) { /* a repeated name, done */
            lua_pop(L, 1);
            continue;
        }
        lua_pop(L, 1);
        push_header(L, hdrs, name);
        lua_setfield(L, -2, name);
    }
    lua_setfield(L, -2, "headers");
}

int kr_nest_is_envelope(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        return 0;
    idx = lua_absindex(L, idx);
    lua_pushliteral(L, "key");
    int has = lua_rawget(L, idx) != LUA_TNIL;
    lua_pop(L, 1);
    if (!has) {
        lua_pushliteral(L, "value");
        has = lua_rawget(L, idx) != LUA_TNIL;
        lua_pop(L, 1);
    }
    return has;
}
