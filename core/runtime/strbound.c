/* strbound.c - bounded string/table library functions (see strbound.h).
 * Holds string.find/match/gmatch/gsub on a Lua 5.4 pattern matcher
 * (strbound_match.c), string.rep with its size checked up front, and the
 * installing of them and of the table functions (strbound_table.c:
 * table.move/insert/remove/concat/sort counting the slots they touch).
 * Every loop whose length the caller controls spends steps from one budget
 * per Lua state; when it runs out the caller's check decides whether to go
 * on. It does not decide what "too long" means: the check callback does. */
#include "runtime/strbound.h"

#include <ctype.h>
#include <string.h>

#include <lualib.h>

#include "runtime/strbound_internal.h"

/* Refills the budget and asks the caller whether to go on; raises its text
 * if not. Rare (once per KR_BOUND_STEPS), so kept out of line. */
void kr_sb_bound_check(bound_ctx_t *ctx, lua_State *L)
{
    ctx->budget = KR_BOUND_STEPS;
    if (!ctx->check)
        return;
    const char *msg = ctx->check(L, ctx->ud);
    if (msg) {
        luaL_checkstack(L, 1, NULL);
        lua_pushstring(L, msg);
        lua_error(L);
    }
}

/* A pattern without magic characters is searched as plain text. The
 * check runs per NUL-separated piece, as strpbrk stops at a NUL. */
static int is_plain(const char *p, size_t lp)
{
    size_t at = 0;
    do {
        if (strpbrk(p + at, SPECIALS))
            return 0;
        at += strlen(p + at) + 1;
    } while (at <= lp);
    return 1;
}

/* 1-based init (negative: from the end) -> 0-based offset; may be ls+1. */
static size_t start_offset(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos - 1;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 0;
    return len + (size_t)pos;
}

static int find_or_match(lua_State *L, int find)
{
    bound_ctx_t *ctx = ctx_of(L);
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_offset(luaL_optinteger(L, 3, 1), ls);
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || is_plain(p, lp))) {
        /* glibc's memmem is linear in both lengths: nothing to bound */
        const char *at = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (at) {
            lua_pushinteger(L, (at - s) + 1);
            lua_pushinteger(L, (lua_Integer)((at - s) + lp));
            return 2;
        }
        luaL_pushfail(L);
        return 1;
    }
    match_state_t ms;
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    kr_sb_ms_init(&ms, L, ctx, s, ls, p, lp);
    const char *from = s + init;
    do {
        kr_sb_ms_reset(&ms);
        const char *e = kr_sb_do_match(&ms, from, p);
        if (e) {
            if (!find)
                return kr_sb_push_captures(&ms, from, e);
            lua_pushinteger(L, (from - s) + 1);
            lua_pushinteger(L, e - s);
            return kr_sb_push_captures(&ms, NULL, NULL) + 2;
        }
    } while (from++ < ms.src_end && !anchor);
    luaL_pushfail(L);
    return 1;
}

/* string.find(s, pattern [, init [, plain]]) */
static int sb_find(lua_State *L)
{
    return find_or_match(L, 1);
}

/* string.match(s, pattern [, init]) */
static int sb_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* gmatch's position between calls; the subject and pattern strings are
 * the iterator's upvalues 2 and 3, which keeps these pointers valid. */
typedef struct gmatch_state {
    size_t next;           /* offset of the next start; ls+1 once past the end */
    const char *lastmatch; /* end of the previous match: no empty match there */
} gmatch_state_t;

static int gmatch_next(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    size_t ls, lp;
    const char *s = lua_tolstring(L, lua_upvalueindex(2), &ls);
    const char *p = lua_tolstring(L, lua_upvalueindex(3), &lp);
    gmatch_state_t *gm = lua_touserdata(L, lua_upvalueindex(4));
    match_state_t ms;
    kr_sb_ms_init(&ms, L, ctx, s, ls, p, lp);
    for (size_t at = gm->next; at <= ls; at++) {
        kr_sb_ms_reset(&ms);
        const char *e = kr_sb_do_match(&ms, s + at, p);
        if (e && e != gm->lastmatch) {
            gm->next = (size_t)(e - s);
            gm->lastmatch = e;
            return kr_sb_push_captures(&ms, s + at, e);
        }
    }
    gm->next = ls + 1;
    return 0;
}

/* string.gmatch(s, pattern [, init]): '^' is an ordinary character here. */
static int sb_gmatch(lua_State *L)
{
    size_t ls;
    luaL_checklstring(L, 1, &ls);
    luaL_checkstring(L, 2);
    size_t init = start_offset(luaL_optinteger(L, 3, 1), ls);
    lua_settop(L, 2);
    gmatch_state_t *gm = lua_newuserdatauv(L, sizeof(*gm), 0);
    gm->next = init > ls ? ls + 1 : init;
    gm->lastmatch = NULL;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1); /* ctx, s, p, state */
    lua_pushcclosure(L, gmatch_next, 4);
    return 1;
}

/* A replacement string: %0-%9 are captures, %% is a percent sign. */
static void add_repl_string(match_state_t *ms, luaL_Buffer *b, const char *s, const char *e)
{
    lua_State *L = ms->L;
    size_t l;
    const char *r = lua_tolstring(L, 3, &l);
    spend(ms->ctx, L, 1 + (long)(l / 32)); /* empty captures make no output */
    const char *pct;
    while ((pct = memchr(r, ESC, l)) != NULL) {
        luaL_addlstring(b, r, (size_t)(pct - r));
        pct++; /* the NUL after the string when % is last */
        if (*pct == ESC) {
            luaL_addchar(b, ESC);
        } else if (*pct == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit((unsigned char)*pct)) {
            const char *cap;
            ptrdiff_t len = kr_sb_get_capture(ms, *pct - '1', s, e, &cap);
            if (len == CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, cap, (size_t)len);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", ESC);
        }
        l -= (size_t)(pct + 1 - r);
        r = pct + 1;
    }
    luaL_addlstring(b, r, l);
}

