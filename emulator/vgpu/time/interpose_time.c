/* interpose_time.c: the host's time, sleeps and timeouts, in virtual time.
 *
 * Under a Timekeeper (vgpu_virtual_time_active()), a process must not see the host's clock: its
 * clocks read the deployment's virtual clock, its sleeps are time jumps, and every finite timeout
 * (poll, select, epoll, condition variables, semaphores) expires in virtual time. Without one,
 * every function here is the real one (one predictable branch, then a tail call).
 *
 * How each family is done:
 *   - Clocks (clock_gettime, gettimeofday, time, timespec_get): base + vgpu_now_ns(), the base
 *     being what the host clock read at virtual 0. CPU-time clocks stay real.
 *   - Sleeps (nanosleep, clock_nanosleep, usleep, sleep): a virtual wait whose eventfd the thread
 *     polls; a signal interrupts it like a real sleep (EINTR, with the virtual time left).
 *   - sched_yield: a spin-wait's turn; it sleeps until the next send or jump (clock.c).
 *   - Timeouts (poll, ppoll, select, pselect, epoll_wait, epoll_pwait, epoll_pwait2): first the
 *     real call with a zero timeout; if nothing is ready, a virtual wait for the deadline and the
 *     real call with no timeout on the caller's descriptors plus the wait's eventfd. The caller
 *     only ever sees its own descriptors; the eventfd alone being ready is a timeout.
 *   - Condition variables and semaphores: the Timekeeper broadcasts the condition / posts the
 *     semaphore at the deadline (vgpu_wait_begin_cond/_sem) and the thread does the real untimed
 *     wait.
 *   - Messages: a call that sends (write, send and their kin, signalling a condition variable,
 *     posting a semaphore) first publishes the thread's time on its channel (channels.c); a call
 *     that receives (read, recv, a wait on a condition variable or semaphore ended by a signal or
 *     post) catches the thread up with that channel's latest send after it returns (clock.c says
 *     why). A poll, select or epoll that returns with descriptors ready to read has received on
 *     the earliest of their channels (an epoll event's descriptor is known from epoll_ctl), and
 *     answers only the descriptors whose data had come by then (poll_received says why).
 * A thread blocked in any real untimed wait is idle to the Timekeeper (it reads /proc), so
 * nothing here reports blocking itself; only deadlines are sent.
 *
 * These functions must satisfy references like clock_gettime@GLIBC_2.17: only an unversioned
 * (Base) definition does that, so the build leaves this file's symbols out of its version nodes.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE      /* this file defines poll & co.; the headers must not inline them */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/epoll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "base/host.h"       /* the real functions: REAL(name) */
#include "vgpu.h"

#define NS_PER_S 1000000000LL

/* ---- the calls that carry messages ------------------------------------------------------------ */

/* The calls that move messages between threads and processes, other than the waits with timeouts
 * below, and which way: only clock readings around them (see the top of this file). Waking a
 * thread through a condition variable, a semaphore (the GIL is one) or a signal is a message too.
 * Their real versions, like those of every function this file replaces, are host.c's (REAL). */
#define MESSAGE_CALLS(X) \
    X(RECEIVING_FD, ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n)) \
    X(RECEIVING_FD, ssize_t, readv, (int fd, const struct iovec *iov, int n), (fd, iov, n)) \
    X(RECEIVING_FD, ssize_t, recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags)) \
    X(RECEIVING_FD, ssize_t, recvfrom, (int fd, void *restrict buf, size_t n, int flags, \
                                        struct sockaddr *restrict from, socklen_t *restrict len), \
      (fd, buf, n, flags, from, len)) \
    X(RECEIVING_FD, ssize_t, recvmsg, (int fd, struct msghdr *msg, int flags), (fd, msg, flags)) \
    X(CONNECTED, int, accept, (int fd, struct sockaddr *restrict addr, socklen_t *restrict len), (fd, addr, len)) \
    X(CONNECTED, int, accept4, (int fd, struct sockaddr *restrict addr, socklen_t *restrict len, int flags), \
      (fd, addr, len, flags)) \
    X(CONNECTING, int, connect, (int fd, const struct sockaddr *addr, socklen_t len), (fd, addr, len)) \
    X(SENDING_FD, ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n)) \
    X(SENDING_FD, ssize_t, writev, (int fd, const struct iovec *iov, int n), (fd, iov, n)) \
    X(SENDING_FD, ssize_t, send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags)) \
    X(SENDING_FD, ssize_t, sendto, (int fd, const void *buf, size_t n, int flags, const struct sockaddr *to, \
                                    socklen_t len), (fd, buf, n, flags, to, len)) \
    X(SENDING_FD, ssize_t, sendmsg, (int fd, const struct msghdr *msg, int flags), (fd, msg, flags)) \
    X(SIGNALLING_COND, int, pthread_cond_signal, (pthread_cond_t *cond), (cond)) \
    X(SIGNALLING_COND, int, pthread_cond_broadcast, (pthread_cond_t *cond), (cond)) \
    X(SIGNALLING_SEM, int, sem_post, (sem_t *sem), (sem)) \
    X(SENDING, int, kill, (pid_t pid, int sig), (pid, sig)) \
    X(SENDING, int, pthread_kill, (pthread_t thread, int sig), (thread, sig))

/* Offsets of the host's CLOCK_TAI and CLOCK_BOOTTIME from the clocks they are virtualised on. */
static int64_t tai_offset_ns, boottime_offset_ns;

/* -1: not known yet; 0: real time; 1: virtual time. */
static int active = -1;

/* Virtual time is on once the clock page is mapped and the Timekeeper connected (the library's
 * constructors; they exit the process if either fails). Before then (a call from an earlier
 * constructor) time is real and the answer is not cached. */
