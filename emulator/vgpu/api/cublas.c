/* cublas.c: the cuBLAS and cuBLASLt entry points serving engines call, as matrix products charged
 * to streams in virtual time.
 *
 * The real libcublas/libcublasLt carry a static CUDA runtime of their own that would talk to a
 * real driver, so this library defines their entry points (exported under the versions
 * libcublas.so.13 and libcublasLt.so.13, see build.py) and the preload overrides them. Kernels
 * do not run: a product is one VGPU_OP_GEMM launch with its exact shape and types, named after
 * the entry point, submitted to the stream it was issued on. Nothing is written to the outputs.
 *
 * Shapes are cuBLAS's, which is column-major: C[m,n] = op(A)[m,k] op(B)[k,n]. A row-major caller
 * such as torch computes C = A @ B as C^T = B^T A^T, so torch's (64x128) @ (128x32) reaches
 * cuBLAS, and the trace, as m=32, n=64, k=128.
 *
 * Entry points the engines import but this file leaves out (TRSM, GETRF, dot products, ...)
 * are generated stubs that name themselves and return CUBLAS_STATUS_NOT_SUPPORTED.
 */
#include <cuda_runtime_api.h>
#include <library_types.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

#define API VGPU_EXPORT

/* ---- what the build needs from cublas_api.h and cublasLt.h ---------------------------------
 * Mirrored from the headers of cuBLAS 13.1.1 (nvidia-cublas 13.1.1.3), which the build does not
 * require. Enums are ints in the C ABI, so enum parameters are declared as int typedefs. */
#define CUBLAS_VERSION 130101           /* also what cublasLtGetVersion reports */
#define CUBLAS_VER_MAJOR 13
#define CUBLAS_VER_MINOR 1
#define CUBLAS_VER_PATCH 1

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16,
} cublasStatus_t;

typedef int cublasOperation_t, cublasMath_t, cublasPointerMode_t, cublasComputeType_t, cublasGemmAlgo_t;
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum { CUBLAS_FILL_MODE_FULL = 2 };
enum {
    CUBLAS_TENSOR_OP_MATH = 1, CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_MATH_MODE_MASK = 0xf,        /* the low bits select the mode; higher bits are flags */
};
enum {
    CUBLAS_COMPUTE_16F = 64, CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_64F = 70,
    CUBLAS_COMPUTE_32F_FAST_16F = 74, CUBLAS_COMPUTE_32F_FAST_TF32 = 77,
};

/* A cuBLAS handle. torch hands its cuBLAS handle to cuBLASLt (as the real libraries allow), so a
 * cuBLASLt handle is the same structure. */
struct cublasContext {
    cudaStream_t stream;                /* as set; NULL is the current device's default stream */
    cublasMath_t math_mode;
    cublasPointerMode_t pointer_mode;
    int sm_count_target;
};
typedef struct cublasContext *cublasHandle_t, *cublasLtHandle_t;

/* cuBLASLt's semi-opaque descriptors: sizes as in cublasLt.h, contents are this file's. */
typedef struct { uint64_t data[32]; } cublasLtMatmulDescOpaque_t;
typedef struct { uint64_t data[8]; } cublasLtMatrixLayoutOpaque_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulPreferenceOpaque_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef cublasLtMatmulDescOpaque_t *cublasLtMatmulDesc_t;
typedef cublasLtMatrixLayoutOpaque_t *cublasLtMatrixLayout_t;
typedef cublasLtMatmulPreferenceOpaque_t *cublasLtMatmulPreference_t;

typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;
_Static_assert(sizeof(cublasLtMatmulHeuristicResult_t) == 96, "must match cublasLt.h: callers pass arrays");

typedef int cublasLtMatmulDescAttributes_t, cublasLtMatrixLayoutAttribute_t,
    cublasLtMatmulPreferenceAttributes_t, cublasLtMatmulAlgoConfigAttributes_t;
