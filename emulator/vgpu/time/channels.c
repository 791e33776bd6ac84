/* channels.c: which channel a message travels on.
 *
 * A thread that receives catches up with the virtual time of the last send on the message's own
 * channel (clock.c). Catching up with the last send anywhere in the deployment instead makes the
 * receiver late by whatever other threads sent between the message and the moment the host got
 * round to running the receiver: on a loaded or single-core host, tens of milliseconds, and the
 * host's scheduling leaks into the results.
 *
 * A channel is a 64-bit key that both ends compute alike, for the direction the message goes:
 *   - pipes and FIFOs: the pipe's inode (one direction only);
 *   - TCP: sender's and receiver's addresses, in that order (IPv4-mapped IPv6 as IPv4, since
 *     a dual-stack listener sees its IPv4 peers so);
 *   - connected Unix sockets (ZeroMQ's ipc://, multiprocessing): the receiving socket's inode,
 *     which the sender learns from the kernel's sock_diag (UNIX_DIAG_PEER);
 *   - eventfds: the kernel's eventfd id (/proc/self/fdinfo, Linux 6.0 and later);
 *   - condition variables and semaphores private to a process: the process and the object's
 *     address.
 * VGPU_CHANNEL_ANY (0) is a channel this file cannot name (a datagram socket, a process-shared
 * semaphore, an older kernel's eventfd): its receiver catches up with the last send anywhere, as
 * before, late but never early. VGPU_CHANNEL_NONE is no channel at all: regular files, devices
 * and directories carry no messages between the deployment's threads.
 *
 * Descriptors are looked up through a per-process cache checked by inode on every call (one
 * fstat), so a descriptor number reused for another file is recomputed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "vgpu.h"

/* A 64-bit mix of two words (splitmix64's finaliser), never 0 or VGPU_CHANNEL_NONE. */
static uint64_t mix(uint64_t a, uint64_t b) {
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ b;
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x == VGPU_CHANNEL_ANY || x == VGPU_CHANNEL_NONE ? x + 2 : x;
}

enum { KIND_PIPE = 1, KIND_TCP, KIND_UNIX, KIND_EVENTFD, KIND_SYNC };

/* ---- TCP ------------------------------------------------------------------------------------ */

/* An address as (IPv4 or IPv6 bytes, port), IPv4-mapped IPv6 folded to IPv4. */
static uint64_t address_key(const struct sockaddr_storage *a) {
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)a;
        return mix(in->sin_addr.s_addr, in->sin_port);
    }
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)a;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        uint32_t v4;
        memcpy(&v4, &in6->sin6_addr.s6_addr[12], sizeof v4);
        return mix(v4, in6->sin6_port);
    }
    uint64_t halves[2];
    memcpy(halves, &in6->sin6_addr, sizeof halves);
    return mix(mix(halves[0], halves[1]), in6->sin6_port);
}

static uint64_t tcp_channel(int fd, int direction) {
    struct sockaddr_storage local, peer;
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0)
        return VGPU_CHANNEL_ANY;
    uint64_t from = address_key(direction == VGPU_SEND ? &local : &peer);
    uint64_t to = address_key(direction == VGPU_SEND ? &peer : &local);
    return mix(KIND_TCP, mix(from, to));
}

/* ---- Unix sockets ---------------------------------------------------------------------------- */

/* The inode of the socket connected to the one with inode `ino`; 0 if none or unknown. Raw system
 * calls: this library interposes send and receive calls. */
