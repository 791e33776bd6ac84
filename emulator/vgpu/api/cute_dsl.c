/* cute_dsl.c: the CuTe DSL runtime (libcute_dsl_runtime.so of nvidia-cutlass-dsl), on the vGPU model.
 *
 * Kernels written in the CuTe DSL (FlashInfer's norms, which SGLang calls in every layer) are
 * compiled in-process to host code plus an embedded cubin. That host code does not call cudart
 * itself: it calls the DSL's runtime library, whose entry points are thin wrappers (`_cudaMalloc`
 * jumps to cudaMalloc) over a cudart linked statically into it. A static cudart cannot run on a
 * fake driver (it asks the driver for private export tables and gives up with
 * cudaErrorCallRequiresNewerDriver), so this file is that runtime: the wrappers forward to this
 * library's runtime and driver, and the few functions with logic of their own follow
 * CuteDSLRuntime.h and the calls the DSL's compiler emits. The emulation environment points the
 * DSL at it with CUTE_DSL_LIBS (emulator/vgpu_environment.py).
 */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vgpu.h"

#define API VGPU_EXPORT

/* ---- forwarded entry points: (the runtime's name, this library's function) -----------------
 * Each is a tail jump, so arguments pass through untouched whatever their types. Those this
 * library does not implement (cudaMallocManaged, ...) are surface.txt stubs that name themselves. */
#define CUTE_DSL_FORWARDS(X) \
    X(_cudaDeviceGetAttribute, cudaDeviceGetAttribute) X(_cudaDeviceSynchronize, cudaDeviceSynchronize) \
    X(_cudaEventCreate, cudaEventCreate) X(_cudaEventDestroy, cudaEventDestroy) \
    X(_cudaEventElapsedTime, cudaEventElapsedTime) X(_cudaEventRecord, cudaEventRecord) \
    X(_cudaFree, cudaFree) X(_cudaFreeAsync, cudaFreeAsync) X(_cudaFreeHost, cudaFreeHost) \
    X(_cudaFuncSetAttribute, cudaFuncSetAttribute) X(_cudaGetDevice, cudaGetDevice) \
    X(_cudaGetDeviceCount, cudaGetDeviceCount) X(_cudaGetDeviceProperties, cudaGetDeviceProperties) \
    X(_cudaGraphDestroy, cudaGraphDestroy) X(_cudaGraphExecDestroy, cudaGraphExecDestroy) \
    X(_cudaGraphInstantiate, cudaGraphInstantiate) X(_cudaGraphLaunch, cudaGraphLaunch) \
    X(_cudaKernelSetAttributeForDevice, cudaKernelSetAttributeForDevice) \
    X(_cudaLaunchKernel, cudaLaunchKernel) X(_cudaLaunchKernelEx, cudaLaunchKernelExC) \
    X(_cudaLibraryGetGlobal, cudaLibraryGetGlobal) X(_cudaLibraryGetKernel, cudaLibraryGetKernel) \
    X(_cudaLibraryGetKernelCount, cudaLibraryGetKernelCount) X(_cudaLibraryGetManaged, cudaLibraryGetManaged) \
    X(_cudaLibraryGetUnifiedFunction, cudaLibraryGetUnifiedFunction) \
    X(_cudaLibraryLoadData, cudaLibraryLoadData) X(_cudaLibraryLoadFromFile, cudaLibraryLoadFromFile) \
    X(_cudaLibraryUnload, cudaLibraryUnload) X(_cudaMalloc, cudaMalloc) X(_cudaMallocAsync, cudaMallocAsync) \
    X(_cudaMallocHost, cudaMallocHost) X(_cudaMallocManaged, cudaMallocManaged) X(_cudaMemcpy, cudaMemcpy) \
    X(_cudaMemcpyAsync, cudaMemcpyAsync) X(_cudaMemset, cudaMemset) X(_cudaMemsetAsync, cudaMemsetAsync) \
    X(_cudaOccupancyMaxActiveBlocksPerMultiprocessor, cudaOccupancyMaxActiveBlocksPerMultiprocessor) \
    X(_cudaProfilerStart, cudaProfilerStart) X(_cudaProfilerStop, cudaProfilerStop) \
    X(_cudaSetDevice, cudaSetDevice) X(_cudaStreamAddCallback, cudaStreamAddCallback) \
    X(_cudaStreamBeginCapture, cudaStreamBeginCapture) X(_cudaStreamCreate, cudaStreamCreate) \
    X(_cudaStreamDestroy, cudaStreamDestroy) X(_cudaStreamEndCapture, cudaStreamEndCapture) \
    X(_cudaStreamSynchronize, cudaStreamSynchronize) X(_cudaStreamWaitEvent, cudaStreamWaitEvent) \
    X(_cuDeviceGet, cuDeviceGet) X(_cuKernelGetAttribute, cuKernelGetAttribute) \
    X(_cuLibraryGetGlobal, cuLibraryGetGlobal) X(_cuLibraryGetKernel, cuLibraryGetKernel) \
    X(_cuLibraryGetKernelCount, cuLibraryGetKernelCount) X(_cuLibraryGetManaged, cuLibraryGetManaged) \
    X(_cuLibraryGetModule, cuLibraryGetModule) X(_cuLibraryGetUnifiedFunction, cuLibraryGetUnifiedFunction) \
    X(_cuLibraryLoadData, cuLibraryLoadData) X(_cuLibraryLoadFromFile, cuLibraryLoadFromFile) \
    X(_cuLibraryUnload, cuLibraryUnload) X(_cuTensorMapEncodeTiled, cuTensorMapEncodeTiled) \
    X(cuda_dialect_get_error_name, cudaGetErrorName)

