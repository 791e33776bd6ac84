"""`revati-tune validate`: scenario selection, the comparison table, the no-GPU refusal, and the
transformers reference engine serving a workload on a virtual GPU (end-to-end tier: ~20 s)."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autotune import cli, validate
from emulator.engines.adapter import ServingKnobs
from emulator.engines.hf_transformers import TransformersAdapter

REPO = Path(__file__).resolve().parent.parent


def test_selecting_a_scenario_runs_its_overloaded_scenario_first_unless_its_capacity_is_known():
    names = [s.name for s in validate.select(["llama3_2_1b-b16-light"])]
    assert names == ["llama3_2_1b-b16-overloaded", "llama3_2_1b-b16-light"]
    assert [s.name for s in validate.select(["llama3_2_1b-b16-light"], {("llama3_2_1b", 16): 10.0})] == \
        ["llama3_2_1b-b16-light"]
    assert len(validate.select(["all"])) == 12 and len(validate.select(["llama3_8b"])) == 6
    assert [s.load for s in validate.select(["llama3_8b-b64"])] == ["overloaded", "near", "light"]
    with pytest.raises(ValueError, match="unknown scenario 'llama3_2_1'"):
        validate.select(["llama3_2_1"])


def test_load_levels_are_fractions_of_the_measured_capacity():
    near = validate.SCENARIOS["llama3_8b-b16-near"]
    assert near.workload(10.0)["arrival"] == {"process": "poisson", "rate": 8.5}
    assert validate.SCENARIOS["llama3_8b-b16-light"].workload(10.0)["arrival"]["rate"] == 3.0
    assert validate.SCENARIOS["llama3_8b-b16-overloaded"].workload(None)["arrival"]["rate"] == "inf"
    with pytest.raises(ValueError, match="capacity"):
        near.workload(None)


def _metrics(scale: float) -> dict:
    values = {f"{p}_{m}_ms": scale * (i + 1) for i, m in enumerate(("ttft", "tpot", "itl", "e2el"))
              for p in ("mean", "median", "p90")}
    return {**values, "request_throughput": 2.0 * scale, "output_throughput": 100.0 * scale}


def test_comparison_rows_and_misses_by_tolerance(tmp_path):
    real = _metrics(1.0)
    emulated = {**_metrics(1.0), "mean_ttft_ms": 1.06, "median_tpot_ms": 2.0 * 0.96, "p90_itl_ms": 3.0 * 1.09,
                "p90_e2el_ms": 4.0 * 1.11, "request_throughput": 2.2}
    rows = validate.compare("s", real, emulated)
    assert len(rows) == 4 * 3 + 2
    by_key = {(r["metric"], r["stat"]): r for r in rows}
    assert by_key[("TTFT (ms)", "mean")]["rel_error"] == pytest.approx(0.06)
    assert by_key[("request_throughput (req/s)", "value")]["rel_error"] == pytest.approx(0.1)
    missed = {(r["metric"], r["stat"]) for r in validate.misses(rows)}
    # 6% on a mean and 11% on a p90 miss; 4% on a p50 and 9% on a p90 do not.
    assert missed == {("TTFT (ms)", "mean"), ("E2EL (ms)", "p90"), ("request_throughput (req/s)", "value")}
    runs = [{"scenario": "s", "rate": "inf", "real": {"wall_seconds": 10.0, "serving_wall_seconds": 5.0},
             "emulated": {"wall_seconds": 15.0, "serving_wall_seconds": 8.0, "virtual_seconds": 9.0}, "misses": 3}]
    validate.write_table(rows, runs, {"nvidia_smi_name": "NVIDIA H200"}, "revati-tune validate s", tmp_path / "t")
    with open(tmp_path / "t.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["scenario", "metric", "stat", "real", "emulated", "rel_error"]
    assert float(table[0]["rel_error"]) == pytest.approx(0.06)
    markdown = (tmp_path / "t.md").read_text()
    assert "| s | inf | 10.0 | 15.0 | 1.50 |" in markdown and markdown.count("% **MISS**") == 3


def test_the_transformers_adapter_maps_its_knobs_and_refuses_what_it_cannot_serve():
    adapter = TransformersAdapter()
    knobs = adapter.knobs({"max_requests_per_batch": 16, "max_batch_tokens": 4096, "use_cuda_graph": False})
    assert knobs == ServingKnobs(max_num_seqs=16, max_num_batched_tokens=4096, cuda_graphs=False)
    command = adapter.deploy_command("conf/model/llama3_2_1b", knobs)
    assert command[-6:] == ["--max-requests-per-batch", "16", "--max-batch-tokens", "4096", "--cuda-graphs", "off"]
    with pytest.raises(ValueError, match="one GPU"):
        adapter.deploy_command("m", ServingKnobs(tensor_parallel=2))
    with pytest.raises(ValueError, match="not a transformers"):
        adapter.knobs({"max_num_seqs": 4})


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
@pytest.mark.parametrize("entry", ["module", "cli"])
def test_validate_without_a_gpu_says_so_and_exits_non_zero(entry, capsys):
    if entry == "module":
        result = subprocess.run([sys.executable, "-m", "autotune.validate", "llama3_2_1b-b16-light"], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        status, stderr = result.returncode, result.stderr
    else:
        status, stderr = cli.main(["validate", "llama3_2_1b-b16-light"]), capsys.readouterr().err
    assert status == validate.NO_GPU_STATUS != 0
    assert "no real GPU on this machine" in stderr


def test_transformers_continuous_batching_serves_a_workload_on_a_virtual_gpu(tmp_path):
    """The emulated side of validate, for real: transformers' engine on a virtual H200 under the
    Timekeeper, driven by the load generator."""
    workload = {"num_requests": 6, "seed": 0, "arrival": {"process": "poisson", "rate": 20.0},
                "prompt_len": {"kind": "uniform", "low": 32, "high": 64}, "output_len": {"kind": "fixed", "value": 8},
                "ready_timeout_s": 600}
    summary = validate.serve(TransformersAdapter(), validate.MODELS / "tiny_llama",
                             ServingKnobs(max_num_seqs=4, max_num_batched_tokens=1024), workload, tmp_path,
                             emulated=True, sku="h200", timeout_s=300)
    m = summary["metrics"]
    assert (m["completed"], m["failed"], m["total_output_tokens"]) == (6, 0, 48)
    assert 0 < m["mean_ttft_ms"] < 1000 and 0 < m["mean_tpot_ms"] < 100
    families = {row["family"]: row["launches"] for row in summary["gpu_time_by_family"]}
    assert families.get("gemm", 0) > 0 and families.get("attention", 0) > 0
    server_log = (tmp_path / "server.log").read_text()
    assert "device NVIDIA H200" in server_log and "sdpa" in server_log
    records = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()[:-1]]
    # One SSE chunk per generated token: 8 chunks, 7 inter-token latencies per request.
    assert all(len(r["chunk_times"]) == 8 for r in records)
    assert summary["virtual_seconds"] > 0
