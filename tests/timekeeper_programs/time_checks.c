/* time_checks.c: the host's time functions in virtual time (tests/test_timekeeper_time.py).
 *
 * Each check prints one line:  <name> <return value> <errno name or -> <elapsed virtual s>
 * where the elapsed time is measured on CLOCK_MONOTONIC (and, for "clocks", on every clock).
 * The test asserts the values; this program only measures. Run under a Timekeeper with the vGPU
 * library preloaded; without one it would take about a minute of real time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double mono(void) { return now(CLOCK_MONOTONIC); }

static const char *errname(int e) {
    switch (e) {
    case 0: return "-";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAGAIN: return "EAGAIN";
    default: return strerror(e);
    }
}

static void report(const char *name, long rc, int err, double start) {
    printf("%s %ld %s %.6f\n", name, rc, errname(err), mono() - start);
    fflush(stdout);
}

static struct timespec abs_after(clockid_t id, double seconds) {
    double t = now(id) + seconds;
    struct timespec ts = {.tv_sec = (time_t)t};
    ts.tv_nsec = (long)((t - ts.tv_sec) * 1e9);
    return ts;
}

/* ---- helpers run on a second thread ---------------------------------------------------------- */

struct later {
    double delay;           /* virtual seconds to sleep first */
    int fd;                 /* write a byte here, or */
    sem_t *sem;             /* post this, or */
    pthread_cond_t *cond;   /* signal this under mutex, or */
    pthread_mutex_t *mutex;
    pthread_t signal_thread;/* send SIGUSR1 to this thread */
    int send_signal;
};

static void *do_later(void *arg) {
    struct later *l = arg;
    struct timespec d = {.tv_sec = (time_t)l->delay, .tv_nsec = (long)((l->delay - (time_t)l->delay) * 1e9)};
    nanosleep(&d, NULL);
    if (l->fd >= 0 && write(l->fd, "x", 1) != 1) abort();
    if (l->sem) sem_post(l->sem);
    if (l->cond) {
        pthread_mutex_lock(l->mutex);
        pthread_cond_signal(l->cond);
        pthread_mutex_unlock(l->mutex);
    }
    if (l->send_signal) pthread_kill(l->signal_thread, SIGUSR1);
    return NULL;
}

static pthread_t start_later(struct later *l) {
    pthread_t t;
    if (pthread_create(&t, NULL, do_later, l) != 0) abort();
    return t;
}

static void on_signal(int sig) { (void)sig; }

