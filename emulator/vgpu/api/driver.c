/* driver.c: the CUDA driver API (libcuda.so.1), for Triton, vLLM's kernels, torch's
 * expandable segments and anything else that talks to the driver directly.
 *
 * The library stands in as libcuda.so.1 (a link to it in the private library folder), so the
 * same state serves the runtime and the driver: a CUcontext is a device's primary context, a
 * CUstream is a vgpu_stream, a CUfunction/CUkernel is a vgpu_function. cuGetProcAddress answers
 * from the table at the bottom of this file.
 */
#define _GNU_SOURCE             /* memfd_create */
#include <cuda.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "api/launch.h"
#include "vgpu.h"

#define API VGPU_EXPORT

/* One primary context per device; its address is the CUcontext. */
typedef struct context { int device; } context;
static context contexts[VGPU_MAX_DEVICES];

static CUcontext context_of(int dev) {
    contexts[dev].device = dev;
    return (CUcontext)&contexts[dev];
}

static CUresult check_device(CUdevice dev) {
    return vgpu_device_valid(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

/* ---- initialisation, errors, devices ---------------------------------------------------------- */

API CUresult cuInit(unsigned int flags) {
    (void)flags;
    vgpu_model_get();
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int *version) {
    *version = vgpu_model_get()->cuda_driver_version;
    return CUDA_SUCCESS;
}

static const struct { CUresult code; const char *name, *text; } error_table[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
};

API CUresult cuGetErrorString(CUresult error, const char **text) {
    for (size_t i = 0; i < sizeof error_table / sizeof *error_table; i++)
        if (error_table[i].code == error) { *text = error_table[i].text; return CUDA_SUCCESS; }
    *text = "unknown error";
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult error, const char **name) {
    for (size_t i = 0; i < sizeof error_table / sizeof *error_table; i++)
        if (error_table[i].code == error) { *name = error_table[i].name; return CUDA_SUCCESS; }
    *name = "CUDA_ERROR_UNKNOWN";
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int *count) {
    *count = vgpu_device_count();
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice *dev, int ordinal) {
    if (!vgpu_device_valid(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, len, "%s", vgpu_model_get()->name);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem(size_t *bytes, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = vgpu_model_get()->total_memory;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    vgpu_device_uuid(dev, (unsigned char *)uuid->bytes);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attribute, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    if (vgpu_device_attribute((int)attribute, dev, value) != 0) {
        vgpu_warn_once("device attribute %d is not in the device model; reporting 0", (int)attribute);
        *value = 0;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *major = vgpu_model_get()->cc_major;
    *minor = vgpu_model_get()->cc_minor;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetPCIBusId(char *out, int len, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(out, len, "00000000:%02X:00.0", vgpu_model_get()->pci_bus_base + dev);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceCanAccessPeer(int *can, CUdevice dev, CUdevice peer) {
    *can = vgpu_device_valid(dev) && vgpu_device_valid(peer) && dev != peer;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetP2PAttribute(int *value, CUdevice_P2PAttribute a, CUdevice src, CUdevice dst) {
    if (check_device(src) || check_device(dst)) return CUDA_ERROR_INVALID_DEVICE;
    /* NVLink-connected peers: access and atomics supported, performance rank 0. */
    *value = a == CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK ? 0 : src != dst;
    return CUDA_SUCCESS;
}

/* ---- contexts ----------------------------------------------------------------------------------- */

API CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = context_of(dev);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease(CUdevice dev) { return check_device(dev); }

API CUresult cuDevicePrimaryCtxGetState(CUdevice dev, unsigned int *flags, int *active) {
    if (check_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
    *flags = 0;
    *active = 1;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxSetFlags(CUdevice dev, unsigned int flags) { (void)flags; return check_device(dev); }

API CUresult cuCtxGetCurrent(CUcontext *ctx) {
    *ctx = context_of(vgpu_current_device());
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx) {
    if (ctx) vgpu_set_current_device(((context *)ctx)->device);
    return CUDA_SUCCESS;
}

API CUresult cuCtxPushCurrent(CUcontext ctx) { return cuCtxSetCurrent(ctx); }

API CUresult cuCtxPopCurrent(CUcontext *ctx) {
    if (ctx) *ctx = context_of(vgpu_current_device());
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetDevice(CUdevice *dev) {
    *dev = vgpu_current_device();
    return CUDA_SUCCESS;
}

API CUresult cuCtxSynchronize(void) {
    vgpu_device_synchronize(vgpu_current_device());
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetStreamPriorityRange(int *least, int *greatest) {
    if (least) *least = 0;
    if (greatest) *greatest = -5;
    return CUDA_SUCCESS;
}

/* CUlimit and cudaLimit share their values: one table of limits serves both APIs (launch.c). */
API CUresult cuCtxSetLimit(CUlimit limit, size_t value) {
    return vgpu_limit_set((int)limit, value) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

API CUresult cuCtxGetLimit(size_t *value, CUlimit limit) {
    return vgpu_limit_get((int)limit, value) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

/* ---- memory --------------------------------------------------------------------------------------- */

API CUresult cuMemAlloc(CUdeviceptr *ptr, size_t size) {
    void *p;
    if (vgpu_mem_alloc_device(vgpu_current_device(), size, &p) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    *ptr = (CUdeviceptr)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemFree(CUdeviceptr ptr) {
    return vgpu_mem_free((void *)ptr) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuMemAllocHost(void **ptr, size_t size) {
    return vgpu_mem_alloc_host(size, ptr) == 0 ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

API CUresult cuMemHostAlloc(void **ptr, size_t size, unsigned int flags) {
    (void)flags;
    return cuMemAllocHost(ptr, size);
}

API CUresult cuMemFreeHost(void *ptr) {
    return vgpu_mem_free(ptr) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    vgpu_mem_info(vgpu_current_device(), free_bytes, total_bytes);
    return CUDA_SUCCESS;
}

API CUresult cuMemGetAddressRange(CUdeviceptr *base, size_t *size, CUdeviceptr ptr) {
    vgpu_alloc a;
    if (vgpu_mem_lookup((void *)ptr, &a) != 0) return CUDA_ERROR_NOT_FOUND;
    if (base) *base = a.base;
    if (size) *size = a.size;
    return CUDA_SUCCESS;
}

API CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr ptr) {
    vgpu_alloc a;
    if (vgpu_mem_lookup((void *)ptr, &a) != 0) return CUDA_ERROR_INVALID_VALUE;
    int dev = a.device >= 0 ? a.device : vgpu_current_device();
    switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = context_of(dev); break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned *)data = a.kind == VGPU_ALLOC_HOST ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
        break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
        if (a.kind != VGPU_ALLOC_HOST) return CUDA_ERROR_INVALID_VALUE;
        *(void **)data = (void *)ptr;
        break;
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: *(int *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID: *(unsigned long long *)data = a.base; break;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: *(int *)data = 0; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = dev; break;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: *(CUdeviceptr *)data = a.base; break;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: *(size_t *)data = a.size; break;
    case CU_POINTER_ATTRIBUTE_MAPPED: *(int *)data = 1; break;
    case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: *(int *)data = CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE; break;
    case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: *(void **)data = NULL; break;
    default:
        vgpu_warn_once("cuPointerGetAttribute: attribute %d is not modelled", (int)attribute);
        return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuPointerGetAttributes(unsigned int count, CUpointer_attribute *attributes, void **data, CUdeviceptr ptr) {
    for (unsigned int i = 0; i < count; i++) {
        CUresult r = cuPointerGetAttribute(data[i], attributes[i], ptr);
        if (r != CUDA_SUCCESS) return r;
    }
    return CUDA_SUCCESS;
}

/* Copies and sets are the runtime's too: one implementation of each (launch.c). */
API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n) {
    vgpu_launch_copy((void *)dst, src, n, VGPU_COPY_H2D, NULL, 1);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n) {
    vgpu_launch_copy(dst, (void *)src, n, VGPU_COPY_D2H, NULL, 1);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    vgpu_launch_copy((void *)dst, (void *)src, n, VGPU_COPY_D2D, NULL, 1);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
    vgpu_launch_copy((void *)dst, src, n, VGPU_COPY_H2D, s, 0);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoHAsync(void *dst, CUdeviceptr src, size_t n, CUstream s) {
    vgpu_launch_copy(dst, (void *)src, n, VGPU_COPY_D2H, s, 0);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    vgpu_launch_copy((void *)dst, (void *)src, n, VGPU_COPY_D2D, s, 0);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s) {
    vgpu_launch_copy((void *)dst, (void *)src, n, VGPU_COPY_FROM_POINTERS, s, 0);
    return CUDA_SUCCESS;
}

API CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    vgpu_launch_copy((void *)dst, (void *)src, n, VGPU_COPY_FROM_POINTERS, NULL, 1);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) {
    vgpu_launch_memset((void *)dst, value, n, NULL, 1);
    return CUDA_SUCCESS;
}

API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream s) {
    vgpu_launch_memset((void *)dst, value, n, s, 0);
    return CUDA_SUCCESS;
}

/* 32-bit pattern fills: the bytes are written here, the time charged as one memset. */
API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int value, size_t n, CUstream stream) {
    vgpu_alloc a;
    if (vgpu_mem_lookup((void *)dst, &a) == 0 && a.state == VGPU_MEM_HOST_BACKED)
        for (size_t i = 0; i < n; i++) ((unsigned int *)dst)[i] = value;
    vgpu_stream *s = vgpu_stream_resolve(stream);
    vgpu_launch l = {.kind = VGPU_OP_MEMSET, .device = vgpu_stream_device(s), .name = "memset"};
    l.u.copy.bytes = n * 4;
    vgpu_submit(s, &l);
    return CUDA_SUCCESS;
}

/* Stream memory operations: the value is written at once (as memsets are here) and the stream
 * charged a 4-byte memset. */
API CUresult cuStreamWriteValue32(CUstream stream, CUdeviceptr addr, cuuint32_t value, unsigned int flags) {
    (void)flags;
    return cuMemsetD32Async(addr, value, 1, stream);
}

API CUresult cuMemsetD32(CUdeviceptr dst, unsigned int value, size_t n) {
    cuMemsetD32Async(dst, value, n, NULL);
    vgpu_stream_synchronize(vgpu_stream_resolve(NULL));
    return CUDA_SUCCESS;
}

/* ---- virtual memory management (torch expandable segments, vLLM's allocator) ------------------- */

#define VMM_GRANULARITY ((size_t)2 << 20)

/* A physical allocation (cuMemCreate) or one imported from another process, which charges its
 * owner, not this process. Handles are counted: cuMemRetainAllocationHandle adds one. */
typedef struct physical {
    size_t size;
    CUmemAllocationProp prop;
    int imported, refs;
} physical;

/* Which handle is mapped where, for cuMemRetainAllocationHandle. */
typedef struct mapping { uintptr_t base; size_t size; physical *handle; } mapping;
static pthread_mutex_t vmm_lock = PTHREAD_MUTEX_INITIALIZER;
static mapping *mappings;
static size_t n_mappings, mappings_cap;

static void unref(physical *p) {
    pthread_mutex_lock(&vmm_lock);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&vmm_lock);
    if (!last) return;
    if (!p->imported) vgpu_mem_release(p->prop.location.id, p->size);
    free(p);
}

API CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                           CUmemAllocationGranularity_flags option) {
    (void)prop; (void)option;
    *granularity = VMM_GRANULARITY;
    return CUDA_SUCCESS;
}

API CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                         unsigned long long flags) {
    (void)flags;
    if (!vgpu_device_valid(prop->location.id)) return CUDA_ERROR_INVALID_DEVICE;
    if (vgpu_mem_charge(prop->location.id, size) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    physical *p = malloc(sizeof *p);
    *p = (physical){.size = size, .prop = *prop, .refs = 1};
    *handle = (CUmemGenericAllocationHandle)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
    unref((physical *)handle);
    return CUDA_SUCCESS;
}

API CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop, CUmemGenericAllocationHandle handle) {
    *prop = ((physical *)handle)->prop;
    return CUDA_SUCCESS;
}

API CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *handle, void *addr) {
    physical *found = NULL;
    pthread_mutex_lock(&vmm_lock);
    for (size_t i = 0; i < n_mappings && !found; i++)
        if ((uintptr_t)addr >= mappings[i].base && (uintptr_t)addr < mappings[i].base + mappings[i].size) {
            found = mappings[i].handle;
            found->refs++;
        }
    pthread_mutex_unlock(&vmm_lock);
    if (!found) return CUDA_ERROR_INVALID_VALUE;     /* not mapped through the VMM API (cudaMalloc) */
    *handle = (CUmemGenericAllocationHandle)found;
    return CUDA_SUCCESS;
}

/* Sharing a physical allocation with another process (torch's expandable segments over CUDA IPC):
 * the file descriptor is a memfd whose name carries the allocation's size and device, which is
 * all the importer needs (the bytes are not shared, as for cudaIpcOpenMemHandle). */
#define SHARED_NAME "revati-vmm"

API CUresult cuMemExportToShareableHandle(void *shareable, CUmemGenericAllocationHandle handle,
                                          CUmemAllocationHandleType type, unsigned long long flags) {
    (void)flags;
    if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
    physical *p = (physical *)handle;
    char name[96];
    snprintf(name, sizeof name, SHARED_NAME " %zu %d", p->size, p->prop.location.id);
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
    *(int *)shareable = fd;
    return CUDA_SUCCESS;
}

API CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *handle, void *os_handle,
                                            CUmemAllocationHandleType type) {
    if (type != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_NOT_SUPPORTED;
    char link[64], target[160];
    snprintf(link, sizeof link, "/proc/self/fd/%d", (int)(intptr_t)os_handle);
    ssize_t n = readlink(link, target, sizeof target - 1);
    size_t size;
    int dev;
    if (n < 0) return CUDA_ERROR_INVALID_VALUE;
    target[n] = 0;
    if (sscanf(target, "/memfd:" SHARED_NAME " %zu %d", &size, &dev) != 2 || !vgpu_device_valid(dev))
        return CUDA_ERROR_INVALID_VALUE;
    physical *p = malloc(sizeof *p);
    *p = (physical){.size = size, .imported = 1, .refs = 1};
    p->prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    p->prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    p->prop.location.id = dev;
    p->prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    *handle = (CUmemGenericAllocationHandle)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                 unsigned long long flags) {
    (void)flags;
    void *p;
    if (vgpu_vmm_reserve(size, alignment, addr, &p) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    *ptr = (CUdeviceptr)p;
    return CUDA_SUCCESS;
}

API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    return vgpu_vmm_free((void *)ptr, size) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                      unsigned long long flags) {
    (void)offset; (void)flags;
    physical *p = (physical *)handle;
    if (vgpu_vmm_map((void *)ptr, size, p->prop.location.id) != 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&vmm_lock);
    if (n_mappings == mappings_cap) {
        mappings_cap = mappings_cap ? 2 * mappings_cap : 64;
        mappings = realloc(mappings, mappings_cap * sizeof *mappings);
    }
    mappings[n_mappings++] = (mapping){ptr, size, p};
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
    if (vgpu_vmm_unmap((void *)ptr, size) != 0) return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&vmm_lock);
    for (size_t i = 0; i < n_mappings; i++)
        if (mappings[i].base == ptr) {
            mappings[i] = mappings[--n_mappings];
            break;
        }
    pthread_mutex_unlock(&vmm_lock);
    return CUDA_SUCCESS;
}

API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
    (void)ptr; (void)size; (void)desc; (void)count;
    return CUDA_SUCCESS;
}

/* ---- modules, libraries, functions -------------------------------------------------------------- */

typedef struct module { int unused; } module;

static CUresult load_module(CUmodule *out) {
    *out = (CUmodule)calloc(1, sizeof(module));
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoadData(CUmodule *m, const void *image) { (void)image; return load_module(m); }

API CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n, CUjit_option *options, void **values) {
    (void)image; (void)n; (void)options; (void)values;
    return load_module(m);
}

API CUresult cuModuleLoad(CUmodule *m, const char *path) { (void)path; return load_module(m); }

API CUresult cuModuleUnload(CUmodule m) { free(m); return CUDA_SUCCESS; }

API CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
    *f = (CUfunction)vgpu_function_register(NULL, name, m);
    return CUDA_SUCCESS;
}

API CUresult cuLibraryLoadData(CUlibrary *lib, const void *code, CUjit_option *jit_options, void **jit_values,
                               unsigned int n_jit, CUlibraryOption *options, void **values, unsigned int n_options) {
    (void)code; (void)jit_options; (void)jit_values; (void)n_jit; (void)options; (void)values; (void)n_options;
    *lib = (CUlibrary)calloc(1, sizeof(module));
    return CUDA_SUCCESS;
}

API CUresult cuLibraryUnload(CUlibrary lib) { free(lib); return CUDA_SUCCESS; }

API CUresult cuLibraryGetKernel(CUkernel *kernel, CUlibrary lib, const char *name) {
    *kernel = (CUkernel)vgpu_function_register(NULL, name, lib);
    return CUDA_SUCCESS;
}

API CUresult cuKernelGetFunction(CUfunction *f, CUkernel kernel) {
    *f = (CUfunction)kernel;    /* both are vgpu_functions */
    return CUDA_SUCCESS;
}

API CUresult cuFuncGetAttribute(int *value, CUfunction_attribute a, CUfunction f);

/* A kernel's attributes do not depend on the device here: every device is the same SKU. */
API CUresult cuKernelGetAttribute(int *value, CUfunction_attribute a, CUkernel kernel, CUdevice dev) {
    if (!vgpu_device_valid(dev)) return CUDA_ERROR_INVALID_DEVICE;
    return cuFuncGetAttribute(value, a, (CUfunction)kernel);
}

API CUresult cuFuncGetAttribute(int *value, CUfunction_attribute a, CUfunction f) {
    vgpu_function *fn = vgpu_function_lookup(f);
    if (!fn) return CUDA_ERROR_INVALID_HANDLE;
    const vgpu_model *m = vgpu_model_get();
    switch (a) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *value = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION:
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *value = m->cc_major * 10 + m->cc_minor; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = fn->max_dynamic_shared; break;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *value = -1; break;
    default: *value = 0; break;     /* shared/const/local sizes, cache mode: none */
    }
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int value) {
    vgpu_function *fn = vgpu_function_lookup(f);
    if (!fn) return CUDA_ERROR_INVALID_HANDLE;
    if (a == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) fn->max_dynamic_shared = value;
    return CUDA_SUCCESS;
}

API CUresult cuFuncSetCacheConfig(CUfunction f, CUfunc_cache config) {
    (void)config;
    return vgpu_function_lookup(f) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *blocks, CUfunction f, int block_size, size_t shared_mem) {
    (void)f;
    *blocks = vgpu_occupancy_blocks_per_sm(block_size, shared_mem);
    return CUDA_SUCCESS;
}

API CUresult cuOccupancyMaxActiveClusters(int *clusters, CUfunction f, const CUlaunchConfig *config) {
    (void)f; (void)config;
    *clusters = vgpu_model_get()->sm_count;
    return CUDA_SUCCESS;
}

/* Linking (cuLink*): produces an image nobody executes, so the output is a token cubin. */
static const char token_cubin[] = "vgpu-linked-image";

API CUresult cuLinkCreate(unsigned int n, CUjit_option *options, void **values, CUlinkState *state) {
    (void)n; (void)options; (void)values;
    *state = (CUlinkState)calloc(1, sizeof(module));
    return CUDA_SUCCESS;
}

API CUresult cuLinkAddData(CUlinkState state, CUjitInputType type, void *data, size_t size, const char *name,
                           unsigned int n, CUjit_option *options, void **values) {
    (void)state; (void)type; (void)data; (void)size; (void)name; (void)n; (void)options; (void)values;
    return CUDA_SUCCESS;
}

API CUresult cuLinkComplete(CUlinkState state, void **cubin, size_t *size) {
    (void)state;
    *cubin = (void *)token_cubin;
    *size = sizeof token_cubin;
    return CUDA_SUCCESS;
}

API CUresult cuLinkDestroy(CUlinkState state) { free(state); return CUDA_SUCCESS; }

/* TMA descriptors are read only by kernels, which do not run: an empty descriptor suffices. */
API CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, void *address,
                                    const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                    const cuuint32_t *element_strides, CUtensorMapInterleave interleave,
                                    CUtensorMapSwizzle swizzle, CUtensorMapL2promotion promotion,
                                    CUtensorMapFloatOOBfill fill) {
    (void)type; (void)rank; (void)address; (void)dims; (void)strides; (void)box; (void)element_strides;
    (void)interleave; (void)swizzle; (void)promotion; (void)fill;
    memset(map, 0, sizeof *map);
    return CUDA_SUCCESS;
}

API CUresult cuTensorMapEncodeIm2col(CUtensorMap *map, CUtensorMapDataType type, cuuint32_t rank, void *address,
                                     const cuuint64_t *dims, const cuuint64_t *strides, const int *lower_corner,
                                     const int *upper_corner, cuuint32_t channels, cuuint32_t pixels,
                                     const cuuint32_t *element_strides, CUtensorMapInterleave interleave,
                                     CUtensorMapSwizzle swizzle, CUtensorMapL2promotion promotion,
                                     CUtensorMapFloatOOBfill fill) {
    (void)type; (void)rank; (void)address; (void)dims; (void)strides; (void)lower_corner; (void)upper_corner;
    (void)channels; (void)pixels; (void)element_strides; (void)interleave; (void)swizzle; (void)promotion; (void)fill;
    memset(map, 0, sizeof *map);
    return CUDA_SUCCESS;
}

/* ---- launches ------------------------------------------------------------------------------------- */

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared_mem, CUstream stream, void **params) {
    return vgpu_launch_kernel(f, (unsigned[3]){gx, gy, gz}, (unsigned[3]){bx, by, bz}, shared_mem, stream, params)
               ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared_mem, CUstream stream, void **params, void **extra) {
    (void)extra;        /* the packed-buffer form of arguments: not read (params is what Triton uses) */
    return launch(f, gx, gy, gz, bx, by, bz, shared_mem, stream, params);
}

API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                       unsigned by, unsigned bz, unsigned shared_mem, CUstream stream, void **params) {
    return launch(f, gx, gy, gz, bx, by, bz, shared_mem, stream, params);
}

API CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
    (void)extra;
    return launch(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY, c->blockDimZ,
                  c->sharedMemBytes, c->hStream, params);
}

/* ---- streams and events: the runtime's (stream.c), under driver names ------------------------ */

API CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
    *s = (CUstream)vgpu_stream_create(vgpu_current_device(), flags, 0);
    return CUDA_SUCCESS;
}

API CUresult cuStreamCreateWithPriority(CUstream *s, unsigned int flags, int priority) {
    *s = (CUstream)vgpu_stream_create(vgpu_current_device(), flags, priority);
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy(CUstream s) { vgpu_stream_destroy(vgpu_stream_resolve(s)); return CUDA_SUCCESS; }

API CUresult cuStreamSynchronize(CUstream s) { vgpu_stream_synchronize(vgpu_stream_resolve(s)); return CUDA_SUCCESS; }

API CUresult cuStreamQuery(CUstream s) {
    return vgpu_stream_query(vgpu_stream_resolve(s)) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int flags) {
    (void)flags;
    return vgpu_stream_wait_event(vgpu_stream_resolve(s), (vgpu_event *)e) ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

API CUresult cuEventCreate(CUevent *e, unsigned int flags) {
    *e = (CUevent)vgpu_event_create(flags);
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy(CUevent e) { vgpu_event_destroy((vgpu_event *)e); return CUDA_SUCCESS; }

API CUresult cuEventRecord(CUevent e, CUstream s) {
    vgpu_event_record((vgpu_event *)e, vgpu_stream_resolve(s), 0);
    return CUDA_SUCCESS;
}

API CUresult cuEventSynchronize(CUevent e) { vgpu_event_synchronize((vgpu_event *)e); return CUDA_SUCCESS; }

API CUresult cuEventQuery(CUevent e) {
    return vgpu_event_query((vgpu_event *)e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end) {
    switch (vgpu_event_elapsed_ms((vgpu_event *)start, (vgpu_event *)end, ms)) {
    case 0: return CUDA_SUCCESS;
    case -2: return CUDA_ERROR_NOT_READY;
    default: return CUDA_ERROR_INVALID_HANDLE;
    }
}

/* ---- cuGetProcAddress ----------------------------------------------------------------------------
 * Names are the driver's base names; cuda.h's macros map each to the versioned function this
 * file defines (cuMemAlloc -> cuMemAlloc_v2), which is the version current CUDA asks for. */
#define DRIVER_ENTRY_POINTS(X) \
    X(cuInit) X(cuDriverGetVersion) X(cuGetErrorString) X(cuGetErrorName) X(cuDeviceGetCount) X(cuDeviceGet) \
    X(cuDeviceGetName) X(cuDeviceTotalMem) X(cuDeviceGetUuid) X(cuDeviceGetAttribute) \
    X(cuDeviceComputeCapability) X(cuDeviceGetPCIBusId) X(cuDeviceCanAccessPeer) X(cuDeviceGetP2PAttribute) \
    X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease) X(cuDevicePrimaryCtxGetState) \
    X(cuDevicePrimaryCtxSetFlags) X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxPushCurrent) X(cuCtxPopCurrent) \
    X(cuCtxGetDevice) X(cuCtxSynchronize) X(cuCtxSetLimit) X(cuCtxGetLimit) X(cuCtxGetStreamPriorityRange) X(cuMemAlloc) X(cuMemFree) \
    X(cuMemAllocHost) X(cuMemHostAlloc) X(cuMemFreeHost) X(cuMemGetInfo) X(cuMemGetAddressRange) \
    X(cuPointerGetAttribute) X(cuPointerGetAttributes) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyDtoD) X(cuMemcpyHtoDAsync) \
    X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync) X(cuMemcpyAsync) X(cuMemcpy) X(cuMemsetD8) X(cuMemsetD8Async) \
    X(cuMemsetD32) X(cuMemsetD32Async) X(cuMemGetAllocationGranularity) X(cuMemCreate) X(cuMemRelease) \
    X(cuMemGetAllocationPropertiesFromHandle) X(cuMemRetainAllocationHandle) X(cuMemExportToShareableHandle) \
    X(cuMemImportFromShareableHandle) X(cuStreamWriteValue32) \
    X(cuMemAddressReserve) X(cuMemAddressFree) X(cuMemMap) X(cuMemUnmap) X(cuMemSetAccess) X(cuModuleLoadData) \
    X(cuModuleLoadDataEx) X(cuModuleLoad) X(cuModuleUnload) X(cuModuleGetFunction) X(cuLibraryLoadData) \
    X(cuLibraryUnload) X(cuLibraryGetKernel) X(cuKernelGetFunction) X(cuKernelGetAttribute) X(cuFuncGetAttribute) X(cuFuncSetAttribute) \
    X(cuFuncSetCacheConfig) X(cuOccupancyMaxActiveBlocksPerMultiprocessor) X(cuOccupancyMaxActiveClusters) \
    X(cuLinkCreate) X(cuLinkAddData) X(cuLinkComplete) X(cuLinkDestroy) X(cuTensorMapEncodeTiled) X(cuTensorMapEncodeIm2col) \
    X(cuLaunchKernel) X(cuLaunchCooperativeKernel) X(cuLaunchKernelEx) X(cuStreamCreate) \
    X(cuStreamCreateWithPriority) X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamQuery) \
    X(cuStreamWaitEvent) X(cuEventCreate) X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize) \
    X(cuEventQuery) X(cuEventElapsedTime) X(cuGetProcAddress)

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags,
                              CUdriverProcAddressQueryResult *status);

#define ENTRY(name) {#name, (void *)name},
static const struct { const char *name; void *fn; } entry_points[] = {DRIVER_ENTRY_POINTS(ENTRY)};

void *vgpu_driver_entry_point(const char *name) {
    for (size_t i = 0; i < sizeof entry_points / sizeof *entry_points; i++)
        if (strcmp(entry_points[i].name, name) == 0) return entry_points[i].fn;
    vgpu_debug("cuGetProcAddress: no entry point for %s", name);
    return NULL;
}

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags,
                              CUdriverProcAddressQueryResult *status) {
    (void)version; (void)flags;
    *pfn = vgpu_driver_entry_point(symbol);
    if (status) *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}

/* The unversioned cuGetProcAddress of CUDA 11.3-12.4 (four arguments) is still exported. */
#undef cuGetProcAddress
API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags) {
    return cuGetProcAddress_v2(symbol, pfn, version, flags, NULL);
}
