/* json.h - JSON <-> Lua values, the kroute.json module.
 * Written for kroute rather than taken from lua-cjson because the wire
 * needs what cjson does not give: Lua 5.4 integers kept exact (ids past
 * 2^53), floats in exactly the text JavaScript prints (6, 0.75, 1e+21 -
 * what NestJS peers write), strings always valid UTF-8 (U+FFFD for bad
 * bytes, as Node's Buffer.toString), and empty arrays that survive a
 * round trip. */
#ifndef KR_JSON_H
#define KR_JSON_H

#include <lua.h>

#include "buf.h"
#include "codec/jsnum.h"

/* Pushes the JSON text of the value at `idx` as a Lua string and returns
 * 0; returns -1 with errstr set and pushes nothing when the value has no
 * JSON form (cycles/too deep, NaN, functions, bad keys). The text is built
 * in memory owned by L, so under a VM's cap a text that does not fit
 * raises Lua's memory error (and leaves nothing behind). [-0, +(0|1), m] */
int kr_json_encode(lua_State *L, int idx, char *errstr, size_t errsize);
/* Receives the text kr_json_encode_to made: valid only during the call,
 * which may raise (it runs in the encoding function's Lua call) and may
 * push values, which stay on the stack. */
typedef void kr_json_sink_fn(lua_State *L, void *ctx, const char *text, size_t len);
/* As kr_json_encode, but hands the text to `sink` instead of pushing it
 * as a Lua string: a record copies it into its own buffer, so no string is
 * made for the collector to free. [-0, +(what sink pushes), m] */
int kr_json_encode_to(lua_State *L, int idx, kr_json_sink_fn *sink, void *ctx, char *errstr,
                      size_t errsize);
/* Pushes the decoded value of `s` and returns 0; on bad JSON pushes nothing
 * and returns -1 with errstr "... at byte N". Its scratch memory is owned
 * by L as well: a memory error while decoding leaks nothing. [-0, +(0|1), m] */
int kr_json_decode(lua_State *L, const char *s, size_t len, char *errstr, size_t errsize);
/* A key of a path into a JSON document (bytes, not NUL-terminated). */
typedef struct kr_json_key {
    const char *text;
    size_t len;
} kr_json_key_t;
#define KR_JSON_PATH_MAX 16
/* As kr_json_decode, but pushes only the member at path[0].path[1]...
 * (nil when there is none) and builds nothing else: the rest of the text
 * is still checked, so bad JSON fails the same way. n == 0: the whole
 * value. [-0, +(0|1), m] */
int kr_json_decode_path(lua_State *L, const char *s, size_t len, const kr_json_key_t *path,
                        size_t n, char *errstr, size_t errsize);
/* Lua-facing: the string arguments from `first` to the top are the path;
 * pushes the member (or nil), or nil, err for bad JSON; raises for a key
 * that is not a string or more than KR_JSON_PATH_MAX keys. Returns the
 * number of results. [-0, +(1|2), e] */
int kr_json_push_path(lua_State *L, int first, const char *s, size_t len);
/* Appends `s` as a JSON string literal (quoted, escaped), for kroute's own
 * C-side texts (errors, admin answers); handler values go through
 * kr_json_encode. */
void kr_json_add_string(kr_buf_t *b, const char *s, size_t len);
/* The JSON text of the number at idx (without converting the slot): a Lua
 * integer exactly, a float as JavaScript writes it (jsnum.h). */
size_t kr_json_number_text(lua_State *L, int idx, char out[KR_JSNUM_MAX]);
/* [-0, +1, -] the kroute.json.null sentinel */
void kr_json_push_null(lua_State *L);
int kr_json_is_null(lua_State *L, int idx);

/* require "kroute.json": encode, decode, null, array */
int luaopen_kroute_json(lua_State *L);

#endif
