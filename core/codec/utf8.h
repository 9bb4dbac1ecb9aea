/* utf8.h - UTF-8 well-formedness, and repairing ill-formed text the way
 * Node.js does (Buffer.toString, TextDecoder): each maximal ill-formed
 * subsequence becomes one U+FFFD (the WHATWG Encoding Standard's decoder).
 * Used where kroute must produce text a JavaScript peer would: the JSON
 * encoder and the NestJS view of a message. Pure C, no allocation. */
#ifndef KR_UTF8_H
#define KR_UTF8_H

#include <stddef.h>

/* U+FFFD REPLACEMENT CHARACTER as UTF-8 */
#define KR_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* The sequence at p (avail > 0 bytes): returns its length and sets *ok
 * to 1 for a well-formed character (RFC 3629: no overlong forms, no
 * surrogates, at most U+10FFFF), or returns the length of the maximal
 * ill-formed subsequence (>= 1, replaced by one U+FFFD) with *ok = 0. */
size_t kr_utf8_next(const char *p, size_t avail, int *ok);
/* Length of the longest well-formed prefix of s: len when all of s is. */
size_t kr_utf8_valid_prefix(const char *s, size_t len);

#endif