/* Attribute ids this file reads or initialises (cublasLtMatmulDescAttributes_t,
 * cublasLtMatrixLayoutAttribute_t, cublasLtMatmulPreferenceAttributes_t,
 * cublasLtMatmulAlgoConfigAttributes_t). */
enum {
    DESC_COMPUTE_TYPE = 0, DESC_SCALE_TYPE = 1, DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_FILL_MODE = 6,
    DESC_EPILOGUE = 7, DESC_EPILOGUE_AUX_DATA_TYPE = 22, DESC_BIAS_DATA_TYPE = 26,
};
enum { LAYOUT_TYPE = 0, LAYOUT_ROWS = 2, LAYOUT_COLS = 3, LAYOUT_LD = 4, LAYOUT_BATCH_COUNT = 5 };
enum {
    PREF_REDUCTION_SCHEME_MASK = 3, PREF_MIN_ALIGNMENT_A_BYTES = 5, PREF_MIN_ALIGNMENT_D_BYTES = 8,
    PREF_IMPL_MASK = 12,
};
enum { ALGO_CONFIG_ID = 0, ALGO_CONFIG_SPLITK_NUM = 2 };
enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_REDUCTION_SCHEME_MASK = 0x7 };

/* ---- status strings (shared by cuBLAS and cuBLASLt, as in the real libraries) -------------- */

