/* vm_internal.h - what the handler sandbox's files share and nothing else
 * sees: struct kr_vm and the functions one vm*.c file calls in another.
 * vm.h is the public API. A kr_vm_t owns its Lua state, its strings and
 * its file list; kr_vm_free (vm.c) frees them all. */
#ifndef KR_VM_INTERNAL_H
#define KR_VM_INTERNAL_H

#include <lua.h>
#include <pthread.h>

#include "runtime/vm.h"

#define HOOK_EVERY 1000 /* instructions between deadline checks */
#define IDLE_COROUTINES 8 /* finished coroutines kept per VM for reuse */

/* vm_alloc.c: freed blocks of up to KR_VM_SMALL_MAX bytes are kept for
 * reuse, up to KR_VM_SMALL_KEEP bytes per VM */
#define KR_VM_SMALL_CLASS 16
#define KR_VM_SMALL_MAX 256
#if defined(__SANITIZE_ADDRESS__)
#define KR_VM_SMALL_KEEP 0 /* AddressSanitizer sees every free as it happens */
#else
#define KR_VM_SMALL_KEEP (256 * 1024)
#endif

struct kr_vm {
    lua_State *L;
    char *name;
    char *handler_dir;
    char *lua_dir;
    int64_t timeout_ms;
    size_t mem_used, mem_limit;
    int enforce;    /* the cap applies only while handler code runs */
    int handle_ref; /* registry ref of the handle function */
    int state_ref;  /* the handler table's reload_state function, if any */
    const char *prev_state; /* JSON from the previous generation, for init(prev) */
    int idle_ref;   /* registry table of finished coroutines kept for reuse */
    int idle_n;
    char **files;   /* the handler file and every module it required */
    size_t file_cnt;
    size_t files_taken; /* how many kr_vm_take_file has handed out */
    pthread_mutex_t files_mu; /* files: added on the VM's thread (a require at
                               * run time), taken on the router thread */
    int64_t started_ns, deadline_ns; /* monotonic; 0 = no run in progress */
    int timed_out;
    int runs_ref;   /* registry set (weak keys) of kroute's run coroutines */
    int suspended;  /* runs waiting in kroute.request (their coroutines live in L) */
    int rebuild;    /* the state sits at its cap: rebuild it once nothing is suspended */
    int has_state;  /* the handler defines reload_state (read by other threads) */
    int retired;    /* replaced after its thread was abandoned (router thread only) */
    kr_vm_opts_t opts; /* what built it (strings owned), for a rebuild */
    void *small[KR_VM_SMALL_MAX / KR_VM_SMALL_CLASS]; /* vm_alloc.c's freed blocks */
    size_t small_kept;
};

/* vm_alloc.c: the lua_Alloc of every handler state (ud: the kr_vm_t), and
 * freeing the blocks it keeps (once its states are closed) */
void *kr_vmi_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
void kr_vmi_alloc_flush(kr_vm_t *vm);

/* vm.c: the state's life (built, rebuilt at its cap, freed) */
char *kr_vmi_dup_or_null(const char *s);
void kr_vmi_state_rebuild(kr_vm_t *vm);

/* vm_sandbox.c: what handler code may reach */
void kr_vmi_vm_add_file(kr_vm_t *vm, const char *path);
int kr_vmi_load_source(kr_vm_t *vm, lua_State *L, const char *path, int *missing);
void kr_vmi_open_sandbox(kr_vm_t *vm);

/* vm_run.c: the deadline and the runs */
void kr_vmi_deadline_hook(lua_State *L, lua_Debug *ar);
const char *kr_vmi_deadline_check(lua_State *L, void *ud);
size_t kr_vmi_memory_left(void *ud);
int kr_vmi_limited_pcall(kr_vm_t *vm, int nargs);

#endif
