/* clock.c: virtual time.
 *
 * Under a Timekeeper (REVATI_TIMEKEEPER set; emulator/timekeeper), every process of a deployment
 * maps one shared clock page and time is the deployment's. Every thread keeps its own virtual
 * time; threads meet only through messages and the Timekeeper's jumps:
 *   - CPU work: host CPU work is charged to the thread that does it as its own CPU time (times
 *     cpu_scale_ppm / 1e6), never as wall time. A thread descheduled because the host is loaded,
 *     or sharing one core with the rest of the deployment, is charged the same as on an idle
 *     many-core host: results do not depend on the host's load or core count. Threads computing
 *     side by side overlap in virtual time, as on a host with a core per thread.
 *   - Messages: a thread about to send (write, send, ...: interpose_time.c) raises the time of
 *     its channel (channels.c: a pipe, a connection, a condition variable) to its own; a thread
 *     that receives (a read returns data, a wait is signalled) catches up with its channel's
 *     time, so nothing is received before it was sent, and no later than the channel's last
 *     send: what other threads sent meanwhile, while the host had not yet run the receiver,
 *     does not make it late. Every send also raises the page's sent_ns, the latest send
 *     anywhere: a receive on a channel that has no name (channels.c) catches up with that,
 *     late by what was sent elsewhere since, never early. A poll, select or epoll wakes at
 *     the earliest send among the descriptors it finds ready (interpose_time.c). A thread that
 *     slept in a wait this library does not see (a futex: a lock) is caught up with sent_ns at
 *     its next reading (getrusage counts its voluntary switches).
 *   - Jumps: a thread whose virtual deadline was reached (a sleep, a timeout, a GPU
 *     synchronisation) resumes at that deadline. The Timekeeper grants deadlines once the
 *     deployment's clock, now_ns (the latest time any thread has read), passes them, or, when
 *     every thread is idle, moves now_ns to the earliest deadline (a time jump). A jump raises
 *     sent_ns too: every thread was idle, so whatever happens next happens after it.
 *   - Spin-waits: a thread calling sched_yield is waiting for another thread's write to shared
 *     memory (vLLM's and SGLang's worker queues spin so, for up to a second after each read).
 *     Charged its spinning, a waiting rank's clock runs on by whatever CPU share the host gives
 *     it, and a collective then waits for the rank that spun longest. So a yield sleeps instead
 *     (on the page's wake_gen futex, which every send and jump bumps) and is received like a
 *     message. The writers of those queues announce each write with a send (a ZeroMQ
 *     notification) right after it, which comes into the reader's process on a socket of its
 *     own: the yielder catches up with the latest send on the channels through which data has
 *     come into its process (vgpu_clock_inbound), not with sent_ns, which would make it as late
 *     as whatever any process sent meanwhile (an API server streaming the last step's tokens).
 *     A reader that finds the data before that send (woken by another send, or by
 *     YIELD_PATIENCE_NS of wall time passing) runs up to the writer's time since its previous
 *     send early. A sleeping yielder is idle to the Timekeeper (state S), so spinning no longer
 *     holds off jumps either.
 * Without a Timekeeper (a program run directly with the library preloaded, as the library's own
 * tests do), time is the process's own: host monotonic time plus the jumps it has taken.
 */
#define _GNU_SOURCE     /* RUSAGE_THREAD */
#include <fcntl.h>
#include <pthread.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tk_protocol.h"
#include "vgpu.h"

static tk_clock *shared;                /* NULL without a Timekeeper */
static __thread int64_t local_ns = -1;  /* this thread's virtual now; -1 until first read */
static __thread int64_t last_cpu_ns;
static __thread long last_sleeps;       /* voluntary context switches at the last reading */
static __thread int64_t last_wall_ns;   /* host monotonic time at the last reading */

/* ---- without a Timekeeper ------------------------------------------------------------------ */

static int64_t origin_ns;
static int64_t jumped_ns;
static pthread_mutex_t jump_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t process_now_ns(void) { return vgpu_host_clock_ns(CLOCK_MONOTONIC) - origin_ns + jumped_ns; }

