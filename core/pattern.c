/* pattern.c - compile and match route topic patterns (see pattern.h).
 * Matching uses fnmatch(3) for globs and POSIX extended regexes for /re/;
 * the librdkafka subscription string is derived here too so the broker-side
 * subscription and kroute's own per-topic routing can never disagree on
 * which topics a glob covers (kroute filters what librdkafka over-delivers). */
#include "pattern.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (n >= 2 && spec[0] == '/' && spec[n - 1] == '/') {
        p->kind = KR_MATCH_REGEX;
        p->text = strndup(spec + 1, n - 2);
        if (!*p->text) {
            snprintf(errstr, errsize, "empty regex pattern '//'");
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
