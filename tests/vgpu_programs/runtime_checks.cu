// runtime_checks.cu: the CUDA runtime and driver API on virtual GPUs (tests/test_vgpu_runtime.py).
//
// One program, one section per run: `runtime_checks SECTION [ARG]`. Each section prints
// machine-readable `key value` lines on stdout that the test parses; every CUDA call's status is
// checked, and an unexpected one ends the program with exit status 1 and a line naming the call
// and the error. Kernels are real __global__ functions (no-ops on the vGPU); the test runs the
// program under the fixed predictor, so launch durations and event times are exact.
//
// Sections: devices, memory, copies, launches CUBIN_PATH, timing, capture_event_after_end,
// external_event, legacy_sync, threads, cute_dsl CUBIN_PATH, unimplemented NAME.
//
// The program is also valid on a real GPU (built with -cudart static), to check that what it
// expects is what CUDA does: RUNTIME_CHECKS_SLOW_NS=200000000 makes `slow` spin for 200 ms there,
// and RUNTIME_CHECKS_SOFT=1 reports a mismatching expected error instead of stopping.
#include <cuda.h>               // driver API types only: the driver is reached through dlopen
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- checking --------------------------------------------------------------------------------

#define CK(call)                                                                               \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "FAIL line %d: %s returned %s (%d)\n", __LINE__, #call,            \
                    cudaGetErrorName(e_), (int)e_);                                            \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

// A call that must fail with a given error. With RUNTIME_CHECKS_SOFT=1 (for checking this
// program's expectations against a real GPU) a different status is reported and the run goes on.
static bool soft;
#define CK_ERR(call, want)                                                                     \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != (want)) {                                                                    \
            fprintf(stderr, "FAIL line %d: %s returned %s (%d), expected %s\n", __LINE__,      \
                    #call, cudaGetErrorName(e_), (int)e_, cudaGetErrorName(want));             \
            if (!soft) exit(1);                                                                \
        }                                                                                      \
    } while (0)

__attribute__((noreturn)) static void fail(const char *what) {
    fprintf(stderr, "FAIL %s\n", what);
    exit(1);
}

// ---- the driver API, loaded as Triton loads it ----------------------------------------------

struct driver {
    CUresult (*Init)(unsigned);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstream, void **, void **);
    CUresult (*LaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*FuncGetAttribute)(int *, CUfunction_attribute, CUfunction);
};
static driver drv;

static void *driver_symbol(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "FAIL dlsym(libcuda.so.1, %s): %s\n", name, dlerror());
        exit(1);
    }
    return p;
}

static void load_driver(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "FAIL dlopen(libcuda.so.1): %s\n", dlerror());
        exit(1);
    }
    *(void **)&drv.Init = driver_symbol(lib, "cuInit");
    *(void **)&drv.GetErrorName = driver_symbol(lib, "cuGetErrorName");
    *(void **)&drv.ModuleLoadData = driver_symbol(lib, "cuModuleLoadData");
    *(void **)&drv.ModuleGetFunction = driver_symbol(lib, "cuModuleGetFunction");
    *(void **)&drv.LaunchKernel = driver_symbol(lib, "cuLaunchKernel");
    *(void **)&drv.LaunchKernelEx = driver_symbol(lib, "cuLaunchKernelEx");
    *(void **)&drv.FuncGetAttribute = driver_symbol(lib, "cuFuncGetAttribute");
}