int main(void) {
    int pipefd[2];
    if (pipe(pipefd) != 0) return 1;
    char byte;

    /* Clocks: every clock moves by the slept virtual time; CPU time does not. */
    {
        double m = mono(), r = now(CLOCK_REALTIME), b = now(CLOCK_BOOTTIME), raw = now(CLOCK_MONOTONIC_RAW);
        double coarse = now(CLOCK_MONOTONIC_COARSE), tai = now(CLOCK_TAI), cpu = now(CLOCK_THREAD_CPUTIME_ID);
        struct timeval tv0, tv1;
        gettimeofday(&tv0, NULL);
        time_t t0 = time(NULL);
        struct timespec req = {2, 0}, rem = {7, 7};
        int rc = nanosleep(&req, &rem);
        gettimeofday(&tv1, NULL);
        printf("nanosleep %d %s %.6f rem %ld.%09ld\n", rc, errname(rc ? errno : 0), mono() - m, (long)rem.tv_sec, rem.tv_nsec);
        printf("clocks realtime %.6f boottime %.6f raw %.6f coarse %.6f tai %.6f gettimeofday %.6f time %ld cpu %.6f\n",
               now(CLOCK_REALTIME) - r, now(CLOCK_BOOTTIME) - b, now(CLOCK_MONOTONIC_RAW) - raw,
               now(CLOCK_MONOTONIC_COARSE) - coarse, now(CLOCK_TAI) - tai,
               (tv1.tv_sec - tv0.tv_sec) + (tv1.tv_usec - tv0.tv_usec) * 1e-6, (long)(time(NULL) - t0),
               now(CLOCK_THREAD_CPUTIME_ID) - cpu);
        /* Virtual wall time is the host's at the deployment's start plus virtual time. */
        printf("realtime_vs_host %.3f\n", now(CLOCK_REALTIME) - (double)time(NULL));
    }
    /* Sleeps. */
    {
        double s = mono();
        struct timespec target = abs_after(CLOCK_MONOTONIC, 1.5);
        int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, NULL);
        report("clock_nanosleep_abs_monotonic", rc, 0, s);
        printf("abs_overshoot %.6f\n", mono() - (target.tv_sec + target.tv_nsec * 1e-9));
        s = mono();
        target = abs_after(CLOCK_REALTIME, 0.75);
        rc = clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &target, NULL);
        report("clock_nanosleep_abs_realtime", rc, 0, s);
        s = mono();
        target = abs_after(CLOCK_MONOTONIC, -5);                /* in the past */
        rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, NULL);
        report("clock_nanosleep_abs_past", rc, 0, s);
        s = mono();
        struct timespec rel = {0, 250000000}, rem;
        rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &rel, &rem);
        report("clock_nanosleep_rel", rc, 0, s);
        struct timespec bad = {0, 2000000000L};
        rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL);
        report("clock_nanosleep_invalid", rc, 0, s);
        errno = 0;
        rc = nanosleep(&bad, NULL);
        report("nanosleep_invalid", rc, errno, s);
        s = mono();
        struct timespec zero = {0, 0};
        rc = nanosleep(&zero, NULL);
        report("nanosleep_zero", rc, 0, s);
        s = mono();
        rc = usleep(250000);
        report("usleep", rc, 0, s);
        s = mono();
        unsigned left = sleep(1);
        report("sleep", (long)left, 0, s);
    }
    /* Timeouts on descriptors nobody writes. */
    {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        double s = mono();
        int rc = poll(&p, 1, 3000);
        report("poll_timeout", rc, 0, s);
        s = mono();
        rc = poll(&p, 1, 0);
        report("poll_zero", rc, 0, s);
        s = mono();
        rc = poll(NULL, 0, 400);
        report("poll_no_fds", rc, 0, s);
        s = mono();
        struct timespec t = {0, 600000000};
        rc = ppoll(&p, 1, &t, NULL);
        report("ppoll_timeout", rc, 0, s);

        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(pipefd[0], &rd);
        struct timeval tv = {1, 500000};
        s = mono();
        rc = select(pipefd[0] + 1, &rd, NULL, NULL, &tv);
        report("select_timeout", rc, 0, s);
        printf("select_cleared %d left %ld.%06ld\n", FD_ISSET(pipefd[0], &rd), (long)tv.tv_sec, (long)tv.tv_usec);
        FD_ZERO(&rd);
        FD_SET(pipefd[0], &rd);
        s = mono();
        rc = pselect(pipefd[0] + 1, &rd, NULL, NULL, &t, NULL);
        report("pselect_timeout", rc, 0, s);

        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = pipefd[0]}, out[4];
        epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev);
        s = mono();
        rc = epoll_wait(ep, out, 4, 2000);
        report("epoll_wait_timeout", rc, 0, s);
        sigset_t mask;
        sigemptyset(&mask);
        s = mono();
        rc = epoll_pwait(ep, out, 4, 700, &mask);
        report("epoll_pwait_timeout", rc, 0, s);
        struct timespec t2 = {0, 300000000};
        s = mono();
        rc = epoll_pwait2(ep, out, 4, &t2, &mask);
        report("epoll_pwait2_timeout", rc, 0, s);

        /* Data before the deadline: a second thread writes after its own 1 s virtual sleep. */
        struct later l = {.delay = 1.0, .fd = pipefd[1]};
        s = mono();
        pthread_t th = start_later(&l);
        p.revents = 0;
        rc = poll(&p, 1, 10000);
        report("poll_data", rc, 0, s);
        printf("poll_data_revents %d\n", p.revents);
        pthread_join(th, NULL);
        if (read(pipefd[0], &byte, 1) != 1) return 1;

        l.delay = 0.5;
        s = mono();
        th = start_later(&l);
        rc = epoll_wait(ep, out, 4, 10000);
        report("epoll_data", rc, 0, s);
        pthread_join(th, NULL);
        if (read(pipefd[0], &byte, 1) != 1) return 1;

        l.delay = 0.25;
        FD_ZERO(&rd);
        FD_SET(pipefd[0], &rd);
        tv = (struct timeval){10, 0};
        s = mono();
        th = start_later(&l);
        rc = select(pipefd[0] + 1, &rd, NULL, NULL, &tv);
        report("select_data", rc, 0, s);
        printf("select_data_set %d\n", FD_ISSET(pipefd[0], &rd));
        pthread_join(th, NULL);
        if (read(pipefd[0], &byte, 1) != 1) return 1;
        close(ep);
    }
    /* Condition variables: CLOCK_MONOTONIC condattr, the default (CLOCK_REALTIME), clockwait. */
    {
        pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_t mono_cond, real_cond = PTHREAD_COND_INITIALIZER;
        pthread_cond_init(&mono_cond, &attr);

        pthread_mutex_lock(&mutex);
        struct timespec until = abs_after(CLOCK_MONOTONIC, 1.0);
        double s = mono();
        int rc = pthread_cond_timedwait(&mono_cond, &mutex, &until);
        report("cond_timedwait_monotonic", rc, 0, s);
        printf("cond_mutex_held %d\n", pthread_mutex_trylock(&mutex) == EBUSY);
        until = abs_after(CLOCK_REALTIME, 1.25);
        s = mono();
        rc = pthread_cond_timedwait(&real_cond, &mutex, &until);
        report("cond_timedwait_realtime", rc, 0, s);
        until = abs_after(CLOCK_MONOTONIC, 0.5);
        s = mono();
        rc = pthread_cond_clockwait(&real_cond, &mutex, CLOCK_MONOTONIC, &until);
        report("cond_clockwait", rc, 0, s);
        until = abs_after(CLOCK_MONOTONIC, -1);
        s = mono();
        rc = pthread_cond_timedwait(&mono_cond, &mutex, &until);
        report("cond_timedwait_past", rc, 0, s);
        /* Signalled before the deadline. */
        struct later l = {.delay = 0.5, .fd = -1, .cond = &mono_cond, .mutex = &mutex};
        until = abs_after(CLOCK_MONOTONIC, 10);
        s = mono();
        pthread_t th = start_later(&l);
        rc = pthread_cond_timedwait(&mono_cond, &mutex, &until);
        report("cond_signalled", rc, 0, s);
        pthread_mutex_unlock(&mutex);
        pthread_join(th, NULL);
    }
    /* Semaphores. */
    {
        sem_t sem;
        sem_init(&sem, 0, 0);
        struct timespec until = abs_after(CLOCK_REALTIME, 1.0);
        double s = mono();
        errno = 0;
        int rc = sem_timedwait(&sem, &until);
        report("sem_timedwait", rc, errno, s);
        int value = -1;
        sem_getvalue(&sem, &value);
        printf("sem_value_after_timeout %d\n", value);
        until = abs_after(CLOCK_MONOTONIC, 0.5);
        s = mono();
        errno = 0;
        rc = sem_clockwait(&sem, CLOCK_MONOTONIC, &until);
        report("sem_clockwait", rc, errno, s);
        sem_post(&sem);
        until = abs_after(CLOCK_REALTIME, 5);
        s = mono();
        errno = 0;
        rc = sem_timedwait(&sem, &until);
        report("sem_available", rc, errno, s);
        struct later l = {.delay = 0.5, .fd = -1, .sem = &sem};
        until = abs_after(CLOCK_REALTIME, 10);
        s = mono();
        pthread_t th = start_later(&l);
        errno = 0;
        rc = sem_timedwait(&sem, &until);
        report("sem_posted", rc, errno, s);
        pthread_join(th, NULL);
        sem_getvalue(&sem, &value);
        printf("sem_value_after_post %d\n", value);
    }
    /* A signal interrupts a virtual sleep like a real one: EINTR, with the time left. */
    {
        struct sigaction sa = {.sa_handler = on_signal};
        sigaction(SIGUSR1, &sa, NULL);
        struct later l = {.delay = 1.0, .fd = -1, .signal_thread = pthread_self(), .send_signal = 1};
        double s = mono();
        pthread_t th = start_later(&l);
        struct timespec req = {10, 0}, rem = {0, 0};
        errno = 0;
        int rc = nanosleep(&req, &rem);
        report("nanosleep_signal", rc, errno, s);
        printf("nanosleep_signal_rem %.6f\n", rem.tv_sec + rem.tv_nsec * 1e-9);
        pthread_join(th, NULL);
    }
    printf("done\n");
    return 0;
}
