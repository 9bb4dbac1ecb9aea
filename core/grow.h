/* grow.h - room for one more element at the end of a malloc'd array that
 * doubles as it fills: the one way kroute's growing lists (a run's
 * records, parked requests, collected errors...) make room. Header-only
 * because it is one small function; aborts when memory is out, like the
 * rest of kroute's C allocations (Lua memory is capped separately). */
#ifndef KR_GROW_H
#define KR_GROW_H

#include <stdint.h>
#include <stdlib.h>

/* Returns `arr` (realloc'd to twice *cap elements, or `first` when empty,
 * with *cap updated) such that element `cnt` fits. Elements past cnt are
 * uninitialised. Usage: a = kr_grow(a, &cap, cnt, sizeof(*a), 16); */
static inline void *kr_grow(void *arr, size_t *cap, size_t cnt, size_t elem, size_t first)
{
    if (cnt < *cap)
        return arr;
    size_t n = *cap ? *cap * 2 : first;
    if (n > SIZE_MAX / elem)
        abort();
    void *p = realloc(arr, n * elem);
    if (!p)
        abort();
    *cap = n;
    return p;
}

#endif