static const struct { cublasStatus_t code; const char *name, *text; } statuses[] = {
    {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS", "success"},
    {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED", "the library was not initialized"},
    {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED", "the resource allocation failed"},
    {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE",
     "an unsupported value or parameter was passed to the function"},
    {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH",
     "the function requires an architectural feature absent from the device"},
    {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR", "an access to GPU memory space failed"},
    {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED", "the function failed to launch on the GPU"},
    {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR", "an internal operation failed"},
    {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED", "the requested functionality is not supported"},
    {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR", "the license check failed"},
};

static const char *status_text(cublasStatus_t status, int want_name) {
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
        if (statuses[i].code == status) return want_name ? statuses[i].name : statuses[i].text;
    return "unrecognized status";
}

API const char *cublasGetStatusName(cublasStatus_t status) { return status_text(status, 1); }
API const char *cublasGetStatusString(cublasStatus_t status) { return status_text(status, 0); }
API const char *cublasLtGetStatusName(cublasStatus_t status) { return status_text(status, 1); }
API const char *cublasLtGetStatusString(cublasStatus_t status) { return status_text(status, 0); }

/* ---- versions ------------------------------------------------------------------------------ */

API size_t cublasGetCudartVersion(void) { return CUDART_VERSION; }
API size_t cublasLtGetCudartVersion(void) { return CUDART_VERSION; }
API size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

API cublasStatus_t cublasGetVersion_v2(cublasHandle_t h, int *version) {
    if (!version) return CUBLAS_STATUS_INVALID_VALUE;
    *version = CUBLAS_VERSION;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetProperty(libraryPropertyType type, int *value) {
    static const int parts[] = {[MAJOR_VERSION] = CUBLAS_VER_MAJOR, [MINOR_VERSION] = CUBLAS_VER_MINOR,
                                [PATCH_LEVEL] = CUBLAS_VER_PATCH};
    if (!value || (unsigned)type >= sizeof parts / sizeof *parts) return CUBLAS_STATUS_INVALID_VALUE;
    *value = parts[type];
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLoggerConfigure(int on, int to_stdout, int to_stderr, const char *file) {
    return CUBLAS_STATUS_SUCCESS;       /* nothing runs, so there is nothing to log */
}

/* ---- handles ------------------------------------------------------------------------------- */

API cublasStatus_t cublasCreate_v2(cublasHandle_t *out) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    vgpu_model_get();                   /* like the real one, creating a handle needs a device */
    *out = calloc(1, sizeof **out);
    return *out ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

API cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtCreate(cublasLtHandle_t *out) { return cublasCreate_v2(out); }
API cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) { return cublasDestroy_v2(h); }

API cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasGetStream_v2(cublasHandle_t h, cudaStream_t *stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

/* No kernel runs, so a workspace is never touched; it is accepted as cuBLAS accepts it. */
API cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *workspace, size_t size) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    return CUBLAS_STATUS_SUCCESS;
}

/* Handle settings: stored so that the getters return them (and the math mode is used below). */
#define HANDLE_SETTING(SET, GET, type, field)                                               \
    API cublasStatus_t SET(cublasHandle_t h, type value) {                                 \
        if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;                                      \
        h->field = value;                                                                  \
        return CUBLAS_STATUS_SUCCESS;                                                      \
    }                                                                                      \
    API cublasStatus_t GET(cublasHandle_t h, type *value) {                                \
        if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;                                      \
        if (!value) return CUBLAS_STATUS_INVALID_VALUE;                                    \
        *value = h->field;                                                                 \
        return CUBLAS_STATUS_SUCCESS;                                                      \
    }
HANDLE_SETTING(cublasSetMathMode, cublasGetMathMode, cublasMath_t, math_mode)
HANDLE_SETTING(cublasSetPointerMode_v2, cublasGetPointerMode_v2, cublasPointerMode_t, pointer_mode)
HANDLE_SETTING(cublasSetSmCountTarget, cublasGetSmCountTarget, int, sm_count_target)

/* ---- charging a product -------------------------------------------------------------------- */

/* Every cuBLAS and cuBLASLt product ends here. An empty output launches nothing (cuBLAS returns
 * at once); k == 0 still launches, since C is scaled by beta. */
static void charge(cudaStream_t stream, vgpu_launch *l) {
    if (l->u.gemm.m == 0 || l->u.gemm.n == 0 || l->u.gemm.batch == 0) return;
    vgpu_stream *s = vgpu_stream_resolve(stream);
    l->kind = VGPU_OP_GEMM;
    l->device = vgpu_stream_device(s);
    /* The trace has no columns for the types; this line shows what the predictor was given. */
    vgpu_debug("%s: m=%lld n=%lld k=%lld batch=%lld op=%d%d types=%d,%d->%d compute=%d", l->name,
               (long long)l->u.gemm.m, (long long)l->u.gemm.n, (long long)l->u.gemm.k,
               (long long)l->u.gemm.batch, l->u.gemm.trans_a, l->u.gemm.trans_b, l->u.gemm.type_a,
               l->u.gemm.type_b, l->u.gemm.type_c, l->u.gemm.compute_type);
    vgpu_submit(s, l);
}

static int valid_op(int op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

/* A cuBLAS product: its arguments checked as cuBLAS checks them, charged to the handle's stream. */
static cublasStatus_t gemm(cublasHandle_t h, const char *name, cublasOperation_t ta, cublasOperation_t tb,
                           int64_t m, int64_t n, int64_t k, int64_t batch,
                           int type_a, int type_b, int type_c, cublasComputeType_t compute) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || !valid_op(ta) || !valid_op(tb)) return CUBLAS_STATUS_INVALID_VALUE;
    /* The math mode lets single-precision products run on tensor cores (torch sets TF32 mode
     * when allow_tf32 is on); the predictor must see what the kernel would compute in. */
    if (compute == CUBLAS_COMPUTE_32F && (type_a == CUDA_R_32F || type_a == CUDA_C_32F)) {
        int mode = h->math_mode & CUBLAS_MATH_MODE_MASK;
        if (mode == CUBLAS_TF32_TENSOR_OP_MATH) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        if (mode == CUBLAS_TENSOR_OP_MATH) compute = CUBLAS_COMPUTE_32F_FAST_16F;
    }
    vgpu_launch l = {
        .name = name,
        .u.gemm = {.m = m, .n = n, .k = k, .batch = batch, .trans_a = ta, .trans_b = tb,
                   .type_a = type_a, .type_b = type_b, .type_c = type_c, .compute_type = compute},
    };
    charge(h->stream, &l);
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- the typed families: {S,D,C,Z,H}gemm, gemmStridedBatched, gemmBatched, {S,D,C,Z}gemv --- */

/* One row per precision: name letter, suffix of the plain GEMM, element type, compute type. */
#define PRECISIONS(X)                                        \
    X(S, _v2, CUDA_R_32F, CUBLAS_COMPUTE_32F)                \
    X(D, _v2, CUDA_R_64F, CUBLAS_COMPUTE_64F)                \
    X(C, _v2, CUDA_C_32F, CUBLAS_COMPUTE_32F)                \
    X(Z, _v2, CUDA_C_64F, CUBLAS_COMPUTE_64F)
/* Half precision has the GEMMs only, and its plain GEMM never took the _v2 suffix. */
#define ALL_PRECISIONS(X) PRECISIONS(X) X(H, , CUDA_R_16F, CUBLAS_COMPUTE_16F)

/* Operands are pointers whatever their element type, so they are declared const void *. */
#define DEFINE_GEMM(P, V2, TYPE, COMPUTE)                                                           \
    API cublasStatus_t cublas##P##gemm##V2(                                                         \
        cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,           \
        const void *alpha, const void *A, int lda, const void *B, int ldb, const void *beta,       \
        void *C, int ldc) {                                                                         \
        return gemm(h, "cublas" #P "gemm" #V2, ta, tb, m, n, k, 1, TYPE, TYPE, TYPE, COMPUTE);      \
    }
#define DEFINE_GEMM_STRIDED(P, V2, TYPE, COMPUTE)                                                   \
    API cublasStatus_t cublas##P##gemmStridedBatched(                                               \
        cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,           \
        const void *alpha, const void *A, int lda, long long stride_a, const void *B, int ldb,     \
        long long stride_b, const void *beta, void *C, int ldc, long long stride_c, int batch) {   \
        return gemm(h, "cublas" #P "gemmStridedBatched", ta, tb, m, n, k, batch, TYPE, TYPE, TYPE,  \
                    COMPUTE);                                                                       \
    }
#define DEFINE_GEMM_BATCHED(P, V2, TYPE, COMPUTE)                                                   \
    API cublasStatus_t cublas##P##gemmBatched(                                                      \
        cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,           \
        const void *alpha, const void *const A[], int lda, const void *const B[], int ldb,         \
        const void *beta, void *const C[], int ldc, int batch) {                                    \
        return gemm(h, "cublas" #P "gemmBatched", ta, tb, m, n, k, batch, TYPE, TYPE, TYPE,         \
                    COMPUTE);                                                                       \
    }
/* y = op(A) x with A m x n, charged as the GEMM [rows x 1] = op(A)[rows x depth] x[depth x 1];
 * the name keeps it a GEMV for the predictor (it is bound by reading A, not by arithmetic). */
#define DEFINE_GEMV(P, V2, TYPE, COMPUTE)                                                           \
    API cublasStatus_t cublas##P##gemv##V2(                                                         \
        cublasHandle_t h, cublasOperation_t trans, int m, int n, const void *alpha, const void *A,  \
        int lda, const void *x, int incx, const void *beta, void *y, int incy) {                   \
        int transposed = trans != CUBLAS_OP_N;                                                      \
        return gemm(h, "cublas" #P "gemv" #V2, trans, CUBLAS_OP_N, transposed ? n : m, 1,           \
                    transposed ? m : n, 1, TYPE, TYPE, TYPE, COMPUTE);                              \
    }

ALL_PRECISIONS(DEFINE_GEMM)
ALL_PRECISIONS(DEFINE_GEMM_STRIDED)
ALL_PRECISIONS(DEFINE_GEMM_BATCHED)
PRECISIONS(DEFINE_GEMV)

/* ---- the mixed-type ("Ex") products -------------------------------------------------------- */

/* Single-precision arithmetic on inputs of other types (fp16, bf16, int8 ...). */
API cublasStatus_t cublasSgemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                 const float *alpha, const void *A, cudaDataType type_a, int lda,
                                 const void *B, cudaDataType type_b, int ldb, const float *beta,
                                 void *C, cudaDataType type_c, int ldc) {
    return gemm(h, "cublasSgemmEx", ta, tb, m, n, k, 1, type_a, type_b, type_c, CUBLAS_COMPUTE_32F);
}

API cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                const void *alpha, const void *A, cudaDataType type_a, int lda,
                                const void *B, cudaDataType type_b, int ldb, const void *beta,
                                void *C, cudaDataType type_c, int ldc, cublasComputeType_t compute,
                                cublasGemmAlgo_t algo) {
    return gemm(h, "cublasGemmEx", ta, tb, m, n, k, 1, type_a, type_b, type_c, compute);
}

API cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                              int m, int n, int k, const void *alpha,
                                              const void *A, cudaDataType type_a, int lda, long long stride_a,
                                              const void *B, cudaDataType type_b, int ldb, long long stride_b,
                                              const void *beta, void *C, cudaDataType type_c, int ldc,
                                              long long stride_c, int batch, cublasComputeType_t compute,
                                              cublasGemmAlgo_t algo) {
    return gemm(h, "cublasGemmStridedBatchedEx", ta, tb, m, n, k, batch, type_a, type_b, type_c, compute);
}

API cublasStatus_t cublasGemmBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                       int m, int n, int k, const void *alpha,
                                       const void *const A[], cudaDataType type_a, int lda,
                                       const void *const B[], cudaDataType type_b, int ldb,
                                       const void *beta, void *const C[], cudaDataType type_c, int ldc,
                                       int batch, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    return gemm(h, "cublasGemmBatchedEx", ta, tb, m, n, k, batch, type_a, type_b, type_c, compute);
}

/* ---- cuBLASLt attributes ---------------------------------------------------------------------
 * Each descriptor is its header's opaque structure, holding its attributes packed in id order;
 * an attribute's bytes are checked against its size exactly as cuBLASLt 13.1 checks them (sizes
 * read back from the real library). Values are stored little-endian, as the hosts are. */

typedef struct attr_kind { const unsigned char *size; int count; } attr_kind;

/* cublasLtMatmulDescAttributes_t; 0 marks an id the library rejects. 193 of 256 bytes. */
static const unsigned char desc_sizes[] = {
    4, 4, 4, 4, 4, 4, 4, 4,     /* COMPUTE_TYPE SCALE_TYPE POINTER_MODE TRANSA TRANSB TRANSC FILL_MODE EPILOGUE */
    8, 0, 8, 8, 8, 8, 8,        /* BIAS_POINTER, -, BIAS_BATCH_STRIDE, EPILOGUE_AUX_POINTER/_LD/_BATCH_STRIDE,
                                   ALPHA_VECTOR_BATCH_STRIDE */
    4, 4,                       /* SM_COUNT_TARGET, 16 (undocumented but accepted) */
    8, 8, 8, 8, 8,              /* A/B/C/D_SCALE_POINTER, AMAX_D_POINTER */
    4, 8, 8, 1, 4,              /* EPILOGUE_AUX_DATA_TYPE, EPILOGUE_AUX_SCALE/AMAX_POINTER, FAST_ACCUM,
                                   BIAS_DATA_TYPE */
    0, 0, 0, 0,                 /* 27-30 */
    4, 4, 4, 4, 4, 8, 4, 8,     /* A/B/C/D/EPILOGUE_AUX_SCALE_MODE, D_OUT_SCALE_POINTER, D_OUT_SCALE_MODE,
                                   EMULATION_DESCRIPTOR */
};
/* cublasLtMatrixLayoutAttribute_t: TYPE ORDER ROWS COLS LD BATCH_COUNT STRIDED_BATCH_OFFSET
 * PLANE_OFFSET BATCH_MODE. 56 of 64 bytes. */
static const unsigned char layout_sizes[] = {4, 4, 8, 8, 8, 4, 8, 8, 4};
/* cublasLtMatmulPreferenceAttributes_t: SEARCH_MODE MAX_WORKSPACE_BYTES - REDUCTION_SCHEME_MASK -
 * MIN_ALIGNMENT_A/B/C/D_BYTES MAX_WAVES_COUNT - - IMPL_MASK. 44 of 64 bytes. */
static const unsigned char pref_sizes[] = {4, 8, 0, 4, 0, 4, 4, 4, 4, 4, 0, 0, 8};
/* cublasLtMatmulAlgoConfigAttributes_t: ID TILE_ID SPLITK_NUM REDUCTION_SCHEME CTA_SWIZZLING
 * CUSTOM_OPTION STAGES_ID INNER_SHAPE_ID CLUSTER_SHAPE_ID. 32 of 64 bytes. */
static const unsigned char algo_sizes[] = {4, 4, 4, 4, 4, 4, 4, 2, 2};

#define KIND(sizes) {sizes, sizeof sizes}
static const attr_kind DESC = KIND(desc_sizes), LAYOUT = KIND(layout_sizes), PREF = KIND(pref_sizes),
                       ALGO = KIND(algo_sizes);

static int attr_known(const attr_kind *kind, int id) { return id >= 0 && id < kind->count && kind->size[id]; }

static unsigned char *attr_at(const attr_kind *kind, const void *block, int id) {
    size_t offset = 0;
    for (int i = 0; i < id; i++) offset += kind->size[i];
    return (unsigned char *)block + offset;
}

static cublasStatus_t attr_set(const attr_kind *kind, void *block, int id, const void *buf, size_t n) {
    if (!block || !buf || !attr_known(kind, id) || n != kind->size[id]) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(attr_at(kind, block, id), buf, n);
    return CUBLAS_STATUS_SUCCESS;
}

/* n == 0 asks for the attribute's size. */
static cublasStatus_t attr_get(const attr_kind *kind, const void *block, int id, void *buf, size_t n,
                               size_t *written) {
    if (!block || !attr_known(kind, id)) return CUBLAS_STATUS_INVALID_VALUE;
    if (n == 0 && written) {
        *written = kind->size[id];
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || n != kind->size[id]) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(buf, attr_at(kind, block, id), n);
    if (written) *written = n;
    return CUBLAS_STATUS_SUCCESS;
}

static void attr_put(const attr_kind *kind, void *block, int id, int64_t value) {
    memcpy(attr_at(kind, block, id), &value, kind->size[id]);
}

/* An integer attribute, sign-extended from its size. */
static int64_t attr_int(const attr_kind *kind, const void *block, int id) {
    int64_t value = 0;
    int shift = 64 - 8 * kind->size[id];
    memcpy(&value, attr_at(kind, block, id), kind->size[id]);
    return shift ? (int64_t)((uint64_t)value << shift) >> shift : value;
}

/* Destroy, Set and Get of the three heap-allocated descriptors (each sized as its opaque
 * header type); their Create functions follow, each with its own defaults. */
#define DESCRIPTOR_API(Destroy, Set, Get, handle_t, attr_t, kind)                                      \
    API cublasStatus_t Destroy(handle_t d) {                                                          \
        free(d);                                                                                      \
        return CUBLAS_STATUS_SUCCESS;                                                                 \
    }                                                                                                 \
    API cublasStatus_t Set(handle_t d, attr_t attr, const void *buf, size_t n) {                      \
        return attr_set(&kind, d, attr, buf, n);                                                      \
    }                                                                                                 \
    API cublasStatus_t Get(handle_t d, attr_t attr, void *buf, size_t n, size_t *written) {           \
        return attr_get(&kind, d, attr, buf, n, written);                                             \
    }
DESCRIPTOR_API(cublasLtMatmulDescDestroy, cublasLtMatmulDescSetAttribute, cublasLtMatmulDescGetAttribute,
               cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t, DESC)
DESCRIPTOR_API(cublasLtMatrixLayoutDestroy, cublasLtMatrixLayoutSetAttribute, cublasLtMatrixLayoutGetAttribute,
               cublasLtMatrixLayout_t, cublasLtMatrixLayoutAttribute_t, LAYOUT)
DESCRIPTOR_API(cublasLtMatmulPreferenceDestroy, cublasLtMatmulPreferenceSetAttribute,
               cublasLtMatmulPreferenceGetAttribute, cublasLtMatmulPreference_t,
               cublasLtMatmulPreferenceAttributes_t, PREF)

/* Creation fills in the defaults cuBLASLt reports for attributes that are not zero. */
API cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *out, cublasComputeType_t compute,
                                            cudaDataType_t scale_type) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    if (!(*out = calloc(1, sizeof **out))) return CUBLAS_STATUS_ALLOC_FAILED;
    attr_put(&DESC, *out, DESC_COMPUTE_TYPE, compute);
    attr_put(&DESC, *out, DESC_SCALE_TYPE, scale_type);
    attr_put(&DESC, *out, DESC_FILL_MODE, CUBLAS_FILL_MODE_FULL);
    attr_put(&DESC, *out, DESC_EPILOGUE, CUBLASLT_EPILOGUE_DEFAULT);
    attr_put(&DESC, *out, DESC_EPILOGUE_AUX_DATA_TYPE, -1);
    attr_put(&DESC, *out, DESC_BIAS_DATA_TYPE, -1);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *out, cudaDataType type, uint64_t rows,
                                              uint64_t cols, int64_t ld) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    if (!(*out = calloc(1, sizeof **out))) return CUBLAS_STATUS_ALLOC_FAILED;
    attr_put(&LAYOUT, *out, LAYOUT_TYPE, type);
    attr_put(&LAYOUT, *out, LAYOUT_ROWS, (int64_t)rows);
    attr_put(&LAYOUT, *out, LAYOUT_COLS, (int64_t)cols);
    attr_put(&LAYOUT, *out, LAYOUT_LD, ld);
    attr_put(&LAYOUT, *out, LAYOUT_BATCH_COUNT, 1);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *out) {
    if (!out) return CUBLAS_STATUS_INVALID_VALUE;
    if (!(*out = calloc(1, sizeof **out))) return CUBLAS_STATUS_ALLOC_FAILED;
    attr_put(&PREF, *out, PREF_REDUCTION_SCHEME_MASK, CUBLASLT_REDUCTION_SCHEME_MASK);
    for (int id = PREF_MIN_ALIGNMENT_A_BYTES; id <= PREF_MIN_ALIGNMENT_D_BYTES; id++) attr_put(&PREF, *out, id, 256);
    attr_put(&PREF, *out, PREF_IMPL_MASK, -1);
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- cuBLASLt algorithms ----------------------------------------------------------------------
 * The emulator has one algorithm per problem: its configuration lives in the caller's
 * cublasLtMatmulAlgo_t, it needs no workspace and fills the device once. */

static void algo_init(cublasLtMatmulAlgo_t *algo, int id) {
    memset(algo, 0, sizeof *algo);
    attr_put(&ALGO, algo, ALGO_CONFIG_ID, id);
    attr_put(&ALGO, algo, ALGO_CONFIG_SPLITK_NUM, 1);
}

static void algo_result(cublasLtMatmulHeuristicResult_t *result) {
    result->workspaceSize = 0;
    result->state = CUBLAS_STATUS_SUCCESS;
    result->wavesCount = 1.0f;
}

API cublasStatus_t cublasLtMatmulAlgoInit(cublasLtHandle_t h, cublasComputeType_t compute, cudaDataType_t scale_type,
                                          cudaDataType_t type_a, cudaDataType_t type_b, cudaDataType_t type_c,
                                          cudaDataType_t type_d, int id, cublasLtMatmulAlgo_t *algo) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!algo) return CUBLAS_STATUS_INVALID_VALUE;
    algo_init(algo, id);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulAlgoConfigSetAttribute(cublasLtMatmulAlgo_t *algo,
                                                        cublasLtMatmulAlgoConfigAttributes_t attr,
                                                        const void *buf, size_t n) {
    return attr_set(&ALGO, algo, attr, buf, n);
}

API cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                        cublasLtMatmulAlgoConfigAttributes_t attr,
                                                        void *buf, size_t n, size_t *written) {
    return attr_get(&ALGO, algo, attr, buf, n, written);
}

/* The product a descriptor and its layouts describe: D is m x n, op(A) m x k, op(B) k x n, in
 * the layouts' logical rows and columns (whatever their memory order). D is the output, so its
 * type is the product's output type; the batch is D's. Inconsistent shapes are an invalid value,
 * as for cuBLASLt. */
static cublasStatus_t lt_problem(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                 cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t d, vgpu_launch *l) {
    if (!desc || !a || !b || !d) return CUBLAS_STATUS_INVALID_VALUE;
    int ta = (int)attr_int(&DESC, desc, DESC_TRANSA), tb = (int)attr_int(&DESC, desc, DESC_TRANSB);
    int64_t a_rows = attr_int(&LAYOUT, a, LAYOUT_ROWS), a_cols = attr_int(&LAYOUT, a, LAYOUT_COLS);
    int64_t b_rows = attr_int(&LAYOUT, b, LAYOUT_ROWS), b_cols = attr_int(&LAYOUT, b, LAYOUT_COLS);
    int64_t m = attr_int(&LAYOUT, d, LAYOUT_ROWS), n = attr_int(&LAYOUT, d, LAYOUT_COLS);
    int64_t k = ta != CUBLAS_OP_N ? a_rows : a_cols;
    if (!valid_op(ta) || !valid_op(tb) || (ta != CUBLAS_OP_N ? a_cols : a_rows) != m ||
        (tb != CUBLAS_OP_N ? b_cols : b_rows) != k || (tb != CUBLAS_OP_N ? b_rows : b_cols) != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    *l = (vgpu_launch){
        .name = "cublasLtMatmul",
        .u.gemm = {.m = m, .n = n, .k = k, .batch = attr_int(&LAYOUT, d, LAYOUT_BATCH_COUNT),
                   .trans_a = ta, .trans_b = tb,
                   .type_a = (int)attr_int(&LAYOUT, a, LAYOUT_TYPE), .type_b = (int)attr_int(&LAYOUT, b, LAYOUT_TYPE),
                   .type_c = (int)attr_int(&LAYOUT, d, LAYOUT_TYPE),
                   .compute_type = (int)attr_int(&DESC, desc, DESC_COMPUTE_TYPE)},
    };
    return l->u.gemm.batch < 0 ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                                  cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                  cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                  cublasLtMatmulPreference_t pref, int requested,
                                                  cublasLtMatmulHeuristicResult_t results[], int *returned) {
    vgpu_launch l;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (requested <= 0 || !results || !returned) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t status = lt_problem(desc, a, b, d, &l);
    if (status != CUBLAS_STATUS_SUCCESS) return status;
    memset(results, 0, sizeof *results);
    algo_init(&results->algo, 0);
    algo_result(results);
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                           cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                           cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                           const cublasLtMatmulAlgo_t *algo, cublasLtMatmulHeuristicResult_t *result) {
    vgpu_launch l;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!algo || !result) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t status = lt_problem(desc, a, b, d, &l);
    if (status == CUBLAS_STATUS_SUCCESS) algo_result(result);      /* result->algo is left alone */
    return status;
}

/* D = epilogue(alpha op(A) op(B) + beta C), charged to the stream given: one launch whatever the
 * epilogue, named "cublasLtMatmul". */
API cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha,
                                  const void *A, cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b,
                                  const void *beta, const void *C, cublasLtMatrixLayout_t c, void *D,
                                  cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *workspace,
                                  size_t workspace_size, cudaStream_t stream) {
    vgpu_launch l;
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasStatus_t status = lt_problem(desc, a, b, d, &l);
    if (status == CUBLAS_STATUS_SUCCESS) charge(stream, &l);
    return status;
}
