/* json.c - the JSON codec behind kroute.json and msg:json() (see json.h).
 * Arrays decoded from JSON carry a marker metatable so `[]` encodes back as
 * `[]`; tables without it encode as arrays when their keys are exactly 1..n
 * and as objects otherwise (an empty plain table is `{}`).
 * Everything the codec builds for Lua (the encoder's output, the decoder's
 * string scratch) lives in memory owned by the lua_State: under a VM's
 * memory cap it counts like any other allocation, and when an allocation
 * fails and Lua unwinds, the garbage collector takes it back. */
#include "codec/json.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/utf8.h"

#define JSON_MAX_DEPTH 200

static const char array_mt_key[] = "kroute.json.array";
static const char null_sentinel = 0;

void kr_json_push_null(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&null_sentinel);
}

int kr_json_is_null(lua_State *L, int idx)
{
    return lua_touserdata(L, idx) == &null_sentinel && lua_islightuserdata(L, idx);
}

/* ---------- a growable buffer owned by the lua_State ---------- */

/* Starts in `init` (no allocation for small texts); when that is outgrown
 * the bytes move to a userdata kept in stack slot `slot`, replaced by a
 * bigger one as it grows. A failed growth raises Lua's memory error with
 * nothing to free: the old userdata is ordinary garbage. */
typedef struct lbuf {
    lua_State *L;
    char *data;
    size_t len, cap;
    int slot;
    char init[256];
} lbuf_t;

/* [-0, +1, -] pushes the buffer's slot */
static void lbuf_open(lbuf_t *b, lua_State *L)
{
    b->L = L;
    b->data = b->init;
    b->len = 0;
    b->cap = sizeof(b->init);
    lua_pushnil(L);
    b->slot = lua_gettop(L);
}

static void lbuf_grow(lbuf_t *b, size_t n);

static inline void lbuf_reserve(lbuf_t *b, size_t n)
{
    if (b->cap - b->len < n)
        lbuf_grow(b, n);
}

static void lbuf_grow(lbuf_t *b, size_t n)
{
    size_t cap = b->cap;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 4)
            luaL_error(b->L, "not enough memory");
        cap *= 2;
    }
    luaL_checkstack(b->L, 1, "json");
    char *p = lua_newuserdatauv(b->L, cap, 0); /* [m]: LUA_ERRMEM past the cap */
    memcpy(p, b->data, b->len);
    lua_replace(b->L, b->slot);
    b->data = p;
    b->cap = cap;
}

static void lbuf_add(lbuf_t *b, const char *p, size_t n)
{
    lbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void lbuf_addc(lbuf_t *b, char c)
{
    lbuf_reserve(b, 1);
    b->data[b->len++] = c;
}

/* ---------- text of numbers and strings, for any buffer ---------- */

/* A Lua integer in decimal, as "%lld" writes it, without printf's format
 * parsing: integers are most of the numbers an encoder sees. */
static size_t integer_text(lua_Integer v, char out[KR_JSNUM_MAX])
{
    char rev[24];
    size_t n = 0, len = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        rev[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[len++] = '-';
    while (n)
        out[len++] = rev[--n];
    out[len] = '\0';
    return len;
}

size_t kr_json_number_text(lua_State *L, int idx, char out[KR_JSNUM_MAX])
{
    if (lua_isinteger(L, idx))
        return integer_text(lua_tointeger(L, idx), out);
    return kr_jsnum_text(lua_tonumber(L, idx), out);
}

typedef void (*put_fn)(void *sink, const char *p, size_t n);

/* `s` as a quoted JSON string literal, handed to put() in runs: bytes
 * that need no escape go out in one piece. Escapes are JSON.stringify's
 * (\", \\, \b \f \n \r \t, other controls as \u00xx); ill-formed UTF-8
 * becomes U+FFFD, one per maximal ill-formed subsequence. */
static void string_text(put_fn put, void *sink, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    put(sink, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c >= 0x80) {
                int ok;
                size_t n = kr_utf8_next(s + i, len - i, &ok);
                if (ok) {
                    i += n - 1;
                    continue;
                }
                /* JSON text must be UTF-8: what Node's Buffer.toString makes of it */
                if (i > run)
                    put(sink, s + run, i - run);
                put(sink, KR_UTF8_REPLACEMENT, 3);
                i += n - 1;
                run = i + 1;
                continue;
            }
            if (c >= 0x20)
                continue;
            esc = NULL;
        }
        if (i > run)
            put(sink, s + run, i - run);
        if (esc) {
            put(sink, esc, 2);
        } else {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(sink, u, 6);
        }
        run = i + 1;
    }
    if (len > run)
        put(sink, s + run, len - run);
    put(sink, "\"", 1);
}