#define CU(call)                                                                               \
    do {                                                                                       \
        CUresult r_ = (call);                                                                  \
        if (r_ != CUDA_SUCCESS) {                                                              \
            const char *n_ = "?";                                                              \
            drv.GetErrorName(r_, &n_);                                                         \
            fprintf(stderr, "FAIL line %d: %s returned %s (%d)\n", __LINE__, #call, n_,        \
                    (int)r_);                                                                  \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

// ---- kernels ----------------------------------------------------------------------------------

__global__ void kernel(float *x) {              // _Z6kernelPf: charged 1 ms by the tests' rules
    if (x) x[threadIdx.x] += 1.0f;
}

// _Z4slowy: charged 10 s by the tests' rules, to keep a stream busy. On a real GPU (to check the
// program's expectations against real CUDA) it spins for spin_ns, from RUNTIME_CHECKS_SLOW_NS.
__global__ void slow(unsigned long long spin_ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    while (now - start < spin_ns);
}
static unsigned long long slow_ns;

namespace ns {
template <int N>
__global__ void tk(int *out, float scale) {     // tk<4> is _ZN2ns2tkILi4EEEvPif
    if (out) out[N] = (int)scale;
}
template __global__ void tk<4>(int *, float);
}  // namespace ns

extern "C" __global__ void plain_c_kernel(int n) {}     // unmangled

__device__ int dev_symbol[64];
__constant__ float const_symbol[16];

// ---- helpers ---------------------------------------------------------------------------------

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

// Both events must have completed (cudaEventElapsedTime is cudaErrorNotReady otherwise).
static float elapsed(cudaEvent_t a, cudaEvent_t b) {
    float ms = 0;
    CK(cudaEventSynchronize(a));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

static cudaEvent_t event(void) {
    cudaEvent_t e;
    CK(cudaEventCreate(&e));
    return e;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed * 7 + (i >> 8));
}

static void report(const char *name, bool ok) { printf("copy_%s %s\n", name, ok ? "ok" : "bad"); }

// ---- sections ---------------------------------------------------------------------------------

static int section_devices(void) {
    int count = -1;
    CK(cudaGetDeviceCount(&count));
    printf("count %d\n", count);
    for (int d = 0; d < count; d++) {
        cudaDeviceProp p;
        CK(cudaGetDeviceProperties(&p, d));
        printf("prop.%d.name %s\n", d, p.name);
        printf("prop.%d.totalGlobalMem %zu\n", d, p.totalGlobalMem);
        printf("prop.%d.major %d\nprop.%d.minor %d\n", d, p.major, d, p.minor);
        printf("prop.%d.multiProcessorCount %d\n", d, p.multiProcessorCount);
        printf("prop.%d.l2CacheSize %d\n", d, p.l2CacheSize);
        printf("prop.%d.sharedMemPerBlockOptin %zu\n", d, p.sharedMemPerBlockOptin);
        printf("prop.%d.maxThreadsPerBlock %d\n", d, p.maxThreadsPerBlock);
        printf("prop.%d.warpSize %d\n", d, p.warpSize);
        printf("prop.%d.pciBusID %d\n", d, p.pciBusID);
    }
    // cudaDeviceAttr and CUdevice_attribute share their ids; the test names the ones to read.
    static const cudaDeviceAttr attrs[] = {
        cudaDevAttrMultiProcessorCount, cudaDevAttrComputeCapabilityMajor,
        cudaDevAttrComputeCapabilityMinor, cudaDevAttrL2CacheSize, cudaDevAttrWarpSize,
        cudaDevAttrMaxThreadsPerBlock, cudaDevAttrMaxSharedMemoryPerBlockOptin,
        cudaDevAttrMaxSharedMemoryPerMultiprocessor, cudaDevAttrClockRate,
        cudaDevAttrMemoryClockRate, cudaDevAttrGlobalMemoryBusWidth, cudaDevAttrMaxRegistersPerBlock,
        cudaDevAttrConcurrentKernels, cudaDevAttrUnifiedAddressing,
    };
    for (int d = 0; d < count; d++)
        for (cudaDeviceAttr a : attrs) {
            int v = -1;
            CK(cudaDeviceGetAttribute(&v, a, d));
            printf("attr.%d.%d %d\n", d, (int)a, v);
        }
    // Device selection: every valid ordinal works, the first invalid one does not.
    for (int d = count - 1; d >= 0; d--) {
        CK(cudaSetDevice(d));
        int cur = -1;
        CK(cudaGetDevice(&cur));
        if (cur != d) fail("cudaGetDevice does not return the device just set");
    }
    CK_ERR(cudaSetDevice(count), cudaErrorInvalidDevice);
    CK_ERR(cudaGetLastError(), cudaErrorInvalidDevice);     // sticky until read, then cleared
    CK(cudaGetLastError());
    CK_ERR(cudaSetDevice(-1), cudaErrorInvalidDevice);
    cudaDeviceProp p;
    CK_ERR(cudaGetDeviceProperties(&p, count), cudaErrorInvalidDevice);
    int v;
    CK_ERR(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, count), cudaErrorInvalidDevice);
    int cur = -1;
    CK(cudaGetDevice(&cur));
    printf("device_after_invalid %d\n", cur);   // a failed cudaSetDevice leaves the device alone
    int driver = 0, runtime = 0;
    CK(cudaDriverGetVersion(&driver));
    CK(cudaRuntimeGetVersion(&runtime));
    printf("driver_version %d\nruntime_version %d\n", driver, runtime);
    printf("devices_done 1\n");
    return 0;
}

static int section_memory(void) {
    int count;
    CK(cudaGetDeviceCount(&count));
    CK(cudaSetDevice(0));
    CK(cudaFree(0));                            // the idiom that initialises the context
    size_t free0, total;
    CK(cudaMemGetInfo(&free0, &total));
    printf("mem_total %zu\nmem_free_initial %zu\n", total, free0);

    const size_t small = (size_t)4 << 20, big = (size_t)64 << 20;
    void *a = NULL, *b = NULL;
    size_t f;
    CK(cudaMalloc(&a, small));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_small %zu\n", f);
    CK(cudaMalloc(&b, big));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_big %zu\n", f);
    CK(cudaFree(a));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_free_small %zu\n", f);
    CK(cudaFree(b));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_free_all %zu\n", f);

    // Asking for more than is free fails as on a real GPU, leaving the pointer NULL.
    void *too_much = (void *)0x1;
    CK_ERR(cudaMalloc(&too_much, f + 1), cudaErrorMemoryAllocation);
    printf("over_alloc_ptr_null %d\n", too_much == NULL);
    CK_ERR(cudaGetLastError(), cudaErrorMemoryAllocation);
    CK(cudaGetLastError());
    CK_ERR(cudaMalloc(&too_much, total), cudaErrorMemoryAllocation);
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_failed %zu\n", f);
    CK_ERR(cudaFree((void *)0x1234), cudaErrorInvalidValue);   // not an allocation
    CK_ERR(cudaGetLastError(), cudaErrorInvalidValue);

    // 70 GB on a virtual 80 GB device, on a host with far less memory: address space only.
    long rss_before = rss_kb();
    const size_t huge = 70000000000ull;
    void *h = NULL;
    CK(cudaMalloc(&h, huge));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_huge %zu\n", f);
    // Writes into it are dropped, reads see zeros; neither commits host memory.
    CK(cudaMemset(h, 0x7f, (size_t)256 << 20));
    static unsigned char probe[1 << 20];
    memset(probe, 0xab, sizeof probe);
    CK(cudaMemcpy((char *)h + huge / 2, probe, sizeof probe, cudaMemcpyHostToDevice));
    memset(probe, 0xab, sizeof probe);
    CK(cudaMemcpy(probe, (char *)h + huge / 2, sizeof probe, cudaMemcpyDeviceToHost));
    bool zeros = true;
    for (size_t i = 0; i < sizeof probe; i++) zeros &= probe[i] == 0;
    CK(cudaMemcpy(probe, (char *)h + huge - 4096, 4096, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < 4096; i++) zeros &= probe[i] == 0;
    printf("huge_reads_zero %d\n", (int)zeros);
    printf("rss_before_kb %ld\nrss_after_huge_kb %ld\n", rss_before, rss_kb());
    void *more = NULL;      // what is left is less than 20 GB: accounting covers the huge one
    CK_ERR(cudaMalloc(&more, (size_t)20000000000ull), cudaErrorMemoryAllocation);
    CK_ERR(cudaGetLastError(), cudaErrorMemoryAllocation);
    CK(cudaFree(h));
    CK(cudaMemGetInfo(&f, &total));
    printf("mem_free_after_huge_freed %zu\n", f);

    // Each device keeps its own account.
    if (count > 1) {
        CK(cudaSetDevice(1));
        void *d1;
        CK(cudaMalloc(&d1, small));
        size_t f1, t1;
        CK(cudaMemGetInfo(&f1, &t1));
        printf("dev1_free_after_small %zu\n", f1);
        cudaPointerAttributes pa;
        CK(cudaPointerGetAttributes(&pa, d1));
        printf("dev1_pointer_device %d\ndev1_pointer_type %d\n", pa.device, (int)pa.type);
        CK(cudaSetDevice(0));
        CK(cudaMemGetInfo(&f, &total));
        printf("dev0_free_while_dev1_alloc %zu\n", f);
        CK(cudaSetDevice(1));
        CK(cudaFree(d1));
        CK(cudaSetDevice(0));
    }
    printf("memory_done 1\n");
    return 0;
}

static int section_copies(void) {
    const size_t n = 4096 + 17;                 // small: host-backed
    unsigned char *h0 = (unsigned char *)malloc(n), *h1 = (unsigned char *)malloc(n);
    unsigned char *d0, *d1, *pinned;
    CK(cudaMalloc((void **)&d0, n));
    CK(cudaMalloc((void **)&d1, n));
    CK(cudaMallocHost((void **)&pinned, n));

    fill(h0, n, 1);
    memset(h1, 0, n);
    CK(cudaMemcpy(d0, h0, n, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(h1, d0, n, cudaMemcpyDeviceToHost));
    report("h2d_d2h", memcmp(h0, h1, n) == 0);

    fill(h0, n, 2);
    CK(cudaMemcpy(d0, h0, n, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d1, d0, n, cudaMemcpyDeviceToDevice));
    memset(h1, 0, n);
    CK(cudaMemcpy(h1, d1, n, cudaMemcpyDeviceToHost));
    report("d2d", memcmp(h0, h1, n) == 0);

    fill(h0, n, 3);
    memset(h1, 0, n);
    CK(cudaMemcpy(h1, h0, n, cudaMemcpyHostToHost));
    report("h2h", memcmp(h0, h1, n) == 0);

    fill(h0, n, 4);
    memset(h1, 0, n);
    CK(cudaMemcpy(d0, h0, n, cudaMemcpyDefault));
    CK(cudaMemcpy(d1, d0, n, cudaMemcpyDefault));
    CK(cudaMemcpy(h1, d1, n, cudaMemcpyDefault));
    report("default", memcmp(h0, h1, n) == 0);

    // Offsets inside an allocation address its middle, as real device pointers do.
    fill(h0, n, 5);
    CK(cudaMemset(d0, 0, n));
    CK(cudaMemcpy(d0 + 1000, h0, 100, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(h1, d0, n, cudaMemcpyDeviceToHost));
    bool ok = memcmp(h1 + 1000, h0, 100) == 0;
    for (size_t i = 0; i < n; i++) ok &= (i >= 1000 && i < 1100) || h1[i] == 0;
    report("offset", ok);

    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    fill(pinned, n, 6);
    memcpy(h0, pinned, n);
    CK(cudaMemcpyAsync(d0, pinned, n, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(d1, d0, n, cudaMemcpyDeviceToDevice, s));
    memset(pinned, 0, n);
    CK(cudaMemcpyAsync(pinned, d1, n, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    report("async_pinned", memcmp(h0, pinned, n) == 0);

    fill(h0, n, 7);
    memset(h1, 0, n);
    CK(cudaMemcpyAsync(d0, h0, n, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(h1, d0, n, cudaMemcpyDeviceToHost, s));     // pageable: returns when done
    CK(cudaStreamSynchronize(s));
    report("async_pageable", memcmp(h0, h1, n) == 0);

    // 2D: 100-byte rows, source pitch 128, device pitch 256, back to a dense host array.
    const size_t width = 100, height = 13, spitch = 128, dpitch = 256;
    unsigned char *src2d = (unsigned char *)malloc(spitch * height);
    unsigned char *dense = (unsigned char *)calloc(width * height, 1);
    fill(src2d, spitch * height, 8);
    CK(cudaMemset(d0, 0xee, dpitch * height));
    CK(cudaMemcpy2D(d0, dpitch, src2d, spitch, width, height, cudaMemcpyHostToDevice));
    CK(cudaMemcpy2D(dense, width, d0, dpitch, width, height, cudaMemcpyDeviceToHost));
    ok = true;
    for (size_t r = 0; r < height; r++) ok &= memcmp(dense + r * width, src2d + r * spitch, width) == 0;
    CK(cudaMemcpy(h1, d0, dpitch * height, cudaMemcpyDeviceToHost));
    for (size_t r = 0; r < height; r++)          // the padding between rows is untouched
        for (size_t c = width; c < dpitch; c++) ok &= h1[r * dpitch + c] == 0xee;
    report("2d", ok);
    memset(dense, 0, width * height);
    CK(cudaMemcpy2DAsync(d1, dpitch, src2d, spitch, width, height, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpy2DAsync(dense, width, d1, dpitch, width, height, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    ok = true;
    for (size_t r = 0; r < height; r++) ok &= memcmp(dense + r * width, src2d + r * spitch, width) == 0;
    report("2d_async", ok);

    // Symbols: __device__ and __constant__ variables round-trip, also through their address.
    int sym_in[64], sym_out[64];
    for (int i = 0; i < 64; i++) sym_in[i] = i * i - 7;
    CK(cudaMemcpyToSymbol(dev_symbol, sym_in, sizeof sym_in));
    memset(sym_out, 0, sizeof sym_out);
    CK(cudaMemcpyFromSymbol(sym_out, dev_symbol, sizeof sym_out));
    ok = memcmp(sym_in, sym_out, sizeof sym_in) == 0;
    CK(cudaMemcpyFromSymbol(sym_out, dev_symbol, 8 * sizeof(int), 16 * sizeof(int)));
    ok &= memcmp(sym_out, sym_in + 16, 8 * sizeof(int)) == 0;
    void *sym_addr = NULL;
    CK(cudaGetSymbolAddress(&sym_addr, dev_symbol));
    memset(sym_out, 0, sizeof sym_out);
    CK(cudaMemcpy(sym_out, sym_addr, sizeof sym_out, cudaMemcpyDeviceToHost));
    ok &= memcmp(sym_in, sym_out, sizeof sym_in) == 0;
    report("symbol", ok);
    float cin[16], cout[16];
    for (int i = 0; i < 16; i++) cin[i] = i * 0.25f;
    CK(cudaMemcpyToSymbol(const_symbol, cin, sizeof cin));
    CK(cudaMemcpyFromSymbol(cout, const_symbol, sizeof cout));
    report("constant_symbol", memcmp(cin, cout, sizeof cin) == 0);

    // Memset, synchronous and on a stream.
    CK(cudaMemset(d0, 0x5a, n));
    CK(cudaMemcpy(h1, d0, n, cudaMemcpyDeviceToHost));
    ok = true;
    for (size_t i = 0; i < n; i++) ok &= h1[i] == 0x5a;
    CK(cudaMemsetAsync(d0 + 10, 0x01, 20, s));
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(h1, d0, n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) ok &= h1[i] == ((i >= 10 && i < 30) ? 0x01 : 0x5a);
    report("memset", ok);

    // Large allocations (> 32 MiB) are reserved: what is written is dropped, reads are zeros.
    const size_t large = (size_t)48 << 20;
    unsigned char *dl;
    CK(cudaMalloc((void **)&dl, large));
    fill(h0, n, 9);
    CK(cudaMemcpy(dl + 12345, h0, n, cudaMemcpyHostToDevice));
    CK(cudaMemset(dl, 0x33, 4096));
    memset(h1, 0xcd, n);
    CK(cudaMemcpy(h1, dl + 12345, n, cudaMemcpyDeviceToHost));
    ok = true;
    for (size_t i = 0; i < n; i++) ok &= h1[i] == 0;
    memset(h1, 0xcd, n);
    CK(cudaMemcpy(h1, dl, 4096, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < 4096; i++) ok &= h1[i] == 0;
    CK(cudaMemcpy(d1, h0, n, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d1, dl, n, cudaMemcpyDeviceToDevice));          // reserved -> small: zeros
    memset(h1, 0xcd, n);
    CK(cudaMemcpy(h1, d1, n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) ok &= h1[i] == 0;
    report("large_reads_zero", ok);
    CK(cudaFree(dl));

    CK(cudaStreamDestroy(s));
    CK(cudaFree(d0));
    CK(cudaFree(d1));
    CK(cudaFreeHost(pinned));
    printf("copies_done 1\n");
    return 0;
}

static int section_launches(const char *cubin_path) {
    load_driver();
    CU(drv.Init(0));
    float *x;
    CK(cudaMalloc((void **)&x, 1024 * sizeof(float)));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    slow<<<1, 1, 0, s>>>(slow_ns);          // the stream is busy: the launches below queue up
    // 1. <<<>>> with a full configuration.
    kernel<<<dim3(1, 2, 3), dim3(32, 1, 1), 0, s>>>(x);
    CK(cudaGetLastError());
    // 2. cudaLaunchKernel on the host stub.
    void *args[] = {&x};
    CK(cudaLaunchKernel((const void *)kernel, dim3(4, 1, 1), dim3(64, 2, 1), args, 128, s));
    // 3. cudaLaunchKernelExC with a launch attribute.
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(5, 1, 1);
    config.blockDim = dim3(96, 1, 1);
    config.dynamicSmemBytes = 256;
    config.stream = s;
    config.attrs = attr;
    config.numAttrs = 1;
    CK(cudaLaunchKernelExC(&config, (const void *)kernel, args));
    // 4. and 5. the driver: a CUfunction from the program's own cubin, found by mangled name.
    FILE *f = fopen(cubin_path, "rb");
    if (!f) fail("cannot open the cubin");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *image = (char *)malloc(size);
    if (fread(image, 1, size, f) != (size_t)size) fail("cannot read the cubin");
    fclose(f);
    CUmodule module;
    CUfunction fn;
    CU(drv.ModuleLoadData(&module, image));
    CU(drv.ModuleGetFunction(&fn, module, "_Z6kernelPf"));
    CU(drv.LaunchKernel(fn, 6, 1, 1, 128, 1, 1, 512, (CUstream)s, args, NULL));
    CUlaunchConfig dconfig = {};
    dconfig.gridDimX = 7;
    dconfig.gridDimY = 2;
    dconfig.gridDimZ = 1;
    dconfig.blockDimX = 256;
    dconfig.blockDimY = 1;
    dconfig.blockDimZ = 1;
    dconfig.sharedMemBytes = 1024;
    dconfig.hStream = (CUstream)s;
    CU(drv.LaunchKernelEx(&dconfig, fn, args, NULL));
    int regs = -1;
    CU(drv.FuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, fn));
    // cudaGetDriverEntryPointByVersion hands out the same driver function.
    void *entry = NULL;
    cudaDriverEntryPointQueryResult q;
    CK(cudaGetDriverEntryPointByVersion("cuLaunchKernel", &entry, 12000, cudaEnableDefault, &q));
    printf("entry_point_matches %d\n", entry == (void *)drv.LaunchKernel && q == cudaDriverEntryPointSuccess);

    // 6. a kernel needing more than 48 KiB of dynamic shared memory opts in first, as on Hopper.
    CK(cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
    cudaFuncAttributes fa;
    CK(cudaFuncGetAttributes(&fa, (const void *)kernel));
    printf("func_max_dynamic_shared %d\n", fa.maxDynamicSharedSizeBytes);
    kernel<<<dim3(132, 1, 1), dim3(384, 1, 1), 200 * 1024, s>>>(x);
    CK(cudaGetLastError());
    // 7. names: a templated kernel in a namespace, and an extern "C" one; legacy default stream.
    ns::tk<4><<<3, 5>>>(NULL, 2.0f);
    CK(cudaGetLastError());
    plain_c_kernel<<<1, 1, 0, cudaStreamPerThread>>>(3);
    CK(cudaGetLastError());
    // 8. something that is not a kernel: an error, which cudaGetLastError then reports.
    cudaError_t not_a_kernel = cudaLaunchKernel((const void *)section_launches, dim3(1), dim3(1), args, 0, s);
    printf("launch_not_a_kernel %s\n", cudaGetErrorName(not_a_kernel));
    CK_ERR(cudaGetLastError(), not_a_kernel);
    // 9. on a second device: a stream of device 1, and device 1's own legacy stream.
    int count;
    CK(cudaGetDeviceCount(&count));
    if (count > 1) {
        CK(cudaSetDevice(1));
        cudaStream_t s_dev1;
        CK(cudaStreamCreateWithFlags(&s_dev1, cudaStreamNonBlocking));
        int dev = -1;
        CK(cudaStreamGetDevice(s_dev1, &dev));
        printf("dev1_stream_device %d\n", dev);
        kernel<<<8, 8, 0, s_dev1>>>(NULL);
        kernel<<<9, 9>>>(NULL);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        CK(cudaStreamDestroy(s_dev1));
        CK(cudaSetDevice(0));
    }
    CK(cudaDeviceSynchronize());
    CK(cudaStreamDestroy(s));
    CK(cudaFree(x));
    printf("launches_done 1\n");
    return 0;
}

static bool host_fn_ran;
static void CUDART_CB host_fn(void *arg) { host_fn_ran = *(int *)arg == 42; }
static int callback_status = -1;
static int host_fn_calls;
static void CUDART_CB count_calls(void *) { host_fn_calls++; }
static void CUDART_CB stream_callback(cudaStream_t, cudaError_t status, void *) { callback_status = status; }

// Timing under the rules kernel _Z6kernelPf = 1 ms, kernel _Z4slowy = 10 s. Each measurement
// starts behind a `slow` launch so the stream is busy when the first event is recorded: event
// times are then exact (host time spent issuing the calls cannot leak into them).
static int section_timing(void) {
    cudaStream_t s1, s2, s3;
    CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&s3, cudaStreamNonBlocking));

    // Events around two 1 ms kernels.
    cudaEvent_t e0 = event(), e1 = event();
    slow<<<1, 1, 0, s1>>>(slow_ns);
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(e0, s1));
    kernel<<<1, 1, 0, s1>>>(NULL);
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(e1, s1));
    printf("stream_query_busy %s\n", cudaGetErrorName(cudaStreamQuery(s1)));
    printf("event_query_busy %s\n", cudaGetErrorName(cudaEventQuery(e1)));
    printf("stream_query_idle_stream %s\n", cudaGetErrorName(cudaStreamQuery(s2)));
    printf("elapsed_two_kernels_ms %.6f\n", elapsed(e0, e1));
    printf("event_query_done %s\n", cudaGetErrorName(cudaEventQuery(e1)));
    CK(cudaStreamSynchronize(s1));
    printf("stream_query_done %s\n", cudaGetErrorName(cudaStreamQuery(s1)));

    // Events that cannot be timed.
    cudaEvent_t never = event(), untimed;
    CK(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
    CK(cudaEventRecord(untimed, s1));
    float ms;
    printf("elapsed_unrecorded %s\n", cudaGetErrorName(cudaEventElapsedTime(&ms, e0, never)));
    printf("elapsed_disable_timing %s\n", cudaGetErrorName(cudaEventElapsedTime(&ms, e0, untimed)));
    CK_ERR(cudaGetLastError(), cudaErrorInvalidResourceHandle);     // the last failure, until read
    printf("event_query_unrecorded %s\n", cudaGetErrorName(cudaEventQuery(never)));

    // Cross-stream: s2 waits on an event behind s1's kernel, then runs its own 1 ms kernel.
    cudaEvent_t a = event(), ready = event(), b = event(), c = event();
    slow<<<1, 1, 0, s1>>>(slow_ns);
    CK(cudaEventRecord(a, s1));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(ready, s1));
    CK(cudaStreamWaitEvent(s2, ready, 0));
    kernel<<<1, 1, 0, s2>>>(NULL);
    CK(cudaEventRecord(b, s2));
    kernel<<<1, 1, 0, s3>>>(NULL);          // s3 waits for nothing: it finishes long before
    CK(cudaEventRecord(c, s3));
    printf("elapsed_cross_stream_ms %.6f\n", elapsed(a, b));
    printf("elapsed_unordered_stream_ms %.6f\n", elapsed(a, c));
    // Elapsed time between a completed event and one still pending is not known yet.
    cudaEvent_t pending = event(), done = event();
    slow<<<1, 1, 0, s1>>>(slow_ns);
    CK(cudaEventRecord(pending, s1));
    CK(cudaEventRecord(done, s3));
    CK(cudaEventSynchronize(done));
    printf("elapsed_end_pending %s\n", cudaGetErrorName(cudaEventElapsedTime(&ms, done, pending)));
    cudaGetLastError();
    CK(cudaDeviceSynchronize());

    // The legacy default stream waits for blocking streams and they wait for it; non-blocking
    // streams are independent of it.
    cudaStream_t blocking, nonblocking;
    CK(cudaStreamCreate(&blocking));
    CK(cudaStreamCreateWithFlags(&nonblocking, cudaStreamNonBlocking));
    unsigned flags = 99;
    CK(cudaStreamGetFlags(blocking, &flags));
    printf("blocking_flags %u\n", flags);
    CK(cudaStreamGetFlags(nonblocking, &flags));
    printf("nonblocking_flags %u\n", flags);
    cudaEvent_t d = event(), eb = event(), en = event();
    slow<<<1, 1>>>(slow_ns);                // legacy default stream
    CK(cudaEventRecord(d, 0));
    kernel<<<1, 1, 0, blocking>>>(NULL);
    CK(cudaEventRecord(eb, blocking));
    kernel<<<1, 1, 0, nonblocking>>>(NULL);
    CK(cudaEventRecord(en, nonblocking));
    printf("elapsed_legacy_then_blocking_ms %.6f\n", elapsed(d, eb));
    printf("elapsed_legacy_then_nonblocking_ms %.6f\n", elapsed(d, en));
    CK(cudaDeviceSynchronize());
    cudaEvent_t sb = event(), l1 = event(), sn = event(), l2 = event();
    slow<<<1, 1, 0, blocking>>>(slow_ns);
    CK(cudaEventRecord(sb, blocking));
    kernel<<<1, 1>>>(NULL);
    CK(cudaEventRecord(l1, cudaStreamLegacy));
    printf("elapsed_blocking_then_legacy_ms %.6f\n", elapsed(sb, l1));
    CK(cudaDeviceSynchronize());
    slow<<<1, 1, 0, nonblocking>>>(slow_ns);
    CK(cudaEventRecord(sn, nonblocking));
    kernel<<<1, 1>>>(NULL);
    CK(cudaEventRecord(l2, 0));
    printf("elapsed_nonblocking_then_legacy_ms %.6f\n", elapsed(sn, l2));
    CK(cudaDeviceSynchronize());

    // Priorities.
    int least = 99, greatest = 99, prio = 99;
    CK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    printf("priority_range %d %d\n", least, greatest);
    cudaStream_t hp;
    CK(cudaStreamCreateWithPriority(&hp, cudaStreamNonBlocking, greatest));
    CK(cudaStreamGetPriority(hp, &prio));
    CK(cudaStreamGetFlags(hp, &flags));
    printf("high_priority_stream %d %u\n", prio, flags);
    CK(cudaStreamDestroy(hp));

    // Graph capture with a fork and a join: s1 runs k, forks to s2 (three k) while s1 runs one
    // more k, joins, and runs a last k. Critical path: 1 + max(3, 1) + 1 = 5 ms over 6 nodes.
    cudaEvent_t fork, join;
    CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(fork, s1));
    CK(cudaStreamWaitEvent(s2, fork, 0));
    cudaStreamCaptureStatus st1, st2;
    CK(cudaStreamIsCapturing(s1, &st1));
    CK(cudaStreamIsCapturing(s2, &st2));
    printf("capturing %d %d\n", (int)st1, (int)st2);
    for (int i = 0; i < 3; i++) kernel<<<1, 1, 0, s2>>>(NULL);
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(join, s2));
    CK(cudaStreamWaitEvent(s1, join, 0));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaStreamEndCapture(s1, &graph));
    CK(cudaStreamIsCapturing(s1, &st1));
    CK(cudaStreamIsCapturing(s2, &st2));
    printf("capturing_after %d %d\n", (int)st1, (int)st2);
    size_t nodes = 0;
    CK(cudaGraphGetNodes(graph, NULL, &nodes));
    printf("graph_nodes %zu\n", nodes);
    cudaGraphExec_t exec;
    CK(cudaGraphInstantiate(&exec, graph, 0));
    CK(cudaGraphUpload(exec, s1));
    cudaEvent_t g0 = event(), g1 = event(), g2 = event();
    slow<<<1, 1, 0, s1>>>(slow_ns);
    CK(cudaEventRecord(g0, s1));
    CK(cudaGraphLaunch(exec, s1));
    CK(cudaEventRecord(g1, s1));
    CK(cudaGraphLaunch(exec, s1));
    CK(cudaEventRecord(g2, s1));
    printf("elapsed_graph_ms %.6f\n", elapsed(g0, g1));
    printf("elapsed_graph_again_ms %.6f\n", elapsed(g1, g2));
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));

    // A host function captured into a graph is a node: it runs at each replay, not at capture.
    cudaGraph_t host_graph;
    cudaGraphExec_t host_exec;
    CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaLaunchHostFunc(s1, count_calls, NULL));
    CK(cudaStreamEndCapture(s1, &host_graph));
    printf("host_fn_calls_after_capture %d\n", host_fn_calls);
    CK(cudaGraphInstantiate(&host_exec, host_graph, 0));
    CK(cudaGraphLaunch(host_exec, s1));
    CK(cudaGraphLaunch(host_exec, s1));
    CK(cudaStreamSynchronize(s1));
    printf("host_fn_calls_after_two_replays %d\n", host_fn_calls);
    CK(cudaGraphExecDestroy(host_exec));
    CK(cudaGraphDestroy(host_graph));

    // Host functions run, in stream order, by the time the stream is synchronised.
    int payload = 42;
    slow<<<1, 1, 0, s1>>>(slow_ns);
    CK(cudaLaunchHostFunc(s1, host_fn, &payload));
    CK(cudaStreamAddCallback(s1, stream_callback, NULL, 0));
    CK(cudaStreamSynchronize(s1));
    printf("host_fn_ran %d\n", (int)host_fn_ran);
    printf("stream_callback_status %d\n", callback_status);

    CK(cudaStreamDestroy(s1));
    CK(cudaStreamDestroy(s2));
    CK(cudaStreamDestroy(s3));
    CK(cudaStreamDestroy(blocking));
    CK(cudaStreamDestroy(nonblocking));
    printf("timing_done 1\n");
    return 0;
}

// A stream that waits on an event recorded inside a capture that has since ended must not
// start capturing into that (finished) graph: its later launches have to run.
static int section_capture_event_after_end(void) {
    cudaStream_t s1, s2;
    CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    cudaEvent_t inside;
    CK(cudaEventCreateWithFlags(&inside, cudaEventDisableTiming));
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecord(inside, s1));
    CK(cudaStreamEndCapture(s1, &graph));
    cudaError_t wait = cudaStreamWaitEvent(s2, inside, 0);
    printf("wait_status %s\n", cudaGetErrorName(wait));
    cudaGetLastError();
    cudaStreamCaptureStatus st;
    CK(cudaStreamIsCapturing(s2, &st));
    printf("s2_capturing %d\n", (int)st);
    cudaEvent_t a = event(), b = event();
    slow<<<1, 1, 0, s2>>>(slow_ns);
    CK(cudaEventRecord(a, s2));
    kernel<<<1, 1, 0, s2>>>(NULL);
    CK(cudaEventRecord(b, s2));
    printf("elapsed_after_wait_ms %.6f\n", elapsed(a, b));
    CK(cudaGraphDestroy(graph));
    printf("capture_event_after_end_done 1\n");
    return 0;
}

// An event recorded into a capture with cudaEventRecordExternal is a node of the graph: every
// replay records it where it was captured, and other streams may wait on it after the capture
// (SGLang's scheduler waits on the one its decode graphs record once their inputs are read).
static int section_external_event(void) {
    cudaStream_t s1, s2;
    CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    cudaEvent_t marker = event();
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture(s1, cudaStreamCaptureModeThreadLocal));
    kernel<<<1, 1, 0, s1>>>(NULL);
    CK(cudaEventRecordWithFlags(marker, s1, cudaEventRecordExternal));
    slow<<<1, 1, 0, s1>>>(slow_ns);
    CK(cudaStreamEndCapture(s1, &graph));
    size_t nodes = 0;
    CK(cudaGraphGetNodes(graph, NULL, &nodes));
    printf("external_graph_nodes %zu\n", nodes);
    cudaGraphExec_t exec;
    CK(cudaGraphInstantiate(&exec, graph, 0));
    CK(cudaStreamWaitEvent(s2, marker, 0));     // never recorded yet: nothing to wait for
    cudaEvent_t a = event(), b = event();
    slow<<<1, 1, 0, s1>>>(slow_ns);         // the stream is busy: the replay below queues up
    CK(cudaEventRecord(a, s1));
    CK(cudaGraphLaunch(exec, s1));
    CK(cudaStreamWaitEvent(s2, marker, 0));     // the replay's record: after its first kernel
    CK(cudaEventRecord(b, s2));
    CK(cudaStreamSynchronize(s2));
    printf("elapsed_to_external_record_ms %.6f\n", elapsed(a, b));
    CK(cudaStreamSynchronize(s1));
    printf("elapsed_replay_marker_ms %.6f\n", elapsed(a, marker));
    CK(cudaGraphExecDestroy(exec));
    CK(cudaGraphDestroy(graph));
    printf("external_event_done 1\n");
    return 0;
}

// The CuTe DSL's runtime library (CUTE_DSL_LIBS names it), called as the DSL's compiled host code
// calls it: cuda_dialect_init_library_once with callbacks that load a cubin and look up its
// kernel, then launches through its `_cuda` wrappers.
static const char *cute_cubin;
static void *cute_kernel;
static int cute_loads;
static int (*cute_load_data)(void **, const void *, void *, void *, unsigned, void *, void *, unsigned);
static int (*cute_get_kernel)(void **, void *, const char *);
static char cute_error[512];

static int cute_load(void **library) {
    cute_loads++;
    FILE *f = fopen(cute_cubin, "rb");
    if (!f) fail("cannot open the cubin");
    static char image[1 << 20];
    size_t n = fread(image, 1, sizeof image, f);
    fclose(f);
    if (n == 0) fail("empty cubin");
    return cute_load_data(library, image, NULL, NULL, 0, NULL, NULL, 0);
}

static int cute_load_to_device(void **library, int device) {
    return cute_get_kernel(&cute_kernel, *library, "_Z6kernelPf");
}

static int cute_load_fails(void **library) { return cudaErrorNotSupported; }

static void cute_set_error(const char *kind, const char *message) {
    snprintf(cute_error, sizeof cute_error, "%s: %s", kind, message);
}

static void *cute_symbol(void *lib, const char *name) {
    void *f = dlsym(lib, name);
    if (!f) fail(name);
    return f;
}

static int section_cute_dsl(const char *cubin_path) {
    const char *path = getenv("CUTE_DSL_LIBS");
    void *lib = path ? dlopen(path, RTLD_NOW) : NULL;
    if (!lib) fail("CUTE_DSL_LIBS does not name a loadable library");
    cute_cubin = cubin_path;
    cute_load_data = (decltype(cute_load_data))cute_symbol(lib, "_cudaLibraryLoadData");
    cute_get_kernel = (decltype(cute_get_kernel))cute_symbol(lib, "_cudaLibraryGetKernel");
    auto init_once = (int (*)(void **, void *, void *, void *))cute_symbol(lib, "cuda_dialect_init_library_once");
    auto unload_once = (void (*)(void **))cute_symbol(lib, "cuda_dialect_unload_library_once");
    auto error_name = (const char *(*)(int))cute_symbol(lib, "cuda_dialect_get_error_name");
    auto launch = (int (*)(const cudaLaunchConfig_t *, const void *, void **))cute_symbol(lib, "_cudaLaunchKernelEx");
    auto stream_create = (int (*)(cudaStream_t *))cute_symbol(lib, "_cudaStreamCreate");
    auto record = (int (*)(cudaEvent_t, cudaStream_t))cute_symbol(lib, "_cudaEventRecord");
    auto synchronize = (int (*)(cudaStream_t))cute_symbol(lib, "_cudaStreamSynchronize");

    void *slot = NULL;
    CK((cudaError_t)init_once(&slot, (void *)cute_load, (void *)cute_load_to_device, (void *)cute_set_error));
    CK((cudaError_t)init_once(&slot, (void *)cute_load, (void *)cute_load_to_device, (void *)cute_set_error));
    printf("cute_loads %d\n", cute_loads);
    printf("cute_library_loaded %d\n", slot != NULL);

    cudaStream_t s;
    CK((cudaError_t)stream_create(&s));
    cudaEvent_t a = event(), b = event();
    float *x = NULL;
    void *args[] = {&x};
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(2, 1, 1);
    config.blockDim = dim3(128, 1, 1);
    config.stream = s;
    slow<<<1, 1, 0, s>>>(slow_ns);          // the stream is busy: the launch below queues up
    CK((cudaError_t)record(a, s));
    CK((cudaError_t)launch(&config, cute_kernel, args));
    CK((cudaError_t)record(b, s));
    CK((cudaError_t)synchronize(s));
    printf("cute_elapsed_ms %.6f\n", elapsed(a, b));

    unload_once(&slot);
    printf("cute_library_unloaded %d\n", slot == NULL);
    void *failing = NULL;
    int status = init_once(&failing, (void *)cute_load_fails, NULL, (void *)cute_set_error);
    printf("cute_failed_init %d\n", status);
    printf("cute_error %s\n", cute_error);
    printf("cute_error_name %s\n", error_name(cudaErrorMemoryAllocation));
    printf("cute_dsl_done 1\n");
    return 0;
}

// cudaStreamSynchronize(s) waits for the work issued to s, not for legacy-stream work issued
// after it (the legacy stream waits for s, not the other way round).
static int section_legacy_sync(void) {
    cudaStream_t blocking, other;
    CK(cudaStreamCreate(&blocking));
    CK(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking));
    cudaEvent_t start = event(), after = event();
    CK(cudaEventRecord(start, other));      // idle stream: "now"
    kernel<<<1, 1, 0, blocking>>>(NULL);    // 1 ms
    slow<<<1, 1>>>(slow_ns);                // legacy: 10 s, after the blocking stream's kernel
    CK(cudaStreamSynchronize(blocking));
    CK(cudaEventRecord(after, other));      // idle stream: "now", after the synchronisation
    printf("elapsed_sync_blocking_ms %.6f\n", elapsed(start, after));
    printf("legacy_sync_done 1\n");
    return 0;
}

