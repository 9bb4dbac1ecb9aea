/* json.c - the JSON codec behind kroute.json and msg:json() (see json.h).
 * Arrays decoded from JSON carry a marker metatable so `[]` encodes back as
 * `[]`; tables without it encode as arrays when their keys are exactly 1..n
 * and as objects otherwise (an empty plain table is `{}`). */
#include "json.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---------- encoding ---------- */

typedef struct enc {
    lua_State *L;
    kr_buf_t *b;
    char *errstr;
    size_t errsize;
} enc_t;

static void add_str(kr_buf_t *b, const char *s)
{
    kr_buf_add(b, s, strlen(s));
}

void kr_json_add_number(kr_buf_t *b, lua_State *L, int idx)
{
    char tmp[64];
    if (lua_isinteger(L, idx)) {
        snprintf(tmp, sizeof(tmp), "%lld", (long long)lua_tointeger(L, idx));
        add_str(b, tmp);
        return;
    }
    double d = lua_tonumber(L, idx);
    /* JavaScript prints integral doubles without a fraction: 6.0 -> "6". */
    if (d == floor(d) && fabs(d) < 1e17) {
        snprintf(tmp, sizeof(tmp), "%.0f", d);
        if (strcmp(tmp, "-0") == 0)
            strcpy(tmp, "0");
        add_str(b, tmp);
        return;
    }
    /* shortest text that reads back exactly: %.15g is shortest for most
     * values (trailing zeros dropped); long results may have a shorter form */
    snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d || strlen(tmp) > 12) {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
            if (strtod(tmp, NULL) == d)
                break;
        }
    }
    /* JavaScript writes exponents without leading zeros: 1e-7, not 1e-07 */
    char *e = strchr(tmp, 'e');
    if (e && (e[1] == '-' || e[1] == '+')) {
        char *digits = e + 2, *nz = digits;
        while (*nz == '0' && nz[1])
            nz++;
        memmove(digits, nz, strlen(nz) + 1);
    }
    add_str(b, tmp);
}

void kr_json_add_string(kr_buf_t *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    kr_buf_reserve(b, len + 2);
    kr_buf_addc(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': kr_buf_add(b, "\\\"", 2); break;
        case '\\': kr_buf_add(b, "\\\\", 2); break;
        case '\n': kr_buf_add(b, "\\n", 2); break;
        case '\r': kr_buf_add(b, "\\r", 2); break;
        case '\t': kr_buf_add(b, "\\t", 2); break;
        case '\b': kr_buf_add(b, "\\b", 2); break;
        case '\f': kr_buf_add(b, "\\f", 2); break;
        default:
            if (c < 0x20) {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                kr_buf_add(b, u, 6);
            } else {
                kr_buf_addc(b, (char)c);
            }
        }
    }
    kr_buf_addc(b, '"');
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

static int encode_table(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth > JSON_MAX_DEPTH)
        return enc_fail(e, "tables nested too deep (a cycle?)");
    luaL_checkstack(L, 4, "json");
    lua_Integer n = array_length(L, idx);
    if (n > 0 || (n == 0 && has_array_mark(L, idx))) {
        kr_buf_addc(e->b, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1)
                kr_buf_addc(e->b, ',');
            lua_rawgeti(L, idx, i);
            int rc = encode_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        }
        kr_buf_addc(e->b, ']');
        return 0;
    }
    kr_buf_addc(e->b, '{');
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!first)
            kr_buf_addc(e->b, ',');
        first = 0;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t klen;
            const char *k = lua_tolstring(L, -2, &klen);
            kr_json_add_string(e->b, k, klen);
        } else if (kt == LUA_TNUMBER) {
            kr_buf_addc(e->b, '"');
            kr_json_add_number(e->b, L, lua_gettop(L) - 1);
            kr_buf_addc(e->b, '"');
        } else {
            lua_pop(L, 2);
            return enc_fail(e, "object keys must be strings or numbers");
        }
        kr_buf_addc(e->b, ':');
        if (encode_value(e, lua_gettop(L), depth + 1) < 0) {
            lua_pop(L, 2);
            return -1;
        }
        lua_pop(L, 1);
    }
    kr_buf_addc(e->b, '}');
    return 0;
}

