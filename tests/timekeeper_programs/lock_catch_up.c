/* A thread blocked on a mutex (a futex: a sleep the vGPU library does not see) while the holder
 * computes 50 ms and sends on a pipe: when it gets the mutex, its clock catches up with the latest
 * send anywhere (clock.c's unseen sleep), which the process's statistics count as a catch-up
 * (tests/test_timekeeper.py). Prints the holder's send time and the waiter's time after the lock. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile int held, ready;
static int pipe_fds[2];
static double sent, locked;

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *holder(void *unused) {
    pthread_mutex_lock(&mutex);
    __atomic_store_n(&held, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
    }
    clock_s(CLOCK_MONOTONIC);   /* its clock starts here: the 50 ms below are charged to it */
    double end = clock_s(CLOCK_THREAD_CPUTIME_ID) + 0.05;
    while (clock_s(CLOCK_THREAD_CPUTIME_ID) < end) {
    }
    if (write(pipe_fds[1], "x", 1) != 1) return NULL;   /* a send: the latest anywhere */
    sent = clock_s(CLOCK_MONOTONIC);
    usleep(1000);               /* ends once the waiter sleeps on the mutex (every thread idle) */
    pthread_mutex_unlock(&mutex);
    return unused;
}

static void *waiter(void *unused) {
    while (!__atomic_load_n(&held, __ATOMIC_ACQUIRE)) {
    }
    clock_s(CLOCK_MONOTONIC);   /* the thread's clock starts here, before the holder's 50 ms */
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&mutex);
    locked = clock_s(CLOCK_MONOTONIC);
    pthread_mutex_unlock(&mutex);
    return unused;
}

int main(void) {
    if (pipe(pipe_fds) != 0) return 1;
    pthread_t a, b;
    pthread_create(&a, NULL, holder, NULL);
    pthread_create(&b, NULL, waiter, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    usleep(10000);              /* a timed wait: an idle thread writes the statistics */
    printf("{\"sent\": %.9f, \"locked\": %.9f}\n", sent, locked);
    return 0;
}
