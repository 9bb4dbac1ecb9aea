/* engine/spares.c - see spares.h. */
#include "engine/spares.h"

#include <stdlib.h>
#include <string.h>

void *kr_spares_take(kr_spares_t *s)
{
    void *p = s->head;
    if (!p) {
        p = calloc(1, s->size);
        if (!p)
            abort();
        return p;
    }
    memcpy(&s->head, p, sizeof(void *));
    s->cnt--;
    if (s->drop)
        memset(p, 0, sizeof(void *)); /* the link */
    else
        memset(p, 0, s->size);
    return p;
}

void kr_spares_give(kr_spares_t *s, void *p)
{
    if (!p)
        return;
    if (s->cnt >= s->max) {
        if (s->drop)
            s->drop(p);
        free(p);
        return;
    }
    memcpy(p, &s->head, sizeof(void *));
    s->head = p;
    s->cnt++;
}

void kr_spares_free(kr_spares_t *s)
{
    while (s->head) {
        void *p = s->head;
        memcpy(&s->head, p, sizeof(void *));
        if (s->drop) {
            memset(p, 0, sizeof(void *));
            s->drop(p);
        }
        free(p);
    }
    s->cnt = 0;
}
