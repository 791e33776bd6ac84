/* launch.c: GPU work as both CUDA APIs issue it: kernel launches (with the limits and occupancy
 * they run under), copies and memsets, built into launch descriptors and charged to their streams.
 * runtime.c and driver.c translate their calls into these (launch.h says why).
 */
#include <cuda_runtime_api.h>   /* cudaLimit and cudaDeviceAttr names (the driver's values are the same) */
#include <stddef.h>

#include "launch.h"
#include "vgpu.h"

/* ---- kernels ------------------------------------------------------------------------------------ */

int vgpu_launch_kernel(const void *key, const unsigned grid[3], const unsigned block[3], size_t shared_mem,
                       void *stream, void **args) {
    vgpu_function *fn = vgpu_function_lookup(key);
    if (!fn) return -1;
    vgpu_stream *s = vgpu_stream_resolve(stream);
    vgpu_launch l = {
        .kind = VGPU_OP_KERNEL, .device = vgpu_stream_device(s), .name = fn->name, .function = fn, .args = args,
        .grid = {grid[0], grid[1], grid[2]}, .block = {block[0], block[1], block[2]}, .shared_mem = shared_mem,
    };
    vgpu_custom_collective(&l);
    vgpu_submit(s, &l);
    return 0;
}

/* A device attribute of the model; 0, with a warning, where the model lacks it. */
static int attribute(int dev, enum cudaDeviceAttr a) {
    int v = 0;
    if (vgpu_device_valid(dev) && vgpu_device_attribute((int)a, dev, &v) != 0) {
        vgpu_warn_once("device attribute %d is not in the device model; reporting 0", (int)a);
        v = 0;
    }
    return v;
}

/* Occupancy from the block's thread count and shared memory against the SM's limits. */
int vgpu_occupancy_blocks_per_sm(int block_size, size_t shared_mem) {
    int dev = vgpu_current_device();
    int by_threads = block_size > 0 ? attribute(dev, cudaDevAttrMaxThreadsPerMultiProcessor) / block_size : 0;
    int by_blocks = attribute(dev, cudaDevAttrMaxBlocksPerMultiprocessor);
    int by_smem = shared_mem ? (int)(attribute(dev, cudaDevAttrMaxSharedMemoryPerMultiprocessor) / shared_mem)
                             : by_blocks;
    int n = by_threads < by_blocks ? by_threads : by_blocks;
    return n < by_smem ? n : by_smem;
}

#define LIMITS 16
static size_t limits[LIMITS];

int vgpu_limit_set(int limit, size_t value) {
    if ((unsigned)limit >= LIMITS) return -1;
    limits[limit] = value;
    return 0;
}

int vgpu_limit_get(int limit, size_t *value) {
    if ((unsigned)limit >= LIMITS) return -1;
    *value = limits[limit] ? limits[limit] : (limit == cudaLimitStackSize ? 1024 : 0);
    return 0;
}

/* ---- copies and sets ------------------------------------------------------------------------------ */

static vgpu_copy_direction direction_of(void *dst, const void *src, vgpu_copy_direction given) {
    if (given != VGPU_COPY_FROM_POINTERS) return given;
    vgpu_alloc a;
    int dst_dev = vgpu_mem_lookup(dst, &a) == 0 && a.kind != VGPU_ALLOC_HOST;
    int src_dev = vgpu_mem_lookup(src, &a) == 0 && a.kind != VGPU_ALLOC_HOST;
    if (dst_dev && src_dev) return VGPU_COPY_D2D;
    if (dst_dev) return VGPU_COPY_H2D;
    if (src_dev) return VGPU_COPY_D2H;
    return VGPU_COPY_H2H;
}

/* Copies from and to page-locked host memory run at full bus speed; pageable ones are staged. */
static int host_pinned(const void *host) {
    vgpu_alloc a;
    return vgpu_mem_lookup(host, &a) == 0 && a.kind == VGPU_ALLOC_HOST;
}

void vgpu_launch_copy(void *dst, const void *src, size_t n, vgpu_copy_direction direction, void *stream,
                      int synchronous) {
    vgpu_stream *s = vgpu_stream_resolve(stream);
    vgpu_launch l = {.kind = VGPU_OP_COPY, .device = vgpu_stream_device(s), .name = "memcpy"};
    l.u.copy.bytes = n;
    l.u.copy.direction = direction_of(dst, src, direction);
    l.u.copy.pinned = host_pinned(l.u.copy.direction == VGPU_COPY_D2H ? dst : src);
    vgpu_copy_bytes(dst, src, n);   /* data moves now: kernels between are no-ops anyway */
    vgpu_submit(s, &l);
    /* Like CUDA: cudaMemcpy, and async copies to pageable host memory, return when done. */
    if (synchronous || l.u.copy.direction == VGPU_COPY_D2H) {
        vgpu_alloc a;
        if (synchronous || vgpu_mem_lookup(dst, &a) != 0) vgpu_stream_synchronize(s);
    }
}

void vgpu_launch_copy_2d(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         vgpu_copy_direction direction, void *stream, int synchronous) {
    for (size_t row = 0; row < height; row++)
        vgpu_copy_bytes((char *)dst + row * dpitch, (const char *)src + row * spitch, width);
    vgpu_stream *s = vgpu_stream_resolve(stream);
    vgpu_launch l = {.kind = VGPU_OP_COPY, .device = vgpu_stream_device(s), .name = "memcpy2d"};
    l.u.copy.bytes = width * height;
    l.u.copy.direction = direction_of(dst, src, direction);
    vgpu_submit(s, &l);
    if (synchronous) vgpu_stream_synchronize(s);
}

void vgpu_launch_memset(void *dst, int value, size_t n, void *stream, int synchronous) {
    vgpu_stream *s = vgpu_stream_resolve(stream);
    vgpu_launch l = {.kind = VGPU_OP_MEMSET, .device = vgpu_stream_device(s), .name = "memset"};
    l.u.copy.bytes = n;
    vgpu_set_bytes(dst, value, n);
    vgpu_submit(s, &l);
    if (synchronous) vgpu_stream_synchronize(s);
}
