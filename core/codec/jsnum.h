/* jsnum.h - a double as the text JavaScript gives it (Number.prototype.
 * toString, the number text of JSON.stringify): the shortest digits that
 * read back as the same double, laid out by ECMAScript's Number::toString
 * rules (1e21 and up, and below 1e-6, in exponent form). NestJS peers
 * write numbers this way, so kroute's output is byte-identical to theirs. */
#ifndef KR_JSNUM_H
#define KR_JSNUM_H

#include <stddef.h>

#define KR_JSNUM_MAX 32 /* the longest text, "-1.2345678901234567e-308", and NUL */

/* Writes the text of finite `d` (NUL-terminated) and returns its length. */
size_t kr_jsnum_text(double d, char out[KR_JSNUM_MAX]);

#endif