static int decide(void) {
    const char *clock_path = getenv("REVATI_TIMEKEEPER_CLOCK"), *endpoint = getenv("REVATI_TIMEKEEPER");
    if (!clock_path || !*clock_path || !endpoint || !*endpoint) {
        __atomic_store_n(&active, 0, __ATOMIC_RELAXED);
        return 0;
    }
    if (!vgpu_virtual_time_active() || !vgpu_timekeeper_connected()) return 0;
    struct timespec a, b;
    REAL(clock_gettime)(CLOCK_REALTIME, &a);
    REAL(clock_gettime)(CLOCK_TAI, &b);
    tai_offset_ns = ((b.tv_sec - a.tv_sec) * NS_PER_S + (b.tv_nsec - a.tv_nsec) + NS_PER_S / 2) / NS_PER_S * NS_PER_S;
    REAL(clock_gettime)(CLOCK_MONOTONIC, &a);
    REAL(clock_gettime)(CLOCK_BOOTTIME, &b);
    boottime_offset_ns = (b.tv_sec - a.tv_sec) * NS_PER_S + (b.tv_nsec - a.tv_nsec);
    __atomic_store_n(&active, 1, __ATOMIC_RELEASE);
    return 1;
}

static inline int virtual_time(void) {
    int a = __atomic_load_n(&active, __ATOMIC_ACQUIRE);   /* the offsets below are published with it */
    if (__builtin_expect(a >= 0, 1)) return a;
    return decide();
}

/* Library constructors run in link order; clock.c's and timekeeper.c's may come after this one,
 * in which case decide() leaves the answer open and the first interposed call settles it. */
__attribute__((constructor)) static void interpose_time_start(void) { virtual_time(); }

/* A call through which a message may arrive on `channel` (clock.c; evaluated after the call, with
 * its result in result_): when it returns with one, the thread catches up with the channel's
 * latest send. errno is the call's. */
#define RECEIVING_ON(channel, call) ({                  \
        __typeof__(call) result_ = (call);              \
        if (result_ >= 0) {                             \
            int errno_ = errno;                         \
            vgpu_clock_received(channel);               \
            errno = errno_;                             \
        }                                               \
        result_;                                        \
    })
#define RECEIVING(call) RECEIVING_ON(VGPU_CHANNEL_ANY, call)
/* A read of end-of-file received the peer's close, which is no send on the channel. */
#define RECEIVING_FD(call) RECEIVING_ON(fd_receiving(result_, fd), call)
/* An untimed poll, select or epoll returned: the thread's sleep in it is accounted for (no catch-up
 * with the latest send anywhere); what it received is poll_received's and its kin's matter. */
#define WOKEN(call) RECEIVING_ON(VGPU_CHANNEL_NONE, call)

/* A call that sends: its message carries the thread's time. */
#define SENDING(call) (vgpu_clock_sending(VGPU_CHANNEL_ANY, 1), (call))
#define SENDING_FD(call) (vgpu_clock_sending(vgpu_channel_of_fd(fd, VGPU_SEND), 1), (call))
/* Signalling a condition variable or a semaphore sends within the process (every GIL hand-over
 * is one): it wakes no spin-waiting thread, which waits for another process's write. A condition
 * nobody waits on carries nothing (a later waiter does not see the signal), and CPython signals
 * the GIL's at every release, twice per torch op: stamping those would charge every op a read of
 * the thread's CPU clock that the real program never makes. */
#define SIGNALLING_COND(call) (cond_has_waiters(cond) ? vgpu_clock_sending(cond_channel(cond), 0) : (void)0, (call))
#define SIGNALLING_SEM(call) (vgpu_clock_sending(sem_channel(sem), 0), (call))

static uint64_t fd_receiving(ssize_t result, int fd) {
    uint64_t channel = vgpu_channel_of_fd(fd, VGPU_RECEIVE);
    if (result == 0 && channel != VGPU_CHANNEL_NONE) return VGPU_CHANNEL_ANY;
    vgpu_clock_inbound(channel);
    return channel;
}

/* TCP connections, made or accepted, send without Nagle's delay: in virtual time a small write
 * that the kernel holds back until an acknowledgement (tens of milliseconds of wall time, while
 * the deployment may look idle and jump) would arrive late by an arbitrary amount of virtual time.
 * Engines set TCP_NODELAY themselves (asyncio, uvloop, ZeroMQ, aiohttp); this covers the rest.
 * On sockets that are not TCP the option is refused, harmlessly. */
static int no_delay(int fd) {
    int one = 1, saved = errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    errno = saved;
    return fd;
}
#define CONNECTING(call) (no_delay(fd), RECEIVING(call))
#define CONNECTED(call) ({ int fd_ = RECEIVING(call); fd_ >= 0 ? no_delay(fd_) : fd_; })

/* ---- time arithmetic ------------------------------------------------------------------------- */

static int64_t ts_ns(const struct timespec *ts) { return (int64_t)ts->tv_sec * NS_PER_S + ts->tv_nsec; }

static struct timespec ns_ts(int64_t ns) {
    if (ns < 0) ns = 0;
    return (struct timespec){.tv_sec = ns / NS_PER_S, .tv_nsec = ns % NS_PER_S};
}

static int ts_valid(const struct timespec *ts) { return ts->tv_nsec >= 0 && ts->tv_nsec < NS_PER_S; }

/* A finite timeout's length in ns, saturating far beyond any run instead of overflowing. */
static int64_t ts_duration_ns(const struct timespec *ts) {
    if (ts->tv_sec > INT64_MAX / NS_PER_S / 4) return INT64_MAX / 4;
    return ts_ns(ts);
}

static int64_t deadline_after(int64_t duration_ns) {
    int64_t now = vgpu_now_ns();
    return duration_ns > INT64_MAX / 4 ? INT64_MAX / 4 : now + duration_ns;
}

/* What clock `id` reads at virtual time 0; -1 for clocks that stay real (CPU-time clocks, per
 * process or thread clocks (negative ids), and any clock not listed). */
static int clock_base(clockid_t id, int64_t *base) {
    switch (id) {
    case CLOCK_REALTIME:
    case CLOCK_REALTIME_COARSE:
    case CLOCK_REALTIME_ALARM:
        *base = vgpu_realtime_base_ns();
        return 0;
    case CLOCK_TAI:
        *base = vgpu_realtime_base_ns() + tai_offset_ns;
        return 0;
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_MONOTONIC_COARSE:
        *base = vgpu_monotonic_base_ns();
        return 0;
    case CLOCK_BOOTTIME:
    case CLOCK_BOOTTIME_ALARM:
        *base = vgpu_monotonic_base_ns() + boottime_offset_ns;
        return 0;
    default:
        return -1;
    }
}

