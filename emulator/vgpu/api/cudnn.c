/* cudnn.c: the cuDNN entry points torch calls, with cuDNN's work charged to streams in virtual time.
 *
 * The real libcudnn carries a static CUDA runtime of its own that needs the real driver's private
 * export tables, so under this library it cannot even create a handle (torch then fails every
 * SDPA call on Hopper with CUDNN_STATUS_NOT_INITIALIZED). This file defines the entry points
 * (exported under the version libcudnn.so.9 uses, see build.py) and the preload overrides them.
 *
 * What torch uses, and what each becomes here:
 *   - handles, versions, error strings. cudnnGetVersion reports the cuDNN torch was built against
 *     (torch and cudnn_frontend compare the two, and the frontend picks its SDPA implementation by
 *     it);
 *   - the backend ("graph") API, through which cudnn_frontend (compiled into torch) builds every
 *     operation torch runs on cuDNN: SDPA (aten/src/ATen/native/cudnn/MHA.cpp) and convolutions
 *     (Conv_v8.cpp). Descriptors are generic attribute stores: what is set is kept and read back.
 *     Finalizing an operation graph decodes what it computes, its *work*, from its operations'
 *     tensors; the work travels by value to the engine, engine config and execution plan built
 *     on it, and cudnnBackendExecute charges it to the stream of the handle (cudnnSetStream):
 *       SDPA forward (the unified node, CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, or the
 *         composite graph of two matmuls around a softmax): one VGPU_OP_ATTENTION launch of its
 *         shape (batch, heads, query rows, keys, head dim, causal when a mask is generated and
 *         there is more than one query row, masked when a mask is read from memory: predicted by
 *         cuDNN's own kernel time when masked, as the flash kernel's otherwise);
 *       SDPA backward: its five matrix products, as GEMMs (the unified node's; torch 2.14's
 *         backward is a composite graph of five matmuls, each charged as one);
 *       matmul: a GEMM; convolution forward / backward data / backward filter: the implicit
 *         GEMM each computes (groups as the batch; float convolutions on TF32, torch's default);
 *       pointwise, reduction, normalisation, ... ops next to one of those are fused into it and
 *         cost nothing of their own; a graph of only such ops is one elementwise kernel over its
 *         largest tensor.
 *     Heuristics offer one engine (global index 0, no knobs, no notes, no workspace) for a graph
 *     whose work is known, and none for one that is not (an operation this file does not charge,
 *     named once on stderr), so such a graph fails in the frontend instead of running for free.
 * Nothing is computed: outputs keep whatever they held, as for every kernel of the library.
 * Building a graph: libcudnn spends host time on heuristics, plan finalization and, for an engine
 * not met before, kernel compilation; torch caches graphs per shape, but transformers' continuous
 * batching meets a new shape at every step. Building one here costs next to nothing, so each
 * attention graph finalized charges the calling thread the host time measured on the target's
 * host (predictor host_cost records, probe_cudnn_graphs.py): the first graph of its signature
 * (head size, heads, decode or not, causal) in the process as a first build, any later one as a
 * new shape of a known engine. Other graphs (convolutions, matmuls) are not measured: no charge.
 * The legacy (v7) entry points torch imports (RNN, CTC loss, batch norm, the v7 convolution
 * API, ...) are generated stubs that name themselves and return CUDNN_STATUS_NOT_SUPPORTED.
 */
#include <cuda_runtime_api.h>
#include <library_types.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

#define API VGPU_EXPORT

/* ---- what the build needs from cudnn_graph.h ------------------------------------------------
 * Values mirrored from the headers of cuDNN 9.24.0 (nvidia-cudnn-cu13 9.24.0.43, the cuDNN torch
 * 2.14 was built against), which the build does not require. Enums are ints in the C ABI. */
#define CUDNN_MAJOR 9
#define CUDNN_MINOR 24
#define CUDNN_PATCHLEVEL 0
#define CUDNN_VERSION (CUDNN_MAJOR * 10000 + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)
#define CUDNN_MAX_DEVICE_VERSION 1210       /* the newest compute capability it knows, as 100 * major + 10 * minor */

typedef enum {
    CUDNN_STATUS_SUCCESS = 0,
    CUDNN_STATUS_NOT_INITIALIZED = 1001,
    CUDNN_STATUS_BAD_PARAM = 2000,
    CUDNN_STATUS_BAD_PARAM_NULL_POINTER = 2002,
    CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED = 2004,
    CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE = 2010,
    CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE = 2012,
    CUDNN_STATUS_NOT_SUPPORTED = 3000,
    CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN = 3001,
    CUDNN_STATUS_INTERNAL_ERROR = 4000,
    CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED = 4003,
    CUDNN_STATUS_EXECUTION_FAILED = 5000,
} cudnnStatus_t;

/* cudnnBackendAttributeType_t */
enum {
    T_HANDLE = 0, T_DATA_TYPE, T_BOOLEAN, T_INT64, T_FLOAT, T_DOUBLE, T_VOID_PTR, T_CONVOLUTION_MODE, T_HEUR_MODE,
    T_KNOB_TYPE, T_NAN_PROPAGATION, T_NUMERICAL_NOTE, T_LAYOUT_TYPE, T_ATTRIB_NAME, T_POINTWISE_MODE,
    T_BACKEND_DESCRIPTOR, T_GENSTATS_MODE, T_BN_FINALIZE_STATS_MODE, T_REDUCTION_OPERATOR_TYPE, T_BEHAVIOR_NOTE,
    T_TENSOR_REORDERING_MODE, T_RESAMPLE_MODE, T_PADDING_MODE, T_INT32, T_CHAR, T_SIGNAL_MODE, T_FRACTION,
    T_NORM_MODE, T_NORM_FWD_PHASE, T_RNG_DISTRIBUTION, T_MOE_GROUPED_MATMUL_MODE, T_RESHAPE_MODE,
    T_OPERATIONGRAPH_MODE, T_COUNT
};