static uint64_t unix_peer_inode(uint64_t ino) {
    int nl = (int)syscall(SYS_socket, AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return 0;
    struct {
        struct nlmsghdr header;
        struct unix_diag_req request;
    } query = {
        .header = {.nlmsg_len = sizeof query, .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST},
        .request = {.sdiag_family = AF_UNIX, .udiag_states = -1U, .udiag_ino = (uint32_t)ino,
                    .udiag_show = UDIAG_SHOW_PEER, .udiag_cookie = {-1U, -1U}},
    };
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    uint64_t peer = 0;
    long reply_buffer[1024];
    if (syscall(SYS_sendto, nl, &query, sizeof query, 0, &kernel, sizeof kernel) == (long)sizeof query) {
        long n = syscall(SYS_recvfrom, nl, reply_buffer, sizeof reply_buffer, 0, NULL, NULL);
        struct nlmsghdr *h = (struct nlmsghdr *)reply_buffer;
        if (n > 0 && NLMSG_OK(h, (unsigned long)n) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
            struct unix_diag_msg *msg = NLMSG_DATA(h);
            struct rtattr *attr = (struct rtattr *)(msg + 1);
            int left = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof *msg));
            for (; RTA_OK(attr, left); attr = RTA_NEXT(attr, left))
                if (attr->rta_type == UNIX_DIAG_PEER) peer = *(uint32_t *)RTA_DATA(attr);
        }
    }
    syscall(SYS_close, nl);
    return peer;
}

static uint64_t unix_channel(const struct stat *st, int direction) {
    uint64_t receiver = direction == VGPU_RECEIVE ? (uint64_t)st->st_ino : unix_peer_inode(st->st_ino);
    return receiver ? mix(KIND_UNIX, receiver) : VGPU_CHANNEL_ANY;
}

/* ---- eventfds -------------------------------------------------------------------------------- */

static int is_eventfd(int fd) {
    char link[64], path[32];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    return n > 0 && (link[n] = 0, strcmp(link, "anon_inode:[eventfd]") == 0);
}

/* The eventfd's id from /proc/self/fdinfo; VGPU_CHANNEL_ANY where the kernel does not show one. */
static uint64_t eventfd_channel(int fd) {
    char path[48], text[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    int info = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (info < 0) return VGPU_CHANNEL_ANY;
    long n = syscall(SYS_read, info, text, sizeof text - 1);
    syscall(SYS_close, info);
    if (n <= 0) return VGPU_CHANNEL_ANY;
    text[n] = 0;
    const char *id = strstr(text, "eventfd-id:");
    unsigned long long value;
    if (!id || sscanf(id, "eventfd-id: %llu", &value) != 1) return VGPU_CHANNEL_ANY;
    return mix(KIND_EVENTFD, value);
}

/* ---- descriptors ----------------------------------------------------------------------------- */

static uint64_t compute(int fd, const struct stat *st, int direction) {
    if (S_ISFIFO(st->st_mode)) return mix(KIND_PIPE, mix(st->st_dev, st->st_ino));
    if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode) || S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
        return VGPU_CHANNEL_NONE;
    if (S_ISSOCK(st->st_mode)) {
        int domain, type;
        socklen_t len = sizeof domain;
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) return VGPU_CHANNEL_ANY;
        len = sizeof type;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) return VGPU_CHANNEL_ANY;
        if ((domain == AF_INET || domain == AF_INET6) && type == SOCK_STREAM) return tcp_channel(fd, direction);
        if (domain == AF_UNIX) return unix_channel(st, direction);
        return VGPU_CHANNEL_ANY;
    }
    return is_eventfd(fd) ? eventfd_channel(fd) : VGPU_CHANNEL_ANY;
}

#define CACHED_FDS 4096

/* Per descriptor: the inode it was computed for and its channel each way. Racing threads store
 * the same values; the inode is written last and read first, and checked again after. */
static struct {
    uint64_t dev, ino;
    uint64_t channel[2];
} cache[CACHED_FDS];