// Launches from several threads at once, each on its own stream (and, with two devices, every
// other thread on device 1: the current device is per thread).
#define THREADS 4
#define LAUNCHES_PER_THREAD 2000
static void *launch_thread(void *arg) {
    long t = (long)arg;
    int count;
    CK(cudaGetDeviceCount(&count));
    int dev = count > 1 ? (int)(t % 2) : 0;
    int before = -1;
    CK(cudaGetDevice(&before));
    if (before != 0) fail("a new thread does not start on device 0");
    CK(cudaSetDevice(dev));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int i = 0; i < LAUNCHES_PER_THREAD; i++) ns::tk<4><<<(unsigned)t + 1, 32, 0, s>>>(NULL, 1.0f);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(s));
    CK(cudaStreamDestroy(s));
    return NULL;
}

static int section_threads(void) {
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++)
        if (pthread_create(&threads[t], NULL, launch_thread, (void *)t) != 0) fail("pthread_create");
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    int cur = -1;
    CK(cudaGetDevice(&cur));
    printf("main_thread_device %d\n", cur);
    printf("threads_done 1\n");
    return 0;
}

// An entry point the library stubs: called twice through its exported symbol.
static int section_unimplemented(const char *name) {
    int count;
    CK(cudaGetDeviceCount(&count));         // the library is up and the device model loaded
    int (*fn)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, name);
    if (!fn) fail("the entry point is not exported");
    int r1 = fn(), r2 = fn();
    printf("unimplemented_status %d %d\n", r1, r2);
    printf("unimplemented_done 1\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *spin = getenv("RUNTIME_CHECKS_SLOW_NS");
    slow_ns = spin ? strtoull(spin, NULL, 10) : 0;
    soft = getenv("RUNTIME_CHECKS_SOFT") && atoi(getenv("RUNTIME_CHECKS_SOFT"));
    if (argc < 2) fail("usage: runtime_checks SECTION [ARG]");
    const char *s = argv[1];
    if (!strcmp(s, "devices")) return section_devices();
    if (!strcmp(s, "memory")) return section_memory();
    if (!strcmp(s, "copies")) return section_copies();
    if (!strcmp(s, "launches") && argc > 2) return section_launches(argv[2]);
    if (!strcmp(s, "timing")) return section_timing();
    if (!strcmp(s, "capture_event_after_end")) return section_capture_event_after_end();
    if (!strcmp(s, "external_event")) return section_external_event();
    if (!strcmp(s, "cute_dsl") && argc > 2) return section_cute_dsl(argv[2]);
    if (!strcmp(s, "legacy_sync")) return section_legacy_sync();
    if (!strcmp(s, "threads")) return section_threads();
    if (!strcmp(s, "unimplemented") && argc > 2) return section_unimplemented(argv[2]);
    fail("unknown section");
}
