/* pattern.c - compile and match route topic patterns (see pattern.h).
 * Matching uses fnmatch(3) for globs and POSIX extended regexes for /re/;
 * the librdkafka subscription string is derived here too so the broker-side
 * subscription and kroute's own per-topic routing can never disagree on
 * which topics a glob covers (kroute filters what librdkafka over-delivers). */
#include "config/pattern.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits that keep glibc's regcomp/regexec bounded in time and memory: it
 * is kroute's matcher and librdkafka's (for the subscription). A counted
 * repetition is compiled as that many copies of its atom, and an unanchored
 * search tries every start position, so `[a-z]{0,249}` four times over
 * already costs 0.6 s per topic; backreferences make glibc recurse without
 * bound (a crash). */
#define RE_MAX_LEN 256   /* characters between the slashes */
#define RE_MAX_DEPTH 8   /* nested groups */
#define RE_MAX_SIZE 256  /* atoms once every {n,m} is expanded */
#define PATTERN_MAX_LEN 512

typedef struct re_check {
    const char *s;      /* next character */
    int depth;
    const char *err;    /* the first problem, a static string */
} re_check_t;

static size_t re_alt(re_check_t *c);

static size_t re_fail(re_check_t *c, const char *why)
{
    if (!c->err)
        c->err = why;
    return 0;
}

/* `[...]`: a set of single characters; POSIX classes and collating
 * elements are left out (librdkafka and topic names need neither). */
static void re_bracket(re_check_t *c)
{
    const char *p = c->s + 1;
    if (*p == '^')
        p++;
    if (*p == ']')
        p++; /* a leading ] is a member */
    for (; *p && *p != ']'; p++)
        if (p[0] == '[' && (p[1] == ':' || p[1] == '=' || p[1] == '.')) {
            re_fail(c, "[:class:], [=x=] and [.x.] are not supported inside [...]");
            return;
        }
    if (!*p) {
        re_fail(c, "unterminated [");
        return;
    }
    c->s = p + 1;
}

/* One atom; returns its size, 0 after an error. */
static size_t re_atom(re_check_t *c)
{
    char ch = *c->s;
    if (ch == '(') {
        if (++c->depth > RE_MAX_DEPTH)
            return re_fail(c, "groups are nested more than 8 deep");
        c->s++;
        size_t n = re_alt(c);
        if (c->err)
            return 0;
        if (*c->s != ')')
            return re_fail(c, "unmatched (");
        c->s++;
        c->depth--;
        return n;
    }
    if (ch == '[') {
        re_bracket(c);
        return 1;
    }
    if (ch == '\\') {
        unsigned char e = (unsigned char)c->s[1];
        if (e >= '1' && e <= '9')
            return re_fail(c, "backreferences like \\1 are not supported");
        /* glibc reads \w, \b, \<, \>, \` and \' as GNU operators */
        if (!ispunct(e) || strchr("<>`'", e))
            return re_fail(c, "a backslash may only escape punctuation (no \\w, \\b, \\< ...)");
        c->s += 2;
        return 1;
    }
    if (ch == '*' || ch == '+' || ch == '?' || ch == '{')
        return re_fail(c, "a repetition (*, +, ?, {n}) has nothing to repeat");
    if (ch == ']' || ch == '}')
        return re_fail(c, "an unescaped ] or } (write \\] or \\})");
    if ((unsigned char)ch < 0x20 || (unsigned char)ch > 0x7e)
        return re_fail(c, "only printable ASCII characters are supported");
    c->s++;
    return 1;
}

/* `{n}`, `{n,}` or `{n,m}` at c->s; the copies glibc makes, 0 on error. */
static size_t re_count(re_check_t *c)
{
    char *end;
    const char *p = c->s + 1;
    if (!isdigit((unsigned char)*p))
        return re_fail(c, "a repetition {n,m} needs a number");
    unsigned long n = strtoul(p, &end, 10), m = n;
    p = end;
    if (*p == ',') {
        p++;
        if (isdigit((unsigned char)*p)) {
            m = strtoul(p, &end, 10);
            p = end;
        } else {
            m = n + 1; /* {n,} is n copies and a star */
        }
    }
    if (*p != '}' || m < n)
        return re_fail(c, "malformed repetition {n,m}");
    if (m > RE_MAX_SIZE)
        return re_fail(c, "a repetition count is above 256");
    c->s = p + 1;
    return m ? m : 1;
}

/* branch ('|' branch)*: the size of the expanded regex, 0 after an error. */
static size_t re_alt(re_check_t *c)
{
    size_t size = 0;
    for (;;) {
        const char *branch = c->s;
        while (*c->s && *c->s != '|' && *c->s != ')') {
            size_t atom;
            if (*c->s == '^' || *c->s == '$') {
                c->s++;
                atom = 1;
                if (*c->s == '*' || *c->s == '+' || *c->s == '?' || *c->s == '{')
                    return re_fail(c, "an anchor (^ or $) cannot be repeated");
            } else {
                atom = re_atom(c);
            }
            size_t copies = 1;
            if (!c->err && *c->s == '{')
                copies = re_count(c);
            else if (!c->err && (*c->s == '*' || *c->s == '+' || *c->s == '?'))
                copies = *c->s++ == '+' ? 2 : 1;
            if (c->err)
                return 0;
            if (*c->s == '*' || *c->s == '+' || *c->s == '?' || *c->s == '{')
                return re_fail(c, "two repetitions in a row (write (a+)* or a single one)");
            size += atom * copies;
            if (size > RE_MAX_SIZE)
                return re_fail(c, "too complex: it expands to more than 256 atoms "
                                  "(every {n,m} copies what it repeats)");
        }
        if (c->s == branch)
            return re_fail(c, "an empty alternative (write (x)? instead of (x|))");
        if (*c->s != '|')
            return size;
        c->s++;
    }
}

