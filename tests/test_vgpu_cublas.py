"""cuBLAS and cuBLASLt on the vGPU library (emulator/vgpu/api/cublas.c): every product is one GEMM
launch with the shape cuBLAS was given, charged to the handle's (or cublasLtMatmul's) stream."""
import subprocess

import pytest

from emulator.engines.envs import env_python, is_ready
from vgpu_fixtures import libdir, parse_keys, run_on_vgpu  # noqa: F401  (libdir is a fixture)

# A C program using cuBLAS as a C program would, with its own prototypes: no cuBLAS headers are
# needed (the machines running the fast tier have none). It checks what it can itself and exits
# non-zero on the first failure; the test checks the trace and the event timings it prints.
PROGRAM = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void *cudaStream_t, *cudaEvent_t, *cublasHandle_t;
typedef void *cublasLtMatmulDesc_t, *cublasLtMatrixLayout_t, *cublasLtMatmulPreference_t;
typedef struct { uint64_t data[8]; } cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo; size_t workspaceSize; int state; float wavesCount; int reserved[4];
} cublasLtMatmulHeuristicResult_t;

int cudaMalloc(void **ptr, size_t size);
int cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
int cudaEventCreate(cudaEvent_t *event);
int cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
int cudaEventSynchronize(cudaEvent_t event);
int cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);

int cublasCreate_v2(cublasHandle_t *handle);
int cublasDestroy_v2(cublasHandle_t handle);
int cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream);
int cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *stream);
const char *cublasGetStatusName(int status);
size_t cublasLtGetVersion(void);
size_t cublasGetCudartVersion(void);
int cublasSgemm_v2(cublasHandle_t h, int ta, int tb, int m, int n, int k, const float *alpha, const float *A,
                   int lda, const float *B, int ldb, const float *beta, float *C, int ldc);
int cublasGemmEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha,
                 const void *A, int type_a, int lda, const void *B, int type_b, int ldb,
                 const void *beta, void *C, int type_c, int ldc, int compute, int algo);
int cublasGemmStridedBatchedEx(cublasHandle_t h, int ta, int tb, int m, int n, int k, const void *alpha,
                               const void *A, int type_a, int lda, long long stride_a,
                               const void *B, int type_b, int ldb, long long stride_b, const void *beta,
                               void *C, int type_c, int ldc, long long stride_c, int batch, int compute,
                               int algo);
int cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, int compute, int scale_type);
int cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc);
int cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, int attr, const void *buf, size_t n);
int cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc, int attr, void *buf, size_t n, size_t *written);
int cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, int type, uint64_t rows, uint64_t cols, int64_t ld);
int cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout);
int cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, int attr, const void *buf, size_t n);
int cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout, int attr, void *buf, size_t n, size_t *written);
int cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref);
int cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref);
int cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref, int attr, const void *buf, size_t n);
int cublasLtMatmulAlgoGetHeuristic(cublasHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
                                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                   cublasLtMatmulPreference_t pref, int requested,
                                   cublasLtMatmulHeuristicResult_t *results, int *returned);
int cublasLtMatmul(cublasHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                   cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b, const void *beta,
                   const void *C, cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                   const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_size, cudaStream_t stream);
int cublasStrsm_v2(void);           /* not implemented: a generated stub */

enum { OP_N = 0, OP_T = 1, R_32F = 0, R_16F = 2, R_16BF = 14, COMPUTE_32F = 68 };
enum { DESC_TRANSA = 3, DESC_TRANSB = 4, DESC_EPILOGUE = 7, DESC_BIAS_POINTER = 8, EPILOGUE_BIAS = 4 };
enum { LAYOUT_BATCH_COUNT = 5, LAYOUT_STRIDED_BATCH_OFFSET = 6, PREF_MAX_WORKSPACE_BYTES = 1 };