/* ---- clocks ---------------------------------------------------------------------------------- */

/* glibc declares these pointers nonnull, but a NULL must still reach the real function (EFAULT)
 * rather than crash here: hide the pointer's origin from the optimiser so the test stays. */
#define LAUNDER(p) ({ __typeof__(p) laundered_ = (p); __asm__("" : "+r"(laundered_)); laundered_; })

VGPU_EXPORT int clock_gettime(clockid_t id, struct timespec *ts) {
    int64_t base;
    if (__builtin_expect(!virtual_time(), 1) || !LAUNDER(ts) || clock_base(id, &base) != 0)
        return REAL(clock_gettime)(id, ts);
    *ts = ns_ts(base + vgpu_now_ns());
    return 0;
}

VGPU_EXPORT int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(gettimeofday)(tv, tz);
    if (tz) {                                   /* the (obsolete) time zone is the host's */
        struct timeval ignored;
        REAL(gettimeofday)(&ignored, tz);
    }
    if (LAUNDER(tv)) {
        int64_t t = vgpu_realtime_base_ns() + vgpu_now_ns();
        tv->tv_sec = t / NS_PER_S;
        tv->tv_usec = t % NS_PER_S / 1000;
    }
    return 0;
}

VGPU_EXPORT time_t time(time_t *out) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(time)(out);
    time_t t = (time_t)((vgpu_realtime_base_ns() + vgpu_now_ns()) / NS_PER_S);
    if (out) *out = t;
    return t;
}

VGPU_EXPORT int timespec_get(struct timespec *ts, int base) {
    if (__builtin_expect(!virtual_time(), 1) || base != TIME_UTC) return REAL(timespec_get)(ts, base);
    *ts = ns_ts(vgpu_realtime_base_ns() + vgpu_now_ns());
    return base;
}

/* ---- sleeps ---------------------------------------------------------------------------------- */

/* Sleep until virtual deadline_ns. Returns 0 when it was reached, EINTR when a signal handler ran
 * first (the wait is cancelled; *left_ns is the virtual time still to go). The thread blocks in a
 * real poll() of the wait's eventfd, so signals interrupt it as they interrupt a real sleep. */
static int virtual_sleep_until(int64_t deadline_ns, const char *call, int64_t *left_ns) {
    vgpu_wait *w = vgpu_wait_begin(deadline_ns, VGPU_CHANNEL_ANY, call);
    if (!w) return 0;
    struct pollfd p = {.fd = vgpu_wait_fd(w), .events = POLLIN};
    int r;
    while ((r = REAL(poll)(&p, 1, -1)) < 0 && errno != EINTR) {
    }
    if (vgpu_wait_end(w) || r > 0) return 0;
    if (left_ns) *left_ns = deadline_ns - vgpu_now_ns();
    return EINTR;
}

/* Relative sleep: 0, or EINTR with *rem set to the virtual time left. */
static int sleep_for(const struct timespec *req, struct timespec *rem, const char *call) {
    int64_t duration = ts_duration_ns(req), left = 0;
    if (duration <= 0) {
        if (rem) *rem = ns_ts(0);
        return 0;
    }
    int r = virtual_sleep_until(deadline_after(duration), call, &left);
    if (rem) *rem = ns_ts(r == EINTR ? left : 0);
    return r;
}

VGPU_EXPORT int sched_yield(void) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(sched_yield)();
    vgpu_clock_yield();
    return 0;
}

VGPU_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem) {
    if (__builtin_expect(!virtual_time(), 1) || !req || !ts_valid(req) || req->tv_sec < 0)
        return REAL(nanosleep)(req, rem);       /* including the errors (EFAULT, EINVAL) */
    int r = sleep_for(req, rem, "nanosleep");
    if (r) {
        errno = r;
        return -1;
    }
    return 0;
}

VGPU_EXPORT int clock_nanosleep(clockid_t id, int flags, const struct timespec *req, struct timespec *rem) {
    int64_t base;
    if (__builtin_expect(!virtual_time(), 1) || !req || !ts_valid(req) || clock_base(id, &base) != 0 ||
        id == CLOCK_MONOTONIC_RAW || id == CLOCK_MONOTONIC_COARSE || id == CLOCK_REALTIME_COARSE)
        return REAL(clock_nanosleep)(id, flags, req, rem);     /* CPU clocks; the kernel's errors */
    if (!(flags & TIMER_ABSTIME)) {
        if (req->tv_sec < 0) return EINVAL;
        return sleep_for(req, rem, "clock_nanosleep");
    }
    /* Absolute: a deadline on that clock's virtual reading; rem is untouched (as the kernel). */
    int64_t deadline = req->tv_sec > INT64_MAX / NS_PER_S / 4 ? INT64_MAX / 4 : ts_ns(req) - base;
    if (deadline <= vgpu_now_ns()) return 0;
    return virtual_sleep_until(deadline, "clock_nanosleep", NULL);
}

VGPU_EXPORT int usleep(useconds_t usec) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(usleep)(usec);
    struct timespec req = {.tv_sec = usec / 1000000, .tv_nsec = (long)(usec % 1000000) * 1000};
    int r = sleep_for(&req, NULL, "usleep");
    if (r) {
        errno = r;
        return -1;
    }
    return 0;
}

VGPU_EXPORT unsigned sleep(unsigned seconds) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(sleep)(seconds);
    struct timespec req = {.tv_sec = seconds}, rem;
    if (sleep_for(&req, &rem, "sleep") == 0) return 0;
    /* As glibc: the seconds left, rounded to nearest. */
    return (unsigned)rem.tv_sec + (rem.tv_nsec >= 500000000L);
}

/* ---- timeouts on descriptors ------------------------------------------------------------------ */

/* A wait that returned `ready` > 0 descriptors has woken when the first of them became ready in
 * virtual time: a descriptor is ready to read once its channel's latest send happened (a hang-up
 * or error: the latest send anywhere; ready to write, or not a channel: at once). The thread
 * catches up with the earliest, and the descriptors whose data was sent later still are taken
 * out of the answer, as the real wait would have returned before their data came: the next wait
 * finds them. Without this, a server woken by one client's request together with another client's
 * later message (or hang-up) would serve the first at the second's time. An edge-triggered or
 * one-shot epoll event cannot be taken out (the kernel would not report it again): the thread
 * catches up with it instead. errno is the wait's. */
