/* host.h: the host beneath the emulation (host.c): libc's own functions, past this library's
 * interposers.
 *
 * interpose_time.c replaces libc's clocks, sleeps, timed waits and message calls for the emulated
 * program. The library itself sometimes needs the real ones: the virtual clock reads the host's
 * clocks (clock.c: vgpu_host_clock_ns), the Timekeeper's waker signals and posts on a sleeper's
 * behalf (timekeeper.c), and the interposers call through to them. All of them find the real
 * functions here, below every file that uses them, so that no file has to call up into the
 * interposers to reach libc. (This process's id, kept across forks, is host.c's too:
 * vgpu_own_pid, declared in vgpu.h with the host clock.)
 */
#ifndef REVATI_VGPU_HOST_H
#define REVATI_VGPU_HOST_H

#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* The libc functions the library reaches past its interposers: the clocks, sleeps and waits that
 * interpose_time.c replaces, and the calls that move messages between threads and processes. */
#define HOST_LIBC_FUNCTIONS(X) \
    X(int, gettimeofday, (struct timeval *, void *)) \
    X(time_t, time, (time_t *)) \
    X(int, timespec_get, (struct timespec *, int)) \
    X(int, nanosleep, (const struct timespec *, struct timespec *)) \
    X(int, clock_nanosleep, (clockid_t, int, const struct timespec *, struct timespec *)) \
    X(int, usleep, (useconds_t)) \
    X(unsigned, sleep, (unsigned)) \
    X(int, sched_yield, (void)) \
    X(int, poll, (struct pollfd *, nfds_t, int)) \
    X(int, ppoll, (struct pollfd *, nfds_t, const struct timespec *, const sigset_t *)) \
    X(int, select, (int, fd_set *, fd_set *, fd_set *, struct timeval *)) \
    X(int, pselect, (int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *)) \
    X(int, epoll_wait, (int, struct epoll_event *, int, int)) \
    X(int, epoll_pwait, (int, struct epoll_event *, int, int, const sigset_t *)) \
    X(int, epoll_pwait2, (int, struct epoll_event *, int, const struct timespec *, const sigset_t *)) \
    X(int, epoll_ctl, (int, int, int, struct epoll_event *)) \
    X(int, pthread_cond_timedwait, (pthread_cond_t *, pthread_mutex_t *, const struct timespec *)) \
    X(int, pthread_cond_clockwait, (pthread_cond_t *, pthread_mutex_t *, clockid_t, const struct timespec *)) \
    X(int, pthread_cond_wait, (pthread_cond_t *, pthread_mutex_t *)) \
    X(int, pthread_mutex_lock, (pthread_mutex_t *)) \
    X(int, pthread_mutex_unlock, (pthread_mutex_t *)) \
    X(int, sem_timedwait, (sem_t *, const struct timespec *)) \
    X(int, sem_clockwait, (sem_t *, clockid_t, const struct timespec *)) \
    X(int, sem_wait, (sem_t *)) \
    X(int, sem_trywait, (sem_t *)) \
    X(ssize_t, read, (int, void *, size_t)) \
    X(ssize_t, readv, (int, const struct iovec *, int)) \
    X(ssize_t, recv, (int, void *, size_t, int)) \
    X(ssize_t, recvfrom, (int, void *restrict, size_t, int, struct sockaddr *restrict, socklen_t *restrict)) \
    X(ssize_t, recvmsg, (int, struct msghdr *, int)) \
    X(int, accept, (int, struct sockaddr *restrict, socklen_t *restrict)) \
    X(int, accept4, (int, struct sockaddr *restrict, socklen_t *restrict, int)) \
    X(int, connect, (int, const struct sockaddr *, socklen_t)) \
    X(ssize_t, write, (int, const void *, size_t)) \
    X(ssize_t, writev, (int, const struct iovec *, int)) \
    X(ssize_t, send, (int, const void *, size_t, int)) \
    X(ssize_t, sendto, (int, const void *, size_t, int, const struct sockaddr *, socklen_t)) \
    X(ssize_t, sendmsg, (int, const struct msghdr *, int)) \
    X(int, pthread_cond_signal, (pthread_cond_t *)) \
    X(int, pthread_cond_broadcast, (pthread_cond_t *)) \
    X(int, sem_post, (sem_t *)) \
    X(int, kill, (pid_t, int)) \
    X(int, pthread_kill, (pthread_t, int))

typedef struct vgpu_libc {
    int (*clock_gettime)(clockid_t, struct timespec *);     /* resolved last: the "resolved" flag */
#define HOST_LIBC_MEMBER(ret, name, params) ret(*name) params;
    HOST_LIBC_FUNCTIONS(HOST_LIBC_MEMBER)
#undef HOST_LIBC_MEMBER
} vgpu_libc;

/* The next definitions after this library's (dlsym(RTLD_NEXT)): libc's. NULL where this libc has
 * none (epoll_pwait2 before glibc 2.35). */
extern vgpu_libc vgpu_real __attribute__((visibility("hidden")));
void vgpu_real_resolve(void);

/* The real function, resolving on first use: a call may come before host.c's constructor (another
 * library's constructor reading the clock, or one of this library's that runs earlier). */
#define REAL(name) \
    (__builtin_expect(vgpu_real.clock_gettime != NULL, 1) ? vgpu_real.name : (vgpu_real_resolve(), vgpu_real.name))

#endif
