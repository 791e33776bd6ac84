/* interpose_exit.c: a process that ends with _exit still leaves its GPU-time totals behind.
 *
 * Python's multiprocessing ends its children (vLLM's engine core, its workers) with os._exit,
 * which skips atexit handlers, stats.c's among them. Unversioned, like every interpose_*.c file,
 * so that references such as _exit@GLIBC_2.2.5 bind here (build.py). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

#include "vgpu.h"

VGPU_EXPORT void _exit(int status) {
    vgpu_stats_write();
    void (*real)(int) = (void (*)(int))dlsym(RTLD_NEXT, "_exit");
    real(status);
    __builtin_unreachable();
}
