/* timekeeper.c: this process's connection to the deployment's Timekeeper.
 *
 * One connection per process (made in the constructor, remade after fork), spoken in ZMTP 3.0 so
 * that the Timekeeper is an ordinary ZeroMQ ROUTER socket. libzmq is not used here: the engines
 * load their own, and a second copy whose I/O threads would run through this library's own
 * poll/epoll interposition is more risk than the ~100 lines of framing below.
 *
 * Any thread may wait (a virtual deadline, a collective); a waker thread reads the Timekeeper's
 * answers and wakes the waiting thread: through its eventfd, or, for waits inside
 * pthread_cond_timedwait and sem_timedwait, by broadcasting the condition or posting the
 * semaphore the thread sleeps on.
 */
#define _GNU_SOURCE     /* pthread_setname_np */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/host.h"
#include "tk_protocol.h"
#include "vgpu.h"

enum { WAITING, FIRED, CANCELLED };

struct vgpu_wait {
    uint64_t token;
    int state;
    int64_t deadline_ns;        /* deadline waits; -1 for collectives */
    int64_t completion_ns;      /* collectives */
    pthread_cond_t *cond;       /* cond waits: broadcast when fired */
    pthread_mutex_t *mutex;
    sem_t *sem;                 /* semaphore waits: posted when fired */
    uint64_t channel;           /* what ending before the deadline received (clock.c) */
    int efd;                    /* the waiting thread's eventfd: written once the wait is final */
    vgpu_wait *next;
};

static int conn = -1;
static pid_t conn_pid;
static pthread_mutex_t conn_lock = PTHREAD_MUTEX_INITIALIZER;   /* connecting and sending */
static pthread_mutex_t waits_lock = PTHREAD_MUTEX_INITIALIZER;
static vgpu_wait *waits;
static uint64_t next_token = 1;
static __thread int thread_efd = -1;
static __thread pid_t thread_efd_pid;

static void die(const char *what) {
    fprintf(stderr, "vgpu: Timekeeper connection (%s): %s: %s\n", getenv("REVATI_TIMEKEEPER"), what, strerror(errno));
    _exit(86);
}

/* The library's own I/O goes around its interposers (interpose_time.c): what the connection and
 * the waker do is not the deployment's work and must not read or move its clock. */
static ssize_t sys_read(int fd, void *p, size_t n) { return syscall(SYS_read, fd, p, n); }
static ssize_t sys_write(int fd, const void *p, size_t n) { return syscall(SYS_write, fd, p, n); }

/* ---- ZMTP 3.0 framing ------------------------------------------------------------------------ */

static void write_all(int fd, const void *data, size_t n) {
    for (const char *p = data; n;) {
        ssize_t k = sys_write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) die("write");
        p += k;
        n -= (size_t)k;
    }
}

