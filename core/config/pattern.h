/* pattern.h - topic patterns as written in a route's `match`:
 * an exact name, a glob (payment.*, ranking.?, [ab]*), or /regex/.
 * Compiled once at load; kr_pattern_match() is the per-topic test and
 * `subscription` is what the consumer hands librdkafka's subscribe(). */
#ifndef KR_PATTERN_H
#define KR_PATTERN_H

#include <regex.h>
#include <stddef.h>

typedef enum { KR_MATCH_EXACT, KR_MATCH_GLOB, KR_MATCH_REGEX } kr_match_kind_t;

typedef struct kr_pattern {
    kr_match_kind_t kind;
    char *text;         /* the name, the glob, or the regex body */
    char *subscription; /* exact name, or a "^..." regex for librdkafka */
    regex_t re;         /* KR_MATCH_REGEX only */
} kr_pattern_t;

/* Fills `p` from the route-file text; returns 0, or -1 with errstr set. */
int kr_pattern_compile(kr_pattern_t *p, const char *spec, char *errstr, size_t errsize);
/* 1 if `topic` matches. Globs and regexes never match DLQ topics ("*.dlq"):
 * a `payment.*` route must not consume its own dead letters. */
int kr_pattern_match(const kr_pattern_t *p, const char *topic);
void kr_pattern_free(kr_pattern_t *p);

#endif