static void put_kr_buf(void *sink, const char *p, size_t n)
{
    kr_buf_add(sink, p, n);
}

static void put_lbuf(void *sink, const char *p, size_t n)
{
    lbuf_add(sink, p, n);
}

void kr_json_add_string(kr_buf_t *b, const char *s, size_t len)
{
    kr_buf_reserve(b, len + 2);
    string_text(put_kr_buf, b, s, len);
}

/* ---------- encoding ---------- */

typedef struct enc {
    lua_State *L;
    lbuf_t out;
    char *errstr;
    size_t errsize;
} enc_t;

/* A string as a JSON literal. Most need no escape and are all ASCII:
 * those are copied in one piece; the rest go through string_text. */
static void add_string(enc_t *e, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x80 && s[i] != '"' &&
           s[i] != '\\')
        i++;
    if (i < len) {
        string_text(put_lbuf, &e->out, s, len);
        return;
    }
    lbuf_reserve(&e->out, len + 2);
    char *p = e->out.data + e->out.len;
    p[0] = '"';
    memcpy(p + 1, s, len);
    p[len + 1] = '"';
    e->out.len += len + 2;
}

static void add_str(enc_t *e, const char *s)
{
    lbuf_add(&e->out, s, strlen(s));
}

static void add_number(enc_t *e, int idx)
{
    char tmp[KR_JSNUM_MAX];
    lbuf_add(&e->out, tmp, kr_json_number_text(e->L, idx, tmp));
}

static int enc_fail(enc_t *e, const char *msg)
{
    snprintf(e->errstr, e->errsize, "cannot encode to JSON: %s", msg);
    return -1;
}

static int encode_value(enc_t *e, int idx, int depth);

/* Returns n when the table's keys are exactly 1..n (n may be 0), else -1. */
static lua_Integer array_length(lua_State *L, int idx)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) {
            lua_pop(L, 1);
            return -1;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1 || k > n) {
            lua_pop(L, 1);
            return -1;
        }
        count++;
    }
    return count == n ? n : -1;
}

static int has_array_mark(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, array_mt_key);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* A table reached twice is encoded twice (JSON has no references), so a
 * small table shared along many paths can stand for a huge text: the
 * output buffer's memory cap, not this code, is what bounds it. Cycles
 * and absurd nesting stop at JSON_MAX_DEPTH. */
static int encode_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth > JSON_MAX_DEPTH)
        return enc_fail(e, "tables nested too deep (a cycle?)");
    luaL_checkstack(L, 4, "json");
    lua_Integer n = array_length(L, idx);
    if (n > 0 || (n == 0 && has_array_mark(L, idx))) {
        lbuf_addc(&e->out, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1)
                lbuf_addc(&e->out, ',');
            lua_rawgeti(L, idx, i);
            int rc = encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        }
        lbuf_addc(&e->out, ']');
        return 0;
    }
    lbuf_addc(&e->out, '{');
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!first)
            lbuf_addc(&e->out, ',');
        first = 0;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            add_string(e, k, klen);
        } else if (kt == LUA_TNUMBER) {
            lbuf_addc(&e->out, '"');
            add_number(e, lua_gettop(L) - 1);
            lbuf_addc(&e->out, '"');
        } else {
            lua_pop(L, 2);
            return enc_fail(e, "object keys must be strings or numbers");
        }
        lbuf_addc(&e->out, ':');
        if (encode_value(e, lua_gettop(L), depth + 1) < 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    lbuf_addc(&e->out, '}');
    return 0;
}