#define READABLE (POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND)
#define READ_EVENTS (READABLE | POLLHUP | POLLERR | POLLRDHUP)

static int64_t ready_at(short revents, uint64_t channel) {
    if (revents & READABLE) return vgpu_clock_channel_sent_ns(channel);
    if (revents & (POLLHUP | POLLERR | POLLRDHUP)) return vgpu_clock_channel_sent_ns(VGPU_CHANNEL_ANY);
    return INT64_MIN;
}

static int64_t fd_ready_at(short revents, int fd) {
    return ready_at(revents, revents & READABLE ? vgpu_channel_of_fd(fd, VGPU_RECEIVE) : VGPU_CHANNEL_ANY);
}

/* The first pass keeps the ready times of the first KEPT descriptors for the second (finding a
 * descriptor's channel takes an fstat, and a socket's a lookup in the clock page); later ones are
 * found again. */
#define KEPT 64
#define KEEP(i, t) ((i) < KEPT ? (kept_at[i] = (t)) : (t))
#define KEPT_OR(i, t) ((i) < KEPT ? kept_at[i] : (t))

static int poll_received(struct pollfd *fds, nfds_t nfds, int ready) {
    if (ready <= 0 || !vgpu_virtual_time_active()) return ready;
    int err = errno;
    int64_t earliest = INT64_MAX, kept_at[KEPT];
    nfds_t first = 0;
    for (nfds_t i = 0; i < nfds; i++) {
        int64_t t = KEEP(i, fds[i].revents ? fd_ready_at(fds[i].revents, fds[i].fd) : INT64_MAX);
        if (t < earliest) earliest = t, first = i;
    }
    int64_t woke = vgpu_clock_received_at(earliest);
    for (nfds_t i = 0; i < nfds; i++) {
        if (i == first || !(fds[i].revents & READ_EVENTS) ||
            KEPT_OR(i, fd_ready_at(fds[i].revents, fds[i].fd)) <= woke) continue;
        fds[i].revents &= (short)~READ_EVENTS;
        ready -= fds[i].revents == 0;
    }
    errno = err;
    return ready;
}

static int select_received(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int ready) {
    if (ready <= 0 || !vgpu_virtual_time_active()) return ready;
    int err = errno;
#define SELECTED(set, fd) ((set) && FD_ISSET(fd, set))
#define SELECT_EVENTS(fd) (short)((SELECTED(rd, fd) ? POLLIN : 0) | (SELECTED(ex, fd) ? POLLPRI : 0) | \
                                  (SELECTED(wr, fd) ? POLLOUT : 0))
    int64_t earliest = INT64_MAX, kept_at[KEPT];
    int first = 0;
    for (int fd = 0; fd < nfds; fd++) {
        short events = SELECT_EVENTS(fd);
        int64_t t = KEEP(fd, events ? fd_ready_at(events, fd) : INT64_MAX);
        if (t < earliest) earliest = t, first = fd;
    }
    int64_t woke = vgpu_clock_received_at(earliest);
    for (int fd = 0; fd < nfds; fd++) {
        short events = SELECT_EVENTS(fd);
        if (fd == first || !(events & READABLE) || KEPT_OR(fd, fd_ready_at(events, fd)) <= woke) continue;
        if (SELECTED(rd, fd)) FD_CLR(fd, rd), ready--;
        if (SELECTED(ex, fd)) FD_CLR(fd, ex), ready--;
    }
#undef SELECT_EVENTS
#undef SELECTED
    errno = err;
    return ready;
}

/* The time an epoll event became ready (ready_at), and whether it may be taken out (only a read
 * event needs its channel: a write event is ready at once). */
static int64_t event_ready_at(int epfd, const struct epoll_event *event, int *removable) {
    *removable = 1;
    if (!(event->events & READ_EVENTS)) return INT64_MIN;
    return ready_at((short)event->events, vgpu_channel_of_epoll_event(epfd, event->data.u64, removable));
}

static int epoll_received(int epfd, struct epoll_event *events, int ready) {
    if (ready <= 0 || !vgpu_virtual_time_active()) return ready;
    int err = errno;
    int64_t earliest = INT64_MAX, kept = INT64_MIN, kept_at[KEPT];
    int first = 0, removable, removable_at[KEPT];
    for (int i = 0; i < ready; i++) {
        int64_t t = KEEP(i, event_ready_at(epfd, &events[i], &removable));
        if (i < KEPT) removable_at[i] = removable;
        if (t < earliest) earliest = t, first = i;
        if (!removable && t > kept) kept = t;
    }
    int64_t woke = vgpu_clock_received_at(earliest > kept ? earliest : kept);
    int left = 0;
    for (int i = 0; i < ready; i++) {
        struct epoll_event event = events[i];
        if (i != first && (event.events & READ_EVENTS)) {
            int64_t t = KEPT_OR(i, event_ready_at(epfd, &event, &removable));
            if (t > woke && (i < KEPT ? removable_at[i] : removable)) {
                event.events &= ~(uint32_t)READ_EVENTS;
                if (!event.events) continue;
            }
        }
        events[left++] = event;
    }
    errno = err;
    return left;
}

VGPU_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event) {
    int r = REAL(epoll_ctl)(epfd, op, fd, event);
    if (r == 0 && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && event && virtual_time())
        vgpu_channel_epoll_registered(epfd, event->data.u64, fd, !(event->events & (EPOLLET | EPOLLONESHOT)));
    return r;
}

/* poll() and ppoll() once the zero-timeout try found nothing: the caller's descriptors plus the
 * wait's eventfd, with no timeout (sigmask only for ppoll). Returns what the caller gets: its
 * ready count, 0 for the deadline, -1 with errno. */
