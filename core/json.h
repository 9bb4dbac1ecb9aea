/* json.h - JSON <-> Lua values, the kroute.json module.
 * Written for kroute rather than taken from lua-cjson because the wire
 * needs what cjson does not give: Lua 5.4 integers kept exact (ids past
 * 2^53), numbers in their shortest round-trip form (6, 0.75 - what NestJS
 * and JavaScript print), and empty arrays that survive a round trip. */
#ifndef KR_JSON_H
#define KR_JSON_H

#include <lua.h>

#include "buf.h"

/* Pushes the JSON text of the value at `idx` as a Lua string and returns
 * 0; returns -1 with errstr set and pushes nothing when the value has no
 * JSON form (cycles/too deep, NaN, functions, bad keys). The text is built
 * in memory owned by L, so under a VM's cap a text that does not fit
 * raises Lua's memory error (and leaves nothing behind). [-0, +(0|1), m] */
int kr_json_encode(lua_State *L, int idx, char *errstr, size_t errsize);
/* Pushes the decoded value of `s` and returns 0; on bad JSON pushes nothing
 * and returns -1 with errstr "... at byte N". Its scratch memory is owned
 * by L as well: a memory error while decoding leaks nothing. [-0, +(0|1), m] */
int kr_json_decode(lua_State *L, const char *s, size_t len, char *errstr, size_t errsize);
/* Appends `s` as a JSON string literal (quoted, escaped), for kroute's own
 * C-side texts (errors, admin answers); handler values go through
 * kr_json_encode. */
void kr_json_add_string(kr_buf_t *b, const char *s, size_t len);
/* [-0, +1, -] the kroute.json.null sentinel */
void kr_json_push_null(lua_State *L);
int kr_json_is_null(lua_State *L, int idx);

/* require "kroute.json": encode, decode, null, array */
int luaopen_kroute_json(lua_State *L);

#endif
