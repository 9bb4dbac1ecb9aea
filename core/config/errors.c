/* errors.c - the error list behind kr_errors_t (see errors.h). */
#include "config/errors.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "grow.h"

void kr_errors_add(kr_errors_t *errs, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    errs->msgs = kr_grow(errs->msgs, &errs->cap, errs->cnt, sizeof(*errs->msgs), 8);
    errs->msgs[errs->cnt++] = msg;
}

void kr_errors_free(kr_errors_t *errs)
{
    for (size_t i = 0; i < errs->cnt; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->cnt = errs->cap = 0;
}