static int poll_with_deadline(struct pollfd *fds, nfds_t nfds, int64_t deadline, const sigset_t *sigmask,
                              int use_ppoll, const char *call) {
    vgpu_wait *w = vgpu_wait_begin(deadline, VGPU_CHANNEL_NONE, call);
    if (!w) return 0;
    struct pollfd local[64];
    struct pollfd *all = nfds < 64 ? local : malloc((nfds + 1) * sizeof *all);
    if (!all) {
        vgpu_wait_end(w);
        errno = ENOMEM;
        return -1;
    }
    memcpy(all, fds, nfds * sizeof *fds);
    all[nfds] = (struct pollfd){.fd = vgpu_wait_fd(w), .events = POLLIN};
    int r = use_ppoll ? REAL(ppoll)(all, nfds + 1, NULL, sigmask) : REAL(poll)(all, nfds + 1, -1);
    int err = errno;
    vgpu_wait_end(w);
    int ready = 0;
    if (r >= 0) {
        for (nfds_t i = 0; i < nfds; i++) {
            fds[i].revents = all[i].revents;
            ready += all[i].revents != 0;
        }
    }
    if (all != local) free(all);
    if (r < 0) {
        errno = err;
        return -1;
    }
    return ready;       /* 0: only the eventfd was ready, the deadline */
}

VGPU_EXPORT int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms) {
    if (__builtin_expect(!virtual_time(), 1) || timeout_ms == 0) return REAL(poll)(fds, nfds, timeout_ms);
    if (timeout_ms < 0) return poll_received(fds, nfds, WOKEN(REAL(poll)(fds, nfds, timeout_ms)));
    int r = REAL(poll)(fds, nfds, 0);
    if (r == 0) r = poll_with_deadline(fds, nfds, deadline_after(timeout_ms * 1000000LL), NULL, 0, "poll");
    return poll_received(fds, nfds, r);
}

VGPU_EXPORT int ppoll(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout, const sigset_t *sigmask) {
    if (__builtin_expect(!virtual_time(), 1) || (timeout && (!ts_valid(timeout) || timeout->tv_sec < 0 ||
                                                             (timeout->tv_sec == 0 && timeout->tv_nsec == 0))))
        return REAL(ppoll)(fds, nfds, timeout, sigmask);
    if (!timeout) return poll_received(fds, nfds, WOKEN(REAL(ppoll)(fds, nfds, timeout, sigmask)));
    int64_t deadline = deadline_after(ts_duration_ns(timeout));
    static const struct timespec zero = {0, 0};
    int r = REAL(ppoll)(fds, nfds, &zero, sigmask);
    if (r == 0) r = poll_with_deadline(fds, nfds, deadline, sigmask, 1, "ppoll");
    return poll_received(fds, nfds, r);
}

/* fortified builds call these; glibc's own go to its internal poll, past the interposition. */
extern void __chk_fail(void) __attribute__((noreturn));

VGPU_EXPORT int __poll_chk(struct pollfd *fds, nfds_t nfds, int timeout_ms, size_t fds_len) {
    if (fds_len / sizeof *fds < nfds) __chk_fail();
    return poll(fds, nfds, timeout_ms);
}

VGPU_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t nfds, const struct timespec *timeout,
                            const sigset_t *sigmask, size_t fds_len) {
    if (fds_len / sizeof *fds < nfds) __chk_fail();
    return ppoll(fds, nfds, timeout, sigmask);
}

/* select() and pselect() block through ppoll(): the sets become pollfds (with the wait's eventfd
 * at the end, whatever its number, so FD_SETSIZE never matters) and the results go back into the
 * sets with the kernel's own select rules (fs/select.c: POLLIN_SET, POLLOUT_SET, POLLEX_SET). */
#define SELECT_IN (POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR)
#define SELECT_OUT (POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR)
#define SELECT_EX POLLPRI

static int select_with_deadline(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, int64_t deadline,
                                const sigset_t *sigmask, const char *call) {
    vgpu_wait *w = vgpu_wait_begin(deadline, VGPU_CHANNEL_NONE, call);
    if (!w) {
        if (rd) FD_ZERO(rd);
        if (wr) FD_ZERO(wr);
        if (ex) FD_ZERO(ex);
        return 0;
    }
    struct pollfd all[FD_SETSIZE + 1];
    nfds_t n = 0;
    for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++) {
        short events = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) | (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                               (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
        if (events) all[n++] = (struct pollfd){.fd = fd, .events = events};
    }
    all[n] = (struct pollfd){.fd = vgpu_wait_fd(w), .events = POLLIN};
    int r = REAL(ppoll)(all, n + 1, NULL, sigmask);
    int err = errno;
    vgpu_wait_end(w);
    if (r < 0) {
        errno = err;
        return -1;
    }
    for (nfds_t i = 0; i < n; i++)
        if (all[i].revents & POLLNVAL) {    /* closed meanwhile: select's answer is EBADF */
            errno = EBADF;
            return -1;
        }
    if (rd) FD_ZERO(rd);
    if (wr) FD_ZERO(wr);
    if (ex) FD_ZERO(ex);
    int ready = 0;
    for (nfds_t i = 0; i < n; i++) {
        short got = all[i].revents, asked = all[i].events;
        if ((asked & POLLIN) && (got & SELECT_IN)) { FD_SET(all[i].fd, rd); ready++; }
        if ((asked & POLLOUT) && (got & SELECT_OUT)) { FD_SET(all[i].fd, wr); ready++; }
        if ((asked & POLLPRI) && (got & SELECT_EX)) { FD_SET(all[i].fd, ex); ready++; }
    }
    return ready;
}

/* The zero-timeout try must not destroy the caller's sets, which the blocking call still needs. */
typedef struct { fd_set rd, wr, ex; } fd_sets;

static void sets_save(fd_sets *s, fd_set *rd, fd_set *wr, fd_set *ex) {
    if (rd) s->rd = *rd;
    if (wr) s->wr = *wr;
    if (ex) s->ex = *ex;
}

static void sets_restore(const fd_sets *s, fd_set *rd, fd_set *wr, fd_set *ex) {
    if (rd) *rd = s->rd;
    if (wr) *wr = s->wr;
    if (ex) *ex = s->ex;
}

