// launch_overhead.cu: what one intercepted kernel launch costs the host (benchmarks/launch_overhead.py).
//
// In one run, CALLS calls of each method, in BATCHES interleaved batches, timed per batch:
//   plain      a non-inlined C function taking cudaLaunchKernel's arguments (the floor)
//   runtime    cudaLaunchKernel of a registered kernel
//   chevron    kernel<<<grid, block, 0, stream>>>(...)
//   driver     cuLaunchKernel of a cuModuleGetFunction handle (libcuda.so.1 through dlopen)
// Prints one line per batch: `batch METHOD NS_PER_CALL`. Usage: launch_overhead CUBIN [CALLS [BATCHES]],
// CUBIN being this program's device code (nvcc -keep), which the driver method loads.
// Every status is checked; a failing call ends the program with exit status 1.
#include <cuda.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__global__ void bench_kernel(float *x, int n) {     // _Z12bench_kernelPfi
    if (x && threadIdx.x < n) x[threadIdx.x] = 0;
}

// The floor: a real call with the same arguments, which the compiler may neither inline nor drop.
extern "C" __attribute__((noinline, noipa)) cudaError_t plain_call(const void *func, dim3 grid, dim3 block,
                                                                    void **args, size_t shared_mem,
                                                                    cudaStream_t stream) {
    asm volatile("" : : "r"(func), "r"(args), "r"(shared_mem), "r"(stream) : "memory");
    return grid.x + block.x == 0 ? cudaErrorInvalidValue : cudaSuccess;
}

static void check(int status, const char *what) {
    if (status != 0) {
        fprintf(stderr, "FAIL %s returned %d (%s)\n", what, status, cudaGetErrorName((cudaError_t)status));
        exit(1);
    }
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void **, void **);

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: launch_overhead CUBIN [CALLS [BATCHES]]\n"); return 1; }
    const char *cubin_path = argv[1];
    long calls = argc > 2 ? atol(argv[2]) : 1000000;
    int batches = argc > 3 ? atoi(argv[3]) : 20;
    long per_batch = calls / batches;
    if (per_batch < 1) { fprintf(stderr, "FAIL fewer calls than batches\n"); return 1; }

    float *x;
    check(cudaMalloc((void **)&x, 256 * sizeof(float)), "cudaMalloc");
    int n = 256;
    void *args[] = {&x, &n};
    cudaStream_t stream;
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    dim3 grid(132, 1, 1), block(256, 1, 1);

    // The driver's entry points, found as Triton finds them.
    void *libcuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!libcuda) { fprintf(stderr, "FAIL dlopen(libcuda.so.1): %s\n", dlerror()); return 1; }
    CUresult (*init)(unsigned) = (CUresult(*)(unsigned))dlsym(libcuda, "cuInit");
    CUresult (*load)(CUmodule *, const void *) = (CUresult(*)(CUmodule *, const void *))dlsym(libcuda, "cuModuleLoadData");
    CUresult (*get)(CUfunction *, CUmodule, const char *) =
        (CUresult(*)(CUfunction *, CUmodule, const char *))dlsym(libcuda, "cuModuleGetFunction");
    launch_fn cu_launch = (launch_fn)dlsym(libcuda, "cuLaunchKernel");
    if (!init || !load || !get || !cu_launch) { fprintf(stderr, "FAIL libcuda.so.1 lacks an entry point\n"); return 1; }
    check(init(0), "cuInit");
    // The program's own device code, kept by nvcc (any image does on the vGPU).
    FILE *f = fopen(cubin_path, "rb");
    if (!f) { fprintf(stderr, "FAIL cannot open %s\n", cubin_path); return 1; }
    static char image[1 << 20];
    size_t size = fread(image, 1, sizeof image - 1, f);
    fclose(f);
    if (size == 0) { fprintf(stderr, "FAIL empty cubin %s\n", cubin_path); return 1; }
    CUmodule module;
    CUfunction function;
    check(load(&module, image), "cuModuleLoadData");
    check(get(&function, module, "_Z12bench_kernelPfi"), "cuModuleGetFunction");
    cudaError_t (*volatile plain)(const void *, dim3, dim3, void **, size_t, cudaStream_t) = plain_call;

    // Warm up every path once (first-call initialisation is not launch overhead).
    check(plain((const void *)bench_kernel, grid, block, args, 0, stream), "plain_call");
    check(cudaLaunchKernel((const void *)bench_kernel, grid, block, args, 0, stream), "cudaLaunchKernel");
    bench_kernel<<<grid, block, 0, stream>>>(x, n);
    check(cudaGetLastError(), "<<<>>>");
    check(cu_launch(function, 132, 1, 1, 256, 1, 1, 0, (CUstream)stream, args, NULL), "cuLaunchKernel");
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");

    // Interleaved batches, so that host noise spreads over all methods alike. On a real GPU the
    // launch queue fills up and launches start to wait for the device; synchronising after each
    // batch (outside the timed region) keeps every batch measuring issue cost.
    for (int b = 0; b < batches; b++) {
        int status = 0;
        double t0 = now_ns();
        for (long i = 0; i < per_batch; i++) status |= plain((const void *)bench_kernel, grid, block, args, 0, stream);
        double t1 = now_ns();
        check(status, "plain_call");
        printf("batch plain %.3f\n", (t1 - t0) / per_batch);

        t0 = now_ns();
        for (long i = 0; i < per_batch; i++)
            status |= cudaLaunchKernel((const void *)bench_kernel, grid, block, args, 0, stream);
        t1 = now_ns();
        check(status, "cudaLaunchKernel");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        printf("batch runtime %.3f\n", (t1 - t0) / per_batch);

        t0 = now_ns();
        for (long i = 0; i < per_batch; i++) bench_kernel<<<grid, block, 0, stream>>>(x, n);
        t1 = now_ns();
        check(cudaGetLastError(), "<<<>>>");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        printf("batch chevron %.3f\n", (t1 - t0) / per_batch);

        t0 = now_ns();
        for (long i = 0; i < per_batch; i++)
            status |= cu_launch(function, 132, 1, 1, 256, 1, 1, 0, (CUstream)stream, args, NULL);
        t1 = now_ns();
        check(status, "cuLaunchKernel");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        printf("batch driver %.3f\n", (t1 - t0) / per_batch);
    }
    printf("calls_per_method %ld\n", per_batch * batches);
    return 0;
}
