/* engine/spares.h - a free list of same-sized objects the dispatcher
 * makes and ends for every message (in-flight messages, produced-record
 * tickets, runs), so the steady state reuses memory instead of calling
 * malloc and free per message. Not thread-safe: only the router thread
 * takes and gives. The list owns what it holds; what was taken belongs to
 * the taker until given back (or freed with free(3), which is allowed,
 * for a list without a `drop`).
 *
 * Two kinds of list. A plain one (KR_SPARES) hands out zeroed objects. A
 * keeping one (KR_SPARES_KEEPING) hands them out as they were given back,
 * because they keep memory of their own for the next user (a run keeps
 * its record buffers: see kr_run_recycle); the giver leaves such an
 * object ready for reuse, and the list calls `drop` on one before it
 * frees it. */
#ifndef KR_ENGINE_SPARES_H
#define KR_ENGINE_SPARES_H

#include <stddef.h>

typedef struct kr_spares {
    void *head;  /* kept objects, linked through their first bytes */
    size_t cnt;
    size_t max;  /* kept at most; more given back are freed */
    size_t size; /* of each object (at least a pointer) */
    void (*drop)(void *); /* a keeping list's: frees what an object keeps */
} kr_spares_t;

#define KR_SPARES(type, most) ((kr_spares_t){NULL, 0, (most), sizeof(type), NULL})
#define KR_SPARES_KEEPING(type, most, drop) \
    ((kr_spares_t){NULL, 0, (most), sizeof(type), (drop)})

/* An object of s->size bytes: a kept one (zeroed, or for a keeping list as
 * it was given back), or a new zeroed one (aborts when memory is out, as
 * every engine allocation does). A kept one's first pointer-sized bytes
 * held the list's link: a keeping list's objects must not keep anything
 * there. */
void *kr_spares_take(kr_spares_t *s);
/* Takes over p (from kr_spares_take on the same list; NULL is ignored). */
void kr_spares_give(kr_spares_t *s, void *p);
/* Frees every kept object. */
void kr_spares_free(kr_spares_t *s);

#endif