VGPU_EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *timeout) {
    if (__builtin_expect(!virtual_time(), 1) || nfds < 0 || nfds > FD_SETSIZE ||
        (timeout && (timeout->tv_sec < 0 || timeout->tv_usec < 0 || timeout->tv_usec >= 1000000 ||
                     (timeout->tv_sec == 0 && timeout->tv_usec == 0))))
        return REAL(select)(nfds, rd, wr, ex, timeout);
    if (!timeout) return select_received(nfds, rd, wr, ex, WOKEN(REAL(select)(nfds, rd, wr, ex, timeout)));
    struct timespec length = {.tv_sec = timeout->tv_sec, .tv_nsec = timeout->tv_usec * 1000};
    int64_t deadline = deadline_after(ts_duration_ns(&length));
    fd_sets saved;
    sets_save(&saved, rd, wr, ex);
    struct timeval zero = {0, 0};
    int r = REAL(select)(nfds, rd, wr, ex, &zero);
    if (r == 0) {
        sets_restore(&saved, rd, wr, ex);
        r = select_with_deadline(nfds, rd, wr, ex, deadline, NULL, "select");
    }
    if (r >= 0) {               /* Linux's select leaves the time not slept in *timeout */
        int64_t left = deadline - vgpu_now_ns();
        if (left < 0) left = 0;
        timeout->tv_sec = left / NS_PER_S;
        timeout->tv_usec = left % NS_PER_S / 1000;
    }
    return select_received(nfds, rd, wr, ex, r);
}

VGPU_EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *timeout,
                        const sigset_t *sigmask) {
    if (__builtin_expect(!virtual_time(), 1) || nfds < 0 || nfds > FD_SETSIZE ||
        (timeout && (!ts_valid(timeout) || timeout->tv_sec < 0 || (timeout->tv_sec == 0 && timeout->tv_nsec == 0))))
        return REAL(pselect)(nfds, rd, wr, ex, timeout, sigmask);
    if (!timeout) return select_received(nfds, rd, wr, ex, WOKEN(REAL(pselect)(nfds, rd, wr, ex, timeout, sigmask)));
    int64_t deadline = deadline_after(ts_duration_ns(timeout));
    fd_sets saved;
    sets_save(&saved, rd, wr, ex);
    static const struct timespec zero = {0, 0};
    int r = REAL(pselect)(nfds, rd, wr, ex, &zero, sigmask);
    if (r == 0) {
        sets_restore(&saved, rd, wr, ex);
        r = select_with_deadline(nfds, rd, wr, ex, deadline, sigmask, "pselect");
    }
    return select_received(nfds, rd, wr, ex, r);
}

/* epoll: an epoll descriptor is readable when it has events, so the blocking step polls it and the
 * wait's eventfd, then collects the events with a zero-timeout epoll_wait. Another thread may take
 * the events first (edge-triggered, EPOLLEXCLUSIVE): then it polls again. */
static int epoll_with_deadline(int epfd, struct epoll_event *events, int maxevents, int64_t deadline,
                               const sigset_t *sigmask, const char *call) {
    vgpu_wait *w = vgpu_wait_begin(deadline, VGPU_CHANNEL_NONE, call);
    if (!w) return 0;
    struct pollfd p[2] = {{.fd = epfd, .events = POLLIN}, {.fd = vgpu_wait_fd(w), .events = POLLIN}};
    int r, err = 0;
    for (;;) {
        r = REAL(ppoll)(p, 2, NULL, sigmask);
        if (r < 0) {
            err = errno;
            break;
        }
        if (p[0].revents) {
            r = REAL(epoll_wait)(epfd, events, maxevents, 0);
            err = errno;
            if (r != 0) break;
        }
        if (p[1].revents) {
            r = 0;
            break;
        }
    }
    vgpu_wait_end(w);
    if (r < 0) errno = err;
    return r;
}

VGPU_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms) {
    if (__builtin_expect(!virtual_time(), 1) || timeout_ms == 0)
        return REAL(epoll_wait)(epfd, events, maxevents, timeout_ms);
    if (timeout_ms < 0) return epoll_received(epfd, events, WOKEN(REAL(epoll_wait)(epfd, events, maxevents, timeout_ms)));
    int r = REAL(epoll_wait)(epfd, events, maxevents, 0);
    if (r == 0)
        r = epoll_with_deadline(epfd, events, maxevents, deadline_after(timeout_ms * 1000000LL), NULL, "epoll_wait");
    return epoll_received(epfd, events, r);
}

VGPU_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout_ms,
                            const sigset_t *sigmask) {
    if (__builtin_expect(!virtual_time(), 1) || timeout_ms == 0)
        return REAL(epoll_pwait)(epfd, events, maxevents, timeout_ms, sigmask);
    if (timeout_ms < 0)
        return epoll_received(epfd, events, WOKEN(REAL(epoll_pwait)(epfd, events, maxevents, timeout_ms, sigmask)));
    int r = REAL(epoll_pwait)(epfd, events, maxevents, 0, sigmask);
    if (r == 0)
        r = epoll_with_deadline(epfd, events, maxevents, deadline_after(timeout_ms * 1000000LL), sigmask, "epoll_pwait");
    return epoll_received(epfd, events, r);
}

VGPU_EXPORT int epoll_pwait2(int epfd, struct epoll_event *events, int maxevents, const struct timespec *timeout,
                             const sigset_t *sigmask) {
    if (!REAL(epoll_pwait2)) {                  /* a glibc before 2.35 */
        errno = ENOSYS;
        return -1;
    }
    if (__builtin_expect(!virtual_time(), 1) ||
        (timeout && (!ts_valid(timeout) || timeout->tv_sec < 0 || (timeout->tv_sec == 0 && timeout->tv_nsec == 0))))
        return REAL(epoll_pwait2)(epfd, events, maxevents, timeout, sigmask);
    if (!timeout)
        return epoll_received(epfd, events, WOKEN(REAL(epoll_pwait2)(epfd, events, maxevents, timeout, sigmask)));
    int64_t deadline = deadline_after(ts_duration_ns(timeout));
    static const struct timespec zero = {0, 0};
    int r = REAL(epoll_pwait2)(epfd, events, maxevents, &zero, sigmask);
    if (r == 0) r = epoll_with_deadline(epfd, events, maxevents, deadline, sigmask, "epoll_pwait2");
    return epoll_received(epfd, events, r);
}

/* ---- condition variables ----------------------------------------------------------------------- */

