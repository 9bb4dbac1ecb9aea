/* strbound.h - time-bounded replacements for the string and table library
 * functions whose C loops a count hook cannot interrupt.
 * A count hook fires only between Lua instructions, so one long C call
 * (string.rep("", 1e15), a backtracking string.match, table.move over 1e15
 * slots, table.insert into a table whose length is 2^50) escapes the
 * deadline. The replacements behave as Lua 5.4's own functions but count
 * their steps and ask a caller-given check every KR_BOUND_STEPS steps.
 * This file knows nothing of deadlines or memory caps: the caller does. */
#ifndef KR_STRBOUND_H
#define KR_STRBOUND_H

#include <lua.h>
#include <stddef.h>

/* Steps (pattern-matcher moves, table slots copied) between two checks. */
#define KR_BOUND_STEPS 4096

/* Called from inside a bounded function every KR_BOUND_STEPS steps, on the
 * thread running it. Returns NULL to go on, or the error text the function
 * then raises (copied at once, so a buffer in `ud` may be reused). It must
 * leave L's stack as it found it; it may also raise itself. */
typedef const char *(*kr_bound_check_fn)(lua_State *L, void *ud);
/* Bytes a new string may still take (string.rep checks its result size
 * against it before allocating anything). */
typedef size_t (*kr_bound_mem_fn)(void *ud);

/* [-0, +0, m] Replaces string.find, match, gmatch, gsub, rep and
 * table.move, insert, remove, concat, sort in the already-opened `string`
 * and `table` libraries of L (package.loaded), so `s:match(...)` gets them
 * too. `check` and `mem_left` may be NULL (no check, no limit); `ud` is
 * passed to both and must outlive L's use of these functions. */
void kr_strbound_open(lua_State *L, kr_bound_check_fn check, void *ud,
                      kr_bound_mem_fn mem_left);

/* [-0, +0, m] The same on the tables at stack indices `strlib` and
 * `tablib` (either may be 0 to skip it). The value at index `anchor` (0:
 * none) is kept alive as long as any of the installed functions is, so a
 * caller can tie `ud`'s lifetime to a userdata. */
void kr_strbound_install(lua_State *L, int strlib, int tablib, int anchor,
                         kr_bound_check_fn check, void *ud, kr_bound_mem_fn mem_left);

#endif
