// A "GPU worker" that batches requests the way a serving engine does, for the Timekeeper's
// timeline test. It listens on loopback (printing its port), takes one client, and loops:
// read every request that has arrived ("NAME STEPS\n"), run one batch step (one kernel, which the
// test charges a fixed time) for all active requests, and answer each request whose steps are
// done with "NAME ARRIVAL START FINISH\n" (CLOCK_MONOTONIC, seconds). A request that arrives
// during a step is read after it and joins the next one. "quit\n" ends it.
#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cuda_runtime.h>

__global__ void step(float *x) {}

static double now() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Request { char name[32]; int steps_left; double arrival, start; };

int main() {
    float *buf;
    if (cudaMalloc(&buf, 4096) != cudaSuccess) return 1;
    int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(server, (sockaddr *)&addr, sizeof addr) || listen(server, 1) ||
        getsockname(server, (sockaddr *)&addr, &len)) return 2;
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int client = accept(server, nullptr, nullptr);
    char pending[4096];
    size_t have = 0;
    Request active[16];
    int n_active = 0;
    for (;;) {
        // Block for a request only when idle; otherwise take whatever has arrived.
        pollfd p = {client, POLLIN, 0};
        if (poll(&p, 1, n_active ? 0 : -1) > 0) {
            ssize_t k = read(client, pending + have, sizeof pending - have);
            if (k <= 0) return 0;
            have += (size_t)k;
        }
        char *line = pending, *end = pending + have, *nl;
        while ((nl = (char *)memchr(line, '\n', end - line))) {
            *nl = 0;
            if (strcmp(line, "quit") == 0) return 0;
            Request &r = active[n_active++];
            if (sscanf(line, "%31s %d", r.name, &r.steps_left) != 2) return 3;
            r.arrival = now();
            r.start = -1;
            line = nl + 1;
        }
        have = end - line;
        memmove(pending, line, have);
        if (!n_active) continue;
        double start = now();
        for (int i = 0; i < n_active; i++)
            if (active[i].start < 0) active[i].start = start;
        step<<<1, 1>>>(buf);
        if (cudaDeviceSynchronize() != cudaSuccess) return 4;
        double finish = now();
        int kept = 0;
        for (int i = 0; i < n_active; i++) {
            Request &r = active[i];
            if (--r.steps_left > 0) { active[kept++] = r; continue; }
            // write(), not dprintf(): stdio writes from inside glibc, where no interposer sees
            // them, and the answer must carry the worker's virtual time.
            char answer[128];
            int n = snprintf(answer, sizeof answer, "%s %.9f %.9f %.9f\n", r.name, r.arrival, r.start, finish);
            if (write(client, answer, n) != n) return 5;
        }
        n_active = kept;
    }
}