/* The clock a condition variable's timed waits use. glibc keeps it in the condition itself
 * (nptl/pthread_cond_init.c, glibc 2.36): bit 1 of __data.__wrefs is set for CLOCK_MONOTONIC
 * (__PTHREAD_COND_CLOCK_MONOTONIC_MASK == 2; bit 0 is process-shared, the waiter count starts at
 * bit 3). Static initialisers leave it 0: CLOCK_REALTIME. CPython creates its conditions with a
 * CLOCK_MONOTONIC condattr (the GIL's switch interval among them). */
static clockid_t cond_clock(const pthread_cond_t *cond) {
    unsigned wrefs = __atomic_load_n(&cond->__data.__wrefs, __ATOMIC_RELAXED);
    return (wrefs & 2) ? CLOCK_MONOTONIC : CLOCK_REALTIME;
}

/* glibc counts a condition's waiters in __wrefs from bit 3 (nptl/pthread_cond_wait.c adds 8 while
 * a thread waits); a signaller normally holds the mutex its waiters registered under. */
static int cond_has_waiters(const pthread_cond_t *cond) {
    return __atomic_load_n(&cond->__data.__wrefs, __ATOMIC_RELAXED) >> 3 != 0;
}

static uint64_t cond_channel(const pthread_cond_t *cond) {
    unsigned wrefs = __atomic_load_n(&cond->__data.__wrefs, __ATOMIC_RELAXED);
    return vgpu_channel_of_sync(cond, wrefs & 1);
}

/* The timed wait as a real untimed one that the Timekeeper ends with a broadcast at the deadline.
 * Returns 0 (woken: signal, broadcast or spurious, all of which a caller handles) or ETIMEDOUT. */
static int cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                           const struct timespec *abstime, const char *call) {
    if (!ts_valid(abstime)) return EINVAL;
    if (abstime->tv_sec < 0) return ETIMEDOUT;
    int64_t base;
    clock_base(clock, &base);
    int64_t deadline = abstime->tv_sec > INT64_MAX / NS_PER_S / 4 ? INT64_MAX / 4 : ts_ns(abstime) - base;
    vgpu_wait *w = vgpu_wait_begin_cond(deadline, cond, mutex, cond_channel(cond), call);
    if (!w) return ETIMEDOUT;
    int r = REAL(pthread_cond_wait)(cond, mutex);
    if (r != 0) {                   /* the mutex was not the caller's: the wait never started */
        vgpu_wait_end(w);
        return r;
    }
    /* The mutex must be free while the wait is settled: a Timekeeper broadcast that raced with
     * this wakeup locks it (to be sure its sleeper is inside the wait), and settling waits for
     * that broadcast to finish. Releasing and retaking the mutex here is the same as taking it
     * back a little later after the wakeup, which callers cannot tell from scheduling. */
    REAL(pthread_mutex_unlock)(mutex);
    int fired = vgpu_wait_end(w);
    r = REAL(pthread_mutex_lock)(mutex);      /* a robust mutex's EOWNERDEAD is the caller's */
    if (r != 0) return r;
    return fired ? ETIMEDOUT : 0;
}

VGPU_EXPORT int pthread_cond_timedwait(pthread_cond_t *restrict cond, pthread_mutex_t *restrict mutex,
                                       const struct timespec *restrict abstime) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(pthread_cond_timedwait)(cond, mutex, abstime);
    return cond_wait_until(cond, mutex, cond_clock(cond), abstime, "pthread_cond_timedwait");
}

VGPU_EXPORT int pthread_cond_clockwait(pthread_cond_t *restrict cond, pthread_mutex_t *restrict mutex,
                                       clockid_t clock, const struct timespec *restrict abstime) {
    if (__builtin_expect(!virtual_time(), 1) || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME))
        return REAL(pthread_cond_clockwait)(cond, mutex, clock, abstime);   /* EINVAL for the rest */
    return cond_wait_until(cond, mutex, clock, abstime, "pthread_cond_clockwait");
}

/* ---- semaphores -------------------------------------------------------------------------------- */

/* A timed semaphore wait must end at a deadline without touching the semaphore's count: a unit the
 * Timekeeper posted to wake this thread could be taken by another thread blocked on the same
 * semaphore (a lock acquired by two threads at once). So the Timekeeper posts a semaphore private
 * to this wait, and the thread sleeps on both at once with futex_waitv (Linux 5.16), following
 * glibc's own waiter protocol on the caller's semaphore (nptl/sem_waitcommon.c, glibc 2.36 with
 * 64-bit atomics): `data` holds the value in its low 32 bits (the futex word) and the number of
 * waiters in its high 32; sem_post adds one and, if there are waiters, wakes one; a waiter registers
 * in the high half, and takes a unit and unregisters in one compare-and-swap. `private` is glibc's
 * FUTEX_PRIVATE (0) or FUTEX_SHARED (128), which it XORs into FUTEX_PRIVATE_FLAG. */
struct glibc_sem {
    uint64_t data;
    int private;
    int pad;
};
_Static_assert(sizeof(struct glibc_sem) <= sizeof(sem_t), "glibc's semaphore layout");

#define SEM_VALUE_MASK 0xffffffffULL
#define SEM_WAITER (1ULL << 32)

static unsigned sem_futex_private(const struct glibc_sem *s) {
    return ((unsigned)s->private ^ FUTEX_PRIVATE_FLAG) & FUTEX_PRIVATE_FLAG;
}

static uint64_t sem_channel(sem_t *sem) {
    return vgpu_channel_of_sync(sem, !sem_futex_private((const struct glibc_sem *)sem));
}