static int encode_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: add_str(e, "null"); return 0;
    case LUA_TBOOLEAN: add_str(e, lua_toboolean(L, idx) ? "true" : "false"); return 0;
    case LUA_TNUMBER:
        if (!lua_isinteger(L, idx) && !isfinite(lua_tonumber(L, idx)))
            return enc_fail(e, "NaN and infinity have no JSON form");
        add_number(e, idx);
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        add_string(e, s, len);
        return 0;
    }
    case LUA_TTABLE: return encode_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (kr_json_is_null(L, idx)) {
            add_str(e, "null");
            return 0;
        }
        /* fall through */
    default: {
        char msg[64];
        snprintf(msg, sizeof(msg), "a %s has no JSON form", luaL_typename(L, idx));
        return enc_fail(e, msg);
    }
    }
}

int kr_json_encode_to(lua_State *L, int idx, kr_json_sink_fn *sink, void *ctx, char *errstr,
                      size_t errsize)
{
    enc_t e = {.L = L, .errstr = errstr, .errsize = errsize};
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 3, "json");
    lbuf_open(&e.out, L);
    if (encode_value(&e, idx, 0) < 0) {
        lua_settop(L, e.out.slot - 1);
        return -1;
    }
    sink(L, ctx, e.out.data, e.out.len);
    lua_remove(L, e.out.slot); /* the buffer is garbage from here */
    return 0;
}

static void push_text(lua_State *L, void *ctx, const char *text, size_t len)
{
    (void)ctx;
    lua_pushlstring(L, text, len);
}

int kr_json_encode(lua_State *L, int idx, char *errstr, size_t errsize)
{
    return kr_json_encode_to(L, idx, push_text, NULL, errstr, errsize);
}

/* ---------- decoding ---------- */

typedef struct dec {
    lua_State *L;
    const char *s, *p, *end;
    char *errstr;
    size_t errsize;
    lbuf_t tmp; /* unescaped string bytes, long number text */
    int skip;   /* check the text, build nothing (skip_value) */
} dec_t;

static int dec_fail(dec_t *d, const char *what)
{
    if (d->p >= d->end)
        snprintf(d->errstr, d->errsize, "bad JSON: %s at end of input", what);
    else
        snprintf(d->errstr, d->errsize, "bad JSON: %s at byte %zu", what,
                 (size_t)(d->p - d->s) + 1);
    return -1;
}

static void skip_ws(dec_t *d)
{
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

static void add_utf8(lbuf_t *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        lbuf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F));
        lbuf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        lbuf_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F));
        lbuf_add(b, u, 4);
    }
}

/* Reads the string at d->p; *text and *len get its unescaped bytes: the
 * input itself when it has no escapes, else the scratch buffer (valid
 * until the scratch is next used). */
