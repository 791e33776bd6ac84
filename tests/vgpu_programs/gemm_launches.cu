// cuBLAS GEMMs of the shapes given as arguments (M:N:K, bf16, the F.linear layout: A transposed)
// and one copy of 1 MiB from pinned host memory, for tests/test_predictor_profiled.py to read
// the charged durations from the trace. cuBLAS through its own prototypes (no cuBLAS headers).
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

typedef void *cublasHandle_t;
extern "C" int cublasCreate_v2(cublasHandle_t *handle);
extern "C" int cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A,
                            int type_a, int lda, const void *B, int type_b, int ldb, const void *beta, void *C,
                            int type_c, int ldc, int compute, int algo);

#define CHECK(call) do { int rc_ = (int)(call); if (rc_) { fprintf(stderr, "%s failed: %d\n", #call, rc_); return 1; } } while (0)

int main(int argc, char **argv) {
    cublasHandle_t h;
    CHECK(cublasCreate_v2(&h));
    void *a, *host;
    CHECK(cudaMalloc(&a, 1 << 20));
    CHECK(cudaMallocHost(&host, 1 << 20));
    float alpha = 1, beta = 0;
    for (int i = 1; i < argc; i++) {
        int m, n, k;
        if (sscanf(argv[i], "%d:%d:%d", &m, &n, &k) != 3) return 2;
        CHECK(cublasGemmEx(h, 1, 0, m, n, k, &alpha, a, 14 /* bf16 */, k, a, 14, k, &beta, a, 14, m,
                           68 /* CUBLAS_COMPUTE_32F */, -1));
    }
    CHECK(cudaMemcpyAsync(a, host, 1 << 20, cudaMemcpyHostToDevice, 0));
    CHECK(cudaDeviceSynchronize());
    return 0;
}