/* Whether the kernel has futex_waitv: asked once, with a value that does not match (EAGAIN). */
static int have_futex_waitv(void) {
    static int known = -1;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (k < 0) {
        uint32_t word = 0;
        struct futex_waitv probe = {.val = 1, .uaddr = (uintptr_t)&word, .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG};
        int saved = errno;
        k = !(syscall(SYS_futex_waitv, &probe, 1, 0, NULL, CLOCK_MONOTONIC) < 0 && errno == ENOSYS);
        errno = saved;
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k;
}

/* 0 with a unit taken; ETIMEDOUT or EINTR without. */
static int sem_wait_virtual(sem_t *sem, int64_t deadline, const char *call) {
    struct glibc_sem *s = (struct glibc_sem *)sem;
    sem_t deadline_sem;
    sem_init(&deadline_sem, 0, 0);
    struct glibc_sem *f = (struct glibc_sem *)&deadline_sem;
    __atomic_fetch_add(&f->data, SEM_WAITER, __ATOMIC_ACQ_REL);     /* so its post wakes a futex */
    struct futex_waitv both[2] = {
        {.val = 0, .uaddr = (uintptr_t)&s->data, .flags = FUTEX_32 | sem_futex_private(s)},
        {.val = 0, .uaddr = (uintptr_t)&f->data, .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG},
    };
    vgpu_wait *w = vgpu_wait_begin_sem(deadline, &deadline_sem, sem_channel(sem), call);
    if (!w) return ETIMEDOUT;
    uint64_t d = __atomic_add_fetch(&s->data, SEM_WAITER, __ATOMIC_ACQ_REL);
    int result;
    for (;;) {
        if (d & SEM_VALUE_MASK) {
            if (__atomic_compare_exchange_n(&s->data, &d, d - 1 - SEM_WAITER, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
                result = 0;
                break;
            }
            continue;                       /* d is fresh: look again */
        }
        if (__atomic_load_n(&f->data, __ATOMIC_ACQUIRE) & SEM_VALUE_MASK) {
            result = ETIMEDOUT;
            break;
        }
        /* Sleeps unless either value is no longer 0; woken by a post to either. */
        if (syscall(SYS_futex_waitv, both, 2, 0, NULL, CLOCK_MONOTONIC) < 0 && errno == EINTR) {
            result = EINTR;
            break;
        }
        d = __atomic_load_n(&s->data, __ATOMIC_ACQUIRE);
    }
    if (result != 0) {
        /* Leaving without a unit: unregister. A post may have woken this thread as its one waiter
         * just as it timed out; then the unit is still there and another waiter must be woken. */
        d = __atomic_sub_fetch(&s->data, SEM_WAITER, __ATOMIC_ACQ_REL);
        if ((d & SEM_VALUE_MASK) && (d >> 32))
            syscall(SYS_futex, &s->data, FUTEX_WAKE | sem_futex_private(s), 1, NULL, NULL, 0);
    }
    int fired = vgpu_wait_end(w);           /* after this the waker no longer touches deadline_sem */
    if (result == EINTR && fired) result = ETIMEDOUT;
    return result;
}

/* Without futex_waitv: the Timekeeper posts the caller's semaphore itself and the thread does the
 * real sem_wait. The count stays right: the Timekeeper posts once if and only if the wait fired,
 * before it wakes vgpu_wait_end, so once that returns `fired` says whether its unit is in the count:
 *   sem_wait took one, not fired: the unit was a real post; success.
 *   sem_wait took one, fired:     one taken, one added: time out with every real post still there.
 *   interrupted, not fired:       nothing taken, nothing added; EINTR.
 *   interrupted, fired:           take the Timekeeper's unit back (sem_trywait) and time out.
 * What this cannot prevent: another thread blocked on the same semaphore taking the Timekeeper's
 * unit (as if posted) while this thread sleeps on. */
static int sem_wait_posted(sem_t *sem, int64_t deadline, const char *call) {
    vgpu_wait *w = vgpu_wait_begin_sem(deadline, sem, sem_channel(sem), call);
    if (!w) return ETIMEDOUT;
    int r = REAL(sem_wait)(sem);
    int err = errno;
    int fired = vgpu_wait_end(w);
    if (r == 0 && !fired) return 0;
    if (r != 0 && !fired) return err;
    if (r != 0) REAL(sem_trywait)(sem);
    return ETIMEDOUT;
}

static int sem_wait_until(sem_t *sem, clockid_t clock, const struct timespec *abstime, const char *call) {
    if (!ts_valid(abstime)) {
        errno = EINVAL;
        return -1;
    }
    if (REAL(sem_trywait)(sem) == 0) {
        vgpu_clock_received(sem_channel(sem));      /* the unit was posted: a message */
        return 0;
    }
    if (errno != EAGAIN) return -1;
    if (abstime->tv_sec < 0) {
        errno = ETIMEDOUT;
        return -1;
    }
    int64_t base;
    clock_base(clock, &base);
    int64_t deadline = abstime->tv_sec > INT64_MAX / NS_PER_S / 4 ? INT64_MAX / 4 : ts_ns(abstime) - base;
    int r = have_futex_waitv() ? sem_wait_virtual(sem, deadline, call) : sem_wait_posted(sem, deadline, call);
    if (r == 0) return 0;
    errno = r;
    return -1;
}

VGPU_EXPORT int sem_timedwait(sem_t *restrict sem, const struct timespec *restrict abstime) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(sem_timedwait)(sem, abstime);
    return sem_wait_until(sem, CLOCK_REALTIME, abstime, "sem_timedwait");
}

VGPU_EXPORT int sem_clockwait(sem_t *restrict sem, clockid_t clock, const struct timespec *restrict abstime) {
    if (__builtin_expect(!virtual_time(), 1) || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME))
        return REAL(sem_clockwait)(sem, clock, abstime);
    return sem_wait_until(sem, clock, abstime, "sem_clockwait");
}

/* ---- untimed waits and messages ------------------------------------------------------------------ */

VGPU_EXPORT int pthread_cond_wait(pthread_cond_t *restrict cond, pthread_mutex_t *restrict mutex) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(pthread_cond_wait)(cond, mutex);
    return RECEIVING_ON(cond_channel(cond), REAL(pthread_cond_wait)(cond, mutex));
}

VGPU_EXPORT int sem_wait(sem_t *sem) {
    if (__builtin_expect(!virtual_time(), 1)) return REAL(sem_wait)(sem);
    return RECEIVING_ON(sem_channel(sem), REAL(sem_wait)(sem));
}

#define MESSAGE_INTERPOSER(way, ret, name, params, args)                     \
    VGPU_EXPORT ret name params {                                       \
        if (__builtin_expect(!virtual_time(), 1)) return REAL(name) args; \
        return way(REAL(name) args);                                    \
    }
MESSAGE_CALLS(MESSAGE_INTERPOSER)