/* NULL if glibc's matcher is known to handle `re` in bounded time and
 * memory, else why not. */
static const char *re_unbounded(const char *re)
{
    if (strlen(re) > RE_MAX_LEN)
        return "longer than 256 characters";
    re_check_t c = {.s = re};
    re_alt(&c);
    if (!c.err && *c.s == ')')
        c.err = "unmatched )";
    return c.err;
}

static int has_glob_chars(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

static int is_dlq_topic(const char *topic)
{
    size_t n = strlen(topic);
    return n >= 4 && strcmp(topic + n - 4, ".dlq") == 0;
}

/* Translate a glob into an anchored regex librdkafka understands. */
static char *glob_to_regex(const char *glob)
{
    size_t n = strlen(glob);
    char *out = malloc(n * 2 + 3), *o = out;
    if (!out)
        return NULL;
    *o++ = '^';
    for (const char *g = glob; *g; g++) {
        switch (*g) {
        case '*': *o++ = '.'; *o++ = '*'; break;
        case '?': *o++ = '.'; break;
        case '[':
            /* a class copied through verbatim, `!` negation as `^`; an
             * unterminated `[` is a literal, as fnmatch(3) reads it */
            if (!strchr(g + 1, ']')) {
                *o++ = '\\';
                *o++ = '[';
                break;
            }
            *o++ = *g++;
            if (*g == '!') { *o++ = '^'; g++; }
            while (*g != ']')
                *o++ = *g++;
            *o++ = ']';
            break;
        case '.': case '+': case '(': case ')': case '{': case '}': case '|':
        case '^': case '$': case '\\':
            *o++ = '\\';
            *o++ = *g;
            break;
        default: *o++ = *g;
        }
    }
    *o++ = '$';
    *o = '\0';
    return out;
}

int kr_pattern_compile(kr_pattern_t *p, const char *spec, char *errstr, size_t errsize)
{
    memset(p, 0, sizeof(*p));
    int compiled = 0;
    size_t n = strlen(spec);
    if (n == 0) {
        snprintf(errstr, errsize, "empty topic pattern");
        return -1;
    }
    if (n > PATTERN_MAX_LEN) {
        snprintf(errstr, errsize, "topic pattern is longer than %d characters",
                 PATTERN_MAX_LEN);
        return -1;
    }
    if (n >= 2 && spec[0] == '/' && spec[n - 1] == '/') {
        p->kind = KR_MATCH_REGEX;
        p->text = strndup(spec + 1, n - 2);
        if (!*p->text) {
            snprintf(errstr, errsize, "empty regex pattern '//'");
            goto fail;
        }
        const char *why = re_unbounded(p->text);
        if (why) {
            snprintf(errstr, errsize, "invalid regex /%s/: %s", p->text, why);
            goto fail;
        }
        int rc = regcomp(&p->re, p->text, REG_EXTENDED | REG_NOSUB);
        if (rc != 0) {
            char buf[256];
            regerror(rc, &p->re, buf, sizeof(buf));
            snprintf(errstr, errsize, "invalid regex /%s/: %s", p->text, buf);
            goto fail;
        }
        compiled = 1;
        /* librdkafka treats a subscription as a regex only when it starts
         * with '^'; an unanchored user regex means "contains". */
        if (p->text[0] == '^')
            p->subscription = strdup(p->text);
        else if (asprintf(&p->subscription, "^.*(%s)", p->text) < 0)
            p->subscription = NULL;
    } else if (has_glob_chars(spec)) {
        p->kind = KR_MATCH_GLOB;
        p->text = strdup(spec);
        p->subscription = glob_to_regex(spec);
    } else {
        p->kind = KR_MATCH_EXACT;
        p->text = strdup(spec);
        p->subscription = strdup(spec);
    }
    if (!p->text || !p->subscription) {
        snprintf(errstr, errsize, "out of memory");
        goto fail;
    }
    return 0;
fail:
    if (compiled)
        regfree(&p->re);
    free(p->text);
    free(p->subscription);
    memset(p, 0, sizeof(*p));
    return -1;
}

int kr_pattern_match(const kr_pattern_t *p, const char *topic)
{
    switch (p->kind) {
    case KR_MATCH_EXACT: return strcmp(p->text, topic) == 0;
    case KR_MATCH_GLOB: return !is_dlq_topic(topic) && fnmatch(p->text, topic, 0) == 0;
    case KR_MATCH_REGEX:
        return !is_dlq_topic(topic) && regexec(&p->re, topic, 0, NULL, 0) == 0;
    }
    return 0;
}

void kr_pattern_free(kr_pattern_t *p)
{
    if (p->kind == KR_MATCH_REGEX && p->text)
        regfree(&p->re);
    free(p->text);
    free(p->subscription);
    memset(p, 0, sizeof(*p));
}
