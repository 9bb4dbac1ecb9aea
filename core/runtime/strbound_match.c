/* strbound_match.c - a Lua 5.4 pattern matcher that spends steps from
 * the run's budget (see strbound_internal.h): written from the manual's
 * section 6.4.1, with lstrlib's error texts and limits, so a pattern
 * matches, captures and fails as in stock Lua. It is only the matcher:
 * string.find/match/gmatch/gsub around it are in strbound.c. Each move
 * spends a step, so a backtracking pattern stops at the deadline. */
#include <ctype.h>
#include <string.h>

#include "runtime/strbound_internal.h"

void kr_sb_ms_init(match_state_t *ms, lua_State *L, bound_ctx_t *ctx, const char *s,
                    size_t ls, const char *p, size_t lp)
{
    ms->L = L;
    ms->ctx = ctx;
    ms->src_init = s;
    ms->src_end = s + ls;
    ms->p_end = p + lp;
}

/* before each new start position */
void kr_sb_ms_reset(match_state_t *ms)
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
        const char *res = kr_sb_do_match(ms, s + n, ep + 1);
        if (res)
            return res;
    }
    return NULL;
}

/* x-: take as few as possible, one more each time the rest fails. */
static const char *min_expand(match_state_t *ms, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *res = kr_sb_do_match(ms, s, ep + 1);
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
    const char *res = kr_sb_do_match(ms, s, p);
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
    const char *res = kr_sb_do_match(ms, s, p);
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
const char *kr_sb_do_match(match_state_t *ms, const char *s, const char *p)
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
            const char *res = kr_sb_do_match(ms, s + 1, ep + 1);
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
ptrdiff_t kr_sb_get_capture(match_state_t *ms, int i, const char *s, const char *e,
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

void kr_sb_push_capture(match_state_t *ms, int i, const char *s, const char *e)
{
    const char *cap;
    ptrdiff_t len = kr_sb_get_capture(ms, i, s, e, &cap);
    if (len != CAP_POSITION)
        lua_pushlstring(ms->L, cap, (size_t)len);
}

/* [-0, +n, e] the captures, or the whole match when there are none and s
 * is given (find pushes only explicit captures: s == NULL). */
int kr_sb_push_captures(match_state_t *ms, const char *s, const char *e)
{
    int n = (ms->level == 0 && s) ? 1 : ms->level;
    luaL_checkstack(ms->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        kr_sb_push_capture(ms, i, s, e);
    return n;
}