/* ---- under a Timekeeper --------------------------------------------------------------------- */

/* This thread's voluntary context switches so far: getrusage's count. */
static long voluntary_switches(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nvcsw;
}

static void raise_to(int64_t *word, int64_t t) {
    int64_t seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    while (seen < t && !__atomic_compare_exchange_n(word, &seen, t, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
}

/* Virtual time added by catching up with the latest send anywhere, after a sleep this library did
 * not see and on a receive from a channel it cannot name: an upper bound on the part of a run's
 * timeline that depends on how the host scheduled its threads (stats.c writes it per process). */
static uint64_t catch_ups[VGPU_CATCH_UP_KINDS];
static int64_t catch_up_ns[VGPU_CATCH_UP_KINDS];

static void count_catch_up(vgpu_catch_up kind, int64_t added) {
    __atomic_fetch_add(&catch_ups[kind], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&catch_up_ns[kind], added, __ATOMIC_RELAXED);
}

void vgpu_clock_catch_ups(vgpu_catch_up kind, uint64_t *count, double *seconds) {
    *count = __atomic_load_n(&catch_ups[kind], __ATOMIC_RELAXED);
    *seconds = __atomic_load_n(&catch_up_ns[kind], __ATOMIC_RELAXED) * 1e-9;
}

/* Wall time off the CPU below which a thread cannot have slept: a voluntary switch out and back
 * in takes longer. Readings closer than this to their CPU time skip getrusage, a system call made
 * tens of thousands of times a second otherwise (every GIL hand-over is a reading). */
#define OFF_CPU_NS 2000

/* Charge the thread's CPU time since its last reading; a thread that slept unseen catches up with
 * the last message sent (see the top of this file), unless `explained` (it slept in a wait whose
 * end is accounted for by the caller). Host wall time is read before and after the CPU time, so
 * the gap between them bounds the time off the CPU from above. */
static int64_t advance(int explained) {
    int64_t wall_before = vgpu_host_clock_ns(CLOCK_MONOTONIC);
    int64_t cpu = vgpu_host_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    int64_t wall_after = vgpu_host_clock_ns(CLOCK_MONOTONIC);
    if (local_ns < 0) {             /* a new thread: it starts at the deployment's clock */
        local_ns = __atomic_load_n(&shared->now_ns, __ATOMIC_ACQUIRE);
        last_cpu_ns = cpu;
        last_sleeps = voluntary_switches();
    } else if (wall_after - last_wall_ns > cpu - last_cpu_ns + OFF_CPU_NS) {
        long sleeps = voluntary_switches();
        if (sleeps != last_sleeps && !explained) {
            int64_t sent = __atomic_load_n(&shared->sent_ns, __ATOMIC_ACQUIRE);
            if (sent > local_ns) {
                count_catch_up(VGPU_CATCH_UP_UNSEEN_SLEEP, sent - local_ns);
                local_ns = sent;
            }
        }
        last_sleeps = sleeps;
    }
    local_ns += (cpu - last_cpu_ns) * shared->cpu_scale_ppm / 1000000;
    last_cpu_ns = cpu;
    last_wall_ns = wall_before;
    raise_to(&shared->now_ns, local_ns);
    return local_ns;
}

/* wake_gen's low 32 bits (x86-64 is little-endian): futexes are 32-bit words. Shared futexes
 * (no FUTEX_PRIVATE_FLAG): the page is mapped by every process of the deployment. */
static uint32_t *wake_word(tk_clock *page) { return (uint32_t *)&page->wake_gen; }

static void wake_yielders(tk_clock *page) {
    __atomic_fetch_add(wake_word(page), 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&page->yielders, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, wake_word(page), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* Exported for the Timekeeper (through cffi): a jump to t, with the atomic maximum the threads
 * use on the same words, so that neither side undoes the other's writes. */
VGPU_EXPORT void revati_clock_jump(void *page, int64_t t) {
    tk_clock *clock = page;
    raise_to(&clock->now_ns, t);
    raise_to(&clock->sent_ns, t);
    wake_yielders(clock);
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

/* The channels through which data came into this process from descriptors (pipes, sockets,
 * eventfds): what a spin-waiting thread of it waits for is announced on one of them. */
#define INBOUND_SLOTS 64
static uint64_t inbound[INBOUND_SLOTS];

/* A forked child has none of its own yet (its parent's were the parent's), nor catch-ups. */
static void forget_inbound(void) {
    memset(inbound, 0, sizeof inbound);
    memset(catch_ups, 0, sizeof catch_ups);
    memset(catch_up_ns, 0, sizeof catch_up_ns);
}

__attribute__((constructor)) static void clock_start(void) {
    origin_ns = vgpu_host_clock_ns(CLOCK_MONOTONIC);
    const char *path = getenv("REVATI_TIMEKEEPER_CLOCK");
    if (path && *path) map_shared_clock(path);
    pthread_atfork(NULL, NULL, forget_inbound);
}

/* ---- the interface ------------------------------------------------------------------------------ */

int vgpu_virtual_time_active(void) { return shared != NULL; }

int64_t vgpu_now_ns(void) { return shared ? advance(0) : process_now_ns(); }

double vgpu_now(void) { return vgpu_now_ns() * 1e-9; }

int64_t vgpu_realtime_base_ns(void) { return shared ? shared->realtime_base_ns : 0; }

int64_t vgpu_monotonic_base_ns(void) { return shared ? shared->monotonic_base_ns : 0; }

void vgpu_clock_message_sent(void) {
    if (shared) __atomic_fetch_add(&shared->messages_sent, 1, __ATOMIC_ACQ_REL);
}

void vgpu_clock_charge_host(double seconds) {
    int64_t ns = (int64_t)(seconds * 1e9);
    if (ns <= 0) return;
    if (shared) {
        advance(0);
        local_ns += ns;
        raise_to(&shared->now_ns, local_ns);
    } else {
        pthread_mutex_lock(&jump_lock);
        jumped_ns += ns;
        pthread_mutex_unlock(&jump_lock);
    }
}

void vgpu_clock_uncharged(void (*work)(void *), void *arg) {
    static __thread int inside;     /* nested (a flush inside a meeting): the outer one accounts */
    if (!shared || local_ns < 0 || inside) {
        work(arg);
        return;
    }
    advance(0);
    int64_t cpu = vgpu_host_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    inside = 1;
    work(arg);
    inside = 0;
    /* As if the thread's last reading had been taken after the work. */
    last_cpu_ns += vgpu_host_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu;
    last_sleeps = voluntary_switches();
    last_wall_ns = vgpu_host_clock_ns(CLOCK_MONOTONIC);
}

/* ---- channels ------------------------------------------------------------------------------------ */

/* Probes before a channel counts as absent: the table is never emptied, and a lookup that found
 * the table full must answer the same as the insert that failed (the receiver then catches up
 * with sent_ns, as the sender's send raised it). */
#define CHANNEL_PROBES 64

/* The slot of `key` on the page, made if `insert` and there is room; NULL otherwise. */
static tk_channel *channel_slot(uint64_t key, int insert) {
    tk_channel *table = (tk_channel *)((char *)shared + TK_CHANNELS_OFFSET);
    for (unsigned probe = 0; probe < CHANNEL_PROBES; probe++) {
        tk_channel *slot = &table[(key + probe) % TK_CHANNEL_SLOTS];
        uint64_t seen = __atomic_load_n(&slot->key, __ATOMIC_ACQUIRE);
        if (seen == 0 && insert)
            __atomic_compare_exchange_n(&slot->key, &seen, key, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (seen == key || (seen == 0 && insert)) return slot;
        if (seen == 0) return NULL;
    }
    return NULL;
}

/* The library's own threads (the waker) signal and post on the deployment's behalf: not sends. */
static __thread int untimed_thread;

void vgpu_clock_untimed_thread(void) { untimed_thread = 1; }

void vgpu_clock_sending(uint64_t channel, int wakes_yielders) {
    if (!shared || untimed_thread || channel == VGPU_CHANNEL_NONE) return;
    int64_t t = advance(0);
    tk_channel *slot = channel == VGPU_CHANNEL_ANY ? NULL : channel_slot(channel, 1);
    if (slot) raise_to(&slot->sent_ns, t);
    raise_to(&shared->sent_ns, t);
    if (wakes_yielders) wake_yielders(shared);
}

int64_t vgpu_clock_channel_sent_ns(uint64_t channel) {
    if (!shared || channel == VGPU_CHANNEL_NONE) return INT64_MIN;
    tk_channel *slot = channel == VGPU_CHANNEL_ANY ? NULL : channel_slot(channel, 0);
    return __atomic_load_n(slot ? &slot->sent_ns : &shared->sent_ns, __ATOMIC_ACQUIRE);
}

static int64_t receive(int64_t sent_ns, int unnamed) {
    if (!shared) return 0;
    advance(1);
    if (sent_ns > local_ns) {
        if (unnamed) count_catch_up(VGPU_CATCH_UP_UNNAMED_CHANNEL, sent_ns - local_ns);
        local_ns = sent_ns;
    }
    raise_to(&shared->now_ns, local_ns);
    return local_ns;
}

int64_t vgpu_clock_received_at(int64_t sent_ns) { return receive(sent_ns, 0); }

void vgpu_clock_received(uint64_t channel) {
    receive(vgpu_clock_channel_sent_ns(channel), channel == VGPU_CHANNEL_ANY);
}

void vgpu_clock_inbound(uint64_t channel) {
    if (!shared || channel == VGPU_CHANNEL_ANY || channel == VGPU_CHANNEL_NONE) return;
    for (unsigned i = 0; i < INBOUND_SLOTS; i++) {
        uint64_t seen = __atomic_load_n(&inbound[i], __ATOMIC_ACQUIRE);
        if (seen == 0 && __atomic_compare_exchange_n(&inbound[i], &seen, channel, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return;
        if (seen == channel) return;
    }
}

/* The latest send on this process's inbound channels; the latest send anywhere until data has
 * come in through one, or when there were more than the table holds. */
static int64_t inbound_sent_ns(void) {
    int64_t latest = INT64_MIN;
    for (unsigned i = 0; i < INBOUND_SLOTS; i++) {
        uint64_t channel = __atomic_load_n(&inbound[i], __ATOMIC_ACQUIRE);
        if (channel == 0) return i == 0 ? vgpu_clock_channel_sent_ns(VGPU_CHANNEL_ANY) : latest;
        int64_t t = vgpu_clock_channel_sent_ns(channel);
        if (t > latest) latest = t;
    }
    return vgpu_clock_channel_sent_ns(VGPU_CHANNEL_ANY);
}

/* Wall time a yielding thread sleeps at most before it looks again: the bound on how late it
 * sees a write that no send announces (long against the Timekeeper's looks, which need a
 * sleeping thread not to have run between two of them). */
#define YIELD_PATIENCE_NS 20000000

void vgpu_clock_yield(void) {
    advance(0);
    uint32_t seen = __atomic_load_n(wake_word(shared), __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&shared->yielders, 1, __ATOMIC_SEQ_CST);
    struct timespec patience = {0, YIELD_PATIENCE_NS};
    syscall(SYS_futex, wake_word(shared), FUTEX_WAIT, seen, &patience, NULL, 0);
    __atomic_fetch_sub(&shared->yielders, 1, __ATOMIC_SEQ_CST);
    vgpu_clock_received_at(inbound_sent_ns());
}

/* Without a Timekeeper nothing grants deadlines: every one is reached at once, by a jump of the
 * process's own clock (vgpu_wait_until, timekeeper.c, resumes so from a GPU synchronisation). */
void vgpu_clock_resumed(int64_t deadline_ns) {
    if (!shared) {
        pthread_mutex_lock(&jump_lock);
        int64_t now = process_now_ns();
        if (deadline_ns > now) jumped_ns += deadline_ns - now;
        pthread_mutex_unlock(&jump_lock);
        return;
    }
    advance(1);
    if (deadline_ns > local_ns) local_ns = deadline_ns;
    raise_to(&shared->now_ns, local_ns);
}
