"""`revati-tune run` end to end: the real vLLM 0.33 server on a virtual H200 serving a Poisson
workload in virtual time (end-to-end tier: about a minute and a half on 2 cores)."""
import json

import pandas as pd
import pytest

from autotune import cli
from emulator.engines.adapter import ServingKnobs
from emulator.engines.envs import is_ready
from emulator.process_groups import group_alive
from emulator.run import RunConfig, run

WORKLOAD = {"num_requests": 12, "seed": 1, "arrival": {"process": "poisson", "rate": 6.0, "burstiness": 1.0},
            "prompt_len": {"kind": "uniform", "low": 64, "high": 256}, "output_len": {"kind": "fixed", "value": 12},
            "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 1200.0}


def test_vllm_serves_a_workload_on_virtual_gpus(tmp_path):
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(max_model_len=2048), workload=WORKLOAD,
                       slos_ms={"ttft": 1000.0, "tpot": 100.0}, timeout_s=600)
    summary = run(config, tmp_path)
    m = summary["metrics"]
    assert (m["completed"], m["failed"]) == (12, 0)
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(requests) == 12 and (requests["output_tokens"] == 12).all()
    # Arrivals follow the schedule; every request is answered after it was sent.
    assert (requests["sent_s"] >= requests["arrival_s"]).all()
    assert (requests["first_token_s"] > requests["sent_s"]).all() and (requests["finish_s"] >= requests["first_token_s"]).all()
    assert 0 < m["mean_ttft_ms"] < 1000 and 0 < m["mean_tpot_ms"] < 100
    assert m["slo_attainment"] == 1.0 and m["request_goodput"] > 0
    families = {row["family"] for row in summary["gpu_time_by_family"]}
    assert {"gemm", "elementwise"} <= families
    assert "VLLM_USE_V2_MODEL_RUNNER=0" in " ".join(summary["config"]["emulation_notes"])
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["completed"] == 12
    server_pid = int((tmp_path / "server.log").read_text().split("pid=")[1].split(")")[0])
    assert not group_alive(server_pid)      # nothing of the deployment is left


def test_run_names_an_unknown_model(tmp_path, capsys):
    code = cli.main(["run", "--model", "llama9_1t", "--sku", "h200", "--rate", "1", "--num-requests", "1",
                     "--prompt-len", "8", "--output-len", "2", "--out", str(tmp_path)])
    assert code == 2
    assert "conf/model/llama9_1t" in capsys.readouterr().err