#if defined(__x86_64__)
#define TAIL_JUMP(target) "jmp " #target "@PLT"
#elif defined(__aarch64__)
#define TAIL_JUMP(target) "b " #target
#else
#error "cute_dsl.c: no tail jump for this architecture"
#endif

#define FORWARD(name, target) \
    __asm__(".text\n.globl " #name "\n.type " #name ", @function\n" #name ":\n\t" TAIL_JUMP(target) \
            "\n.size " #name ", . - " #name "\n");
CUTE_DSL_FORWARDS(FORWARD)

/* ---- loading a compiled module's cubin ------------------------------------------------------ */

typedef int (*load_library_fn)(void **library);
typedef int (*load_to_device_fn)(void **library, int device);
typedef void (*set_error_fn)(const char *kind, const char *message);

/* The compiled host code calls this before its first launch with a slot of its own, a callback
 * that loads its cubin (cudaLibraryLoadData) and one that prepares it on a device (kernel
 * attributes): load once, prepare on every device, and publish the library in the slot. Returns
 * 0, or -1 after reporting the CUDA error through set_error. */
API int cuda_dialect_init_library_once(void **slot, load_library_fn load, load_to_device_fn load_to_device,
                                       set_error_fn set_error) {
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    int status = 0;
    void *library = NULL;
    if (!*slot) {
        status = load(&library);
        int devices = 0;
        if (status == 0) status = cudaGetDeviceCount(&devices);
        for (int dev = 0; status == 0 && load_to_device && dev < devices; dev++)
            status = load_to_device(&library, dev);
        if (status == 0) *slot = library;
    }
    pthread_mutex_unlock(&lock);
    if (status == 0) return 0;
    char message[256];
    snprintf(message, sizeof message, "CUDA error %s (%d): %s", cudaGetErrorName((cudaError_t)status), status,
             cudaGetErrorString((cudaError_t)status));
    if (set_error) set_error("RuntimeError", message);
    return -1;
}

API void cuda_dialect_unload_library_once(void **slot) {
    void *library = __atomic_exchange_n(slot, NULL, __ATOMIC_ACQ_REL);
    if (library) cudaLibraryUnload((cudaLibrary_t)library);
}

API void cuda_dialect_print_on_error(int status) {
    if (status != 0)
        fprintf(stderr, "CuTe DSL: CUDA error %s (%d): %s\n", cudaGetErrorName((cudaError_t)status), status,
                cudaGetErrorString((cudaError_t)status));
}

API void cuda_dialect_assert_success(int status) {
    if (status == 0) return;
    cuda_dialect_print_on_error(status);
    abort();
}

/* ---- errors raised into TVM FFI (the DSL's `--enable-tvm-ffi` functions) -------------------- */

typedef void (*tvm_set_error_fn)(const char *kind, const char **parts, int32_t num_parts);

API void CuteDSLRT_TVMFFISetRaisedCudaError(tvm_set_error_fn set_error, int32_t code) {
    const char *parts[] = {"CUDA error ", cudaGetErrorName((cudaError_t)code), ": ",
                           cudaGetErrorString((cudaError_t)code)};
    set_error("RuntimeError", parts, 4);
}

API void CuteDSLRT_TVMFFISetRaisedCudaLaunchError(
    tvm_set_error_fn set_error, int32_t grid_x, int32_t grid_y, int32_t grid_z, int32_t block_x, int32_t block_y,
    int32_t block_z, int32_t block_threads, int64_t dynamic_smem, int32_t device, int32_t max_threads,
    int32_t max_block_x, int32_t max_block_y, int32_t max_block_z, int32_t max_grid_x, int32_t max_grid_y,
    int32_t max_grid_z, int32_t max_smem, int32_t max_smem_optin, const char *violation, const char *source_file,
    int32_t source_line, int32_t source_col, int32_t source_end_col) {
    char message[512];
    snprintf(message, sizeof message,
             "kernel launch exceeds device %d limits (%s): grid (%d, %d, %d), block (%d, %d, %d) = %d threads "
             "(max %d), dynamic shared memory %lld bytes (max %d, opt-in %d), at %s:%d:%d",
             device, violation ? violation : "?", grid_x, grid_y, grid_z, block_x, block_y, block_z, block_threads,
             max_threads, (long long)dynamic_smem, max_smem, max_smem_optin, source_file ? source_file : "?",
             source_line, source_col);
    const char *parts[] = {message};
    set_error("ValueError", parts, 1);
}

static const char *const error_names[] = {
    "CuteDSLRT_Success", "CuteDSLRT_Error_CudaError", "CuteDSLRT_Error_InvalidBinary",
    "CuteDSLRT_Error_InvalidMetadata", "CuteDSLRT_Error_InvalidVersion", "CuteDSLRT_Error_LibraryAlreadyLoaded",
    "CuteDSLRT_Error_KernelNotFound", "CuteDSLRT_Error_InvalidArguments", "CuteDSLRT_Error_NoBinaryLoaded",
    "CuteDSLRT_Error_BinaryAlreadyLoaded", "CuteDSLRT_Error_UnsupportedOnPlatform",
};

API const char *CuteDSLRT_GetErrorName(int error) {
    return error >= 0 && error < (int)(sizeof error_names / sizeof *error_names) ? error_names[error]
                                                                                 : "CuteDSLRT_Error_Unknown";
}

API const char *CuteDSLRT_GetErrorString(int error) {
    return CuteDSLRT_GetErrorName(error);
}