static int encode_value(enc_t *e, int idx, int depth)
{
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: add_str(e->b, "null"); return 0;
    case LUA_TBOOLEAN: add_str(e->b, lua_toboolean(L, idx) ? "true" : "false"); return 0;
    case LUA_TNUMBER:
        if (!lua_isinteger(L, idx) && !isfinite(lua_tonumber(L, idx)))
            return enc_fail(e, "NaN and infinity have no JSON form");
        kr_json_add_number(e->b, L, idx);
        return 0;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        kr_json_add_string(e->b, s, len);
        return 0;
    }
    case LUA_TTABLE: return encode_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (kr_json_is_null(L, idx)) {
            add_str(e->b, "null");
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

int kr_json_encode(lua_State *L, int idx, kr_buf_t *b, char *errstr, size_t errsize)
{
    enc_t e = {L, b, errstr, errsize};
    return encode_value(&e, lua_absindex(L, idx), 0);
}

/* ---------- decoding ---------- */

typedef struct dec {
    lua_State *L;
    const char *s, *p, *end;
    char *errstr;
    size_t errsize;
    kr_buf_t tmp;
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

static void add_utf8(kr_buf_t *b, unsigned cp)
{
    char u[4];
    if (cp < 0x80) {
        kr_buf_addc(b, (char)cp);
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F));
        kr_buf_add(b, u, 2);
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        kr_buf_add(b, u, 3);
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F));
        kr_buf_add(b, u, 4);
    }
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF), or 0 when it is not one. */
static size_t utf8_len(const char *p, const char *end)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t avail = (size_t)(end - p);
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        return avail >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        if (avail < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] > 0x9F))
            return 0; /* overlong, or a surrogate */
        return 3;
    }
    if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        if (avail < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 ||
            (s[3] & 0xC0) != 0x80)
            return 0;
        if ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] > 0x8F))
            return 0; /* overlong, or past U+10FFFF */
        return 4;
    }
    return 0;
}