static int scan_string(dec_t *d, const char **text, size_t *len)
{
    d->p++; /* opening quote */
    const char *run = d->p; /* input bytes not yet copied to the scratch */
    int unescaped = 0;      /* the scratch holds this string's start */
    d->tmp.len = 0;
    for (;;) {
        if (d->p >= d->end)
            return dec_fail(d, "unterminated string");
        unsigned char c = (unsigned char)*d->p;
        if (c == '"')
            break;
        if (c < 0x20)
            return dec_fail(d, "control character in string");
        if (c >= 0x80) {
            int ok;
            size_t n = kr_utf8_next(d->p, (size_t)(d->end - d->p), &ok);
            if (!ok)
                return dec_fail(d, "invalid UTF-8");
            d->p += n;
            continue;
        }
        if (c != '\\') {
            d->p++;
            continue;
        }
        if (d->p + 1 >= d->end)
            return dec_fail(d, "unterminated escape");
        lbuf_add(&d->tmp, run, (size_t)(d->p - run));
        unescaped = 1;
        char esc = d->p[1];
        d->p += 2;
        switch (esc) {
        case '"': lbuf_addc(&d->tmp, '"'); break;
        case '\\': lbuf_addc(&d->tmp, '\\'); break;
        case '/': lbuf_addc(&d->tmp, '/'); break;
        case 'b': lbuf_addc(&d->tmp, '\b'); break;
        case 'f': lbuf_addc(&d->tmp, '\f'); break;
        case 'n': lbuf_addc(&d->tmp, '\n'); break;
        case 'r': lbuf_addc(&d->tmp, '\r'); break;
        case 't': lbuf_addc(&d->tmp, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (d->end - d->p < 4 || hex4(d->p, &cp) < 0)
                return dec_fail(d, "bad \\u escape");
            d->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && d->end - d->p >= 6 && d->p[0] == '\\' &&
                d->p[1] == 'u' && hex4(d->p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                d->p += 6;
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD; /* a lone surrogate has no UTF-8 form */
            }
            add_utf8(&d->tmp, cp);
            break;
        }
        default: d->p -= 2; return dec_fail(d, "bad escape");
        }
        run = d->p;
    }
    if (unescaped) {
        lbuf_add(&d->tmp, run, (size_t)(d->p - run));
        *text = d->tmp.data;
        *len = d->tmp.len;
    } else {
        *text = run;
        *len = (size_t)(d->p - run);
    }
    d->p++; /* closing quote */
    return 0;
}

/* A string without escapes is pushed straight from the input; escapes
 * send the bytes through the scratch buffer. */
static int decode_string(dec_t *d)
{
    const char *text;
    size_t len;
    if (scan_string(d, &text, &len) < 0)
        return -1;
    if (!d->skip)
        lua_pushlstring(d->L, text, len);
    return 0;
}

static int decode_number(dec_t *d)
{
    const char *start = d->p;
    int is_float = 0;
    if (d->p < d->end && *d->p == '-')
        d->p++;
    if (d->p >= d->end || *d->p < '0' || *d->p > '9')
        return dec_fail(d, "bad number");
    if (*d->p == '0' && d->p + 1 < d->end && d->p[1] >= '0' && d->p[1] <= '9')
        return dec_fail(d, "leading zero in number");
    while (d->p < d->end && *d->p >= '0' && *d->p <= '9')
        d->p++;
    if (d->p < d->end && *d->p == '.') {
        is_float = 1;
        d->p++;
        if (d->p >= d->end || *d->p < '0' || *d->p > '9')
            return dec_fail(d, "bad number");
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9')
            d->p++;
    }
    if (d->p < d->end && (*d->p == 'e' || *d->p == 'E')) {
        is_float = 1;
        d->p++;
        if (d->p < d->end && (*d->p == '+' || *d->p == '-'))
            d->p++;
        if (d->p >= d->end || *d->p < '0' || *d->p > '9')
            return dec_fail(d, "bad number");
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9')
            d->p++;
    }
    if (d->skip)
        return 0;
    /* strtoll/strtod need a NUL-terminated copy: short ones on the C
     * stack, long ones (a thousand digits is valid JSON) in the scratch */
    char buf[64];
    size_t n = (size_t)(d->p - start);
    const char *text = buf;
    if (n < sizeof(buf)) {
        memcpy(buf, start, n);
        buf[n] = '\0';
    } else {
        is_float = 1;
        d->tmp.len = 0;
        lbuf_add(&d->tmp, start, n);
        lbuf_addc(&d->tmp, '\0');
        text = d->tmp.data;
    }
    if (!is_float) {
        errno = 0;
        long long v = strtoll(text, NULL, 10);
        if (errno == 0) {
            lua_pushinteger(d->L, (lua_Integer)v);
            return 0;
        }
    }
    lua_pushnumber(d->L, strtod(text, NULL));
    return 0;
}

