// Attention kernels whose batch lives in device memory, charged from the batch the engine publishes
// (emulator/vgpu/attention_batch.c). The kernels here only carry the names: FlashAttention 3's
// forward kernel (charged by its model for the published batch), vLLM's Triton attention (charged
// what it measured for the batch), and FA3's split-KV combine kernel and a plain kernel (charged by
// the per-kernel model). The steps, in order (tests/test_attention_batch.py reads the trace):
//   1. forward before anything is published
//   2. publish A (8 decodes, context 1024): forward, combine, plain, Triton attention
//   3. publish B (8 decodes, context 8192): forward
//   4. publish A, capture [plain, forward, combine, plain], replay it; publish B, replay it again
//   5. publish a mixed batch (4 decodes at 2048, one 512-token chunk of a 2048 prompt): forward
//   6. publish A with 4 rows of CUDA-graph padding (no query tokens, no context): forward
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>

#include <cuda_runtime.h>

namespace flash {
template <class Mainloop> struct FlashAttnFwdSm90 { struct Params { int n; }; };
template <class Kernel> struct enable_sm90_or_later : Kernel {};
template <class Tile> struct FlashAttnFwdCombine { struct Params { int n; }; };
}  // namespace flash

namespace cutlass {
template <class Kernel> __global__ void device_kernel(typename Kernel::Params params) {}
}  // namespace cutlass

__global__ void other_kernel(int n) {}
__global__ void kernel_unified_attention(int n) {}

using Forward = flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<int>>;
using Combine = flash::FlashAttnFwdCombine<int>;

#define CK(call)                                                                          \
    do {                                                                                  \
        cudaError_t e = (call);                                                           \
        if (e != cudaSuccess) {                                                           \
            fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e));             \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

typedef void (*publish_fn)(int, const int *, const int *, int, int, int, int);
static publish_fn publish;

// Llama-3.1-8B's attention on one GPU: 32 query heads, 8 KV heads of 128, bf16 KV cache.
static void publish_batch(int n, const int *query_lens, const int *seq_lens) {
    int starts[64] = {0};
    for (int i = 0; i < n; i++) starts[i + 1] = starts[i] + query_lens[i];
    publish(n, starts, seq_lens, 32, 8, 128, 2);
}

static void publish_decodes(int n, int context, int padding) {
    int q[64], s[64];
    for (int i = 0; i < n + padding; i++) {
        q[i] = i < n ? 1 : 0;
        s[i] = i < n ? context : 0;
    }
    publish_batch(n + padding, q, s);
}

static void forward(cudaStream_t s) { cutlass::device_kernel<Forward><<<132, 256, 0, s>>>(Forward::Params{0}); }
static void combine(cudaStream_t s) { cutlass::device_kernel<Combine><<<132, 256, 0, s>>>(Combine::Params{0}); }
static void plain(cudaStream_t s) { other_kernel<<<64, 128, 0, s>>>(0); }
static void triton(cudaStream_t s) { kernel_unified_attention<<<64, 128, 0, s>>>(0); }

int main() {
    publish = (publish_fn)dlsym(RTLD_DEFAULT, "revati_attention_batch");
    if (!publish) {
        fprintf(stderr, "revati_attention_batch not found: not running on the vGPU library\n");
        return 2;
    }
    cudaStream_t s;
    CK(cudaStreamCreate(&s));

    forward(s);                                             // 1
    CK(cudaStreamSynchronize(s));

    publish_decodes(8, 1024, 0);                            // 2
    forward(s);
    combine(s);
    plain(s);
    triton(s);
    CK(cudaStreamSynchronize(s));

    publish_decodes(8, 8192, 0);                            // 3
    forward(s);
    CK(cudaStreamSynchronize(s));

    publish_decodes(8, 1024, 0);                            // 4
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    plain(s);
    forward(s);
    combine(s);
    plain(s);
    CK(cudaStreamEndCapture(s, &graph));
    CK(cudaGraphInstantiate(&exec, graph, 0));
    CK(cudaGraphLaunch(exec, s));
    CK(cudaStreamSynchronize(s));
    publish_decodes(8, 8192, 0);
    CK(cudaGraphLaunch(exec, s));
    CK(cudaStreamSynchronize(s));

    int mixed_q[5] = {1, 1, 1, 1, 512}, mixed_s[5] = {2048, 2048, 2048, 2048, 2048};
    publish_batch(5, mixed_q, mixed_s);                     // 5
    forward(s);
    CK(cudaStreamSynchronize(s));

    publish_decodes(8, 1024, 4);                            // 6
    forward(s);
    CK(cudaStreamSynchronize(s));

    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    printf("done\n");
    return 0;
}