/* Appends the replacement of the match s..e; returns whether it differs
 * from the match (false/nil from a table or function keeps the match). */
static int add_replacement(match_state_t *ms, luaL_Buffer *b, const char *s, const char *e,
                           int repl_type)
{
    lua_State *L = ms->L;
    if (repl_type == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = kr_sb_push_captures(ms, s, e);
        lua_call(L, n, 1);
    } else if (repl_type == LUA_TTABLE) {
        kr_sb_push_capture(ms, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_repl_string(ms, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

/* string.gsub(s, pattern, repl [, n]) */
static int sb_gsub(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int repl_type = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L,
                     repl_type == LUA_TNUMBER || repl_type == LUA_TSTRING ||
                         repl_type == LUA_TFUNCTION || repl_type == LUA_TTABLE,
                     3, "string/function/table");
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int anchor = *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    match_state_t ms;
    kr_sb_ms_init(&ms, L, ctx, src, ls, p, lp);
    const char *lastmatch = NULL;
    lua_Integer n = 0;
    int changed = 0;
    while (n < max_n) {
        kr_sb_ms_reset(&ms);
        const char *e = kr_sb_do_match(&ms, src, p);
        if (e && e != lastmatch) {
            n++;
            changed |= add_replacement(&ms, &b, src, e, repl_type);
            src = lastmatch = e;
        } else if (src < ms.src_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    if (!changed) {
        lua_pushvalue(L, 1); /* the subject itself, no copy */
    } else {
        luaL_addlstring(&b, src, (size_t)(ms.src_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

/* string.rep(s, n [, sep]): the size is known up front, so an empty result
 * costs nothing and one too big for the memory left fails before any
 * allocation; the copy doubles the filled part instead of looping n times. */
static int sb_rep(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    size_t l, lsep;
    const char *s = luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &lsep);
    if (n <= 0 || l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (l + lsep < l || l + lsep > MAX_STRING / (size_t)n)
        return luaL_error(L, "resulting string too large");
    size_t total = (size_t)n * l + (size_t)(n - 1) * lsep;
    if (ctx->mem_left) {
        size_t left = ctx->mem_left(ctx->ud);
        if (total > left) {
            /* a memory error like any other allocation past the cap: the
             * capped allocator refuses this block before any malloc */
            lua_newuserdatauv(L, total, 0);
            return luaL_error(L, "not enough memory: string.rep would build %I bytes, more "
                                 "than the %I bytes left under the memory limit",
                              (lua_Integer)total, (lua_Integer)left);
        }
    }
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, total);
    memcpy(out, s, l);
    size_t filled = l;
    if (n > 1) { /* one period "s sep", then copies of what is there */
        memcpy(out + l, sep, lsep);
        filled += lsep;
        while (filled < total) {
            size_t chunk = filled < total - filled ? filled : total - filled;
            memcpy(out + filled, out, chunk);
            filled += chunk;
        }
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* ------------------------------------------------------------- install */

static const luaL_Reg string_funcs[] = {
    {"find", sb_find},   {"match", sb_match}, {"gmatch", sb_gmatch},
    {"gsub", sb_gsub},   {"rep", sb_rep},     {NULL, NULL},
};

static const luaL_Reg table_funcs[] = {
    {"move", kr_sb_move},     {"insert", kr_sb_insert}, {"remove", kr_sb_remove},
    {"concat", kr_sb_concat}, {NULL, NULL},
};

void kr_strbound_install(lua_State *L, int strlib, int tablib, int anchor,
                         kr_bound_check_fn check, void *ud, kr_bound_mem_fn mem_left)
{
    strlib = strlib ? lua_absindex(L, strlib) : 0;
    tablib = tablib ? lua_absindex(L, tablib) : 0;
    anchor = anchor ? lua_absindex(L, anchor) : 0;
    bound_ctx_t *ctx = lua_newuserdatauv(L, sizeof(*ctx), 1);
    ctx->check = check;
    ctx->mem_left = mem_left;
    ctx->ud = ud;
    ctx->budget = KR_BOUND_STEPS;
    if (anchor) {
        lua_pushvalue(L, anchor);
        lua_setiuservalue(L, -2, 1);
    }
    if (strlib) {
        lua_pushvalue(L, strlib);
        lua_pushvalue(L, -2);
        luaL_setfuncs(L, string_funcs, 1);
        lua_pop(L, 1);
    }
    if (tablib) {
        lua_pushvalue(L, tablib);
        lua_pushvalue(L, -2);
        luaL_setfuncs(L, table_funcs, 1);
        if (lua_getfield(L, -1, "sort") == LUA_TFUNCTION) { /* wrapped, not replaced */
            lua_pushvalue(L, -3);
            lua_insert(L, -2);
            lua_pushcclosure(L, kr_sb_sort, 2);
            lua_setfield(L, -2, "sort");
        } else {
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* ctx: the closures hold it */
}

void kr_strbound_open(lua_State *L, kr_bound_check_fn check, void *ud, kr_bound_mem_fn mem_left)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_STRLIBNAME);
    lua_getfield(L, -2, LUA_TABLIBNAME);
    kr_strbound_install(L, lua_istable(L, -2) ? -2 : 0, lua_istable(L, -1) ? -1 : 0, 0, check,
                        ud, mem_left);
    lua_pop(L, 3);
}
