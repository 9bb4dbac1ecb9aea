/* errors.h - a growable list of "file:line:col: message" strings.
 * Loading collects every problem it finds instead of stopping at the first,
 * so `kroute check` can print them all in one go. */
#ifndef KR_ERRORS_H
#define KR_ERRORS_H

#include <stddef.h>

typedef struct kr_errors {
    char **msgs;
    size_t cnt, cap;
} kr_errors_t;

void kr_errors_add(kr_errors_t *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void kr_errors_free(kr_errors_t *errs);

#endif
