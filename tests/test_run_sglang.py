"""`revati-tune run` with SGLang 0.5.23: the real SGLang server on a virtual H200 serving a Poisson
workload in virtual time through its native /generate API (end-to-end tier)."""
import json

import pandas as pd
import pytest

from emulator.engines.adapter import ServingKnobs
from emulator.engines.envs import is_ready
from emulator.engines.sglang.adapter import SglangAdapter
from emulator.process_groups import group_alive
from emulator.deployment import RunConfig, serve

WORKLOAD = {"num_requests": 12, "seed": 1, "arrival": {"process": "poisson", "rate": 6.0, "burstiness": 1.0},
            "prompt_len": {"kind": "uniform", "low": 64, "high": 256}, "output_len": {"kind": "fixed", "value": 12},
            "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 1200.0}


@pytest.fixture(scope="module", autouse=True)
def sglang_env():
    if not is_ready("sglang"):
        pytest.fail("the sglang engine env is not set up: run `revati-tune setup sglang`")


@pytest.mark.e2e
def test_sglang_serves_a_workload_on_virtual_gpus(tmp_path):
    config = RunConfig(model="tiny_llama", sku="h200", engine="sglang", knobs=ServingKnobs(max_model_len=2048),
                       workload=WORKLOAD, slos_ms={"ttft": 1000.0, "tpot": 100.0}, timeout_s=900)
    summary = serve(config, tmp_path)
    m = summary.metrics
    assert (m["completed"], m["failed"]) == (12, 0)
    requests = pd.read_parquet(tmp_path / "requests.parquet")
    assert len(requests) == 12 and (requests["output_tokens"] == 12).all()
    assert (requests["first_token_s"] > requests["sent_s"]).all() and (requests["finish_s"] >= requests["first_token_s"]).all()
    # One timestamp per chunk; a chunk carries the tokens made since the last one the server sent
    # (SGLang's tokenizer manager merges steps a client has not read yet).
    assert requests["chunk_times"].map(len).between(2, 12).all()
    assert 0 < m["mean_ttft_ms"] < 1000 and 0 < m["mean_tpot_ms"] < 100
    families = {row["family"] for row in summary.gpu_time_by_family}
    # GEMMs through cuBLAS, RMSNorm from FlashInfer's CuTe DSL kernels (the vGPU's CuTe DSL runtime).
    assert {"gemm", "norm", "attention"} <= families
    assert summary.config["server_command"][:2] == ["sglang", "serve"]
    assert any("/generate" in note for note in summary.config["emulation_notes"])
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["completed"] == 12
    processes = json.loads((tmp_path / "processes.json").read_text())
    assert not any(group_alive(pid) for pid in processes.values())


@pytest.mark.e2e
def test_the_radix_cache_shortens_time_to_first_token_on_shared_prefixes(tmp_path):
    """Requests sharing a 1536-token prefix: with its radix cache SGLang prefills only the rest, so the
    emulated GPU work, and the TTFT, drop (the direction a real GPU shows). Llama-3.1-8B, as vLLM's
    prefix caching test."""
    workload = {**WORKLOAD, "num_requests": 6, "arrival": {"process": "poisson", "rate": 2.0, "burstiness": 1.0},
                "prompt_len": {"kind": "fixed", "value": 1600}, "output_len": {"kind": "fixed", "value": 4},
                "shared_prefix": {"groups": 1, "prefix_len": 1536}}
    ttft = {}
    for caching in (True, False):
        config = RunConfig(model="llama3_8b", sku="h100", engine="sglang",
                           knobs=ServingKnobs(max_model_len=4096, prefix_caching=caching), workload=workload, timeout_s=900)
        ttft[caching] = serve(config, tmp_path / str(caching)).metrics["median_ttft_ms"]
    print(f"median TTFT with the radix cache {ttft[True]:.2f} ms, without {ttft[False]:.2f} ms")
    assert ttft[True] < ttft[False], ttft


@pytest.mark.e2e
def test_sglang_tensor_parallel_serves_with_its_collectives(tmp_path):
    """TP2: two scheduler ranks, their NCCL communicators (the vGPU library's, named by
    SGLANG_NCCL_SO_PATH) and torch's VMM handle sharing. The tiny model's KV cache is capped: left to
    fill an H200 it holds 263M tokens, and SGLang's per-token buffers then no longer fit (as they
    would not on a real H200)."""
    config = RunConfig(model="tiny_llama", sku="h200", engine="sglang", workload=WORKLOAD, timeout_s=900,
                       knobs=ServingKnobs(tensor_parallel=2, max_model_len=2048, max_total_tokens=1_000_000))
    summary = serve(config, tmp_path)
    assert (summary.metrics["completed"], summary.metrics["failed"]) == (12, 0)
    assert "collective" in {row["family"] for row in summary.gpu_time_by_family}
    assert len(list((tmp_path / "vgpu").glob("stats-*.csv"))) >= 2
    # Its ranks' ports (ZeroMQ, torch.distributed's store, NCCL's bootstrap) are on loopback only.
    listened = json.loads((tmp_path / "endpoints.json").read_text())
    assert listened and all(e["loopback"] for e in listened), listened


@pytest.mark.parametrize("args, flags", [
    ({"tp_size": 2, "chunked_prefill_size": 4096, "disable_radix_cache": True, "schedule_policy": "lpm"},
     ["--tp-size", "2", "--chunked-prefill-size", "4096", "--schedule-policy", "lpm", "--disable-radix-cache"]),
    ({"chunked_prefill_size": -1, "disable_cuda_graph": True, "mem_fraction_static": 0.8},
     ["--chunked-prefill-size", "-1", "--mem-fraction-static", "0.8", "--disable-cuda-graph"]),
    ({"disable_radix_cache": False, "max_total_tokens": 50000}, ["--max-total-tokens", "50000"]),
])
def test_sglang_arguments_reach_its_command_line(args, flags, tmp_path):
    adapter = SglangAdapter()
    command = adapter.server_command(tmp_path, 8000, adapter.knobs(args))
    joined = " ".join(command)
    assert " ".join(flags[:2]) in joined and all(flag in command for flag in flags)
    assert "--disable-radix-cache" not in command or args.get("disable_radix_cache")


@pytest.mark.parametrize("args, message", [
    ({"schedule_policy": "priority"}, "lpm"),
    ({"max_num_seqs": 8}, "not a SGLang argument"),
])
def test_sglang_refuses_what_it_cannot_take(args, message, tmp_path):
    adapter = SglangAdapter()
    with pytest.raises(ValueError) as error:
        adapter.server_command(tmp_path, 8000, adapter.knobs(args))
    assert message in str(error.value)


@pytest.mark.e2e
def test_a_study_over_both_engines_runs_each_and_reports_both(tmp_path):
    """conf/smoke_engines.yaml: the engine as a knob, one trial per engine (grid), each a real
    deployment; the report's engine comparison shows both."""
    from autotune import config
    from autotune.search import search
    import optuna

    cfg = config.load("conf/smoke_engines.yaml", ["search.parallel=1", f"out={tmp_path}"])
    report = search(cfg)
    trials = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage).get_trials()
    assert sorted(t.params["engine"] for t in trials) == ["sglang", "vllm"]
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["outcome"] == "ok", attrs.get("reason")
        assert attrs["engine"] == trial.params["engine"] and attrs["metrics"]["completed"] == 12
        assert attrs["deploy_command"].startswith("vllm serve" if attrs["engine"] == "vllm" else "sglang serve")
    html = report.read_text()
    comparison = html[html.index('id="engines-table"'):]
    comparison = comparison[:comparison.index("</table>")]
    assert "<td>vllm</td>" in comparison and "<td>sglang</td>" in comparison
