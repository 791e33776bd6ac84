"""The deployment module's own contract: what a run folder holds, what its worker answers for a
configuration refused before launch, and which environment a real-GPU run gets. Serving itself is
covered by the engines' end-to-end tests (test_run_vllm.py, test_run_sglang.py, test_validate.py)."""
from __future__ import annotations

import subprocess
import sys

from emulator import deployment
from emulator.deployment import RunConfig, RunSummary
from emulator.engines.adapter import ServingKnobs
from emulator.paths import REPO

WORKLOAD = {"num_requests": 4, "seed": 0, "arrival": {"process": "poisson", "rate": 2.0},
            "prompt_len": {"kind": "fixed", "value": 32}, "output_len": {"kind": "fixed", "value": 4}}


def test_a_run_config_reads_back_as_written(tmp_path):
    config = RunConfig(model="tiny_llama", sku="h100", knobs=ServingKnobs(tensor_parallel=2, max_num_seqs=8),
                       workload=WORKLOAD, engine="sglang", slos_ms={"ttft": 100.0}, timeout_s=60.0, cpu_scale=0.7,
                       server_host_cpu={"seconds": 0.04}, server_args=("--cudnn-attention", "off"),
                       launch_trace=True)
    config.write(tmp_path / deployment.CONFIG_FILE)
    assert RunConfig.read(tmp_path / deployment.CONFIG_FILE) == config


def test_a_summary_reads_back_and_ignores_keys_it_does_not_know(tmp_path):
    summary = RunSummary(config={"model": "tiny_llama"}, metrics={"completed": 4}, wall_seconds=3.0,
                         startup_wall_seconds=2.0, serving_wall_seconds=1.0, virtual_seconds=0.5,
                         gpu_time_by_family=[{"family": "gemm", "launches": 10}])
    summary.write(tmp_path)
    assert RunSummary.read(tmp_path) == summary
    text = (tmp_path / deployment.SUMMARY_FILE).read_text().replace('"metrics"', '"from_a_later_version": 1, "metrics"')
    (tmp_path / deployment.SUMMARY_FILE).write_text(text)
    assert RunSummary.read(tmp_path) == summary


def _worker(run_dir):
    return subprocess.run([sys.executable, "-m", "emulator.deployment", str(run_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_worker_refuses_a_configuration_that_cannot_fit_before_starting_anything(tmp_path):
    # Llama-3.1-70B in bf16 on one H100: the weights alone exceed its memory.
    RunConfig(model="llama3_70b", sku="h100", knobs=ServingKnobs(), workload=WORKLOAD).write(
        tmp_path / deployment.CONFIG_FILE)
    done = _worker(tmp_path)
    assert done.returncode == deployment.REFUSED
    reason = [line for line in done.stderr.splitlines() if line.startswith("revati-tune: ")][-1]
    assert "tensor_parallel" in reason
    assert not (tmp_path / "server.log").exists() and not (tmp_path / "processes.json").exists()


def test_the_worker_names_an_unknown_model_and_the_known_ones(tmp_path):
    RunConfig(model="no_such_model", sku="h100", knobs=ServingKnobs(), workload=WORKLOAD).write(
        tmp_path / deployment.CONFIG_FILE)
    done = _worker(tmp_path)
    assert done.returncode == deployment.REFUSED
    assert "no_such_model" in done.stderr and "tiny_llama" in done.stderr


def test_a_real_gpu_run_inherits_nothing_that_puts_it_on_virtual_gpus(monkeypatch):
    for name in ("LD_PRELOAD", "REVATI_PREDICTOR", "REVATI_TK_ADDRESS", "REVATI_VGPU_SPEC", "VLLM_NCCL_SO_PATH"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("HF_HOME", "/data/hf")
    env = deployment.plain_environment()
    assert not {"LD_PRELOAD", "REVATI_PREDICTOR", "REVATI_TK_ADDRESS", "REVATI_VGPU_SPEC", "VLLM_NCCL_SO_PATH"} & set(env)
    assert env["HF_HOME"] == "/data/hf"


def test_a_run_reports_the_catch_ups_of_its_serving_not_of_its_start_up(tmp_path):
    """_CatchUpsAtServing reads the statistics when the server takes load; the summary's catch_ups
    are what came after."""
    from emulator.predictor.attribution import read_stats
    seen = []
    watch = deployment._CatchUpsAtServing(tmp_path, lambda virtual_s, serving: seen.append(serving))
    stats = tmp_path / "stats-1.csv"
    stats.write_text("kind,name,count,seconds\ncatch_up,unseen_sleep,40,90.0\n")    # start-up's
    watch(1.0, False)
    watch(2.0, True)
    stats.write_text("kind,name,count,seconds\ncatch_up,unseen_sleep,45,90.5\ncatch_up,unnamed_channel,2,0.01\n")
    watch(3.0, True)
    assert seen == [False, True, True]
    since = {row["name"]: (row["events"], row["seconds"]) for row in watch.since(read_stats([stats]))}
    assert since["unseen_sleep"][0] == 5 and abs(since["unseen_sleep"][1] - 0.5) < 1e-9
    assert since["unnamed_channel"] == (2, 0.01)