uint64_t vgpu_channel_of_fd(int fd, int direction) {
    struct stat st;
    if (fstat(fd, &st) != 0) return VGPU_CHANNEL_ANY;
    if (fd < 0 || fd >= CACHED_FDS) return compute(fd, &st, direction);
    uint64_t ino = __atomic_load_n(&cache[fd].ino, __ATOMIC_ACQUIRE);
    uint64_t channel = __atomic_load_n(&cache[fd].channel[direction], __ATOMIC_RELAXED);
    if (ino == (uint64_t)st.st_ino && cache[fd].dev == (uint64_t)st.st_dev && channel != VGPU_CHANNEL_ANY &&
        __atomic_load_n(&cache[fd].ino, __ATOMIC_ACQUIRE) == ino)
        return channel;
    channel = compute(fd, &st, direction);
    /* An unnamed channel is not kept: a socket may yet be connected, an eventfd's fdinfo read. */
    if (channel != VGPU_CHANNEL_ANY) {
        if (__atomic_load_n(&cache[fd].ino, __ATOMIC_RELAXED) != (uint64_t)st.st_ino) {
            __atomic_store_n(&cache[fd].ino, 0, __ATOMIC_RELEASE);
            cache[fd].channel[0] = cache[fd].channel[1] = VGPU_CHANNEL_ANY;
        }
        cache[fd].dev = st.st_dev;
        __atomic_store_n(&cache[fd].channel[direction], channel, __ATOMIC_RELAXED);
        __atomic_store_n(&cache[fd].ino, st.st_ino, __ATOMIC_RELEASE);
    }
    return channel;
}

uint64_t vgpu_channel_of_sync(const void *object, int process_shared) {
    if (process_shared) return VGPU_CHANNEL_ANY;
    return mix(KIND_SYNC, mix((uint64_t)vgpu_own_pid(), (uint64_t)(uintptr_t)object));
}

/* ---- epoll events ---------------------------------------------------------------------------- */

/* An epoll event names its descriptor only through the caller's data word (asyncio and libuv put
 * the descriptor there, ZeroMQ a pointer to its own entry), so the registrations are kept:
 * (epoll descriptor, data) -> descriptor. Entries are overwritten, never removed: the kernel
 * reports only registered data, and data reused for another descriptor is registered anew. */
#define EPOLL_SLOTS 8192
#define EPOLL_PROBES 32

static struct epoll_entry {
    uint64_t key;               /* mix(epfd, data); 0 = free */
    int fd;
    int level_triggered;
} epoll_entries[EPOLL_SLOTS];

void vgpu_channel_epoll_registered(int epfd, uint64_t data, int fd, int level_triggered) {
    uint64_t key = mix(epfd, data);
    for (unsigned probe = 0; probe < EPOLL_PROBES; probe++) {
        struct epoll_entry *e = &epoll_entries[(key + probe) % EPOLL_SLOTS];
        uint64_t seen = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);
        if (seen == 0)          /* taken by this thread (seen stays 0) or by another (seen is its key) */
            __atomic_compare_exchange_n(&e->key, &seen, key, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (seen == 0 || seen == key) {
            __atomic_store_n(&e->level_triggered, level_triggered, __ATOMIC_RELAXED);
            __atomic_store_n(&e->fd, fd, __ATOMIC_RELEASE);
            return;
        }
    }
}

uint64_t vgpu_channel_of_epoll_event(int epfd, uint64_t data, int *level_triggered) {
    uint64_t key = mix(epfd, data);
    *level_triggered = 0;
    for (unsigned probe = 0; probe < EPOLL_PROBES; probe++) {
        struct epoll_entry *e = &epoll_entries[(key + probe) % EPOLL_SLOTS];
        uint64_t seen = __atomic_load_n(&e->key, __ATOMIC_ACQUIRE);
        if (seen == key) {
            int fd = __atomic_load_n(&e->fd, __ATOMIC_ACQUIRE);
            *level_triggered = __atomic_load_n(&e->level_triggered, __ATOMIC_RELAXED);
            return vgpu_channel_of_fd(fd, VGPU_RECEIVE);
        }
        if (seen == 0) break;
    }
    return VGPU_CHANNEL_ANY;
}
