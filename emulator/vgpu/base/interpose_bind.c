/* interpose_bind.c: an emulated deployment is reachable from this host only.
 *
 * The engines open ports of their own besides the API server we place on 127.0.0.1, and some bind
 * every interface: torch.distributed's TCPStore server (libuv binds "::" whatever host it is
 * given; SGLang's TP ranks meet there), gloo, ZeroMQ's tcp://*. A bind to the wildcard address is
 * made a bind to loopback instead: 127.0.0.1 for IPv4, and for IPv6 ::1 on a v6-only socket, else
 * the v4-mapped 127.0.0.1, which keeps a dual-stack server reachable at 127.0.0.1, the address
 * engines on one host dial. REVATI_BIND_ANY=1 leaves binds as asked (a deployment meant to be
 * reached from other hosts). Unversioned, like every interpose_*.c file (build.py).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "vgpu.h"

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static int binds_any_allowed(void) {
    const char *v = getenv("REVATI_BIND_ANY");
    return v && strcmp(v, "1") == 0;
}

static int v6_only(int fd) {
    int on = 0;
    socklen_t len = sizeof on;
    return getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, &len) == 0 && on;
}

VGPU_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static bind_fn real;
    if (!real) real = (bind_fn)dlsym(RTLD_NEXT, "bind");
    if (!addr || binds_any_allowed()) return real(fd, addr, len);
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in = *(const struct sockaddr_in *)addr;
        if (in.sin_addr.s_addr == htonl(INADDR_ANY)) {
            in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real(fd, (const struct sockaddr *)&in, sizeof in);
        }
    } else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6 = *(const struct sockaddr_in6 *)addr;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
            if (v6_only(fd)) {
                in6.sin6_addr = in6addr_loopback;
            } else {
                static const unsigned char mapped_loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
                memcpy(&in6.sin6_addr, mapped_loopback, sizeof mapped_loopback);
            }
            return real(fd, (const struct sockaddr *)&in6, sizeof in6);
        }
    }
    return real(fd, addr, len);
}