static int read_all(int fd, void *data, size_t n) {
    for (char *p = data; n;) {
        ssize_t k = sys_read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* One frame: returns its flags, fills body (up to cap bytes; longer bodies are an error). */
static int read_frame(int fd, unsigned char *body, size_t cap, size_t *len) {
    unsigned char flags, size[8];
    if (read_all(fd, &flags, 1)) return -1;
    uint64_t n = 0;
    if (flags & 0x02) {
        if (read_all(fd, size, 8)) return -1;
        for (int i = 0; i < 8; i++) n = n << 8 | size[i];
    } else {
        if (read_all(fd, size, 1)) return -1;
        n = size[0];
    }
    if (n > cap) return -1;
    if (read_all(fd, body, n)) return -1;
    *len = n;
    return flags;
}

static void handshake(int fd) {
    unsigned char greeting[64] = {0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0x7f, 3, 0, 'N', 'U', 'L', 'L'};
    write_all(fd, greeting, sizeof greeting);
    unsigned char peer[64];
    if (read_all(fd, peer, sizeof peer) || peer[0] != 0xff || peer[9] != 0x7f || peer[10] < 3)
        die("not a ZMTP 3 peer");
    static const char ready[] = "\x05READY\x0bSocket-Type\x00\x00\x00\x06" "DEALER";
    unsigned char frame[2 + sizeof ready] = {0x04, sizeof ready - 1};
    memcpy(frame + 2, ready, sizeof ready - 1);
    write_all(fd, frame, 2 + sizeof ready - 1);
    unsigned char body[512];
    size_t len;
    int flags = read_frame(fd, body, sizeof body, &len);
    if (flags < 0 || !(flags & 0x04) || len < 6 || memcmp(body + 1, "READY", 5) != 0) die("no READY from the Timekeeper");
}

static void send_message(tk_message *m) {
    unsigned char frame[2 + sizeof *m] = {0x00, sizeof *m};
    m->pid = vgpu_own_pid();
    memcpy(frame + 2, m, sizeof *m);
    vgpu_clock_message_sent();
    pthread_mutex_lock(&conn_lock);
    write_all(conn, frame, sizeof frame);
    pthread_mutex_unlock(&conn_lock);
}

/* ---- the waker ------------------------------------------------------------------------------------- */

static void *waker(void *arg) {
    int fd = (int)(intptr_t)arg;
    vgpu_clock_untimed_thread();
    for (;;) {
        tk_message m;
        size_t len;
        int flags = read_frame(fd, (unsigned char *)&m, sizeof m, &len);
        if (flags < 0) {
            if (vgpu_own_pid() != conn_pid) return NULL;      /* a forked child's stale copy */
            fprintf(stderr, "vgpu: the Timekeeper closed the connection; exiting\n");
            _exit(86);
        }
        if (flags & 0x04 || len != sizeof m) continue;  /* ZMTP commands (heartbeats) */
        pthread_mutex_lock(&waits_lock);
        vgpu_wait *w = waits;
        while (w && w->token != m.token) w = w->next;
        if (!w || w->state != WAITING) {                /* answered already (a cancel raced) */
            pthread_mutex_unlock(&waits_lock);
            continue;
        }
        int state = m.type == TK_CANCELLED && !m.flag ? CANCELLED : FIRED;
        if (m.type == TK_COMPLETE) w->completion_ns = m.time_ns;
        pthread_cond_t *cond = state == FIRED ? w->cond : NULL;
        pthread_mutex_t *mutex = w->mutex;
        sem_t *sem = state == FIRED ? w->sem : NULL;
        int efd = w->efd;
        w->state = state;   /* from here the waiting thread may free w: use only the copies */
        pthread_mutex_unlock(&waits_lock);
        /* The sleeper holds mutex until it is inside the wait; so the waker takes the caller's
         * mutex here, and a caller must never hold it while it settles a wait (vgpu.h). The
         * broadcast and the post are the library's, made on the sleeper's behalf: libc's own
         * (host.h), past the interposers that count the deployment's signals as sends. */
        if (cond) {
            pthread_mutex_lock(mutex);
            REAL(pthread_cond_broadcast)(cond);
            pthread_mutex_unlock(mutex);
        }
        if (sem) REAL(sem_post)(sem);
        uint64_t one = 1;
        write_all(efd, &one, sizeof one);
    }
}

/* ---- connection ------------------------------------------------------------------------------------ */

static void connect_timekeeper(void) {
    const char *endpoint = getenv("REVATI_TIMEKEEPER");
    unsigned port;
    char host[64];
    if (sscanf(endpoint, "tcp://%63[^:]:%u", host, &port) != 2) {
        errno = EINVAL;
        die("REVATI_TIMEKEEPER must look like tcp://127.0.0.1:PORT");
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("socket");
    if (syscall(SYS_connect, fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    handshake(fd);
    conn = fd;
    conn_pid = vgpu_own_pid();
    /* The secret proves this process is of the deployment (protocol.py, REGISTER). */
    const char *secret = getenv("REVATI_TIMEKEEPER_SECRET");
    char *end = NULL;
    errno = 0;
    uint64_t token = secret ? strtoull(secret, &end, 16) : 0;
    if (!secret || !*secret || *end || errno) {
        errno = EINVAL;
        die("REVATI_TIMEKEEPER_SECRET must be the Timekeeper's secret (Timekeeper.env())");
    }
    tk_message m = {.type = TK_REGISTER, .tid = getppid(), .token = token};
    FILE *comm = fopen("/proc/self/comm", "r");
    if (comm) {
        if (fgets(m.call, sizeof m.call, comm)) m.call[strcspn(m.call, "\n")] = 0;
        fclose(comm);
    }
    send_message(&m);
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&thread, &attr, waker, (void *)(intptr_t)fd) != 0) die("waker thread");
    pthread_setname_np(thread, "vgpu-waker");      /* so deadlock reports say what it is */
    pthread_attr_destroy(&attr);
}

static void unregister(void) {
    if (conn < 0 || vgpu_own_pid() != conn_pid) return;
    tk_message m = {.type = TK_UNREGISTER};
    send_message(&m);
}

/* A forked child has the parent's socket but not its waker thread: it connects anew. */
static void after_fork_in_child(void) {
    if (conn < 0) return;
    close(conn);
    conn = -1;
    pthread_mutex_init(&conn_lock, NULL);
    pthread_mutex_init(&waits_lock, NULL);
    waits = NULL;
    connect_timekeeper();
}

int vgpu_timekeeper_connected(void) { return conn >= 0; }

__attribute__((constructor)) static void timekeeper_start(void) {
    const char *endpoint = getenv("REVATI_TIMEKEEPER");
    if (!endpoint || !*endpoint || !vgpu_virtual_time_active()) return;
    connect_timekeeper();
    atexit(unregister);
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

/* ---- waits -------------------------------------------------------------------------------------------- */

static int my_efd(void) {
    if (thread_efd < 0 || thread_efd_pid != vgpu_own_pid()) {     /* eventfds do not survive fork's intent */
        thread_efd = eventfd(0, EFD_CLOEXEC);
        thread_efd_pid = vgpu_own_pid();
        if (thread_efd < 0) die("eventfd");
    }
    return thread_efd;
}

static vgpu_wait *begin(tk_message *m, int64_t deadline_ns, uint64_t channel, pthread_cond_t *cond,
                        pthread_mutex_t *mutex, sem_t *sem) {
    vgpu_wait *w = calloc(1, sizeof *w);
    w->deadline_ns = deadline_ns;
    w->channel = channel;
    w->efd = my_efd();
    w->cond = cond;
    w->mutex = mutex;
    w->sem = sem;
    pthread_mutex_lock(&waits_lock);
    w->token = next_token++;
    w->next = waits;
    waits = w;
    pthread_mutex_unlock(&waits_lock);
    m->token = w->token;
    m->tid = (int)syscall(SYS_gettid);
    vgpu_stats_flush_when_idle();
    send_message(m);
    return w;
}

/* Threads of the engines' libraries whose timed waits only look at a flag between events: torch's
 * gloo transport loop (epoll_wait of 10 ms, to see whether it should stop; its work comes as
 * events) and its NCCL watchdog and heartbeat monitor. Their timeouts are stretched to at least
 * HOUSEKEEPING_NS of virtual time: at their own periods, the six gloo loops of a TP1 vLLM engine
 * asked for 62% of its waits and most of its time jumps. */
static const char *const HOUSEKEEPING_THREADS[] = {"gloo_tcp_loop", "pt_nccl_watchdg", "pt_nccl_heartbt"};
#define HOUSEKEEPING_NS 1000000000

static int housekeeping_thread(void) {
    char name[16] = "";
    prctl(PR_GET_NAME, name);
    for (size_t i = 0; i < sizeof HOUSEKEEPING_THREADS / sizeof *HOUSEKEEPING_THREADS; i++)
        if (strcmp(name, HOUSEKEEPING_THREADS[i]) == 0) return 1;
    return 0;
}

static vgpu_wait *begin_deadline(int64_t deadline_ns, uint64_t channel, const char *call,
                                 pthread_cond_t *cond, pthread_mutex_t *mutex, sem_t *sem) {
    int64_t now = vgpu_now_ns();
    if (deadline_ns <= now) return NULL;
    if (deadline_ns < now + HOUSEKEEPING_NS && housekeeping_thread()) deadline_ns = now + HOUSEKEEPING_NS;
    tk_message m = {.type = TK_WAIT, .time_ns = deadline_ns};
    snprintf(m.call, sizeof m.call, "%s", call);
    return begin(&m, deadline_ns, channel, cond, mutex, sem);
}

vgpu_wait *vgpu_wait_begin(int64_t deadline_ns, uint64_t channel, const char *call) {
    return begin_deadline(deadline_ns, channel, call, NULL, NULL, NULL);
}

vgpu_wait *vgpu_wait_begin_cond(int64_t deadline_ns, pthread_cond_t *cond, pthread_mutex_t *mutex,
                                uint64_t channel, const char *call) {
    return begin_deadline(deadline_ns, channel, call, cond, mutex, NULL);
}

vgpu_wait *vgpu_wait_begin_sem(int64_t deadline_ns, sem_t *sem, uint64_t channel, const char *call) {
    return begin_deadline(deadline_ns, channel, call, NULL, NULL, sem);
}

int vgpu_wait_fd(const vgpu_wait *w) { return w->efd; }

static int state_of(vgpu_wait *w) {
    pthread_mutex_lock(&waits_lock);
    int state = w->state;
    pthread_mutex_unlock(&waits_lock);
    return state;
}

/* Block until the wait is final, consume its wakeup, unlink and free it; returns the state and,
 * for a collective, its completion time. The thread's clock moves on (clock.c): to a deadline that
 * was reached, or, when something else ended the wait first, to the latest message sent. A
 * collective does not move it: the host thread enqueued the collective and goes on; only the
 * stream waits for the completion. */
static int settle(vgpu_wait *w, int64_t *completion_ns) {
    uint64_t count;
    while (sys_read(w->efd, &count, sizeof count) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&waits_lock);
    for (vgpu_wait **p = &waits; *p; p = &(*p)->next)
        if (*p == w) { *p = w->next; break; }
    pthread_mutex_unlock(&waits_lock);
    int state = w->state;
    int64_t deadline = w->deadline_ns;
    uint64_t w_channel = w->channel;
    if (completion_ns) *completion_ns = w->completion_ns;
    free(w);
    if (deadline >= 0) {
        if (state == FIRED) vgpu_clock_resumed(deadline);
        else vgpu_clock_received(w_channel);
    }
    return state;
}

int vgpu_wait_end(vgpu_wait *w) {
    if (state_of(w) == WAITING) {
        tk_message m = {.type = TK_CANCEL, .token = w->token, .tid = (int)syscall(SYS_gettid)};
        send_message(&m);
    }
    return settle(w, NULL) == FIRED;
}

void vgpu_sleep_until_ns(int64_t deadline_ns, const char *call) {
    vgpu_wait *w = vgpu_wait_begin(deadline_ns, VGPU_CHANNEL_ANY, call);
    if (w) settle(w, NULL);
}

/* A GPU synchronisation (stream.c): under a Timekeeper a wait for the deadline like a sleep's;
 * without one, the process's own clock jumps there at once (vgpu_clock_resumed, clock.c). */
void vgpu_wait_until(double t) {
    int64_t target = (int64_t)(t * 1e9 + 0.5);
    if (!vgpu_virtual_time_active()) vgpu_clock_resumed(target);
    else if (target > vgpu_now_ns()) vgpu_sleep_until_ns(target, "gpu synchronize");
}

typedef struct arrival { tk_message message; int64_t completion_ns; } arrival;

static void arrive(void *arg) {
    arrival *a = arg;
    vgpu_wait *w = begin(&a->message, -1, VGPU_CHANNEL_ANY, NULL, NULL, NULL);
    settle(w, &a->completion_ns);
}

/* The host thread only queues a collective; meeting the other ranks is the library's business:
 * uncharged (a decode step of vLLM meets them 161 times, in every graph replay). */
int64_t vgpu_collective_arrive(uint64_t comm, uint64_t seq, int rank, int nranks, int64_t arrival_ns,
                               int64_t duration_ns, const char *call) {
    arrival a = {.message = {.type = TK_ARRIVE, .comm = comm, .seq = seq, .rank = rank, .nranks = nranks,
                             .time_ns = arrival_ns, .duration_ns = duration_ns}};
    snprintf(a.message.call, sizeof a.message.call, "%s", call);
    vgpu_clock_uncharged(arrive, &a);
    return a.completion_ns;
}
