/* kernel_bytes.c: the bytes a memory-bound PyTorch kernel moves, read from its own arguments.
 *
 * A copy, a gather or an elementwise op over gigabytes takes as long as its bytes take through
 * HBM, whatever its launch geometry: torch.cat and index_select cap their grids at a few blocks
 * per SM and loop, so a model over threads charges a 2 GiB cat like a 2 MiB one. For the kernel
 * families below the element count is an argument of the launch, so the predictor charges them by
 * bytes read plus written (predictor_profiled.c, memory_seconds).
 *
 * Layouts (PyTorch's ATen CUDA kernels, stable across 2.x):
 *   vectorized_elementwise_kernel / unrolled_elementwise_kernel / elementwise_kernel:
 *     argument 0 is `int N`, the elements; `std::array<char*, K>` in the name counts the operands
 *     (inputs and the output); without it (elementwise_kernel's lambda) a copy's two.
 *   CatArrayBatchedCopy*<T, IndexType, Dims, batch_size, stride_size>: argument 1 is the inputs'
 *     metadata by value, {T* input[n]; IndexType offset[n], dimSize[n], nElements[n]; ...} with
 *     n = batch_size; grid.y inputs are copied by this launch.
 *   indexSelectLargeIndex<T, [IndicesType,] IndexType, ...>: argument 5 is totalSize, the
 *     elements written.
 *   indexSelectSmallIndex<T, [IndicesType,] IndexType, ...>: argument 5 is innerSize, the elements per index;
 *     argument 2 is the indices' TensorInfo {IndexType* data; IndexType sizes[25]; ...}.
 *   vectorized_gather_kernel<Alignment, index_t>: argument 3 is `int num_ind`, argument 4 the
 *     int64 slice size in bytes (index_select over contiguous rows).
 * The element size is the first scalar type the name mentions (T, or the functor's). Values are
 * checked for sense; anything else is not decoded (-1) and keeps the generic kernel model. Each
 * byte of every operand counts, a broadcast input's too: the measured curves (memory.csv) count
 * them so. Copies through elementwise_kernel (the strided path) and the non-vectorized cat are
 * classes of their own.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

enum { SHAPE_UNKNOWN = -1, SHAPE_ELEMENTWISE = 1, SHAPE_CAT, SHAPE_INDEX_LARGE, SHAPE_INDEX_SMALL, SHAPE_GATHER_BYTES };

/* What the name says, found once per function. */
typedef struct kernel_shape { int kind, operands, element_bytes, index_bytes, cat_batch, strided; } kernel_shape;

static const struct { const char *token; int bytes; } scalar_types[] = {
    {"c10::BFloat16", 2}, {"c10::Half", 2}, {"c10::Float8_", 1}, {"OpaqueType<1u>", 1},
    {"OpaqueType<2u>", 2}, {"OpaqueType<4u>", 4}, {"OpaqueType<8u>", 8}, {"OpaqueType<16u>", 16},
    {"float", 4}, {"double", 8}, {"long", 8}, {"bool", 1}, {"unsigned char", 1}, {"signed char", 1},
};

static int first_scalar_bytes(const char *name) {
    const char *best = NULL;
    int bytes = 0;
    for (size_t i = 0; i < sizeof scalar_types / sizeof *scalar_types; i++) {
        const char *at = strstr(name, scalar_types[i].token);
        if (at && (!best || at < best)) best = at, bytes = scalar_types[i].bytes;
    }
    return bytes;
}

/* The n-th (0-based) top-level template argument after `open` (the '<' of the kernel's list). */
static long template_number(const char *open, int n) {
    int depth = 0, index = 0;
    for (const char *p = open + 1; *p; p++) {
        if (*p == '<' || *p == '(') depth++;
        else if (*p == '>' || *p == ')') { if (depth-- == 0) return -1; }
        else if (*p == ',' && depth == 0 && ++index == n) return strtol(p + 1, NULL, 10);
    }
    return -1;
}

/* The byte size of the first top-level template argument that is an unsigned index type (the
 * kernels' IndexType; indexSelect puts the indices' element type before it). */
static int index_type_bytes(const char *open) {
    int depth = 0;
    for (const char *p = open; *p; p++) {
        if (*p == '<' || *p == '(') depth++;
        else if (*p == '>' || *p == ')') { if (--depth == 0) return 0; }
        else if (*p == ',' && depth == 1) {
            while (p[1] == ' ') p++;
            if (strncmp(p + 1, "unsigned int", 12) == 0) return 4;
            if (strncmp(p + 1, "unsigned long", 13) == 0) return 8;
        }
    }
    return 0;
}

