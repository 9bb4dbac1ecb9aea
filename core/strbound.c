/* strbound.c - bounded string/table library functions (see strbound.h).
 * Holds a Lua 5.4 pattern matcher (string.find/match/gmatch/gsub, written
 * from the manual's section 6.4.1, with lstrlib's error texts and limits),
 * string.rep with its size checked up front, and table.move/insert/remove/
 * concat/sort counting the slots they touch. Every loop whose length the
 * caller controls spends steps from one budget per Lua state; when it runs
 * out the caller's check decides whether to go on.
 * It does not decide what "too long" means: the check callback does. */
#include "strbound.h"

#include <ctype.h>
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

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

static bound_ctx_t *ctx_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Refills the budget and asks the caller whether to go on; raises its text
 * if not. Rare (once per KR_BOUND_STEPS), so kept out of line. */
static void bound_check(bound_ctx_t *ctx, lua_State *L)
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

static inline void spend(bound_ctx_t *ctx, lua_State *L, long steps)
{
    if ((ctx->budget -= steps) <= 0)
        bound_check(ctx, L);
}

/* ------------------------------------------------------------ matcher */

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

static const char *do_match(match_state_t *ms, const char *s, const char *p);

static void ms_init(match_state_t *ms, lua_State *L, bound_ctx_t *ctx, const char *s,
                    size_t ls, const char *p, size_t lp)
{
    ms->L = L;
    ms->ctx = ctx;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
}

/* before each new start position */
static void ms_reset(match_state_t *ms)
{
    ms->level = 0;
    ms->depth = MAX_DEPTH;
}