/* cudnnBackendDescriptorType_t: the ones this file treats apart (any value is accepted). */
enum {
    D_POINTWISE = 0, D_CONVOLUTION = 1, D_ENGINE = 2, D_ENGINECFG = 3, D_ENGINEHEUR = 4, D_EXECUTION_PLAN = 5,
    D_INTERMEDIATE_INFO = 6, D_KNOB_CHOICE = 7, D_KNOB_INFO = 8, D_LAYOUT_INFO = 9, D_OP_CONV_FORWARD = 10,
    D_OP_CONV_BACKWARD_FILTER = 11, D_OP_CONV_BACKWARD_DATA = 12, D_OP_POINTWISE = 13, D_OPERATIONGRAPH = 15,
    D_VARIANT_PACK = 16, D_TENSOR = 17, D_MATMUL = 18, D_OP_MATMUL = 19, D_OP_MOE_GROUPED_MATMUL = 42,
    D_OP_SDPA_FWD = 41, D_OP_SDPA_BWD = 43, D_OP_DIAGONAL_BAND_MASK = 44, D_OP_MOE_GROUPED_MATMUL_BWD = 48,
    D_LAST_KNOWN = 50,      /* CUDNN_BACKEND_OPERATION_ROPE_BWD_DESCRIPTOR */
};

/* cudnnBackendAttributeName_t: the ones this file reads or answers. */
enum {
    A_POINTWISE_MODE = 0,
    A_ENGINEHEUR_MODE = 200, A_ENGINEHEUR_OPERATION_GRAPH = 201, A_ENGINEHEUR_RESULTS = 202,
    A_ENGINECFG_ENGINE = 300, A_ENGINECFG_INTERMEDIATE_INFO = 301, A_ENGINECFG_KNOB_CHOICES = 302,
    A_ENGINECFG_WORKSPACE_SIZE = 303, A_ENGINECFG_SHARED_MEMORY_USED = 304,
    A_EXECUTION_PLAN_HANDLE = 400, A_EXECUTION_PLAN_ENGINE_CONFIG = 401, A_EXECUTION_PLAN_WORKSPACE_SIZE = 402,
    A_EXECUTION_PLAN_COMPUTED_INTERMEDIATE_UIDS = 403, A_EXECUTION_PLAN_RUN_ONLY_INTERMEDIATE_UIDS = 404,
    A_EXECUTION_PLAN_JSON_REPRESENTATION = 405,
    A_OP_CONV_FORWARD_W = 703, A_OP_CONV_FORWARD_X = 704, A_OP_CONV_FORWARD_Y = 705,
    A_OP_CONV_BWD_DATA_W = 709, A_OP_CONV_BWD_DATA_DX = 710, A_OP_CONV_BWD_DATA_DY = 711,
    A_OP_CONV_BWD_FILTER_DW = 715, A_OP_CONV_BWD_FILTER_X = 716, A_OP_CONV_BWD_FILTER_DY = 717,
    A_OP_POINTWISE_PW_DESCRIPTOR = 750, A_OP_POINTWISE_XDESC = 751, A_OP_POINTWISE_BDESC = 752,
    A_OPERATIONGRAPH_HANDLE = 800, A_OPERATIONGRAPH_OPS = 801, A_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT = 802,
    A_TENSOR_DATA_TYPE = 901, A_TENSOR_DIMENSIONS = 902, A_TENSOR_IS_VIRTUAL = 907,
    A_ENGINE_OPERATION_GRAPH = 1300, A_ENGINE_GLOBAL_INDEX = 1301, A_ENGINE_KNOB_INFO = 1302,
    A_ENGINE_NUMERICAL_NOTE = 1303, A_ENGINE_LAYOUT_INFO = 1304, A_ENGINE_BEHAVIOR_NOTE = 1305,
    A_OP_MATMUL_ADESC = 1520, A_OP_MATMUL_BDESC = 1521, A_OP_MATMUL_CDESC = 1522,
    A_OP_SDPA_FWD_QDESC = 2800, A_OP_SDPA_FWD_KDESC = 2801, A_OP_SDPA_FWD_VDESC = 2802,
    A_OP_SDPA_FWD_PAGE_TABLE_KDESC = 2807, A_OP_SDPA_FWD_SUBGRAPH = 2811,
    A_OP_SDPA_BWD_QDESC = 2851, A_OP_SDPA_BWD_KDESC = 2852, A_OP_SDPA_BWD_VDESC = 2853,
    A_OP_SDPA_BWD_SUBGRAPH = 2867,
};

enum { CUDNN_POINTWISE_GEN_INDEX = 501 };

/* cudnnDataType_t -> cudaDataType_t, for the GEMMs charged (the predictor reads cuBLAS's types). */
static int cuda_type(int cudnn_type) {
    switch (cudnn_type) {
    case 0: return CUDA_R_32F;
    case 1: return CUDA_R_64F;
    case 2: return CUDA_R_16F;
    case 3: return CUDA_R_8I;
    case 4: return CUDA_R_32I;
    case 9: return CUDA_R_16BF;
    case 12: return CUDA_R_8F_E4M3;
    case 13: return CUDA_R_8F_E5M2;
    default: return CUDA_R_32F;
    }
}
enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };

/* Bytes of one element of each attribute type (bool and char are one byte, cudnnFraction_t two
 * int64s, handles/pointers/descriptors a pointer, every enum an int). */
static size_t element_size(int type) {
    switch (type) {
    case T_BOOLEAN: case T_CHAR: return 1;
    case T_INT64: case T_DOUBLE: return 8;
    case T_HANDLE: case T_VOID_PTR: case T_BACKEND_DESCRIPTOR: return sizeof(void *);
    case T_FRACTION: return 16;
    default: return type >= 0 && type < T_COUNT ? 4 : 0;
    }
}

/* ---- status strings and the last error ------------------------------------------------------- */

