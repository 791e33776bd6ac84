/* clock.c: the process's virtual clock.
 *
 * Virtual time = host monotonic time since the library loaded + every jump taken so far. A jump
 * happens when the process waits for the virtual GPU (stream/event/device synchronisation):
 * instead of sleeping until the GPU would be done, the clock moves there at once.
 * The Timekeeper (emulator/timekeeper) replaces this per-process clock with one shared by every
 * process of a deployment; this file is the only place that knows where time comes from.
 */
#include <pthread.h>
#include <time.h>

#include "vgpu.h"

static double origin = -1;
static double jumped;           /* seconds added by time jumps */
static pthread_mutex_t clock_lock = PTHREAD_MUTEX_INITIALIZER;

static double host_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

__attribute__((constructor)) static void clock_start(void) { origin = host_monotonic(); }

double vgpu_now(void) { return host_monotonic() - origin + jumped; }

void vgpu_wait_until(double t) {
    pthread_mutex_lock(&clock_lock);
    double now = vgpu_now();
    if (t > now) jumped += t - now;
    pthread_mutex_unlock(&clock_lock);
}
