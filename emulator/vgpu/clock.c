/* clock.c: virtual time.
 *
 * Under a Timekeeper (REVATI_TIMEKEEPER set; emulator/timekeeper), every process of a deployment
 * maps one shared clock page and time is the deployment's:
 *   - Each thread keeps a local clock. Host CPU work is charged to it as the thread's own CPU time
 *     (CLOCK_THREAD_CPUTIME_ID, times cpu_scale_ppm / 1e6), never as wall time: a thread that is
 *     descheduled because the host is loaded, or shares one core with the rest of the deployment,
 *     is charged the same as on an idle many-core host. That is what makes results independent
 *     of the host's load and core count.
 *   - The shared clock is the maximum of what the threads have published: a thread that reads
 *     the clock first catches up with it (it cannot be earlier than anything another thread or
 *     process has already done), then adds its own CPU time. Work on different threads and
 *     processes therefore overlaps, as on a host with a core per thread, and a message can never
 *     be received at a virtual time before it was sent.
 *   - Waiting for the virtual GPU or sleeping is a time jump granted by the Timekeeper, which
 *     moves the clock only when every thread of the deployment is idle (timekeeper.c).
 * Without a Timekeeper (a program run directly with the library preloaded, as the library's own
 * tests do), time is the process's own: host monotonic time plus the jumps it has taken.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "tk_protocol.h"
#include "vgpu.h"

static tk_clock *shared;                /* NULL without a Timekeeper */
static __thread int64_t local_ns = -1;  /* this thread's virtual now; -1 until first read */
static __thread int64_t last_cpu_ns;

static int (*host_clock_gettime)(clockid_t, struct timespec *);

int64_t vgpu_host_clock_ns(clockid_t id) {
    struct timespec ts;
    host_clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- without a Timekeeper ------------------------------------------------------------------ */

static int64_t origin_ns;
static int64_t jumped_ns;
static pthread_mutex_t jump_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t process_now_ns(void) { return vgpu_host_clock_ns(CLOCK_MONOTONIC) - origin_ns + jumped_ns; }

/* ---- under a Timekeeper --------------------------------------------------------------------- */

static void publish(int64_t t) {
    int64_t seen = __atomic_load_n(&shared->now_ns, __ATOMIC_ACQUIRE);
    while (seen < t && !__atomic_compare_exchange_n(&shared->now_ns, &seen, t, 1, __ATOMIC_ACQ_REL,
                                                    __ATOMIC_ACQUIRE)) {
    }
}

static int64_t deployment_now_ns(void) {
    int64_t cpu = vgpu_host_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int64_t clock = __atomic_load_n(&shared->now_ns, __ATOMIC_ACQUIRE);
    if (local_ns < 0) {
        local_ns = clock;
        last_cpu_ns = cpu;
    }
    int64_t charge = (cpu - last_cpu_ns) * shared->cpu_scale_ppm / 1000000;
    last_cpu_ns = cpu;
    local_ns = (local_ns > clock ? local_ns : clock) + charge;
    publish(local_ns);
    return local_ns;
}

/* Exported (unversioned) so the Timekeeper can raise the clock through cffi with the same atomic
 * maximum the threads use. */
VGPU_EXPORT void revati_clock_raise(int64_t *now_ns, int64_t t) {
    int64_t seen = __atomic_load_n(now_ns, __ATOMIC_ACQUIRE);
    while (seen < t && !__atomic_compare_exchange_n(now_ns, &seen, t, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

static void map_shared_clock(const char *path) {
    int fd = open(path, O_RDWR | O_CLOEXEC);
    void *page = fd < 0 ? MAP_FAILED : mmap(NULL, TK_CLOCK_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (page == MAP_FAILED || ((tk_clock *)page)->magic != TK_CLOCK_MAGIC) {
        fprintf(stderr, "vgpu: cannot map the Timekeeper's clock page %s (REVATI_TIMEKEEPER_CLOCK)\n", path);
        exit(86);
    }
    shared = page;
}

__attribute__((constructor)) static void clock_start(void) {
    host_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    if (!host_clock_gettime) host_clock_gettime = clock_gettime;
    origin_ns = vgpu_host_clock_ns(CLOCK_MONOTONIC);
    const char *path = getenv("REVATI_TIMEKEEPER_CLOCK");
    if (path && *path) map_shared_clock(path);
}

/* ---- the interface ------------------------------------------------------------------------------ */

int vgpu_virtual_time_active(void) { return shared != NULL; }

int64_t vgpu_now_ns(void) { return shared ? deployment_now_ns() : process_now_ns(); }

double vgpu_now(void) { return vgpu_now_ns() * 1e-9; }

int64_t vgpu_realtime_base_ns(void) { return shared ? shared->realtime_base_ns : 0; }

int64_t vgpu_monotonic_base_ns(void) { return shared ? shared->monotonic_base_ns : 0; }

void vgpu_clock_message_sent(void) {
    if (shared) __atomic_fetch_add(&shared->messages_sent, 1, __ATOMIC_ACQ_REL);
}

/* After a granted jump the shared clock is at least the deadline; the thread catches up. */
void vgpu_clock_resumed(void) {
    if (shared) deployment_now_ns();
}

void vgpu_wait_until(double t) {
    int64_t target = (int64_t)(t * 1e9 + 0.5);
    if (shared) {
        if (target > vgpu_now_ns()) vgpu_sleep_until_ns(target, "gpu synchronize");
        return;
    }
    pthread_mutex_lock(&jump_lock);
    int64_t now = process_now_ns();
    if (target > now) jumped_ns += target - now;
    pthread_mutex_unlock(&jump_lock);
}