static const struct { cudnnStatus_t code; const char *name; } statuses[] = {
    {CUDNN_STATUS_SUCCESS, "CUDNN_STATUS_SUCCESS"},
    {CUDNN_STATUS_NOT_INITIALIZED, "CUDNN_STATUS_NOT_INITIALIZED"},
    {CUDNN_STATUS_BAD_PARAM, "CUDNN_STATUS_BAD_PARAM"},
    {CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "CUDNN_STATUS_BAD_PARAM_NULL_POINTER"},
    {CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED"},
    {CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE"},
    {CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE, "CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE"},
    {CUDNN_STATUS_NOT_SUPPORTED, "CUDNN_STATUS_NOT_SUPPORTED"},
    {CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN, "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN"},
    {CUDNN_STATUS_INTERNAL_ERROR, "CUDNN_STATUS_INTERNAL_ERROR"},
    {CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED, "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED"},
    {CUDNN_STATUS_EXECUTION_FAILED, "CUDNN_STATUS_EXECUTION_FAILED"},
};

API const char *cudnnGetErrorString(cudnnStatus_t status) {
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        if (statuses[i].code == status) return statuses[i].name;
    return "CUDNN_STATUS_UNKNOWN";
}

/* What went wrong last on this thread, as cudnnGetLastErrorString reports it (then forgets it). */
static __thread char last_error[512];

static cudnnStatus_t fail(cudnnStatus_t status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static cudnnStatus_t fail(cudnnStatus_t status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    vgpu_debug("cuDNN: %s: %s", cudnnGetErrorString(status), last_error);
    return status;
}

API void cudnnGetLastErrorString(char *message, size_t max_size) {
    if (!message || !max_size) return;
    snprintf(message, max_size, "%s", last_error);
    last_error[0] = 0;
}

/* ---- versions -------------------------------------------------------------------------------- */

API size_t cudnnGetVersion(void) { return CUDNN_VERSION; }
API size_t cudnnGetMaxDeviceVersion(void) { return CUDNN_MAX_DEVICE_VERSION; }
API size_t cudnnGetCudartVersion(void) { return CUDART_VERSION; }

API cudnnStatus_t cudnnGetProperty(libraryPropertyType type, int *value) {
    static const int parts[] = {[MAJOR_VERSION] = CUDNN_MAJOR, [MINOR_VERSION] = CUDNN_MINOR,
                                [PATCH_LEVEL] = CUDNN_PATCHLEVEL};
    if (!value || (unsigned)type >= sizeof parts / sizeof *parts) return CUDNN_STATUS_BAD_PARAM;
    *value = parts[type];
    return CUDNN_STATUS_SUCCESS;
}

/* ---- handles --------------------------------------------------------------------------------- */

#define HANDLE_MAGIC 0x6e6e6468u
struct cudnnContext {
    uint32_t magic;
    int device;                 /* the current device at creation, as for the real handle */
    cudaStream_t stream;        /* as set; NULL is the current device's default stream */
};
typedef struct cudnnContext *cudnnHandle_t;

static int valid_handle(cudnnHandle_t h) { return h && h->magic == HANDLE_MAGIC; }

API cudnnStatus_t cudnnCreate(cudnnHandle_t *out) {
    if (!out) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    vgpu_model_get();                   /* like the real one, creating a handle needs a device */
    cudnnHandle_t h = calloc(1, sizeof *h);
    if (!h) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    h->magic = HANDLE_MAGIC;
    h->device = vgpu_current_device();
    *out = h;
    return CUDNN_STATUS_SUCCESS;
}

API cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    if (!valid_handle(h)) return CUDNN_STATUS_BAD_PARAM;
    h->magic = 0;
    free(h);
    return CUDNN_STATUS_SUCCESS;
}

API cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t stream) {
    if (!valid_handle(h)) return CUDNN_STATUS_BAD_PARAM;
    h->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

API cudnnStatus_t cudnnGetStream(cudnnHandle_t h, cudaStream_t *stream) {
    if (!valid_handle(h) || !stream) return CUDNN_STATUS_BAD_PARAM;
    *stream = h->stream;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- backend descriptors: attribute stores ----------------------------------------------------- */

#define DESC_MAGIC 0x6e6e6462u
#define MAX_LAUNCHES 16

/* What executing a graph charges: the launches of one execution, or why there are none. */
typedef struct work {
    int known;                  /* 1: the launches below are the graph's work */
    int n;
    vgpu_launch launches[MAX_LAUNCHES];
    char why[200];              /* when not known */
} work;

typedef struct attribute {
    int name, type;
    int64_t count;
    void *data;                 /* count elements of element_size(type) bytes */
    int owned;                  /* descriptor-valued, and the descriptors are this one's own copies */
} attribute;

typedef struct desc {
    uint32_t magic;
    int type;                   /* cudnnBackendDescriptorType_t */
    int finalized;
    int n_attrs, cap_attrs;
    attribute *attrs;
    work *work;                 /* operation graphs, engines, engine configs, plans: set at finalize */
} desc;

static desc *as_desc(const void *p) {
    desc *d = (desc *)p;
    return d && d->magic == DESC_MAGIC ? d : NULL;
}

static const attribute *find(const desc *d, int name) {
    for (int i = 0; i < d->n_attrs; i++)
        if (d->attrs[i].name == name) return &d->attrs[i];
    return NULL;
}

static void destroy(desc *d);
static desc *clone(const desc *src);

static void attribute_free(attribute *a) {
    if (a->owned)
        for (int64_t i = 0; i < a->count; i++) destroy(((desc **)a->data)[i]);
    free(a->data);
    memset(a, 0, sizeof *a);
}

static void clear(desc *d) {
    for (int i = 0; i < d->n_attrs; i++) attribute_free(&d->attrs[i]);
    free(d->attrs);
    free(d->work);
    d->attrs = NULL;
    d->n_attrs = d->cap_attrs = 0;
    d->work = NULL;
    d->finalized = 0;
}

static void destroy(desc *d) {
    if (!d) return;
    clear(d);
    d->magic = 0;
    free(d);
}

static desc *create(int type) {
    desc *d = calloc(1, sizeof *d);
    if (d) d->magic = DESC_MAGIC, d->type = type;
    return d;
}

/* Store an attribute (replacing one of the same name). Owned descriptors are cloned. */
static int put(desc *d, int name, int type, int64_t count, const void *elements, int owned) {
    size_t size = element_size(type);
    attribute a = {name, type, count, malloc(count ? count * size : 1), owned};
    if (!a.data) return -1;
    if (owned) {
        for (int64_t i = 0; i < count; i++) {
            desc *copy = clone(((desc *const *)elements)[i]);
            ((desc **)a.data)[i] = copy;
        }
    } else if (count) {
        memcpy(a.data, elements, count * size);
    }
    for (int i = 0; i < d->n_attrs; i++)
        if (d->attrs[i].name == name) {
            attribute_free(&d->attrs[i]);
            d->attrs[i] = a;
            return 0;
        }
    if (d->n_attrs == d->cap_attrs) {
        int cap = d->cap_attrs ? 2 * d->cap_attrs : 8;
        attribute *grown = realloc(d->attrs, cap * sizeof *grown);
        if (!grown) { attribute_free(&a); return -1; }
        d->attrs = grown;
        d->cap_attrs = cap;
    }
    d->attrs[d->n_attrs++] = a;
    return 0;
}

static void copy_contents(desc *dst, const desc *src) {
    clear(dst);
    dst->type = src->type;
    for (int i = 0; i < src->n_attrs; i++) {
        const attribute *a = &src->attrs[i];
        put(dst, a->name, a->type, a->count, a->data, a->owned);
    }
    if (src->work && (dst->work = malloc(sizeof *dst->work))) *dst->work = *src->work;
    dst->finalized = src->finalized;
}

static desc *clone(const desc *src) {
    desc *d = src ? create(src->type) : NULL;
    if (d) copy_contents(d, src);
    return d;
}

/* The single descriptor an attribute holds, or NULL. */
static desc *child(const desc *d, int name) {
    const attribute *a = find(d, name);
    return a && a->type == T_BACKEND_DESCRIPTOR && a->count >= 1 ? as_desc(((desc **)a->data)[0]) : NULL;
}

static int64_t int_attribute(const desc *d, int name, int64_t otherwise) {
    const attribute *a = find(d, name);
    if (!a || a->count < 1) return otherwise;
    if (a->type == T_INT64) return ((const int64_t *)a->data)[0];
    if (element_size(a->type) == 4) return ((const int32_t *)a->data)[0];
    if (element_size(a->type) == 1) return ((const unsigned char *)a->data)[0];
    return otherwise;
}

/* ---- decoding what an operation graph computes -------------------------------------------------- */

typedef struct tensor { int ndims, dtype, is_virtual; int64_t dims[8]; double elements; } tensor;

static int tensor_of(const desc *op, int name, tensor *t) {
    const desc *d = child(op, name);
    memset(t, 0, sizeof *t);
    if (!d || d->type != D_TENSOR) return -1;
    const attribute *dims = find(d, A_TENSOR_DIMENSIONS);
    if (!dims || dims->type != T_INT64 || dims->count < 1 || dims->count > 8) return -1;
    t->ndims = (int)dims->count;
    t->elements = 1;
    for (int i = 0; i < t->ndims; i++) {
        t->dims[i] = ((const int64_t *)dims->data)[i];
        t->elements *= (double)t->dims[i];
    }
    t->dtype = (int)int_attribute(d, A_TENSOR_DATA_TYPE, 0);
    t->is_virtual = (int)int_attribute(d, A_TENSOR_IS_VIRTUAL, 0);
    return 0;
}

static int64_t product(const int64_t *dims, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= dims[i];
    return p;
}

static const desc *const *ops_of(const desc *graph, int64_t *count) {
    const attribute *a = find(graph, A_OPERATIONGRAPH_OPS);
    *count = a && a->type == T_BACKEND_DESCRIPTOR ? a->count : 0;
    return a ? (const desc *const *)a->data : NULL;
}

/* Whether a graph generates an attention mask: a diagonal band mask, or the index generation the
 * causal and sliding-window masks are built from (pointwise GEN_INDEX). */
static int generates_mask(const desc *graph) {
    int64_t n;
    const desc *const *ops = ops_of(graph, &n);
    for (int64_t i = 0; i < n; i++) {
        const desc *op = as_desc(ops[i]);
        if (!op) continue;
        if (op->type == D_OP_DIAGONAL_BAND_MASK) return 1;
        const desc *pw = op->type == D_OP_POINTWISE ? child(op, A_OP_POINTWISE_PW_DESCRIPTOR) : NULL;
        if (pw && int_attribute(pw, A_POINTWISE_MODE, -1) == CUDNN_POINTWISE_GEN_INDEX) return 1;
    }
    return 0;
}

/* Whether a graph adds a mask read from memory to the scores (torch's attn_mask: transformers'
 * continuous batching passes one): a pointwise operand that is a real tensor over query rows x
 * keys. Its kernel is another, far slower one than an unmasked call's (predictor: cudnn_attention). */
static int reads_mask(const desc *graph, int64_t seqlen_q, int64_t seqlen_k) {
    int64_t n;
    const desc *const *ops = ops_of(graph, &n);
    for (int64_t i = 0; i < n; i++) {
        const desc *op = as_desc(ops[i]);
        if (!op || op->type != D_OP_POINTWISE) continue;
        for (int operand = A_OP_POINTWISE_XDESC; operand <= A_OP_POINTWISE_BDESC; operand++) {
            tensor t;
            if (tensor_of(op, operand, &t) == 0 && !t.is_virtual && t.ndims >= 2 && seqlen_k > 1 &&
                t.dims[t.ndims - 2] == seqlen_q && t.dims[t.ndims - 1] == seqlen_k)
                return 1;
        }
    }
    return 0;
}

/* generated: the graph generates a mask (causal when more than one query row); scores: the graph
 * whose operations act on the scores, searched for a mask read from memory. */
static vgpu_launch attention_launch(const char *name, const tensor *q, const tensor *k, int64_t seqlen_k, int generated,
                                    const desc *scores) {
    vgpu_launch l = {.kind = VGPU_OP_ATTENTION, .name = name};
    l.u.attention.batch = (double)q->dims[0];
    l.u.attention.heads = (double)q->dims[1];
    l.u.attention.seqlen_q = (double)q->dims[2];
    l.u.attention.head_dim = (double)q->dims[3];
    l.u.attention.kv_heads = (double)k->dims[1];
    l.u.attention.seqlen_k = (double)seqlen_k;
    l.u.attention.causal = generated && q->dims[2] > 1;
    l.u.attention.masked = scores && reads_mask(scores, q->dims[2], seqlen_k);
    return l;
}

static vgpu_launch gemm_launch(const char *name, int64_t m, int64_t n, int64_t k, int64_t batch, int cudnn_type) {
    int type = cuda_type(cudnn_type);
    vgpu_launch l = {.kind = VGPU_OP_GEMM, .name = name};
    l.u.gemm.m = m, l.u.gemm.n = n, l.u.gemm.k = k, l.u.gemm.batch = batch;
    l.u.gemm.type_a = l.u.gemm.type_b = l.u.gemm.type_c = type;
    l.u.gemm.compute_type = CUBLAS_COMPUTE_32F;
    return l;
}

static int unknown(work *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void add(work *w, vgpu_launch l) {
    if (w->n < MAX_LAUNCHES) w->launches[w->n++] = l;
    else unknown(w, "more than %d operations to charge", MAX_LAUNCHES);
}

static int unknown(work *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof w->why, fmt, ap);
    va_end(ap);
    w->known = 0;
    w->n = 0;
    return -1;
}

static int sdpa_forward(work *w, const desc *op) {
    tensor q, k, v, page_table;
    if (tensor_of(op, A_OP_SDPA_FWD_QDESC, &q) || tensor_of(op, A_OP_SDPA_FWD_KDESC, &k) ||
        tensor_of(op, A_OP_SDPA_FWD_VDESC, &v) || q.ndims != 4 || k.ndims != 4)
        return unknown(w, "an SDPA forward operation without 4-d Q, K and V tensors");
    int64_t seqlen_k = k.dims[2];
    /* Paged K: dims are [blocks, heads, block size, dim]; the table [batch, 1, pages, 1]. */
    if (tensor_of(op, A_OP_SDPA_FWD_PAGE_TABLE_KDESC, &page_table) == 0 && page_table.ndims >= 3)
        seqlen_k = page_table.dims[2] * k.dims[2];
    const desc *subgraph = child(op, A_OP_SDPA_FWD_SUBGRAPH);
    add(w, attention_launch("cudnn_sdpa_fwd", &q, &k, seqlen_k, subgraph && generates_mask(subgraph), subgraph));
    return 0;
}

/* The backward pass as the five products FlashAttention's backward computes per (batch, head):
 * S = Q K^T and dP = dO V^T (s_q x s_kv), dV = P^T dO and dK = dS^T Q (s_kv x d), dQ = dS K. */
static int sdpa_backward(work *w, const desc *op) {
    tensor q, k, v;
    if (tensor_of(op, A_OP_SDPA_BWD_QDESC, &q) || tensor_of(op, A_OP_SDPA_BWD_KDESC, &k) ||
        tensor_of(op, A_OP_SDPA_BWD_VDESC, &v) || q.ndims != 4 || k.ndims != 4 || v.ndims != 4)
        return unknown(w, "an SDPA backward operation without 4-d Q, K and V tensors");
    int64_t bh = q.dims[0] * q.dims[1], sq = q.dims[2], skv = k.dims[2], d = q.dims[3], dv = v.dims[3];
    add(w, gemm_launch("cudnn_sdpa_bwd", skv, sq, d, bh, q.dtype));
    add(w, gemm_launch("cudnn_sdpa_bwd", skv, sq, dv, bh, q.dtype));
    add(w, gemm_launch("cudnn_sdpa_bwd", dv, skv, sq, bh, q.dtype));
    add(w, gemm_launch("cudnn_sdpa_bwd", d, sq, skv, bh, q.dtype));
    add(w, gemm_launch("cudnn_sdpa_bwd", d, skv, sq, bh, q.dtype));
    return 0;
}

/* C[.., M, N] = A[.., M, K] B[.., K, N], row-major; charged as cuBLAS sees a row-major product
 * (column-major m = N, n = M, see cublas.c), the leading dimensions of C as the batch. */
static int matmul(work *w, const desc *op, tensor *a, tensor *b, tensor *c) {
    if (tensor_of(op, A_OP_MATMUL_ADESC, a) || tensor_of(op, A_OP_MATMUL_BDESC, b) ||
        tensor_of(op, A_OP_MATMUL_CDESC, c) || a->ndims < 2 || c->ndims < 2 || a->ndims != c->ndims)
        return unknown(w, "a matmul operation without A, B and C tensors of one rank");
    int n = c->ndims;
    add(w, gemm_launch("cudnn_matmul", c->dims[n - 1], c->dims[n - 2], a->dims[n - 1], product(c->dims, n - 2),
                       a->dtype));
    return 0;
}

/* A convolution as the implicit GEMM it computes, with a linear layer's orientation: m the
 * output channels (per group), k the reduction, n the positions (tokens); groups are the batch.
 * x: input [N, C, spatial], w: filter [K, C/groups, window], y: output [N, K, spatial]. */
static int convolution(work *w, const desc *op, int kind) {
    static const int names[3][3] = {
        {A_OP_CONV_FORWARD_X, A_OP_CONV_FORWARD_W, A_OP_CONV_FORWARD_Y},
        {A_OP_CONV_BWD_DATA_DX, A_OP_CONV_BWD_DATA_W, A_OP_CONV_BWD_DATA_DY},
        {A_OP_CONV_BWD_FILTER_X, A_OP_CONV_BWD_FILTER_DW, A_OP_CONV_BWD_FILTER_DY},
    };
    static const char *const launch_names[3] = {"cudnn_conv_fprop", "cudnn_conv_dgrad", "cudnn_conv_wgrad"};
    tensor x, f, y;
    if (tensor_of(op, names[kind][0], &x) || tensor_of(op, names[kind][1], &f) || tensor_of(op, names[kind][2], &y) ||
        x.ndims < 3 || x.ndims != f.ndims || x.ndims != y.ndims || f.dims[1] <= 0 || x.dims[1] % f.dims[1])
        return unknown(w, "a convolution without x, w and y tensors of one rank");
    int64_t groups = x.dims[1] / f.dims[1], out_channels = f.dims[0] / (groups ? groups : 1);
    int64_t window = product(f.dims + 2, f.ndims - 2), in_positions = x.dims[0] * product(x.dims + 2, x.ndims - 2);
    int64_t out_positions = y.dims[0] * product(y.dims + 2, y.ndims - 2), in_channels = f.dims[1];
    vgpu_launch l;
    /* torch lets cuDNN run float convolutions on TF32 tensor cores unless told otherwise
     * (torch.backends.cudnn.allow_tf32 is on by default); the library cannot see the setting. */
    if (kind == 0) l = gemm_launch(launch_names[0], out_channels, out_positions, in_channels * window, groups, x.dtype);
    else if (kind == 1) l = gemm_launch(launch_names[1], in_channels, in_positions, out_channels * window, groups, y.dtype);
    else l = gemm_launch(launch_names[2], out_channels, in_channels * window, out_positions, groups, x.dtype);
    if (l.u.gemm.type_a == CUDA_R_32F) l.u.gemm.compute_type = CUBLAS_COMPUTE_32F_FAST_TF32;
    add(w, l);
    return 0;
}

/* The largest tensor any operation of the graph names. */
static double largest_tensor(const desc *graph) {
    double largest = 0;
    int64_t n;
    const desc *const *ops = ops_of(graph, &n);
    for (int64_t i = 0; i < n; i++) {
        const desc *op = as_desc(ops[i]);
        for (int j = 0; op && j < op->n_attrs; j++) {
            tensor t;
            if (op->attrs[j].type == T_BACKEND_DESCRIPTOR && tensor_of(op, op->attrs[j].name, &t) == 0 &&
                t.elements > largest)
                largest = t.elements;
        }
    }
    return largest;
}

/* The kernel a graph of only elementwise-like operations is charged as: known to the predictor
 * by this name (the per-kernel model of a name never measured is the default one). */
static vgpu_function *elementwise;
static pthread_once_t elementwise_once = PTHREAD_ONCE_INIT;
static void register_elementwise(void) {
    elementwise = vgpu_function_register(&elementwise, "cudnn_fused_elementwise", NULL);
}

static vgpu_function *elementwise_function(void) {
    pthread_once(&elementwise_once, register_elementwise);
    return elementwise;
}

static void decode(const desc *graph, work *w) {
    memset(w, 0, sizeof *w);
    w->known = 1;
    int64_t n;
    const desc *const *ops = ops_of(graph, &n);
    if (n <= 0) { unknown(w, "an operation graph without operations"); return; }
    int matmuls = 0, mains = 0;
    tensor first_a = {0}, first_b = {0}, first_c = {0}, second_a = {0}, second_b = {0};
    for (int64_t i = 0; i < n && w->known; i++) {
        const desc *op = as_desc(ops[i]);
        if (!op) { unknown(w, "an operation graph naming something that is not a descriptor"); return; }
        switch (op->type) {
        case D_OP_SDPA_FWD: mains++; sdpa_forward(w, op); break;
        case D_OP_SDPA_BWD: mains++; sdpa_backward(w, op); break;
        case D_OP_CONV_FORWARD: mains++; convolution(w, op, 0); break;
        case D_OP_CONV_BACKWARD_DATA: mains++; convolution(w, op, 1); break;
        case D_OP_CONV_BACKWARD_FILTER: mains++; convolution(w, op, 2); break;
        case D_OP_MATMUL: {
            tensor a, b, c;
            mains++;
            if (matmul(w, op, &a, &b, &c) == 0 && ++matmuls <= 2) {
                if (matmuls == 1) first_a = a, first_b = b, first_c = c;
                else second_a = a, second_b = b;
            }
            break;
        }
        case D_OP_MOE_GROUPED_MATMUL: case D_OP_MOE_GROUPED_MATMUL_BWD:
            unknown(w, "a MoE grouped matmul (descriptor type %d), which the vGPU library does not charge", op->type);
            break;
        default:
            if (op->type < D_OP_CONV_FORWARD || op->type > D_LAST_KNOWN || op->type == D_OPERATIONGRAPH ||
                op->type == D_VARIANT_PACK || op->type == D_TENSOR || op->type == D_MATMUL)
                unknown(w, "an operation of descriptor type %d, which the vGPU library does not know", op->type);
            break;      /* elementwise-like: fused into the main operation, or charged below */
        }
    }
    if (!w->known) return;
    /* The composite SDPA graph: S = Q K^T (virtual), softmax and masks on S, O = S V. */
    if (matmuls == 2 && mains == 2 && first_c.is_virtual && second_a.is_virtual && first_a.ndims == 4 &&
        first_b.ndims == 4 && second_b.ndims == 4 && !first_a.is_virtual && !second_b.is_virtual) {
        w->n = 0;
        add(w, attention_launch("cudnn_sdpa_fwd", &first_a, &second_b, first_b.dims[3], generates_mask(graph), graph));
        return;
    }
    if (mains == 0) {
        double elements = largest_tensor(graph);
        vgpu_launch l = {.kind = VGPU_OP_KERNEL, .name = "cudnn_fused_elementwise", .function = elementwise_function()};
        l.block[0] = 256, l.block[1] = l.block[2] = 1;
        double blocks = elements / 256 + 1;
        l.grid[0] = blocks > 2147483647.0 ? 2147483647u : (unsigned)blocks;
        l.grid[1] = l.grid[2] = 1;
        add(w, l);
    }
}

/* ---- the backend API ------------------------------------------------------------------------------ */

API cudnnStatus_t cudnnBackendCreateDescriptor(int type, void **out) {
    if (!out) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (type < 0 || type > D_LAST_KNOWN)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, "descriptor type %d is unknown to the vGPU library", type);
    *out = create(type);
    return *out ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

API cudnnStatus_t cudnnBackendDestroyDescriptor(void *d) {
    desc *x = as_desc(d);
    if (!x) return CUDNN_STATUS_BAD_PARAM;
    destroy(x);
    return CUDNN_STATUS_SUCCESS;
}

/* Deprecated: resets a descriptor to its created state. */
API cudnnStatus_t cudnnBackendInitialize(void *d) {
    desc *x = as_desc(d);
    if (!x) return CUDNN_STATUS_BAD_PARAM;
    clear(x);
    return CUDNN_STATUS_SUCCESS;
}

/* Engine configs and plans hold copies of the engine (config) they are given, as cuDNN's do, so
 * the caller may destroy its own. */
static int owns(int type, int name) {
    return (type == D_ENGINECFG && name == A_ENGINECFG_ENGINE) ||
           (type == D_EXECUTION_PLAN && name == A_EXECUTION_PLAN_ENGINE_CONFIG);
}

API cudnnStatus_t cudnnBackendSetAttribute(void *d, int name, int type, int64_t count, const void *elements) {
    desc *x = as_desc(d);
    if (!x) return CUDNN_STATUS_BAD_PARAM;
    if (!element_size(type) || count < 0) return fail(CUDNN_STATUS_BAD_PARAM, "attribute %d: bad type %d or count", name, type);
    if (count && !elements) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    int owned = type == T_BACKEND_DESCRIPTOR && owns(x->type, name);
    if (type == T_BACKEND_DESCRIPTOR)
        for (int64_t i = 0; i < count; i++)
            if (!as_desc(((void *const *)elements)[i]))
                return fail(CUDNN_STATUS_BAD_PARAM, "attribute %d: element %lld is not a descriptor", name, (long long)i);
    if (put(x, name, type, count, elements, owned) != 0) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    return CUDNN_STATUS_SUCCESS;
}

/* An answer computed rather than stored: count elements of a type (an int64 value, or a text). */
typedef struct answer { int found, type; int64_t count, value; const char *text; } answer;

static answer computed(const desc *x, int name) {
    static const char plan_json[] = "{\"engine\":\"revati-vgpu\",\"global_index\":0,\"knobs\":[]}";
    switch (name) {
    case A_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT:
        if (x->type != D_OPERATIONGRAPH) break;
        return (answer){.found = 1, .type = T_INT64, .count = 1, .value = x->work && x->work->known};
    case A_ENGINECFG_WORKSPACE_SIZE: case A_EXECUTION_PLAN_WORKSPACE_SIZE: case A_ENGINE_GLOBAL_INDEX:
        return (answer){.found = 1, .type = T_INT64, .count = 1, .value = 0};
    case A_ENGINECFG_SHARED_MEMORY_USED:        /* an int32 (cudnn_frontend's plan filter reads it) */
        return (answer){.found = 1, .type = T_INT32, .count = 1, .value = 0};
    /* The one engine has no knobs, notes, preferred layouts or intermediates. */
    case A_ENGINE_KNOB_INFO: case A_ENGINE_NUMERICAL_NOTE: case A_ENGINE_BEHAVIOR_NOTE: case A_ENGINE_LAYOUT_INFO:
    case A_ENGINECFG_KNOB_CHOICES: case A_ENGINECFG_INTERMEDIATE_INFO:
    case A_EXECUTION_PLAN_COMPUTED_INTERMEDIATE_UIDS: case A_EXECUTION_PLAN_RUN_ONLY_INTERMEDIATE_UIDS:
        return (answer){.found = 1, .type = -1, .count = 0};
    case A_EXECUTION_PLAN_JSON_REPRESENTATION:
        return (answer){.found = 1, .type = T_CHAR, .count = sizeof plan_json, .text = plan_json};
    }
    return (answer){0};
}

API cudnnStatus_t cudnnBackendGetAttribute(void *const d, int name, int type, int64_t requested, int64_t *count,
                                           void *elements) {
    desc *x = as_desc(d);
    if (!x) return CUDNN_STATUS_BAD_PARAM;
    if (requested < 0) return CUDNN_STATUS_BAD_PARAM;
    if (!elements) requested = 0;       /* a query of the count alone (cudnn_frontend asks so) */
    const attribute *a = find(x, name);
    if (a) {
        if (a->type != type)
            return fail(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "attribute %d was set as type %d, asked as %d", name,
                        a->type, type);
        int64_t n = requested < a->count ? requested : a->count;
        if (count) *count = a->count;
        if (type != T_BACKEND_DESCRIPTOR) {
            if (n) memcpy(elements, a->data, n * element_size(type));
            return CUDNN_STATUS_SUCCESS;
        }
        /* Descriptors are copied into the caller's, which it created of the right type. */
        for (int64_t i = 0; i < n; i++) {
            desc *dst = as_desc(((void **)elements)[i]), *src = ((desc **)a->data)[i];
            if (!dst || !as_desc(src) || dst->type != src->type)
                return fail(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE, "attribute %d: element %lld: descriptor of the "
                            "wrong type", name, (long long)i);
            if (dst != src) copy_contents(dst, src);
        }
        return CUDNN_STATUS_SUCCESS;
    }
    answer c = computed(x, name);
    if (c.found) {
        if (c.count && c.type != type)
            return fail(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "attribute %d is of type %d, asked as %d", name, c.type, type);
        int64_t n = requested < c.count ? requested : c.count;
        if (count) *count = c.count;
        int32_t value32 = (int32_t)c.value;
        const void *from = c.text ? (const void *)c.text : type == T_INT32 ? (const void *)&value32 : (const void *)&c.value;
        if (n) memcpy(elements, from, n * element_size(type));
        return CUDNN_STATUS_SUCCESS;
    }
    vgpu_debug("cudnnBackendGetAttribute: descriptor type %d has no attribute %d: answered with none", x->type, name);
    if (count) *count = 0;
    return CUDNN_STATUS_SUCCESS;
}

static work *new_work(desc *x) {
    free(x->work);
    x->work = calloc(1, sizeof *x->work);
    return x->work;
}

/* Engine 0 of a graph whose work is known, finalized. */
static desc *engine_for(desc *graph) {
    desc *engine = create(D_ENGINE);
    int64_t index = 0;
    if (!engine || put(engine, A_ENGINE_OPERATION_GRAPH, T_BACKEND_DESCRIPTOR, 1, &graph, 0) != 0 ||
        put(engine, A_ENGINE_GLOBAL_INDEX, T_INT64, 1, &index, 0) != 0 || !new_work(engine)) {
        destroy(engine);
        return NULL;
    }
    *engine->work = *graph->work;
    engine->finalized = 1;
    return engine;
}

/* Heuristics: one engine config (engine 0 of the graph) if the graph's work is known, else none. */
static cudnnStatus_t finalize_heuristics(desc *x) {
    desc *graph = child(x, A_ENGINEHEUR_OPERATION_GRAPH);
    if (!graph || !graph->finalized || !graph->work)
        return fail(CUDNN_STATUS_BAD_PARAM, "engine heuristics need a finalized operation graph");
    if (!graph->work->known) {
        vgpu_warn_once("cuDNN: heuristics offer no engine for an operation graph holding %s", graph->work->why);
        return put(x, A_ENGINEHEUR_RESULTS, T_BACKEND_DESCRIPTOR, 0, NULL, 1) == 0
                   ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    }
    desc *engine = engine_for(graph), *config = create(D_ENGINECFG);
    int ok = engine && config && put(config, A_ENGINECFG_ENGINE, T_BACKEND_DESCRIPTOR, 1, &engine, 1) == 0 &&
             new_work(config);
    if (ok) {
        *config->work = *graph->work;
        config->finalized = 1;
        ok = put(x, A_ENGINEHEUR_RESULTS, T_BACKEND_DESCRIPTOR, 1, &config, 1) == 0;
    }
    destroy(engine);
    destroy(config);
    return ok ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
}

/* ---- host work of a graph build ------------------------------------------------------------- */

typedef struct signature { double head_dim, heads, kv_heads; int decode, causal; } signature;
#define MAX_SIGNATURES 64
static signature signatures[MAX_SIGNATURES];
static int n_signatures;
static pthread_mutex_t signatures_lock = PTHREAD_MUTEX_INITIALIZER;

/* 1 the first time the process builds an attention graph of this signature. */
static int first_of_signature(const vgpu_launch *l) {
    signature s = {l->u.attention.head_dim, l->u.attention.heads, l->u.attention.kv_heads,
                   l->u.attention.seqlen_q == 1, l->u.attention.causal};
    pthread_mutex_lock(&signatures_lock);
    int first = 1;
    for (int i = 0; i < n_signatures && first; i++) first = memcmp(&signatures[i], &s, sizeof s) != 0;
    if (first && n_signatures < MAX_SIGNATURES) signatures[n_signatures++] = s;
    pthread_mutex_unlock(&signatures_lock);
    return first;
}

static void charge_graph_build(const work *w) {
    for (int i = 0; i < w->n; i++) {
        if (w->launches[i].kind != VGPU_OP_ATTENTION) continue;
        vgpu_host_work what = first_of_signature(&w->launches[i]) ? VGPU_HOST_CUDNN_ATTENTION_FIRST
                                                                     : VGPU_HOST_CUDNN_ATTENTION;
        double seconds = vgpu_predict_host(what);
        vgpu_clock_charge_host(seconds);
        vgpu_launch record = {.kind = VGPU_OP_HOST_WORK, .name = vgpu_host_work_name(what)};
        vgpu_stats_record(&record, seconds, vgpu_now());
        return;         /* one build a graph, whatever it holds */
    }
}

API cudnnStatus_t cudnnBackendFinalize(void *d) {
    desc *x = as_desc(d);
    if (!x) return CUDNN_STATUS_BAD_PARAM;
    switch (x->type) {
    case D_OPERATIONGRAPH: {
        work *w = new_work(x);
        if (!w) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        decode(x, w);
        if (w->known) {
            charge_graph_build(w);
            for (int i = 0; i < w->n; i++) {
                const vgpu_launch *l = &w->launches[i];
                if (l->kind == VGPU_OP_ATTENTION)
                    vgpu_debug("cuDNN graph: %s b=%g h=%g/%g s_q=%g s_kv=%g d=%g causal=%d masked=%d", l->name,
                               l->u.attention.batch, l->u.attention.heads, l->u.attention.kv_heads,
                               l->u.attention.seqlen_q, l->u.attention.seqlen_k, l->u.attention.head_dim,
                               l->u.attention.causal, l->u.attention.masked);
                else if (l->kind == VGPU_OP_GEMM)
                    vgpu_debug("cuDNN graph: %s m=%lld n=%lld k=%lld batch=%lld", l->name, (long long)l->u.gemm.m,
                               (long long)l->u.gemm.n, (long long)l->u.gemm.k, (long long)l->u.gemm.batch);
                else
                    vgpu_debug("cuDNN graph: %s over %u blocks", l->name, l->grid[0]);
            }
        } else {
            vgpu_debug("cuDNN graph: not charged: %s", w->why);
        }
        break;
    }
    case D_ENGINEHEUR: {
        cudnnStatus_t status = finalize_heuristics(x);
        if (status != CUDNN_STATUS_SUCCESS) return status;
        break;
    }
    case D_ENGINE: {
        desc *graph = child(x, A_ENGINE_OPERATION_GRAPH);
        if (!graph || !graph->finalized || !graph->work)
            return fail(CUDNN_STATUS_BAD_PARAM, "an engine needs a finalized operation graph");
        if (!graph->work->known || int_attribute(x, A_ENGINE_GLOBAL_INDEX, 0) != 0)
            return fail(CUDNN_STATUS_NOT_SUPPORTED, "engine %lld does not support this graph (the vGPU library has "
                        "engine 0 for graphs it can charge)", (long long)int_attribute(x, A_ENGINE_GLOBAL_INDEX, 0));
        if (!new_work(x)) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        *x->work = *graph->work;
        break;
    }
    case D_ENGINECFG: {
        desc *engine = child(x, A_ENGINECFG_ENGINE);
        if (!engine || !engine->finalized || !engine->work)
            return fail(CUDNN_STATUS_BAD_PARAM, "an engine config needs a finalized engine");
        if (!new_work(x)) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        *x->work = *engine->work;
        break;
    }
    case D_EXECUTION_PLAN: {
        desc *config = child(x, A_EXECUTION_PLAN_ENGINE_CONFIG);
        if (!config || !config->finalized || !config->work)
            return fail(CUDNN_STATUS_BAD_PARAM, "an execution plan needs a finalized engine config");
        if (!config->work->known) return fail(CUDNN_STATUS_NOT_SUPPORTED, "no engine charges %s", config->work->why);
        if (!new_work(x)) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
        *x->work = *config->work;
        break;
    }
    default:
        break;      /* tensors, operations, variant packs, ...: what was set is what they are */
    }
    x->finalized = 1;
    return CUDNN_STATUS_SUCCESS;
}

/* Execution: the plan's work, charged to the handle's stream. Nothing is read or written. */
API cudnnStatus_t cudnnBackendExecute(cudnnHandle_t h, void *plan, void *variant_pack) {
    desc *p = as_desc(plan), *v = as_desc(variant_pack);
    if (!valid_handle(h)) return CUDNN_STATUS_BAD_PARAM;
    if (!p || p->type != D_EXECUTION_PLAN || !v || v->type != D_VARIANT_PACK) return CUDNN_STATUS_BAD_PARAM;
    if (!p->finalized || !p->work || !v->finalized) return CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED;
    vgpu_stream *s = vgpu_stream_resolve(h->stream);
    for (int i = 0; i < p->work->n; i++) {
        vgpu_launch l = p->work->launches[i];
        l.device = vgpu_stream_device(s);
        vgpu_submit(s, &l);
    }
    return CUDNN_STATUS_SUCCESS;
}