static int decode_string(dec_t *d)
{
    d->p++; /* opening quote */
    d->tmp.len = 0;
    for (;;) {
        if (d->p >= d->end)
            return dec_fail(d, "unterminated string");
        unsigned char c = (unsigned char)*d->p;
        if (c == '"') {
            d->p++;
            break;
        }
        if (c < 0x20)
            return dec_fail(d, "control character in string");
        if (c >= 0x80) {
            size_t n = utf8_len(d->p, d->end);
            if (!n)
                return dec_fail(d, "invalid UTF-8");
            kr_buf_add(&d->tmp, d->p, n);
            d->p += n;
            continue;
        }
        if (c != '\\') {
            const char *start = d->p;
            while (d->p < d->end && *d->p != '"' && *d->p != '\\' &&
                   (unsigned char)*d->p >= 0x20 && (unsigned char)*d->p < 0x80)
                d->p++;
            kr_buf_add(&d->tmp, start, (size_t)(d->p - start));
            continue;
        }
        if (d->p + 1 >= d->end)
            return dec_fail(d, "unterminated escape");
        char esc = d->p[1];
        d->p += 2;
        switch (esc) {
        case '"': kr_buf_addc(&d->tmp, '"'); break;
        case '\\': kr_buf_addc(&d->tmp, '\\'); break;
        case '/': kr_buf_addc(&d->tmp, '/'); break;
        case 'b': kr_buf_addc(&d->tmp, '\b'); break;
        case 'f': kr_buf_addc(&d->tmp, '\f'); break;
        case 'n': kr_buf_addc(&d->tmp, '\n'); break;
        case 'r': kr_buf_addc(&d->tmp, '\r'); break;
        case 't': kr_buf_addc(&d->tmp, '\t'); break;
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
    }
    lua_pushlstring(d->L, d->tmp.data ? d->tmp.data : "", d->tmp.len);
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
    char buf[64];
    size_t n = (size_t)(d->p - start);
    if (n >= sizeof(buf))
        is_float = 1;
    if (!is_float) {
        memcpy(buf, start, n);
        buf[n] = '\0';
        errno = 0;
        long long v = strtoll(buf, NULL, 10);
        if (errno == 0) {
            lua_pushinteger(d->L, (lua_Integer)v);
            return 0;
        }
    }
    d->tmp.len = 0;
    kr_buf_add(&d->tmp, start, n);
    kr_buf_addc(&d->tmp, '\0');
    lua_pushnumber(d->L, strtod(d->tmp.data, NULL));
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
    case '{': {
        d->p++;
        lua_newtable(L);
        skip_ws(d);
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        for (;;) {
            skip_ws(d);
            if (d->p >= d->end || *d->p != '"')
                return lua_pop(L, 1), dec_fail(d, "expected a string key");
            if (decode_string(d) < 0)
                return lua_pop(L, 1), -1;
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':')
                return lua_pop(L, 2), dec_fail(d, "expected ':'");
            d->p++;
            if (decode_value(d, depth + 1) < 0)
                return lua_pop(L, 2), -1;
            lua_rawset(L, -3);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == '}') {
                d->p++;
                return 0;
            }
            return lua_pop(L, 1), dec_fail(d, "expected ',' or '}'");
        }
    }
    case '[': {
        d->p++;
        lua_newtable(L);
        luaL_getmetatable(L, array_mt_key);
        lua_setmetatable(L, -2);
        skip_ws(d);
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        for (lua_Integer i = 1;; i++) {
            if (decode_value(d, depth + 1) < 0)
                return lua_pop(L, 1), -1;
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
            return lua_pop(L, 1), dec_fail(d, "expected ',' or ']'");
        }
    }
    case '"': return decode_string(d);
    case 't':
        if (literal(d, "true") < 0)
            return -1;
        lua_pushboolean(L, 1);
        return 0;
    case 'f':
        if (literal(d, "false") < 0)
            return -1;
        lua_pushboolean(L, 0);
        return 0;
    case 'n':
        if (literal(d, "null") < 0)
            return -1;
        kr_json_push_null(L);
        return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9'))
            return decode_number(d);
        return dec_fail(d, "unexpected character");
    }
}

int kr_json_decode(lua_State *L, const char *s, size_t len, char *errstr, size_t errsize)
{
    dec_t d = {L, s, s, s + len, errstr, errsize, {0}};
    int rc = decode_value(&d, 0);
    if (rc == 0) {
        skip_ws(&d);
        if (d.p < d.end) {
            lua_pop(L, 1);
            rc = dec_fail(&d, "trailing characters");
        }
    }
    kr_buf_free(&d.tmp);
    return rc;
}

/* ---------- the Lua module ---------- */

/* kroute.json.encode(v) -> string  [-1, +1, e] (raises on values with no JSON form) */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    kr_buf_t b = {0};
    char err[256];
    lua_settop(L, 1);
    int rc = kr_json_encode(L, 1, &b, err, sizeof(err));
    if (rc == 0)
        lua_pushlstring(L, b.data ? b.data : "", b.len);
    kr_buf_free(&b);
    if (rc < 0)
        return luaL_error(L, "%s", err);
    return 1;
}

/* kroute.json.decode(s) -> value | nil, err  [-1, +(1|2), m] */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[256];
    if (kr_json_decode(L, s, len, err, sizeof(err)) < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
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
    if (luaL_newmetatable(L, array_mt_key)) {
        lua_pushliteral(L, "array");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    kr_json_push_null(L);
    lua_setfield(L, -2, "null");
    return 1;
}
