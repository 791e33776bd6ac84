// One rank of an all-reduce whose ranks arrive at different virtual times: rank r first runs
// r + 1 kernels (the test charges each 1 s), then all-reduces. The test reads the trace.
// usage: allreduce_skew RANK NRANKS
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct ncclComm *ncclComm_t;
extern "C" int ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
extern "C" int ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, ncclComm_t comm,
                             cudaStream_t stream);
extern "C" int ncclCommDestroy(ncclComm_t comm);

__global__ void busy(float *x) {}

#define CHECK(call) do { int rc_ = (int)(call); if (rc_) { fprintf(stderr, "%s failed: %d\n", #call, rc_); return 1; } } while (0)

int main(int argc, char **argv) {
    int rank = atoi(argv[1]), nranks = atoi(argv[2]);
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    strcpy(id.internal, "allreduce-skew-test");     // every rank names the same communicator
    CHECK(cudaSetDevice(rank));
    ncclComm_t comm;
    CHECK(ncclCommInitRank(&comm, nranks, id, rank));
    float *buf;
    CHECK(cudaMalloc(&buf, 1 << 20));
    for (int i = 0; i <= rank; i++) busy<<<1, 1>>>(buf);
    CHECK(ncclAllReduce(buf, buf, 1 << 18, 7 /* ncclFloat32 */, 0 /* sum */, comm, 0));
    CHECK(cudaDeviceSynchronize());
    CHECK(ncclCommDestroy(comm));
    printf("rank %d done\n", rank);
    return 0;
}
