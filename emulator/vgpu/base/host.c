/* host.c: the host beneath the emulation: libc's own functions past this library's interposers,
 * the host's clocks, and this process's id (host.h says who needs them and why they live here).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>

#include "host.h"
#include "vgpu.h"

vgpu_libc vgpu_real;

#define RESOLVE(name) do { \
        void *p = dlsym(RTLD_NEXT, #name); \
        __atomic_store_n((void **)&vgpu_real.name, p, __ATOMIC_RELEASE); \
    } while (0)

/* dlsym is called for each symbol without a lock: resolving twice is harmless (same answers), and
 * nothing dlsym does reaches back into the interposers. */
void vgpu_real_resolve(void) {
#define HOST_LIBC_RESOLVE(ret, name, params) RESOLVE(name);
    HOST_LIBC_FUNCTIONS(HOST_LIBC_RESOLVE)
#undef HOST_LIBC_RESOLVE
    RESOLVE(clock_gettime);     /* last: it is the "resolved" flag (see REAL) */
}

__attribute__((constructor)) static void host_start(void) { vgpu_real_resolve(); }

/* ---- the host's clocks ------------------------------------------------------------------------ */

int64_t vgpu_host_clock_ns(clockid_t id) {
    struct timespec ts;
    REAL(clock_gettime)(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- this process ------------------------------------------------------------------------------ */

/* This process's id, kept: getpid is a system call, and it is asked at every message to the
 * Timekeeper, every wait and every signal of a waited-on condition. */
static pid_t own_pid;

pid_t vgpu_own_pid(void) {
    pid_t pid = __atomic_load_n(&own_pid, __ATOMIC_RELAXED);
    if (!pid) __atomic_store_n(&own_pid, pid = getpid(), __ATOMIC_RELAXED);
    return pid;
}

static void forget_pid(void) { __atomic_store_n(&own_pid, 0, __ATOMIC_RELAXED); }

/* Registered before any other constructor of the library registers its own fork handler (a
 * constructor with a priority runs first), so a child's handlers (the Timekeeper's reconnection
 * among them) already see the child's id: child handlers run in the order of registration. */
__attribute__((constructor(101))) static void pid_forgotten_first_at_fork(void) {
    pthread_atfork(NULL, NULL, forget_pid);
}