static int literal(dec_t *d, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return dec_fail(d, "unexpected character");
    d->p += n;
    return 0;
}

/* Reads one member's value; key is its name (valid until the value is
 * read: it may live in the scratch buffer). */
typedef int (*member_fn)(dec_t *d, const char *key, size_t key_len, int depth, void *ud);

static int decode_value(dec_t *d, int depth);

/* Walks the object at d->p (its '{'): reads each member's key and ':',
 * and lets fn read the value (at depth + 1). */
static int walk_object(dec_t *d, int depth, member_fn fn, void *ud)
{
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == '}') {
        d->p++;
        return 0;
    }
    for (;;) {
        skip_ws(d);
        if (d->p >= d->end || *d->p != '"')
            return dec_fail(d, "expected a string key");
        const char *key;
        size_t key_len;
        if (scan_string(d, &key, &key_len) < 0)
            return -1;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':')
            return dec_fail(d, "expected ':'");
        d->p++;
        if (fn(d, key, key_len, depth + 1, ud) < 0)
            return -1;
        skip_ws(d);
        if (d->p < d->end && *d->p == ',') {
            d->p++;
            continue;
        }
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        return dec_fail(d, "expected ',' or '}'");
    }
}

/* [-0, +0, m] a member of the table on top (unless skipping) */
static int decode_member(dec_t *d, const char *key, size_t key_len, int depth, void *ud)
{
    (void)ud;
    if (!d->skip)
        lua_pushlstring(d->L, key, key_len);
    if (decode_value(d, depth) < 0)
        return -1;
    if (!d->skip)
        lua_rawset(d->L, -3);
    return 0;
}

/* [-0, +(1|any), m] pushes the value at d->p. On a syntax error it returns
 * -1 and may leave partial values pushed: kr_json_decode drops them. */
static int decode_value(dec_t *d, int depth)
{
    lua_State *L = d->L;
    if (depth > JSON_MAX_DEPTH)
        return dec_fail(d, "nested too deep");
    luaL_checkstack(L, 3, "json");
    skip_ws(d);
    if (d->p >= d->end)
        return dec_fail(d, "expected a value");
    switch (*d->p) {
    case '{':
        if (!d->skip)
            lua_newtable(L);
        return walk_object(d, depth, decode_member, NULL);
    case '[': {
        d->p++;
        if (!d->skip) {
            lua_newtable(L);
            luaL_getmetatable(L, array_mt_key);
            lua_setmetatable(L, -2);
        }
        skip_ws(d);
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        for (lua_Integer i = 1;; i++) {
            if (decode_value(d, depth + 1) < 0)
                return -1;
            if (!d->skip)
                lua_rawseti(L, -2, i);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == ']') {
                d->p++;
                return 0;
            }
            return dec_fail(d, "expected ',' or ']'");
        }
    }
    case '"': return decode_string(d);
    case 't':
        if (literal(d, "true") < 0)
            return -1;
        if (!d->skip)
            lua_pushboolean(L, 1);
        return 0;
    case 'f':
        if (literal(d, "false") < 0)
            return -1;
        if (!d->skip)
            lua_pushboolean(L, 0);
        return 0;
    case 'n':
        if (literal(d, "null") < 0)
            return -1;
        if (!d->skip)
            kr_json_push_null(L);
        return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return decode_number(d);
        return dec_fail(d, "unexpected character");
    }
}

/* Checks the value at d->p as decode_value does, pushing nothing. */
static int skip_value(dec_t *d, int depth)
{
    int was = d->skip;
    d->skip = 1;
    int rc = decode_value(d, depth);
    d->skip = was;
    return rc;
}

typedef struct select {
    const kr_json_key_t *path;
    size_t at, n;
} select_t;

static int select_value(dec_t *d, const kr_json_key_t *path, size_t at, size_t n, int depth);

