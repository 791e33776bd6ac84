// One rank of vLLM's custom all-reduce (its kernel's name and signature, an empty body), the ranks
// arriving at different virtual times: rank r first runs r + 1 kernels (the test charges each 1 s).
// The ranks share their signal buffers over CUDA IPC through files in DIR, as vLLM does through
// torch.distributed. One eager launch, then two replays of a graph that captured one.
// usage: custom_allreduce_skew RANK NRANKS DIR
#include <cstdio>
#include <cstdlib>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <unistd.h>

namespace vllm {
struct Signal { unsigned start[36][8], end[36][8], flag[36]; };
struct __align__(16) RankData { const void *ptrs[8]; };
struct __align__(16) RankSignals { Signal *signals[8]; };

template <typename T, int ngpus>
__global__ void cross_device_reduce_1stage(RankData *dp, RankSignals sg, Signal *self_sg, T *result, int rank,
                                           int size) {}
}  // namespace vllm

__global__ void busy() {}

#define CHECK(call) do { int rc_ = (int)(call); if (rc_) { fprintf(stderr, "%s failed: %d\n", #call, rc_); exit(1); } } while (0)

static const int PACKS = 4096;  // 64 KiB of bf16

static void reduce(int nranks, vllm::RankData *dp, vllm::RankSignals sg, vllm::Signal *self, __nv_bfloat16 *out,
                   int rank, cudaStream_t stream) {
    if (nranks == 2) vllm::cross_device_reduce_1stage<__nv_bfloat16, 2><<<8, 512, 0, stream>>>(dp, sg, self, out, rank, PACKS);
    else vllm::cross_device_reduce_1stage<__nv_bfloat16, 4><<<8, 512, 0, stream>>>(dp, sg, self, out, rank, PACKS);
}

int main(int argc, char **argv) {
    int rank = atoi(argv[1]), nranks = atoi(argv[2]);
    const char *dir = argv[3];
    CHECK(cudaSetDevice(rank));
    vllm::RankSignals sg;
    CHECK(cudaMalloc(&sg.signals[rank], sizeof(vllm::Signal)));
    cudaIpcMemHandle_t handle;
    CHECK(cudaIpcGetMemHandle(&handle, sg.signals[rank]));
    char path[4096], partial[4200];
    snprintf(path, sizeof path, "%s/%d", dir, rank);
    snprintf(partial, sizeof partial, "%s.partial", path);
    FILE *f = fopen(partial, "wb");
    fwrite(&handle, sizeof handle, 1, f);
    fclose(f);
    rename(partial, path);
    for (int peer = 0; peer < nranks; peer++) {
        if (peer == rank) continue;
        snprintf(path, sizeof path, "%s/%d", dir, peer);
        while (!(f = fopen(path, "rb"))) usleep(1000);
        if (fread(&handle, sizeof handle, 1, f) != 1) { fprintf(stderr, "short handle %s\n", path); return 1; }
        fclose(f);
        CHECK(cudaIpcOpenMemHandle((void **)&sg.signals[peer], handle, cudaIpcMemLazyEnablePeerAccess));
    }
    vllm::RankData *dp;
    __nv_bfloat16 *out;
    CHECK(cudaMalloc(&dp, sizeof *dp));
    CHECK(cudaMalloc(&out, PACKS * 16));
    cudaStream_t stream;
    CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

    for (int i = 0; i <= rank; i++) busy<<<1, 1, 0, stream>>>();
    reduce(nranks, dp, sg, sg.signals[rank], out, rank, stream);

    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    reduce(nranks, dp, sg, sg.signals[rank], out, rank, stream);
    CHECK(cudaStreamEndCapture(stream, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int replay = 0; replay < 2; replay++) {
        for (int i = 0; i <= rank; i++) busy<<<1, 1, 0, stream>>>();
        CHECK(cudaGraphLaunch(exec, stream));
    }
    CHECK(cudaStreamSynchronize(stream));
    printf("rank %d done\n", rank);
    return 0;
}