static kernel_shape shape_of(const char *name) {
    kernel_shape s = {SHAPE_UNKNOWN, 0, 0, 0, 0, 0};
    const char *open;
    if (strncmp(name, "void at::native::vectorized_elementwise_kernel<", 47) == 0 ||
        strncmp(name, "void at::native::unrolled_elementwise_kernel<", 45) == 0 ||
        strncmp(name, "void at::native::elementwise_kernel<", 36) == 0) {
        const char *array = strstr(name, "std::array<char*, ");
        s.operands = array ? atoi(array + 18) : 2;
        s.kind = SHAPE_ELEMENTWISE;
        /* elementwise_kernel is TensorIterator's non-contiguous path. A copy through it (a
         * transpose, repeat_interleave's copy of an expanded view) ran at 1.2-1.6 TB/s on an H100;
         * arithmetic there with a broadcast operand (a norm's scale) at the contiguous 2.7. */
        s.strided = name[17] == 'e' && strstr(name, "direct_copy_kernel") != NULL;
    } else if ((open = strstr(name, "CatArrayBatchedCopy")) && (open = strchr(open, '<'))) {
        s.cat_batch = (int)template_number(open, 3);
        s.index_bytes = index_type_bytes(open);
        s.kind = s.cat_batch > 0 && s.index_bytes ? SHAPE_CAT : SHAPE_UNKNOWN;
        s.strided = open[-1] == 'y';    /* CatArrayBatchedCopy<: neither _vectorized nor _aligned16_contig */
    } else if ((open = strstr(name, "indexSelectLargeIndex<")) || (open = strstr(name, "indexSelectSmallIndex<"))) {
        s.kind = open[11] == 'L' ? SHAPE_INDEX_LARGE : SHAPE_INDEX_SMALL;
        s.index_bytes = index_type_bytes(strchr(open, '<'));
        if (!s.index_bytes) s.kind = SHAPE_UNKNOWN;
    } else if (strncmp(name, "void at::native::vectorized_gather_kernel<", 42) == 0) {
        s.kind = SHAPE_GATHER_BYTES;
        return s;                       /* counts bytes itself */
    }
    s.element_bytes = first_scalar_bytes(name);
    if (s.element_bytes <= 0) s.kind = SHAPE_UNKNOWN;
    return s;
}

static double read_index(const void *p, int bytes) {
    if (bytes == 4) { unsigned v; memcpy(&v, p, 4); return v; }
    unsigned long v;
    memcpy(&v, p, 8);
    return (double)v;
}

/* The shape of fn, parsed on first use and kept (a function's name never changes). */
static const kernel_shape *cached_shape(vgpu_function *fn) {
    const kernel_shape *s = __atomic_load_n((const kernel_shape **)&fn->memory_shape, __ATOMIC_ACQUIRE);
    if (s) return s;
    kernel_shape *made = malloc(sizeof *made);
    *made = shape_of(vgpu_function_display_name(fn));
    const void *expected = NULL;
    if (!__atomic_compare_exchange_n(&fn->memory_shape, &expected, made, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        free(made);
        return expected;
    }
    return made;
}

double vgpu_kernel_memory_bytes(const vgpu_launch *l, vgpu_memory_class *cls) {
    if (!l->function || !l->args) return -1;
    const kernel_shape *s = cached_shape(l->function);
    double elements = -1;
    switch (s->kind) {
    case SHAPE_ELEMENTWISE: {
        int n;
        if (!l->args[0]) return -1;
        memcpy(&n, l->args[0], 4);
        *cls = s->strided ? VGPU_MEMORY_ELEMENTWISE_STRIDED : VGPU_MEMORY_ELEMENTWISE;
        return n > 0 ? (double)n * s->operands * s->element_bytes : -1;
    }
    case SHAPE_CAT: {
        const unsigned char *meta = l->args[1];
        int inputs = (int)l->grid[1];
        if (!meta || inputs < 1 || inputs > s->cat_batch) return -1;
        const unsigned char *counts = meta + 8 * s->cat_batch + 2 * s->cat_batch * s->index_bytes;
        elements = 0;
        for (int i = 0; i < inputs; i++) elements += read_index(counts + i * s->index_bytes, s->index_bytes);
        *cls = s->strided ? VGPU_MEMORY_CAT_STRIDED : VGPU_MEMORY_CAT;
        break;
    }
    case SHAPE_INDEX_LARGE:
        if (!l->args[5]) return -1;
        elements = read_index(l->args[5], s->index_bytes);
        *cls = VGPU_MEMORY_GATHER;
        break;
    case SHAPE_INDEX_SMALL:
        if (!l->args[5] || !l->args[2]) return -1;
        elements = read_index(l->args[5], s->index_bytes) *
                   read_index((const unsigned char *)l->args[2] + 8, s->index_bytes);
        *cls = VGPU_MEMORY_GATHER_SMALL;    /* it loops over its (at most 16) indices in turn */
        break;
    case SHAPE_GATHER_BYTES: {
        int indices;
        int64_t slice;
        if (!l->args[3] || !l->args[4]) return -1;
        memcpy(&indices, l->args[3], 4);
        memcpy(&slice, l->args[4], 8);
        *cls = VGPU_MEMORY_GATHER;
        return indices > 0 && slice > 0 ? 2.0 * indices * slice : -1;
    }
    default:
        return -1;
    }
    return elements > 0 && elements < 1e13 ? 2 * elements * s->element_bytes : -1;   /* read + written */
}
