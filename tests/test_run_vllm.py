"""`revati-tune run` end to end: the real vLLM 0.33 server on a virtual H200 serving a Poisson
workload in virtual time (end-to-end tier: about a minute and a half on 2 cores)."""
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from autotune import cli
from emulator.engines.adapter import ServingKnobs
from emulator.engines.envs import is_ready
from emulator.process_groups import group_alive
from emulator.deployment import RunConfig, RunFailed, serve

WORKLOAD = {"num_requests": 12, "seed": 1, "arrival": {"process": "poisson", "rate": 6.0, "burstiness": 1.0},
            "prompt_len": {"kind": "uniform", "low": 64, "high": 256}, "output_len": {"kind": "fixed", "value": 12},
            "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 1200.0}


@pytest.mark.e2e
def test_vllm_serves_a_workload_on_virtual_gpus(tmp_path):
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(max_model_len=2048), workload=WORKLOAD,
                       slos_ms={"ttft": 1000.0, "tpot": 100.0}, timeout_s=600, launch_trace=True)
    summary = serve(config, tmp_path)
    m = summary.metrics
    assert (m["completed"], m["failed"]) == (12, 0)
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(requests) == 12 and (requests["output_tokens"] == 12).all()
    # Arrivals follow the schedule; every request is answered after it was sent.
    assert (requests["sent_s"] >= requests["arrival_s"]).all()
    assert (requests["first_token_s"] > requests["sent_s"]).all() and (requests["finish_s"] >= requests["first_token_s"]).all()
    assert 0 < m["mean_ttft_ms"] < 1000 and 0 < m["mean_tpot_ms"] < 100
    assert m["slo_attainment"] == 1.0 and m["request_goodput"] > 0
    families = {row["family"] for row in summary.gpu_time_by_family}
    assert {"gemm", "elementwise"} <= families
    # The launch trace: every launch of the engine's processes, on the virtual device, in virtual time.
    trace = pd.read_csv(tmp_path / "vgpu" / "trace.csv", low_memory=False)
    trace = trace[trace["kind"] != "kind"].astype({"start": float, "seconds": float})
    assert {"gemm", "kernel"} <= set(trace["kind"]) and set(trace["device"].astype(int)) == {0}
    assert (trace["seconds"] >= 0).all() and trace["start"].max() <= summary.virtual_seconds
    assert "VLLM_USE_V2_MODEL_RUNNER=0" in " ".join(summary.config["emulation_notes"])
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["completed"] == 12
    # Every port its processes listened on (its API server, ZeroMQ queues, torch.distributed's
    # store) is on loopback, and the run says nothing of an exposed one.
    listened = json.loads((tmp_path / "endpoints.json").read_text())
    assert listened and all(e["loopback"] for e in listened), listened
    assert not any("beyond loopback" in n for n in summary.config["emulation_notes"])
    assert _nothing_left(tmp_path)


def test_run_names_an_unknown_model(tmp_path, capsys):
    code = cli.main(["run", "conf/smoke.yaml", "model.name=llama9_1t", f"out={tmp_path}"])
    assert code == 2
    assert "conf/model/llama9_1t" in capsys.readouterr().err


@pytest.mark.parametrize("model,knobs,words", [
    ("llama3_70b", ServingKnobs(tensor_parallel=3), ["tensor_parallel=3", "64 attention heads", "[1, 2, 4, 8]"]),
    ("llama3_70b", ServingKnobs(tensor_parallel=1), ["131.4 GiB per GPU", "at least 2 GPUs"]),
    ("llama3_8b", ServingKnobs(tensor_parallel=16), ["16 GPUs per replica", "at most 8"]),
    ("tiny_llama", ServingKnobs(pipeline_parallel=4), ["pipeline_parallel=4", "2 layers"]),
])
def test_configurations_that_cannot_work_fail_before_launch(model, knobs, words, tmp_path):
    config = RunConfig(model=model, sku="h100", knobs=knobs, workload=WORKLOAD)
    with pytest.raises(ValueError) as error:
        serve(config, tmp_path)
    for word in words:
        assert word in str(error.value)
    assert not any(tmp_path.iterdir())          # nothing was started


def test_unknown_knobs_are_named():
    with pytest.raises(ValueError, match="unknown serving knob.*tensor_paralel"):
        ServingKnobs.from_dict({"tensor_paralel": 2})


def test_expert_parallelism_reaches_vllms_command_line_only_when_asked():
    from emulator.engines.vllm.adapter import VllmAdapter
    adapter = VllmAdapter()
    on = adapter.deploy_command("mistralai/Mixtral-8x7B-Instruct-v0.1",
                                adapter.knobs({"tensor_parallel_size": 2, "enable_expert_parallel": True}))
    assert on[-1] == "--enable-expert-parallel"
    for off in (False, None):       # vLLM's default is off: nothing to say
        assert "--enable-expert-parallel" not in adapter.deploy_command(
            "m", adapter.knobs({"enable_expert_parallel": off}))


@pytest.mark.parametrize("cpu_scale", [0, -1.0, float("nan")])
def test_a_cpu_scale_that_is_not_positive_is_refused_before_launch(cpu_scale, tmp_path):
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(), workload=WORKLOAD, cpu_scale=cpu_scale)
    with pytest.raises(ValueError, match="cpu_scale must be a positive number"):
        serve(config, tmp_path)
    assert not (tmp_path / "server.log").exists()


