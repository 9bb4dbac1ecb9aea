/* buf.h - a growable byte buffer for building JSON text and record values.
 * Header-only because it is four tiny functions; aborts on out-of-memory
 * like the rest of kroute's C allocations (Lua memory is capped separately). */
#ifndef KR_BUF_H
#define KR_BUF_H

#include <stdlib.h>
#include <string.h>

typedef struct kr_buf {
    char *data;
    size_t len, cap;
} kr_buf_t;

static inline void kr_buf_reserve(kr_buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = realloc(b->data, cap);
    if (!b->data)
        abort();
    b->cap = cap;
}

static inline void kr_buf_add(kr_buf_t *b, const void *p, size_t n)
{
    kr_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void kr_buf_addc(kr_buf_t *b, char c)
{
    kr_buf_reserve(b, 1);
    b->data[b->len++] = c;
}

static inline void kr_buf_free(kr_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#endif
