/* strbound_internal.h - what the bounded string and table functions'
 * files share and nothing else sees: lstrlib's limits, the step budget
 * (one per installed set of functions, an upvalue of each), the pattern
 * matcher's state, and the functions one strbound*.c file calls in
 * another. strbound.h is the public API. */
#ifndef KR_STRBOUND_INTERNAL_H
#define KR_STRBOUND_INTERNAL_H

#include <limits.h>
#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

#include "runtime/strbound.h"

/* lstrlib's limits, kept so that patterns fail the same way as in stock
 * Lua: captures per pattern, and matcher recursion ("pattern too
 * complex"), which also bounds the C stack. */
#define MAX_CAPTURES 32
#define MAX_DEPTH 200
/* largest string lstrlib builds ("resulting string too large") */
#define MAX_STRING ((size_t)INT_MAX)

#define ESC '%'
#define SPECIALS "^$*+?.([%-"

#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)

typedef struct bound_ctx {
    kr_bound_check_fn check;
    kr_bound_mem_fn mem_left;
    void *ud;
    long budget; /* steps left before the next check, shared by all calls */
} bound_ctx_t;

static inline bound_ctx_t *ctx_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* strbound.c: refills the budget, asks the caller's check */
void kr_sb_bound_check(bound_ctx_t *ctx, lua_State *L);

static inline void spend(bound_ctx_t *ctx, lua_State *L, long steps)
{
    if ((ctx->budget -= steps) <= 0)
        kr_sb_bound_check(ctx, L);
}

typedef struct match_state {
    const char *src_init, *src_end; /* the subject */
    const char *p_end;              /* end of the pattern */
    lua_State *L;
    bound_ctx_t *ctx;
    int depth; /* recursion left before "pattern too complex" */
    int level; /* captures opened so far */
    struct {
        const char *init;
        ptrdiff_t len; /* or CAP_UNFINISHED / CAP_POSITION */
    } capture[MAX_CAPTURES];
} match_state_t;

/* strbound_match.c: the Lua 5.4 pattern matcher */
void kr_sb_ms_init(match_state_t *ms, lua_State *L, bound_ctx_t *ctx, const char *s,
             size_t ls, const char *p, size_t lp);
void kr_sb_ms_reset(match_state_t *ms);
const char *kr_sb_do_match(match_state_t *ms, const char *s, const char *p);
ptrdiff_t kr_sb_get_capture(match_state_t *ms, int i, const char *s, const char *e,
                      const char **cap);
void kr_sb_push_capture(match_state_t *ms, int i, const char *s, const char *e);
int kr_sb_push_captures(match_state_t *ms, const char *s, const char *e);

/* strbound_table.c: table.move, insert, remove, concat, sort */
int kr_sb_move(lua_State *L);
int kr_sb_insert(lua_State *L);
int kr_sb_remove(lua_State *L);
int kr_sb_concat(lua_State *L);
int kr_sb_sort(lua_State *L);

#endif
