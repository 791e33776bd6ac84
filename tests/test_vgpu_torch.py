"""torch 2.14 (CUDA 13 build, in the vllm engine env) on virtual H100s, and vLLM's platform
detection: issue acceptance items 2, 4 and 7."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.engines.envs import env_python, is_ready
from emulator.hardware import load_sku
from emulator.vgpu_environment import vgpu_environment

PROGRAMS = Path(__file__).parent / "vgpu_programs"
H100 = load_sku("h100")


@pytest.fixture(scope="module")
def engine_python():
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    return str(env_python("vllm"))


def run(engine_python, args, tmp_path, gpus=2, rules="kernel * 0.001\ngemm * 0.002\n", extra_env=None):
    env = vgpu_environment(gpus, "h100", engine="vllm", workdir=tmp_path)
    (tmp_path / "rules").write_text(rules)
    env["REVATI_PREDICTOR"] = f"fixed:{tmp_path / 'rules'}"
    env.update(extra_env or {})
    proc = subprocess.run([engine_python, *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torch_sees_virtual_h100s(engine_python, tmp_path):
    proc = run(engine_python, [str(PROGRAMS / "torch_checks.py")], tmp_path)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["available"] and seen["count"] == 2
    assert seen["props"] == {"name": "NVIDIA H100 80GB HBM3", "total_memory": H100.memory_bytes,
                             "major": 9, "minor": 0, "sms": 132}
    assert seen["roundtrip_exact"] and seen["roundtrip_int64_exact"]
    assert seen["matmul_shapes"] == [[64, 32], [64, 32]]
    # Timing: every kernel is charged 1 ms and every GEMM 2 ms by the fixed predictor.
    assert seen["three_kernels_ms"] == pytest.approx(3.0, abs=1e-3)
    assert seen["matmul_fp16_ms"] == pytest.approx(2.0, abs=1e-3)
    assert seen["matmul_bf16_ms"] == pytest.approx(2.0, abs=1e-3)
    assert seen["graph_replay_ms"] == pytest.approx(3.0, abs=1e-3)
    assert seen["allocated_delta"] == 4 << 20
    assert seen["mem_total"] == H100.memory_bytes
    assert seen["mem_in_use"] == H100.context_memory_bytes + seen["torch_reserved"]




def test_triton_kernel_compiles_and_launches(engine_python, tmp_path):
    trace = tmp_path / "trace.csv"
    run(engine_python, [str(PROGRAMS / "triton_kernel.py")], tmp_path, gpus=1,
        extra_env={"REVATI_VGPU_TRACE": str(trace), "TRITON_CACHE_DIR": str(tmp_path / "triton")})
    rows = [line.split(",") for line in trace.read_text().splitlines()]
    launches = [r for r in rows if r[1] == "scale_kernel"]
    assert len(launches) == 1
    assert launches[0][5] == "4x1x1"       # grid as launched; block comes from num_warps


def test_vllm_selects_cuda_platform(engine_python, tmp_path):
    program = ("from vllm.platforms import current_platform as p; "
               "print(p.device_name, '|', p.get_device_name(0), '|', p.get_device_capability())")
    proc = run(engine_python, ["-c", program], tmp_path, gpus=1)
    assert "cuda | NVIDIA H100 80GB HBM3 | DeviceCapability(major=9, minor=0)" in proc.stdout
