/* launch.h: GPU work as both CUDA APIs issue it (launch.c).
 *
 * The runtime (runtime.c) and the driver (driver.c) launch kernels, copy and set memory the same
 * way; each translates its own handles, enums and error codes and calls these, so neither API is
 * built on the other's entry points. Stream arguments are either API's handles (NULL and the
 * legacy and per-thread handles mean the current device's default stream: vgpu_stream_resolve).
 */
#ifndef REVATI_VGPU_LAUNCH_H
#define REVATI_VGPU_LAUNCH_H

#include <stddef.h>

#include "vgpu.h"

/* A kernel launch of the function `key` denotes (host stub, CUfunction, CUkernel, cudaKernel_t),
 * charged to its stream (an engine's own collective kernel as a collective: custom_collectives.c).
 * 0, or -1 if key denotes no kernel. */
int vgpu_launch_kernel(const void *key, const unsigned grid[3], const unsigned block[3], size_t shared_mem,
                       void *stream, void **args);

/* A copy's direction as the pointers tell it (cudaMemcpyDefault, cuMemcpy). */
#define VGPU_COPY_FROM_POINTERS ((vgpu_copy_direction)0)

/* Copies and sets: the bytes move now (vgpu_copy_bytes, vgpu_set_bytes: kernels in between are no-ops
 * anyway) and the stream is charged the copy. Like CUDA, a copy returns when it is done if
 * `synchronous`, and so does an asynchronous copy into pageable host memory. */
void vgpu_launch_copy(void *dst, const void *src, size_t n, vgpu_copy_direction direction, void *stream,
                      int synchronous);
void vgpu_launch_copy_2d(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         vgpu_copy_direction direction, void *stream, int synchronous);
void vgpu_launch_memset(void *dst, int value, size_t n, void *stream, int synchronous);

/* Blocks of block_size threads using shared_mem bytes each that fit on one SM of the current
 * device at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor, cuOccupancy...). */
int vgpu_occupancy_blocks_per_sm(int block_size, size_t shared_mem);

/* The limits kernels run under (cudaLimit and CUlimit share their values): one table serves both
 * APIs. -1 for a limit out of range. */
int vgpu_limit_set(int limit, size_t value);
int vgpu_limit_get(int limit, size_t *value);

#endif
