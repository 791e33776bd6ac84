// predictor_speed.c: host nanoseconds per GEMM, kernel and copy launch (benchmarks/predictor_speed.py).
//
// Runs under the vGPU library with whichever predictor REVATI_PREDICTOR names; the Python driver
// runs it with the profiled predictor and with the fixed one in alternation and takes the
// difference, which is what prediction adds to a launch. GEMM shapes cycle over Llama weight
// shapes and token counts (measured and not), so the GEMM path sees interpolation, nearest-shape
// lookups and its cache; kernel launches vary their grid. Prints `batch FAMILY NS_PER_CALL`.
// Usage: predictor_speed CALLS BATCHES. cuBLAS through its own prototypes (no cuBLAS headers needed).
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void *cublasHandle_t;
extern "C" int cublasCreate_v2(cublasHandle_t *handle);
extern "C" int cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha, const void *A,
                            int type_a, int lda, const void *B, int type_b, int ldb, const void *beta, void *C,
                            int type_c, int ldc, int compute, int algo);

__global__ void bench_kernel(float *x) {}

static void check(int status, const char *what) {
    if (status) { fprintf(stderr, "FAIL %s returned %d\n", what, status); exit(1); }
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 200000;
    int batches = argc > 2 ? atoi(argv[2]) : 10;
    long per_batch = calls / batches;
    cublasHandle_t h;
    check(cublasCreate_v2(&h), "cublasCreate");
    void *a, *b, *c, *host = malloc(1 << 20);
    check(cudaMalloc(&a, 1 << 20), "cudaMalloc");
    check(cudaMalloc(&b, 1 << 20), "cudaMalloc");
    check(cudaMalloc(&c, 1 << 20), "cudaMalloc");
    static const int shapes[][2] = {{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}, {5000, 3000}};
    static const int tokens[] = {1, 3, 8, 24, 64, 200, 256, 1000, 2048, 3000, 8192, 12000};
    float alpha = 1, beta = 0;
    for (int batch = 0; batch < batches; batch++) {
        double t0 = now_ns();
        for (long i = 0; i < per_batch; i++) {
            const int *s = shapes[i % 5];
            check(cublasGemmEx(h, 1, 0, s[0], tokens[i % 12], s[1], &alpha, a, 14, s[1], b, 14, s[1], &beta, c, 14,
                               s[0], 68, -1), "cublasGemmEx");
        }
        double t1 = now_ns();
        printf("batch gemm %.3f\n", (t1 - t0) / per_batch);
        for (long i = 0; i < per_batch; i++) {
            bench_kernel<<<(unsigned)(1 + i % 4096), 128>>>((float *)a);
            check(cudaGetLastError(), "launch");
        }
        double t2 = now_ns();
        printf("batch kernel %.3f\n", (t2 - t1) / per_batch);
        for (long i = 0; i < per_batch; i++)
            check(cudaMemcpyAsync(a, host, 4096 + (i % 64) * 4096, cudaMemcpyHostToDevice, 0), "cudaMemcpyAsync");
        printf("batch copy %.3f\n", (now_ns() - t2) / per_batch);
    }
    return 0;
}
