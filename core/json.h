/* json.h - JSON <-> Lua values, the kroute.json module.
 * Written for kroute rather than taken from lua-cjson because the wire
 * needs what cjson does not give: Lua 5.4 integers kept exact (ids past
 * 2^53), numbers in their shortest round-trip form (6, 0.75 - what NestJS
 * and JavaScript print), and empty arrays that survive a round trip. */
#ifndef KR_JSON_H
#define KR_JSON_H

#include <lua.h>

#include "buf.h"

/* Appends the JSON text of the value at `idx` to `b`. Returns 0, or -1 with
 * errstr set (cycles/too deep, NaN, functions, bad keys). Does not raise. */
int kr_json_encode(lua_State *L, int idx, kr_buf_t *b, char *errstr, size_t errsize);
/* Pushes the decoded value of `s` and returns 0; on bad JSON pushes nothing
 * and returns -1 with errstr "... at byte N". [-0, +(0|1), m] */
int kr_json_decode(lua_State *L, const char *s, size_t len, char *errstr, size_t errsize);
/* Appends `s` as a JSON string literal (quoted, escaped). */
void kr_json_add_string(kr_buf_t *b, const char *s, size_t len);
/* Appends the shortest text that reads back as exactly `d`. */
void kr_json_add_number(kr_buf_t *b, lua_State *L, int idx);
/* [-0, +1, -] the kroute.json.null sentinel */
void kr_json_push_null(lua_State *L);
int kr_json_is_null(lua_State *L, int idx);

/* require "kroute.json": encode, decode, null, array */
int luaopen_kroute_json(lua_State *L);

#endif