/* Position just after the single-character class starting at p. */
static const char *class_end(match_state_t *ms, const char *p)
{
    char c = *p++;
    if (c == ESC) {
        if (p == ms->p_end)
            luaL_error(ms->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^')
            p++;
        /* the first character after [ or [^ is a member even if it is ] */
        do {
            if (p == ms->p_end)
                luaL_error(ms->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == ESC && p < ms->p_end)
                p++; /* an escaped character, e.g. %] */
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

/* Does c belong to %<cl>? An unknown letter stands for itself; an upper
 * case class letter is the complement. */
static int class_has(int c, int cl)
{
    int in;
    switch (tolower(cl)) {
    case 'a': in = isalpha(c); break;
    case 'c': in = iscntrl(c); break;
    case 'd': in = isdigit(c); break;
    case 'g': in = isgraph(c); break;
    case 'l': in = islower(c); break;
    case 'p': in = ispunct(c); break;
    case 's': in = isspace(c); break;
    case 'u': in = isupper(c); break;
    case 'w': in = isalnum(c); break;
    case 'x': in = isxdigit(c); break;
    case 'z': in = c == 0; break; /* deprecated in the manual, still in 5.4 */
    default: return cl == c;
    }
    if (isupper(cl))
        in = !in;
    return in;
}

/* Does c belong to the set [...] running from p (the '[') to last (its
 * closing ']')? */
static int set_has(int c, const char *p, const char *last)
{
    int want = 1;
    if (p[1] == '^') {
        want = 0;
        p++;
    }
    while (++p < last) {
        if (*p == ESC) {
            p++;
            if (class_has(c, (unsigned char)*p))
                return want;
        } else if (p[1] == '-' && p + 2 < last) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return want;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return want;
        }
    }
    return !want;
}

/* Does the character at s match the class p..ep (ep: just after it)? */
static int single_match(match_state_t *ms, const char *s, const char *p, const char *ep)
{
    if (s >= ms->src_end)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case ESC: return class_has(c, (unsigned char)p[1]);
    case '[': return set_has(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

/* %bxy at s; p points at x. Reads *src_end (the string's terminating NUL)
 * like lstrlib does, so %b\0y behaves the same. */
static const char *match_balance(match_state_t *ms, const char *s, const char *p)
{
    if (p >= ms->p_end - 1)
        luaL_error(ms->L, "malformed pattern (missing arguments to '%%b')");
    if (*s != *p)
        return NULL;
    char open = p[0], close = p[1];
    int depth = 1;
    const char *from = s;
    while (++s < ms->src_end) {
        if (*s == close) {
            if (--depth == 0) {
                spend(ms->ctx, ms->L, s - from);
                return s + 1;
            }
        } else if (*s == open) {
            depth++;
        }
    }
    spend(ms->ctx, ms->L, s - from);
    return NULL;
}

/* x* and x+: take as many as possible, then give back one at a time. */
static const char *max_expand(match_state_t *ms, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = 0;
    while (single_match(ms, s + n, p, ep))
        n++;
    spend(ms->ctx, ms->L, n);
    for (; n >= 0; n--) {
        const char *res = do_match(ms, s + n, ep + 1);
        if (res)
            return res;
    }
    return NULL;
}

/* x-: take as few as possible, one more each time the rest fails. */
static const char *min_expand(match_state_t *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *res = do_match(ms, s, ep + 1);
        if (res)
            return res;
        if (!single_match(ms, s, p, ep))
            return NULL;
        s++;
        spend(ms->ctx, ms->L, 1);
    }
}

static const char *open_capture(match_state_t *ms, const char *s, const char *p, ptrdiff_t what)
{
    int level = ms->level;
    if (level >= MAX_CAPTURES)
        luaL_error(ms->L, "too many captures");
    ms->capture[level].init = s;
    ms->capture[level].len = what;
    ms->level = level + 1;
    const char *res = do_match(ms, s, p);
    if (!res)
        ms->level--; /* undo */
    return res;
}

static const char *close_capture(match_state_t *ms, const char *s, const char *p)
{
    int l = ms->level - 1;
    while (l >= 0 && ms->capture[l].len != CAP_UNFINISHED)
        l--;
    if (l < 0)
        luaL_error(ms->L, "invalid pattern capture");
    ms->capture[l].len = s - ms->capture[l].init;
    const char *res = do_match(ms, s, p);
    if (!res)
        ms->capture[l].len = CAP_UNFINISHED; /* undo */
    return res;
}

/* Index of the closed capture that %<digit> refers to. */
static int capture_index(match_state_t *ms, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= ms->level || ms->capture[l].len == CAP_UNFINISHED)
        luaL_error(ms->L, "invalid capture index %%%d", l + 1);
    return l;
}

/* %1-%9 in a pattern: the same bytes again. A position capture has a
 * negative length, which as a size never fits: it matches nothing. */
static const char *match_backref(match_state_t *ms, const char *s, int digit)
{
    int l = capture_index(ms, digit);
    size_t len = (size_t)ms->capture[l].len;
    if ((size_t)(ms->src_end - s) < len)
        return NULL;
    spend(ms->ctx, ms->L, (long)(len / 64));
    return memcmp(ms->capture[l].init, s, len) == 0 ? s + len : NULL;
}

/* End of the match of p at s, or NULL. Single items loop here; only
 * quantifiers and captures recurse, at most MAX_DEPTH deep. */
static const char *do_match(match_state_t *ms, const char *s, const char *p)
{
    if (ms->depth-- == 0)
        luaL_error(ms->L, "pattern too complex");
    for (;;) {
        spend(ms->ctx, ms->L, 1);
        if (p == ms->p_end)
            break;
        if (*p == '(') {
            s = p[1] == ')' ? open_capture(ms, s, p + 2, CAP_POSITION)
                            : open_capture(ms, s, p + 1, CAP_UNFINISHED);
            break;
        }
        if (*p == ')') {
            s = close_capture(ms, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == ms->p_end) {
            if (s != ms->src_end)
                s = NULL;
            break;
        }
        if (*p == ESC && p[1] == 'b') {
            s = match_balance(ms, s, p + 2);
            if (!s)
                break;
            p += 4;
            continue;
        }
        if (*p == ESC && p[1] == 'f') {
            p += 2;
            if (*p != '[')
                luaL_error(ms->L, "missing '[' after '%%f' in pattern");
            const char *ep = class_end(ms, p);
            int prev = s == ms->src_init ? '\0' : (unsigned char)s[-1];
            int cur = (unsigned char)*s; /* '\0' at the end of the subject */
            if (set_has(prev, p, ep - 1) || !set_has(cur, p, ep - 1)) {
                s = NULL;
                break;
            }
            p = ep;
            continue;
        }
        if (*p == ESC && isdigit((unsigned char)p[1])) {
            s = match_backref(ms, s, (unsigned char)p[1]);
            if (!s)
                break;
            p += 2;
            continue;
        }
        /* a single character class, maybe with a quantifier */
        const char *ep = class_end(ms, p);
        char q = *ep; /* the NUL after the pattern when there is none */
        if (ep == ms->p_end)
            q = '\0';
        if (!single_match(ms, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') { /* zero repetitions are fine */
                p = ep + 1;
                continue;
            }
            s = NULL;
            break;
        }
        if (q == '?') {
            const char *res = do_match(ms, s + 1, ep + 1);
            if (res) {
                s = res;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (q == '+') {
            s = max_expand(ms, s + 1, p, ep);
            break;
        }
        if (q == '*') {
            s = max_expand(ms, s, p, ep);
            break;
        }
        if (q == '-') {
            s = min_expand(ms, s, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    ms->depth++;
    return s;
}

/* Capture i as a string (or position) in *cap; capture 0 of a pattern
 * without captures is the whole match s..e. Returns its length or
 * CAP_POSITION (then the position is pushed). */
static ptrdiff_t get_capture(match_state_t *ms, int i, const char *s, const char *e,
                             const char **cap)
{
    if (i >= ms->level) {
        if (i != 0)
            luaL_error(ms->L, "invalid capture index %%%d", i + 1);
        *cap = s;
        return e - s;
    }
    ptrdiff_t len = ms->capture[i].len;
    *cap = ms->capture[i].init;
    if (len == CAP_UNFINISHED)
        luaL_error(ms->L, "unfinished capture");
    if (len == CAP_POSITION)
        lua_pushinteger(ms->L, (ms->capture[i].init - ms->src_init) + 1);
    return len;
}

static void push_capture(match_state_t *ms, int i, const char *s, const char *e)
{
    const char *cap;
    ptrdiff_t len = get_capture(ms, i, s, e, &cap);
    if (len != CAP_POSITION)
        lua_pushlstring(ms->L, cap, (size_t)len);
}

/* [-0, +n, e] the captures, or the whole match when there are none and s
 * is given (find pushes only explicit captures: s == NULL). */
static int push_captures(match_state_t *ms, const char *s, const char *e)
{
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(ms, i, s, e);
    return n;
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
    ms_init(&ms, L, ctx, s, ls, p, lp);
    const char *from = s + init;
    do {
        ms_reset(&ms);
        const char *e = do_match(&ms, from, p);
        if (e) {
            if (!find)
                return push_captures(&ms, from, e);
            lua_pushinteger(L, (from - s) + 1);
            lua_pushinteger(L, e - s);
            return push_captures(&ms, NULL, NULL) + 2;
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
    ms_init(&ms, L, ctx, s, ls, p, lp);
    for (size_t at = gm->next; at <= ls; at++) {
        ms_reset(&ms);
        const char *e = do_match(&ms, s + at, p);
        if (e && e != gm->lastmatch) {
            gm->next = (size_t)(e - s);
            gm->lastmatch = e;
            return push_captures(&ms, s + at, e);
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
            ptrdiff_t len = get_capture(ms, *pct - '1', s, e, &cap);
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
        int n = push_captures(ms, s, e);
        lua_call(L, n, 1);
    } else if (repl_type == LUA_TTABLE) {
        push_capture(ms, 0, s, e);
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
    ms_init(&ms, L, ctx, src, ls, p, lp);
    const char *lastmatch = NULL;
    lua_Integer n = 0;
    int changed = 0;
    while (n < max_n) {
        ms_reset(&ms);
        const char *e = do_match(&ms, src, p);
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

/* -------------------------------------------------------------- table */

/* What a table function needs from a non-table argument's metatable,
 * as ltablib's checks. */
enum { TAB_R = 1, TAB_W = 2, TAB_L = 4 };

static int has_meta(lua_State *L, const char *field, int *pushed)
{
    (*pushed)++;
    lua_pushstring(L, field);
    return lua_rawget(L, -*pushed) != LUA_TNIL;
}

static void check_table(lua_State *L, int arg, int what)
{
    if (lua_type(L, arg) == LUA_TTABLE)
        return;
    int pushed = 1; /* the metatable */
    if (lua_getmetatable(L, arg) && (!(what & TAB_R) || has_meta(L, "__index", &pushed)) &&
        (!(what & TAB_W) || has_meta(L, "__newindex", &pushed)) &&
        (!(what & TAB_L) || has_meta(L, "__len", &pushed))) {
        lua_pop(L, pushed);
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE); /* raises the usual message */
}

/* #t of a table argument, through __len as the table library does. */
static lua_Integer table_len(lua_State *L, int arg, int what)
{
    check_table(L, arg, what | TAB_L);
    return luaL_len(L, arg);
}

/* dst[t .. t+n-1] = src[f .. f+n-1] through lua_geti/lua_seti (so
 * metamethods apply), from the last slot down when `down` (a range moving
 * up inside one table). Every slot is a step: the caller-given range, or a
 * __len, can make n as large as 2^63. */
static void copy_slots(lua_State *L, bound_ctx_t *ctx, int src, lua_Integer f, lua_Integer n,
                       int dst, lua_Integer t, int down)
{
    for (lua_Integer k = 0; k < n; k++) {
        lua_Integer i = down ? n - 1 - k : k;
        lua_geti(L, src, f + i);
        lua_seti(L, dst, t + i);
        spend(ctx, L, 1);
    }
}

/* table.move(a1, f, e, t [, a2]) */
static int sb_move(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int dst = !lua_isnoneornil(L, 5) ? 5 : 1;
    check_table(L, 1, TAB_R);
    check_table(L, dst, TAB_W);
    if (e >= f) {
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f + 1;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        /* overlapping and moving up inside one table: copy from the end */
        int down = !(t > e || t <= f || (dst != 1 && !lua_compare(L, 1, dst, LUA_OPEQ)));
        copy_slots(L, ctx, 1, f, n, dst, t, down);
    }
    lua_pushvalue(L, dst);
    return 1;
}

/* table.insert(t, [pos,] value) */
static int sb_insert(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    /* first empty slot; wraps around like luaL_intop */
    lua_Integer e = (lua_Integer)((lua_Unsigned)table_len(L, 1, TAB_R | TAB_W) + 1u);
    lua_Integer pos = e;
    switch (lua_gettop(L)) {
    case 2:
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        if (e > pos) /* t[pos+1 .. e] = t[pos .. e-1] */
            copy_slots(L, ctx, 1, pos, e - pos, 1, pos + 1, 1);
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos); /* the value, on top */
    return 0;
}

/* table.remove(t [, pos]) */
static int sb_remove(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer size = table_len(L, 1, TAB_R | TAB_W);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    if (pos != size) /* Lua 5.4.4 blames argument #1 here */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1,
                      "position out of bounds");
    lua_geti(L, 1, pos); /* the result */
    if (pos < size) {    /* t[pos .. size-1] = t[pos+1 .. size] */
        copy_slots(L, ctx, 1, pos + 1, size - pos, 1, pos, 0);
        pos = size;
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

static void concat_add(lua_State *L, luaL_Buffer *b, lua_Integer i)
{
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'",
                   luaL_typename(L, -1), i);
    luaL_addvalue(b);
}

/* table.concat(list [, sep [, i [, j]]]): empty strings from __index make
 * no output, so memory alone does not bound the loop. */
static int sb_concat(lua_State *L)
{
    bound_ctx_t *ctx = ctx_of(L);
    lua_Integer last = table_len(L, 1, TAB_R);
    size_t lsep;
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    last = luaL_optinteger(L, 4, last);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (; i < last; i++) {
        concat_add(L, &b, i);
        luaL_addlstring(&b, sep, lsep);
        spend(ctx, L, 1);
    }
    if (i == last)
        concat_add(L, &b, i);
    luaL_pushresult(&b);
    return 1;
}

/* The comparison handed to the stock sort: counts one step, then runs the
 * user's function (upvalue 2) or '<'. Every step of Lua's quicksort makes a
 * comparison, so this bounds the sort without reimplementing it. */
static int sort_compare(lua_State *L)
{
    spend(ctx_of(L), L, 1);
    lua_settop(L, 2);
    if (lua_isnil(L, lua_upvalueindex(2))) {
        lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

/* Up to this many elements a plain table sorts at stock speed: its
 * comparisons cannot run long (no metatable, so no __len or __index to
 * fake elements), and the wrapped comparison costs about 3x on numbers. */
#define SORT_UNCHECKED 16384

/* table.sort(list [, comp]) through the stock sort (upvalue 2). Argument
 * errors are raised here so they name table.sort; a list with a __len
 * metamethod has it called twice (here and in the stock sort). */
static int sb_sort(lua_State *L)
{
    lua_Integer n = table_len(L, 1, TAB_R | TAB_W);
    if (n <= 1)
        return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    int plain = lua_type(L, 1) == LUA_TTABLE && !lua_getmetatable(L, 1);
    if (!plain)
        lua_pop(L, 1); /* the metatable */
    /* a Lua comparison runs under the caller's count hook */
    int hooked = lua_isfunction(L, 2) && !lua_iscfunction(L, 2);
    lua_pushvalue(L, lua_upvalueindex(2)); /* stock sort */
    lua_pushvalue(L, 1);
    if (plain && (hooked || n <= SORT_UNCHECKED)) {
        lua_pushvalue(L, 2);
    } else {
        lua_pushvalue(L, lua_upvalueindex(1)); /* ctx */
        lua_pushvalue(L, 2);                   /* comp or nil */
        lua_pushcclosure(L, sort_compare, 2);
    }
    lua_call(L, 2, 0);
    return 0;
}

/* ------------------------------------------------------------- install */

static const luaL_Reg string_funcs[] = {
    {"find", sb_find},   {"match", sb_match}, {"gmatch", sb_gmatch},
    {"gsub", sb_gsub},   {"rep", sb_rep},     {NULL, NULL},
};

static const luaL_Reg table_funcs[] = {
    {"move", sb_move},     {"insert", sb_insert}, {"remove", sb_remove},
    {"concat", sb_concat}, {NULL, NULL},
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
            lua_pushcclosure(L, sb_sort, 2);
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
