/* vm_alloc.c - the allocator of a handler's Lua state: the route's memory
 * cap (mem_used against mem_limit while handler code runs), and a cache of
 * small blocks. Lua allocates and frees many small objects per event
 * (decoded tables, strings, records) and frees them in bursts at each
 * collection; glibc keeps only 7 blocks of a size per thread at hand, so
 * most of those went through its slow paths. Each VM keeps up to
 * SMALL_KEEP bytes of freed blocks of up to SMALL_MAX bytes, in classes of
 * SMALL_CLASS bytes, for its next allocations. A VM is only ever entered by
 * one thread at a time (pool.c), and the cache is the VM's, so it needs no
 * lock. Every block of SMALL_MAX bytes or less is allocated with its class's
 * full size, so any block of a class can serve any request of that class. */
#include "runtime/vm_internal.h"

#include <stdlib.h>
#include <string.h>

static size_t class_of(size_t n) /* n >= 1 */
{
    return (n + KR_VM_SMALL_CLASS - 1) / KR_VM_SMALL_CLASS - 1;
}

static size_t class_size(size_t c)
{
    return (c + 1) * KR_VM_SMALL_CLASS;
}

static void *small_take(kr_vm_t *vm, size_t n)
{
    size_t c = class_of(n);
    void *p = vm->small[c];
    if (!p)
        return malloc(class_size(c));
    memcpy(&vm->small[c], p, sizeof(void *));
    vm->small_kept -= class_size(c);
    return p;
}

static void small_give(kr_vm_t *vm, void *p, size_t n)
{
    size_t c = class_of(n);
    if (vm->small_kept + class_size(c) > KR_VM_SMALL_KEEP) {
        free(p);
        return;
    }
    memcpy(p, &vm->small[c], sizeof(void *));
    vm->small[c] = p;
    vm->small_kept += class_size(c);
}

static void release(kr_vm_t *vm, void *p, size_t n)
{
    if (n <= KR_VM_SMALL_MAX)
        small_give(vm, p, n);
    else
        free(p);
}

/* Moves a block across the small/large line, or between small classes. */
static void *move(kr_vm_t *vm, void *ptr, size_t old, size_t nsize)
{
    if (nsize <= old && nsize <= KR_VM_SMALL_MAX && old <= KR_VM_SMALL_MAX)
        return ptr; /* shrinking a small block: it stays in its bigger class */
    void *p = nsize <= KR_VM_SMALL_MAX ? small_take(vm, nsize) : malloc(nsize);
    if (!p) {
        if (nsize > old)
            return NULL;
        /* Lua counts on a shrink never failing: shrink in place, to a
         * class's full size so the block can join that class later */
        return realloc(ptr, class_size(class_of(nsize)));
    }
    memcpy(p, ptr, old < nsize ? old : nsize);
    release(vm, ptr, old);
    return p;
}

void *kr_vmi_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    kr_vm_t *vm = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        if (ptr)
            release(vm, ptr, old);
        /* relaxed atomics: /metrics reads this from the router thread */
        __atomic_store_n(&vm->mem_used, vm->mem_used - old, __ATOMIC_RELAXED);
        return NULL;
    }
    if (vm->enforce && nsize > old && vm->mem_used + (nsize - old) > vm->mem_limit)
        return NULL; /* Lua turns this into LUA_ERRMEM */
    void *p;
    if (!ptr)
        p = nsize <= KR_VM_SMALL_MAX ? small_take(vm, nsize) : malloc(nsize);
    else if (old > KR_VM_SMALL_MAX && nsize > KR_VM_SMALL_MAX)
        p = realloc(ptr, nsize);
    else if (class_of(old) == class_of(nsize))
        p = ptr; /* the class's full size holds both */
    else
        p = move(vm, ptr, old, nsize);
    if (p)
        __atomic_store_n(&vm->mem_used, vm->mem_used - old + nsize, __ATOMIC_RELAXED);
    return p;
}

void kr_vmi_alloc_flush(kr_vm_t *vm)
{
    for (size_t c = 0; c < KR_VM_SMALL_MAX / KR_VM_SMALL_CLASS; c++)
        while (vm->small[c]) {
            void *p = vm->small[c];
            memcpy(&vm->small[c], p, sizeof(void *));
            free(p);
        }
    vm->small_kept = 0;
}