@pytest.mark.e2e
def test_a_crashing_engine_fails_the_run_with_its_log(tmp_path):
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(kv_cache_dtype="no_such_dtype"),
                       workload=WORKLOAD, timeout_s=300)
    with pytest.raises(RunFailed) as error:
        serve(config, tmp_path)
    assert "server exited with status" in str(error.value) and "no_such_dtype" in str(error.value)
    assert _nothing_left(tmp_path)


def _nothing_left(out) -> bool:
    sessions = json.loads((out / "processes.json").read_text())
    return not any(group_alive(pid) for pid in sessions.values())


@pytest.mark.e2e
def test_a_run_past_its_timeout_fails_and_leaves_nothing(tmp_path):
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(max_model_len=2048), workload=WORKLOAD,
                       timeout_s=20)
    with pytest.raises(RunFailed, match="watchdog"):
        serve(config, tmp_path)
    assert _nothing_left(tmp_path)


@pytest.mark.e2e
def test_ctrl_c_stops_the_run_and_leaves_nothing(tmp_path):
    command = [sys.executable, "-m", "autotune.cli", "run", "conf/smoke.yaml", f"out={tmp_path}"]
    cli_process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "pid=" not in _read(tmp_path / "server.log"):
        time.sleep(0.5)
    assert "pid=" in _read(tmp_path / "server.log"), "the server never started"
    cli_process.send_signal(signal.SIGINT)
    cli_process.wait(timeout=120)
    assert cli_process.returncode != 0
    assert _nothing_left(tmp_path)
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if str(tmp_path) in line]


def _read(path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.e2e
def test_prefix_caching_shortens_time_to_first_token_on_shared_prefixes(tmp_path):
    """Requests sharing a 1536-token prefix: with prefix caching vLLM prefills only the rest, so the
    emulated GPU work, and the TTFT, drop (the direction a real GPU shows)."""
    # Llama-3.1-8B: the tiny model's prefill is too little GPU work to show next to its CPU time.
    workload = {**WORKLOAD, "num_requests": 6, "arrival": {"process": "poisson", "rate": 2.0, "burstiness": 1.0},
                "prompt_len": {"kind": "fixed", "value": 1600}, "output_len": {"kind": "fixed", "value": 4},
                "shared_prefix": {"groups": 1, "prefix_len": 1536}}
    ttft = {}
    for caching in (True, False):
        config = RunConfig(model="llama3_8b", sku="h100", knobs=ServingKnobs(max_model_len=4096, prefix_caching=caching),
                           workload=workload, timeout_s=600)
        ttft[caching] = serve(config, tmp_path / str(caching)).metrics["median_ttft_ms"]
    print(f"median TTFT with prefix caching {ttft[True]:.2f} ms, without {ttft[False]:.2f} ms")
    assert ttft[True] < ttft[False], ttft


@pytest.mark.e2e
@pytest.mark.parametrize("tp,pp,cuda_graphs", [(8, 1, False), (1, 2, None)])
def test_tensor_and_pipeline_parallel_deployments_serve_fifty_requests(tp, pp, cuda_graphs, tmp_path):
    """TP8 (eight worker processes and their collectives) and PP2 (two stages passing activations)
    on the tiny model: every request served, every worker's GPU time accounted. TP8 runs eager: with
    CUDA graphs on (vLLM's default), eight workers compiling (Inductor, Triton JIT warmup) on two
    cores took 869 s of this test here; PP2 keeps the default, so graphs across workers are run."""
    workload = {**WORKLOAD, "num_requests": 50, "arrival": {"process": "poisson", "rate": 10.0, "burstiness": 1.0}}
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(tensor_parallel=tp, pipeline_parallel=pp,
                                                                         max_model_len=2048, cuda_graphs=cuda_graphs),
                       workload=workload, timeout_s=1200)
    summary = serve(config, tmp_path)
    assert (summary.metrics["completed"], summary.metrics["failed"]) == (50, 0)
    assert summary.config["knobs"]["tensor_parallel"] == tp and summary.config["knobs"]["pipeline_parallel"] == pp
    # One statistics file per engine process that ran kernels: every worker's time is counted.
    assert len(list((tmp_path / "vgpu").glob("stats-*.csv"))) >= tp * pp
    assert _nothing_left(tmp_path)


@pytest.mark.e2e
def test_smaller_prefill_chunks_shorten_the_longest_decode_gaps(tmp_path):
    """Chunked prefill: long prompts arriving while others decode. With small chunks
    (max_num_batched_tokens) a step carries a small slice of a prompt, so the decoding requests'
    worst inter-token gaps shrink; with large chunks a whole prompt lands in one step and stalls
    them. Llama-3.1-8B, where prefill GPU time dominates the step."""
    workload = {**WORKLOAD, "num_requests": 24, "arrival": {"process": "poisson", "rate": 4.0, "burstiness": 1.0},
                "prompt_len": {"kind": "uniform", "low": 3000, "high": 6000}, "output_len": {"kind": "fixed", "value": 48}}
    p99_itl = {}
    for chunk in (512, 8192):
        config = RunConfig(model="llama3_8b", sku="h100", knobs=ServingKnobs(max_model_len=8192, max_num_batched_tokens=chunk),
                           workload=workload, timeout_s=900)
        p99_itl[chunk] = serve(config, tmp_path / str(chunk)).metrics["p99_itl_ms"]
    print(f"p99 ITL with 512-token chunks {p99_itl[512]:.2f} ms, with 8192-token chunks {p99_itl[8192]:.2f} ms")
    assert p99_itl[512] < p99_itl[8192], p99_itl