/* [-0, +0, m] replaces the found value on top when key is the one wanted */
static int select_member(dec_t *d, const char *key, size_t key_len, int depth, void *ud)
{
    const select_t *s = ud;
    const kr_json_key_t *want = &s->path[s->at];
    if (key_len != want->len || memcmp(key, want->text, key_len) != 0)
        return skip_value(d, depth);
    if (select_value(d, s->path, s->at + 1, s->n, depth) < 0)
        return -1;
    lua_replace(d->L, -2); /* the later one wins */
    return 0;
}

/* [-0, +1, m] pushes the member at path[at..n) of the value at d->p, or
 * nil when there is none; every other part of the value is checked but
 * not built. A key given twice counts the last time, as in a full decode. */
static int select_value(dec_t *d, const kr_json_key_t *path, size_t at, size_t n, int depth)
{
    if (at == n)
        return decode_value(d, depth);
    if (depth > JSON_MAX_DEPTH)
        return dec_fail(d, "nested too deep");
    luaL_checkstack(d->L, 2, "json");
    lua_pushnil(d->L); /* nothing found yet */
    skip_ws(d);
    if (d->p >= d->end || *d->p != '{')
        return skip_value(d, depth); /* not an object: no such member */
    select_t s = {path, at, n};
    return walk_object(d, depth, select_member, &s);
}

int kr_json_decode(lua_State *L, const char *s, size_t len, char *errstr, size_t errsize)
{
    return kr_json_decode_path(L, s, len, NULL, 0, errstr, errsize);
}

int kr_json_decode_path(lua_State *L, const char *s, size_t len, const kr_json_key_t *path,
                        size_t n, char *errstr, size_t errsize)
{
    dec_t d = {.L = L, .s = s, .p = s, .end = s + len, .errstr = errstr, .errsize = errsize};
    luaL_checkstack(L, 2, "json");
    lbuf_open(&d.tmp, L);
    int rc = select_value(&d, path, 0, n, 0);
    if (rc == 0) {
        skip_ws(&d);
        if (d.p < d.end)
            rc = dec_fail(&d, "trailing characters");
    }
    if (rc < 0) {
        lua_settop(L, d.tmp.slot - 1);
        return -1;
    }
    lua_remove(L, d.tmp.slot); /* the scratch is garbage from here */
    return 0;
}

/* ---------- the Lua module ---------- */

/* kroute.json.encode(v) -> string  [-1, +1, e] (raises on values with no
 * JSON form, and with Lua's memory error when the text passes the cap) */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    char err[256];
    lua_settop(L, 1);
    if (kr_json_encode(L, 1, err, sizeof(err)) < 0)
        return luaL_error(L, "%s", err);
    return 1;
}

int kr_json_push_path(lua_State *L, int first, const char *s, size_t len)
{
    kr_json_key_t path[KR_JSON_PATH_MAX];
    int top = lua_gettop(L);
    if (top - first + 1 > KR_JSON_PATH_MAX)
        return luaL_error(L, "at most %d keys", KR_JSON_PATH_MAX);
    size_t n = 0;
    for (int i = first; i <= top; i++, n++) {
        if (lua_type(L, i) != LUA_TSTRING) /* a number would be turned into text in place */
            return luaL_argerror(L, i, "a key must be a string");
        path[n].text = lua_tolstring(L, i, &path[n].len);
    }
    char err[256];
    if (kr_json_decode_path(L, s, len, path, n, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* kroute.json.decode(s [, key...]) -> value | nil, err  [-(1+k), +(1|2), m] */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    return kr_json_push_path(L, 2, s, len);
}

/* kroute.json.array(t) -> t, marked to encode as a JSON array even when empty */
static int l_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    else
        luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, array_mt_key);
    lua_setmetatable(L, 1);
    return 1;
}

int luaopen_kroute_json(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"encode", l_encode}, {"decode", l_decode}, {"array", l_array}, {NULL, NULL}};
    /* luaL_newmetatable names it after its key, which is what lets the
     * sandbox lock it (getmetatable() of an array is "kroute") */
    luaL_newmetatable(L, array_mt_key);
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    kr_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
