"""cuDNN on virtual GPUs (emulator/vgpu/api/cudnn.c), fast tier: the backend API called directly, torch's
SDPA with its default backends (which picks cuDNN on Hopper), convolutions, and the legacy entry
points that are not implemented failing by name."""
import json
import re
import sys
from pathlib import Path

import pytest

from emulator.engines.envs import env_python, is_ready
from timekeeper_fixtures import run_deployment
from vgpu_fixtures import libdir, run_on_vgpu  # noqa: F401  (libdir: a session fixture)

PROGRAMS = Path(__file__).parent / "vgpu_programs"
# Fixed charges: GEMMs 10 ms (they keep streams busy while events are recorded), cuDNN's attention
# 1 ms, everything else nothing, so event times measure the attention launches alone.
RULES = "kernel * 0\ngemm * 0.01\ncopy * 0\nmemset * 0\nattention * 0.001\n"
CUDNN_VERSION = 92400       # the cuDNN torch 2.14 was built against (9.24.0)


@pytest.fixture(scope="module")
def engine_python():
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    return str(env_python("vllm"))


def test_backend_api_builds_and_executes_a_matmul_graph(libdir):
    proc, rows = run_on_vgpu([sys.executable, PROGRAMS / "cudnn_backend.py"], predictor_rules="gemm cudnn_matmul 0.003\n",
                             check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["version"] == CUDNN_VERSION
    assert (seen["engine_count"], seen["configs"], seen["engine_index"], seen["numerical_notes"]) == (1, 1, 0, 0)
    assert seen["wrong_type_status"] == 2010            # CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE
    assert seen["workspace"] == 0 and seen["execute"] == [0, 0]
    # Each execution is the product, charged as cuBLAS would see it: m = N, n = M (column-major).
    launches = [(r["kind"], r["name"], r["m"], r["n"], r["k"], r["batch"], r["seconds"]) for r in rows
                if r["name"].startswith("cudnn")]
    assert launches == [("gemm", "cudnn_matmul", 32, 64, 128, 1, 0.003)] * 2
    # A graph the library cannot charge has no engine, and says why.
    assert (seen["moe_engine_count"], seen["moe_configs"]) == (0, 0)
    assert "heuristics offer no engine for an operation graph holding a MoE grouped matmul" in proc.stderr


def test_torch_sdpa_with_default_backends_runs_on_cudnn(engine_python, libdir):
    proc, rows = run_on_vgpu([engine_python, PROGRAMS / "torch_cudnn_sdpa.py"], predictor_rules=RULES, check=True)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["cudnn_available"] and seen["cudnn_sdp_enabled"]
    assert seen["cudnn_version"] == CUDNN_VERSION and seen["compiled_version"] == [9, 24, 0]
    assert seen["handle"] == {"statuses": [0, 0, 0, 0], "stream_kept": True}
    assert seen["shapes"] == {"prefill_512": [1, 16, 512, 128], "prefill_2048": [1, 16, 2048, 128],
                              "decode_512": [8, 16, 1, 128], "decode_2048": [8, 16, 1, 128],
                              "decode_gqa": [4, 32, 1, 128]}
    # One cuDNN attention launch per call, on the stream the handle is bound to.
    assert seen["ms"] == {"prefill_512": 1.0, "prefill_2048": 1.0, "decode_512": 1.0, "decode_2048": 1.0,
                          "side_stream": 1.0, "default_while_side_runs": 0.0}
    # The cuDNN path was taken, with the shapes decoded from its graph (m: query rows, n: keys,
    # k: head dim, batch: batch x heads); no other attention kernel ran.
    attention = {(r["name"], r["m"], r["n"], r["k"], r["batch"]) for r in rows if r["kind"] == "attention"}
    assert attention == {("cudnn_sdpa_fwd", 512, 512, 128, 16), ("cudnn_sdpa_fwd", 2048, 2048, 128, 16),
                         ("cudnn_sdpa_fwd", 1, 512, 128, 128), ("cudnn_sdpa_fwd", 1, 2048, 128, 128),
                         ("cudnn_sdpa_fwd", 1, 1024, 128, 128)}
    assert not [r["name"] for r in rows if re.search(r"flash|fmha|attention", r["name"]) and r["kind"] == "kernel"]


def test_cudnn_attention_is_charged_as_flash_attention_on_its_shape(engine_python, libdir):
    from emulator.predictor import native
    from emulator.predictor.modelfile import ensure_model_file
    model = ensure_model_file("h100")
    proc, rows = run_on_vgpu([engine_python, PROGRAMS / "torch_cudnn_sdpa.py"],
                             env={"REVATI_PREDICTOR": f"profiled:{model}", "REVATI_VGPU_LOG": "1"}, check=True)
    seconds = {(r["m"], r["n"]): r["seconds"] for r in rows if r["name"] == "cudnn_sdpa_fwd" and r["batch"] != 128}
    decode = {r["n"]: r["seconds"] for r in rows if r["name"] == "cudnn_sdpa_fwd" and r["batch"] == 128 and r["m"] == 1}
    # More work costs clearly more: 4x the keys of a decode, 4x the prompt of a causal prefill.
    assert decode[2048] > 1.5 * decode[512]
    assert seconds[(2048, 2048)] > 4 * seconds[(512, 512)]
    # Exactly what the predictor gives SDPA's FlashAttention on the same batch (the trace has 9 decimals).
    flash = lambda seqs, q, k, heads, kv_heads: native.attention_seconds(model, "sdpa_flash", seqs, q, k, heads,
                                                                          kv_heads, 128)
    assert seconds[(512, 512)] == pytest.approx(flash(1, 512, 512, 16, 16), abs=1e-9)
    assert decode[2048] == pytest.approx(flash(8, 1, 2048, 16, 16), abs=1e-9)
    # Grouped K/V heads reach the predictor as such (the trace has no column for them).
    assert "cudnn_sdpa_fwd b=4 h=32/8 s_q=1 s_kv=1024 d=128 causal=0" in proc.stderr
    assert "cudnn_sdpa_fwd b=1 h=16/16 s_q=2048 s_kv=2048 d=128 causal=1" in proc.stderr


CONV_PROGRAM = """
import torch
print(torch.backends.cudnn.is_available(), torch.backends.cudnn.version(), flush=True)
conv = torch.nn.Conv2d(64, 128, 3, padding=1, device="cuda", dtype=torch.bfloat16)
with torch.no_grad():
    y = conv(torch.empty(8, 64, 56, 56, device="cuda", dtype=torch.bfloat16))
grouped = torch.nn.Conv2d(32, 64, 3, groups=4, device="cuda", dtype=torch.float16)
x = torch.zeros(2, 32, 16, 16, device="cuda", dtype=torch.float16, requires_grad=True)
grouped(x).sum().backward()
torch.cuda.synchronize()
print(tuple(y.shape), tuple(x.grad.shape), flush=True)
# Leave without the interpreter's teardown, where torch races itself: autograd's device thread drops
# its last GraphTask reference (a Python decref, taking the GIL) while the main thread finalizes
# Python, and the thread's pthread_exit unwinds through a noexcept frame: "terminate called without
# an active exception" (core dump, 2026-12-06: 3 runs in 12 on a loaded host; the decref guard is
# pytorch/pytorch#190489's). A real GPU's synchronize gives that thread time; a virtual one's does not.
import os; os._exit(0)
"""


def test_cudnn_reports_its_version_and_convolutions_run(engine_python, libdir):
    proc, rows = run_on_vgpu([engine_python, "-c", CONV_PROGRAM], check=True)
    assert proc.stdout.splitlines()[:2] == [f"True {CUDNN_VERSION}", "(8, 128, 56, 56) (2, 32, 16, 16)"]
    # Each convolution is the implicit GEMM it computes: m output channels (per group), n positions,
    # k the reduction (input channels per group x window), groups as the batch.
    convs = [(r["name"], r["m"], r["n"], r["k"], r["batch"]) for r in rows if r["name"].startswith("cudnn_conv")]
    assert convs == [("cudnn_conv_fprop", 128, 8 * 56 * 56, 64 * 9, 1), ("cudnn_conv_fprop", 16, 2 * 14 * 14, 8 * 9, 4),
                     ("cudnn_conv_dgrad", 8, 2 * 16 * 16, 16 * 9, 4), ("cudnn_conv_wgrad", 16, 8 * 9, 2 * 14 * 14, 4)]


def test_legacy_entry_points_fail_naming_themselves(engine_python, libdir):
    program = "import torch; torch.nn.LSTM(32, 64).cuda()"
    proc, _ = run_on_vgpu([engine_python, "-c", program])
    assert proc.returncode != 0
    assert re.search(r"vgpu: cudnn\w+ is not implemented by the vGPU library \(returning error 3000\)", proc.stderr)
    assert "CUDNN_STATUS_NOT_SUPPORTED" in proc.stderr


def test_a_cudnn_graph_build_charges_the_host_time_measured_for_it(engine_python, libdir, tmp_path):
    """A model file whose host_cost records say a first build takes 50 ms of host time and a new
    shape 20 ms: under a Timekeeper, torch's calls take that much longer in virtual time when they
    build a graph (and not when torch's cache has it), and the stats name what was charged."""
    from emulator.predictor.modelfile import ensure_model_file
    model = tmp_path / "h100.model"
    model.write_text(ensure_model_file("h100").read_text()
                     + "host_cost cudnn_attention_graph_first 0.05\nhost_cost cudnn_attention_graph 0.02\n")
    result = run_deployment([[engine_python, PROGRAMS / "cudnn_graph_builds.py"]],
                            env={"REVATI_PREDICTOR": f"profiled:{model}"})
    (proc,), rows = result.processes, result.trace
    assert proc.returncode == 0, proc.stderr[-3000:]
    ms = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 50 <= ms["decode_first"] < 60 and 50 <= ms["prefill_first"] < 60
    assert 20 <= ms["decode_new_shape"] < 30 and 20 <= ms["prefill_new_shape"] < 30
    assert ms["decode_cached"] < 10
    charged = [(r["name"], r["seconds"]) for r in rows if r["kind"] == "host_work"]
    assert charged == [("cudnn_attention_graph_first", 0.05), ("cudnn_attention_graph", 0.02)] * 2


MASKED_PROGRAM = """
import torch
import torch.nn.functional as F
# transformers' continuous batching: one packed sequence, an additive bf16 mask sliced from a
# larger buffer, K/V at the query heads; then the same call without a mask.
buffer = torch.zeros(1, 1, 64, 4800 + 64, device="cuda", dtype=torch.bfloat16)
q = torch.randn(1, 32, 16, 128, device="cuda", dtype=torch.bfloat16)
k, v = (torch.randn(1, 32, 4800, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
F.scaled_dot_product_attention(q, k, v, attn_mask=buffer[..., :16, :4800])
F.scaled_dot_product_attention(q, k, v)
torch.cuda.synchronize()
"""


def test_a_masked_cudnn_attention_is_charged_by_cudnns_measured_kernel(engine_python, libdir):
    from emulator.predictor import native
    from emulator.predictor.modelfile import ensure_model_file
    model = ensure_model_file("h100")
    proc, rows = run_on_vgpu([engine_python, "-c", MASKED_PROGRAM],
                             env={"REVATI_PREDICTOR": f"profiled:{model}", "REVATI_VGPU_LOG": "1"}, check=True)
    assert "cudnn_sdpa_fwd b=1 h=32/32 s_q=16 s_kv=4800 d=128 causal=0 masked=1" in proc.stderr
    assert "cudnn_sdpa_fwd b=1 h=32/32 s_q=16 s_kv=4800 d=128 causal=0 masked=0" in proc.stderr
    masked, unmasked = [r["seconds"] for r in rows if r["name"] == "cudnn_sdpa_fwd"]
    assert masked == pytest.approx(native.cudnn_attention_seconds(model, 1, 32, 16, 4800, 128, False, True), abs=1e-9)
    assert unmasked == pytest.approx(native.attention_seconds(model, "sdpa_flash", 1, 16, 4800, 32, 32, 128), abs=1e-9)
    assert masked > 3 * unmasked       # the masked kernel is the slow one: 152-171 us at this shape (cudnn_graphs.csv)


def test_every_launch_charges_the_runtimes_host_work(engine_python, libdir, tmp_path):
    """A model file whose host_cost launch record says the CUDA runtime spends 1 ms of host time
    queueing a launch: 100 eager kernel launches take at least 100 ms of virtual time on the
    launching thread, where they take a few without the record."""
    from emulator.predictor.modelfile import ensure_model_file
    base = "".join(line + "\n" for line in ensure_model_file("h100").read_text().splitlines()
                   if not line.startswith("host_cost launch"))
    program = ("import json, time, torch\nx = torch.ones(16, device='cuda')\ntorch.cuda.synchronize()\n"
               "t = time.perf_counter()\nfor _ in range(100):\n    x.add_(1)\n"
               "print(json.dumps(time.perf_counter() - t))\n")
    elapsed = {}
    for name, extra, scale in (("charged", "host_cost launch 0.001\n", "1"), ("free", "", "1"),
                               ("slower_host", "host_cost launch 0.001\n", "2"),
                               ("half_fixed", "host_cost launch 0.001 0.0005\n", "2")):
        model = tmp_path / f"{name}.model"
        model.write_text(base + extra)
        result = run_deployment([[engine_python, "-c", program]],
                                env={"REVATI_PREDICTOR": f"profiled:{model}", "REVATI_HOST_WORK_SCALE": scale})
        (proc,) = result.processes
        assert proc.returncode == 0, proc.stderr[-3000:]
        elapsed[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0.1 <= elapsed["charged"] < 0.15 and elapsed["free"] < 0.05
    # A server host measured twice as slow during the real runs (validate) charges twice the work,
    # or twice the part of it that scales with the host's speed.
    assert 0.2 <= elapsed["slower_host"] < 0.25 and 0.15 <= elapsed["half_fixed"] < 0.2