#define CHECK(call) do { int rc_ = (call); if (rc_ != 0) { \
    fprintf(stderr, "line %d: %s returned %d\n", __LINE__, #call, rc_); exit(1); } } while (0)
#define EXPECT(cond) do { if (!(cond)) { fprintf(stderr, "line %d: expected %s\n", __LINE__, #cond); exit(1); } } while (0)

/* A batched column-major layout of rows x cols. */
static cublasLtMatrixLayout_t layout(int type, uint64_t rows, uint64_t cols, int batch) {
    cublasLtMatrixLayout_t l;
    int64_t stride = (int64_t)(rows * cols);
    CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, (int64_t)rows));
    CHECK(cublasLtMatrixLayoutSetAttribute(l, LAYOUT_BATCH_COUNT, &batch, sizeof batch));
    CHECK(cublasLtMatrixLayoutSetAttribute(l, LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    return l;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "stub") == 0) {
        printf("stub_status %d\n", cublasStrsm_v2());
        return 0;
    }
    cudaStream_t stream, got;
    cudaEvent_t ev[4];
    cublasHandle_t h;
    void *buf;
    float alpha = 1, beta = 0, ms[3];
    CHECK(cudaStreamCreateWithFlags(&stream, 1));       /* non-blocking: only our work is on it */
    for (int i = 0; i < 4; i++) CHECK(cudaEventCreate(&ev[i]));
    CHECK(cudaMalloc(&buf, 1 << 20));
    CHECK(cublasCreate_v2(&h));
    CHECK(cublasSetStream_v2(h, stream));
    CHECK(cublasGetStream_v2(h, &got));
    EXPECT(got == stream);

    /* Virtual time runs with the host's while the GPU is idle; a long product first keeps the
     * stream busy, so that the events below time device work only. */
    CHECK(cublasSgemm_v2(h, OP_N, OP_N, 8, 8, 8, &alpha, buf, 8, buf, 8, &beta, buf, 8));
    CHECK(cudaEventRecord(ev[0], stream));
    CHECK(cublasGemmEx(h, OP_T, OP_N, 32, 64, 128, &alpha, buf, R_16F, 128, buf, R_16F, 128, &beta,
                       buf, R_16F, 32, COMPUTE_32F, -1));
    CHECK(cublasGemmEx(h, OP_N, OP_N, 96, 16, 48, &alpha, buf, R_16BF, 96, buf, R_16BF, 48, &beta,
                       buf, R_16BF, 96, COMPUTE_32F, -1));
    /* An empty product launches nothing, as in cuBLAS. */
    CHECK(cublasGemmEx(h, OP_N, OP_N, 0, 16, 48, &alpha, buf, R_16BF, 1, buf, R_16BF, 48, &beta,
                       buf, R_16BF, 1, COMPUTE_32F, -1));
    EXPECT(cublasGemmEx(h, 7, OP_N, 8, 8, 8, &alpha, buf, R_16F, 8, buf, R_16F, 8, &beta,
                        buf, R_16F, 8, COMPUTE_32F, -1) == 7);
    CHECK(cudaEventRecord(ev[1], stream));
    CHECK(cublasGemmStridedBatchedEx(h, OP_N, OP_T, 16, 24, 40, &alpha, buf, R_16BF, 16, 16 * 40,
                                     buf, R_16BF, 24, 24 * 40, &beta, buf, R_16BF, 16, 16 * 24, 6,
                                     COMPUTE_32F, -1));
    CHECK(cudaEventRecord(ev[2], stream));

    /* cuBLASLt: D[48x20] = op(A) op(B) + bias with both operands transposed, 5 in a batch, on the
     * cuBLAS handle as torch does it. */
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulPreference_t pref;
    int32_t trans = OP_T, epilogue = EPILOGUE_BIAS, value32 = 0, batch = 5, returned = 0;
    uint64_t workspace = 1 << 20;
    size_t written = 0;
    CHECK(cublasLtMatmulDescCreate(&desc, COMPUTE_32F, R_32F));
    CHECK(cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, &trans, sizeof trans));
    CHECK(cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, &trans, sizeof trans));
    CHECK(cublasLtMatmulDescSetAttribute(desc, DESC_EPILOGUE, &epilogue, sizeof epilogue));
    CHECK(cublasLtMatmulDescSetAttribute(desc, DESC_BIAS_POINTER, &buf, sizeof buf));
    EXPECT(cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, &workspace, sizeof workspace) == 7);
    CHECK(cublasLtMatmulDescGetAttribute(desc, DESC_EPILOGUE, &value32, sizeof value32, &written));
    EXPECT(value32 == EPILOGUE_BIAS && written == 4);
    CHECK(cublasLtMatmulDescGetAttribute(desc, DESC_TRANSB, &value32, sizeof value32, &written));
    EXPECT(value32 == OP_T);
    CHECK(cublasLtMatmulDescGetAttribute(desc, DESC_BIAS_POINTER, NULL, 0, &written));
    EXPECT(written == sizeof(void *));
    cublasLtMatrixLayout_t a = layout(R_16BF, 72, 48, batch), b = layout(R_16BF, 20, 72, batch),
                           d = layout(R_16BF, 48, 20, batch), wrong = layout(R_16BF, 20, 71, batch);
    CHECK(cublasLtMatrixLayoutGetAttribute(d, LAYOUT_BATCH_COUNT, &value32, sizeof value32, &written));
    EXPECT(value32 == batch);
    CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CHECK(cublasLtMatmulPreferenceSetAttribute(pref, PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace));
    cublasLtMatmulHeuristicResult_t result;
    memset(&result, 0xff, sizeof result);
    CHECK(cublasLtMatmulAlgoGetHeuristic(h, desc, a, b, d, d, pref, 1, &result, &returned));
    EXPECT(returned == 1 && result.state == 0 && result.workspaceSize == 0 && result.wavesCount == 1.0f);
    CHECK(cublasLtMatmul(h, desc, &alpha, buf, a, buf, b, &beta, buf, d, buf, d, &result.algo, buf,
                         workspace, stream));
    /* Shapes that do not agree (op(B) is 71 x 20 where k is 72) are refused and charge nothing. */
    EXPECT(cublasLtMatmul(h, desc, &alpha, buf, a, buf, wrong, &beta, buf, d, buf, d, &result.algo, buf,
                          workspace, stream) == 7);
    CHECK(cudaEventRecord(ev[3], stream));
    CHECK(cudaEventSynchronize(ev[3]));
    for (int i = 0; i < 3; i++) CHECK(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]));

    CHECK(cublasLtMatrixLayoutDestroy(a));
    CHECK(cublasLtMatrixLayoutDestroy(b));
    CHECK(cublasLtMatrixLayoutDestroy(d));
    CHECK(cublasLtMatrixLayoutDestroy(wrong));
    CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CHECK(cublasLtMatmulDescDestroy(desc));
    CHECK(cublasDestroy_v2(h));
    printf("gemm_ex_ms %.6f\nstrided_ms %.6f\nlt_ms %.6f\n", ms[0], ms[1], ms[2]);
    printf("lt_version %zu\ncudart_version %zu\nstatus_name %s\n", cublasLtGetVersion(),
           cublasGetCudartVersion(), cublasGetStatusName(15));
    return 0;
}
"""

RULES = """gemm cublasGemmEx 0.002
gemm cublasGemmStridedBatchedEx 0.0005
gemm cublasLtMatmul 0.003
gemm * 1.0
"""


@pytest.fixture(scope="module")
def program(libdir, tmp_path_factory):  # noqa: F811  (libdir is the imported fixture)
    folder = tmp_path_factory.mktemp("cublas")
    source = folder / "cublas_checks.c"
    source.write_text(PROGRAM)
    binary = folder / "cublas_checks"
    proc = subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", str(source), "-o", str(binary),
                           f"-L{libdir}", "-l:libcudart.so.13", f"-Wl,-rpath,{libdir}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return binary


def test_products_are_charged_with_their_shapes(program):
    proc, trace = run_on_vgpu([program], predictor_rules=RULES, check=True)
    launched = [(r["name"], r["m"], r["n"], r["k"], r["batch"], r["seconds"], r["device"])
                for r in trace if r["kind"] == "gemm"]
    assert launched == [
        ("cublasSgemm_v2", 8, 8, 8, 1, 1.0, 0),
        ("cublasGemmEx", 32, 64, 128, 1, 0.002, 0),
        ("cublasGemmEx", 96, 16, 48, 1, 0.002, 0),
        ("cublasGemmStridedBatchedEx", 16, 24, 40, 6, 0.0005, 0),
        ("cublasLtMatmul", 48, 20, 72, 5, 0.003, 0),
    ]
    # One after the other on the handle's stream.
    gemms = [r for r in trace if r["kind"] == "gemm"]
    for before, after in zip(gemms, gemms[1:]):
        assert after["start"] == pytest.approx(before["start"] + before["seconds"], abs=1e-9)
    seen = parse_keys(proc.stdout)
    assert float(seen["gemm_ex_ms"]) == pytest.approx(4.0, abs=1e-4)
    assert float(seen["strided_ms"]) == pytest.approx(0.5, abs=1e-4)
    assert float(seen["lt_ms"]) == pytest.approx(3.0, abs=1e-4)
    assert seen["lt_version"] == "130101" and seen["cudart_version"] == "13000"
    assert seen["status_name"] == "CUBLAS_STATUS_NOT_SUPPORTED"


def test_unimplemented_entry_point_names_itself(program):
    proc, trace = run_on_vgpu([program, "stub"], check=True)
    assert parse_keys(proc.stdout)["stub_status"] == "15"      # CUBLAS_STATUS_NOT_SUPPORTED
    assert "cublasStrsm_v2" in proc.stderr
    assert not trace


# torch 2.14 in the vllm env: what its matmuls hand cuBLAS. torch is row-major and cuBLAS
# column-major, so (64x128) @ (128x32) arrives as m=32, n=64, k=128.
TORCH_PROGRAM = r"""
import torch, torch.nn.functional as F
a = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
b = torch.randn(128, 32, device="cuda", dtype=torch.bfloat16)
a @ b
a.half() @ b.half()
a.float() @ b.float()
torch.bmm(torch.randn(8, 64, 128, device="cuda", dtype=torch.bfloat16),
          torch.randn(8, 128, 32, device="cuda", dtype=torch.bfloat16))
w = torch.randn(256, 128, device="cuda", dtype=torch.bfloat16)
F.linear(a, w, torch.randn(256, device="cuda", dtype=torch.bfloat16))
torch.cuda.synchronize()
"""


def test_torch_matmuls_reach_cublas(tmp_path):
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    _, trace = run_on_vgpu([env_python("vllm"), "-c", TORCH_PROGRAM], timeout=300, check=True)
    assert [(r["name"], r["m"], r["n"], r["k"], r["batch"]) for r in trace if r["kind"] == "gemm"] == [
        ("cublasGemmEx", 32, 64, 128, 1),                   # bf16
        ("cublasGemmEx", 32, 64, 128, 1),                   # fp16
        ("cublasSgemm_v2", 32, 64, 128, 1),                 # fp32
        ("cublasGemmStridedBatchedEx", 32, 64, 128, 8),     # bmm
        ("cublasLtMatmul", 256, 64, 128, 1),                # linear with bias: the bias epilogue
    ]
