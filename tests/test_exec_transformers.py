"""`revati-tune exec` of an unmodified transformers continuous-batching program on a virtual H100
(end-to-end tier: about 20 s on 2 cores). With default settings torch's SDPA picks its cuDNN backend
on Hopper, which the vGPU library implements (emulator/vgpu/api/cudnn.c): every request must generate
every token it asked for, and the attention time must be cuDNN's."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.engines.envs import is_ready

REPO = Path(__file__).resolve().parent.parent
PROGRAM = Path(__file__).resolve().parent / "vgpu_programs" / "transformers_generate_batch.py"

pytestmark = pytest.mark.e2e


def test_transformers_continuous_batching_runs_unmodified(tmp_path):
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    env = dict(os.environ, PYTHONPATH=str(REPO), REVATI_VGPU_STATS=str(tmp_path / "stats-%p.csv"))
    env.pop("REVATI_PREDICTOR", None)       # the profiled predictor, as a user's run gets it
    proc = subprocess.run([sys.executable, "-m", "autotune.cli", "exec", "--engine", "vllm", "--gpus", "1",
                           "--sku", "h100", "--", "python3", str(PROGRAM)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["attn_implementation"] == "sdpa" and seen["cudnn_sdp_enabled"]
    assert seen["requests"] == 6 and seen["errors"] == []
    assert seen["generated"] == [seen["max_new_tokens"]] * 6
    assert "CUDNN_STATUS" not in proc.stderr and "not implemented by the vGPU library" not in proc.stderr
    rows = [row for path in tmp_path.glob("stats-*.csv") for row in csv.DictReader(path.open())]
    attention = [row for row in rows if row["kind"] == "attention"]
    assert {row["name"] for row in attention} == {"cudnn_sdpa_fwd"}
    assert sum(int(row["count"]) for row in attention) >= 2 * seen["max_new_tokens"]   # 2 layers, every step
    assert sum(float(row["seconds"]) for row in attention) > 0
