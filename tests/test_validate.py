"""`revati-tune validate`: scenario selection and workloads, the real repeats' median and spread in
the comparison table, the option checks, the no-GPU refusal, and the transformers reference engine
serving a workload on a virtual GPU (end-to-end tier: ~20 s)."""
import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autotune import cli, validate
from emulator import host_cpu
from emulator.deployment import RunConfig, RunSummary
from emulator.engines.adapter import ServingKnobs
from emulator.engines.transformers.adapter import TransformersAdapter
from emulator.paths import MODELS

REPO = Path(__file__).resolve().parent.parent


def test_selecting_a_scenario_runs_its_overloaded_scenario_first_unless_its_capacity_is_known():
    names = [s.name for s in validate.select(["llama3_2_1b-b16-light"])]
    assert names == ["llama3_2_1b-b16-overloaded", "llama3_2_1b-b16-light"]
    assert [s.name for s in validate.select(["llama3_2_1b-b16-light"], {"llama3_2_1b-b16": 10.0})] == \
        ["llama3_2_1b-b16-light"]
    assert [s.name for s in validate.select(["llama3_8b-b64-prefix-near"])] == \
        ["llama3_8b-b64-prefix-overloaded", "llama3_8b-b64-prefix-near"]
    assert [s.load for s in validate.select(["llama3_8b-b64-prefix"])] == ["overloaded", "near"]
    with pytest.raises(ValueError, match="unknown scenario 'llama3_2_1'"):
        validate.select(["llama3_2_1"])


def test_scenario_names_and_prefixes():
    assert list(validate.SCENARIOS)[12:] == [
        "llama3_2_3b-b128-overloaded", "llama3_2_3b-b128-near", "llama3_8b-b64-prefix-overloaded",
        "llama3_8b-b64-prefix-near", "llama3_8b-b16-long-overloaded", "llama3_8b-b16-long-near"]
    assert len(validate.select(["all"])) == 18
    # A prefix of whole name parts: a model takes all its groups, MODEL-bLIMIT the traffic shapes at that limit.
    assert len(validate.select(["llama3_8b"])) == 6 + 2 + 2
    assert [s.name for s in validate.select(["llama3_8b-b64"])] == [
        "llama3_8b-b64-overloaded", "llama3_8b-b64-near", "llama3_8b-b64-light",
        "llama3_8b-b64-prefix-overloaded", "llama3_8b-b64-prefix-near"]
    assert [s.name for s in validate.select(["llama3_2_3b"])] == ["llama3_2_3b-b128-overloaded", "llama3_2_3b-b128-near"]
    # Every group's model is a config folder of conf/model.
    assert all((MODELS / model / "config.json").is_file() for model in validate.MODEL_NAMES)


def test_load_levels_are_fractions_of_the_measured_capacity():
    near = validate.SCENARIOS["llama3_8b-b16-near"]
    assert near.workload(10.0)["arrival"] == {"process": "poisson", "rate": 8.5}
    assert validate.SCENARIOS["llama3_8b-b16-light"].workload(10.0)["arrival"]["rate"] == 3.0
    assert validate.SCENARIOS["llama3_8b-b16-overloaded"].workload(None)["arrival"]["rate"] == "inf"
    with pytest.raises(ValueError, match="capacity"):
        near.workload(None)


def test_the_workloads_of_the_new_scenarios_are_valid_load_generator_specs():
    from emulator.loadgen import WorkloadSpec, plan_requests

    def spec(name: str) -> WorkloadSpec:
        workload = validate.SCENARIOS[name].workload(10.0)
        return WorkloadSpec.from_dict({**workload, "base_url": "http://127.0.0.1:8000", "model": name})

    short = validate.SCENARIOS["llama3_8b-b16-near"].workload(10.0)
    assert (short["num_requests"], short["prompt_len"], short["output_len"]) == \
        (96, {"kind": "uniform", "low": 128, "high": 512}, {"kind": "uniform", "low": 32, "high": 96})
    assert "shared_prefix" not in short and validate.SCENARIOS["llama3_8b-b16-near"].knobs().prefix_caching is None

    prefix = validate.SCENARIOS["llama3_8b-b64-prefix-overloaded"]
    assert prefix.workload(None)["shared_prefix"] == {"groups": 4, "prefix_len": 1024}
    planned = plan_requests(spec(prefix.name))
    prefixes = {r.prefix_group: tuple(r.prompt[:1024]) for r in planned}
    # Four groups, each with one 1024-token prefix, and a suffix of its own for every request.
    assert len(set(prefixes.values())) == 4 and all(tuple(r.prompt[:1024]) == prefixes[r.prefix_group] for r in planned)
    assert min(len(r.prompt) for r in planned) >= 1280
    assert prefix.knobs() == ServingKnobs(max_num_seqs=64, max_num_batched_tokens=8192, prefix_caching=True)

    long = spec("llama3_8b-b16-long-near")
    assert long.shared_prefix is None and all(2048 <= len(r.prompt) <= 4096 for r in plan_requests(long))
    assert validate.SCENARIOS["llama3_8b-b16-long-near"].knobs().max_num_seqs == 16

    small = spec("llama3_2_3b-b128-overloaded")
    assert small.num_requests == 192 > validate.SCENARIOS["llama3_2_3b-b128-overloaded"].knobs().max_num_seqs == 128


def test_capacity_arguments_name_a_group():
    assert validate.parse_capacity(["llama3_2_1b-b64=15.4", "llama3_8b-b64-prefix=2.5"]) == \
        {"llama3_2_1b-b64": 15.4, "llama3_8b-b64-prefix": 2.5}
    for bad in ("llama3_2_1b-b32=15", "llama3_2_1b-b64=", "llama3_2_1b-b64=fast", "llama3_2_1b-b64=-1"):
        with pytest.raises(ValueError, match="expected GROUP=RPS"):
            validate.parse_capacity([bad])


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_real_repeats_below_one_are_refused_naming_the_option(value, capsys):
    with pytest.raises(SystemExit) as exit_:
        validate.main(["all", "--real-repeats", value])
    assert exit_.value.code == 2
    assert f"argument --real-repeats: must be a whole number of real runs per scenario, at least 1 (default 3); " \
           f"got '{value}'" in capsys.readouterr().err


def test_real_repeats_default_to_three():
    parser = argparse.ArgumentParser()
    validate.add_arguments(parser)
    assert parser.parse_args(["all"]).real_repeats == 3 and parser.parse_args(["all", "--real-repeats", "5"]).real_repeats == 5


def _metrics(scale: float) -> dict:
    values = {f"{p}_{m}_ms": scale * (i + 1) for i, m in enumerate(("ttft", "tpot", "itl", "e2el"))
              for p in ("mean", "median", "p90")}
    return {**values, "request_throughput": 2.0 * scale, "output_throughput": 100.0 * scale}


def test_comparison_rows_and_misses_by_tolerance():
    real = _metrics(1.0)
    emulated = {**_metrics(1.0), "mean_ttft_ms": 1.06, "median_tpot_ms": 2.0 * 0.96, "p90_itl_ms": 3.0 * 1.09,
                "p90_e2el_ms": 4.0 * 1.11, "request_throughput": 2.2}
    rows = validate.compare("s", [real], emulated)
    assert len(rows) == 4 * 3 + 2
    by_key = {(r["metric"], r["stat"]): r for r in rows}
    assert by_key[("TTFT (ms)", "mean")]["rel_error"] == pytest.approx(0.06)
    assert by_key[("request_throughput (req/s)", "value")]["rel_error"] == pytest.approx(0.1)
    missed = {(r["metric"], r["stat"]) for r in validate.misses(rows)}
    # 6% on a mean and 11% on a p90 miss; 4% on a p50 and 9% on a p90 do not.
    assert missed == {("TTFT (ms)", "mean"), ("E2EL (ms)", "p90"), ("request_throughput (req/s)", "value")}


def test_real_repeats_give_the_median_and_the_spread():
    reals = [_metrics(1.2), _metrics(0.9), _metrics(1.0)]
    rows = validate.compare("s", reals, {**_metrics(1.0), "mean_ttft_ms": 1.5})
    ttft = rows[0]
    assert (ttft["metric"], ttft["stat"]) == ("TTFT (ms)", "mean")
    assert (ttft["real"], ttft["real_min"], ttft["real_max"]) == (1.0, 0.9, 1.2)
    assert ttft["rel_error"] == pytest.approx(0.5) and not validate.in_spread(ttft)
    throughput = rows[-2]
    assert (throughput["real"], throughput["real_min"], throughput["real_max"]) == (2.0, 1.8, 2.4)
    assert throughput["rel_error"] == 0 and validate.in_spread(throughput)
    # 15% above the median but inside the repeats' spread: within tolerance; 50% above it: a miss.
    spread_rows = validate.compare("s", reals, {**_metrics(1.0), "mean_ttft_ms": 1.15, "median_ttft_ms": 1.5})
    assert {(r["metric"], r["stat"]) for r in validate.misses(spread_rows)} == {("TTFT (ms)", "p50")}
    # An even number of repeats: the median is the middle two's mean.
    assert validate.compare("s", reals[:2], _metrics(1.0))[0]["real"] == pytest.approx(1.05)


def test_the_table_gives_the_spread_and_every_repeats_wall_time(tmp_path):
    reals = [_metrics(1.2), _metrics(0.9), _metrics(1.0)]
    rows = validate.compare("s", reals, {**_metrics(1.0), "mean_ttft_ms": 1.5})
    real_runs = [{"metrics": m, "wall_seconds": wall, "serving_wall_seconds": wall / 2} for m, wall in
                 zip(reals, (12.0, 10.0, 11.0))]
    runs = [{"scenario": "s", "rate": "inf", "real": real_runs, "misses": len(validate.misses(rows)),
             "emulated": {"wall_seconds": 16.5, "serving_wall_seconds": 8.0, "virtual_seconds": 9.0}},
            {"scenario": "t", "rate": 3.0, "real": real_runs[:1],
             "error": "RuntimeError: the real run in runs/t/real-2 failed: the server exited with status 1"}]
    validate.write_table(rows, runs, {"nvidia_smi_name": "NVIDIA H200"}, "revati-tune validate s", tmp_path / "t")
    with open(tmp_path / "t.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["scenario", "metric", "stat", "real", "real_min", "real_max", "emulated", "rel_error"]
    assert [table[0][k] for k in ("real", "real_min", "real_max", "emulated", "rel_error")] == \
        ["1", "0.9", "1.2", "1.5", "0.5000"]
    markdown = (tmp_path / "t.md").read_text()
    # Walls of the three repeats in run order; emulated/real against the median wall (11 s).
    assert "| s | inf | 12.0, 10.0, 11.0 | 16.5 | 1.50 | 6.0, 5.0, 5.5 | 8.0 | 9.0 | 1 |" in markdown
    assert "| t | 3.0 | failed: RuntimeError: the real run in runs/t/real-2 failed" in markdown
    assert "| scenario | metric | stat | real | real spread | emulated | in spread | rel_error |" in markdown
    assert "| s | TTFT (ms) | mean | 1 | 0.9-1.2 | 1.5 | no | +50.0% **MISS** |" in markdown
    assert "| s | request_throughput (req/s) | value | 2 | 1.8-2.4 | 2 | yes | +0.0% |" in markdown


def test_the_transformers_adapter_maps_its_knobs_and_refuses_what_it_cannot_serve():
    adapter = TransformersAdapter()
    knobs = adapter.knobs({"max_requests_per_batch": 16, "max_batch_tokens": 4096, "use_cuda_graph": False})
    assert knobs == ServingKnobs(max_num_seqs=16, max_num_batched_tokens=4096, cuda_graphs=False)
    command = adapter.deploy_command("conf/model/llama3_2_1b", knobs)
    assert command[-6:] == ["--max-requests-per-batch", "16", "--max-batch-tokens", "4096",
                            "--cuda-graphs", "off"]
    prefix = adapter.server_command(Path("m"), 8000, validate.SCENARIOS["llama3_8b-b64-prefix-near"].knobs())
    assert prefix[-6:] == ["--max-requests-per-batch", "64", "--max-batch-tokens", "8192", "--allow-block-sharing", "on"]
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


@pytest.mark.e2e
def test_transformers_continuous_batching_serves_a_workload_on_a_virtual_gpu(tmp_path):
    """The emulated side of validate, for real: transformers' engine on a virtual H200 under the
    Timekeeper, driven by the load generator."""
    workload = {"num_requests": 6, "seed": 0, "arrival": {"process": "poisson", "rate": 20.0},
                "prompt_len": {"kind": "uniform", "low": 32, "high": 64}, "output_len": {"kind": "fixed", "value": 8},
                "ready_timeout_s": 600}
    config = RunConfig(model="tiny_llama", sku="h200", knobs=ServingKnobs(max_num_seqs=4, max_num_batched_tokens=1024),
                       workload=workload, engine=TransformersAdapter.name, timeout_s=300)
    summary = validate.serve(config, tmp_path, emulated=True)
    m = summary.metrics
    assert (m["completed"], m["failed"], m["total_output_tokens"]) == (6, 0, 48)
    assert 0 < m["mean_ttft_ms"] < 1000 and 0 < m["mean_tpot_ms"] < 100
    families = {row["family"]: row["launches"] for row in summary.gpu_time_by_family}
    assert families.get("gemm", 0) > 0 and families.get("attention", 0) > 0
    server_log = (tmp_path / "server.log").read_text()
    assert "device NVIDIA H200" in server_log and "sdpa" in server_log
    records = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()[:-1]]
    # One SSE chunk per generated token: 8 chunks, 7 inter-token latencies per request.
    assert all(len(r["chunk_times"]) == 8 for r in records)
    assert summary.virtual_seconds > 0


def test_a_recorded_real_side_is_read_old_and_new_and_bad_files_are_refused(tmp_path):
    summary = {"metrics": {"request_throughput": 1.0}, "workload": {"arrival": {"rate": "inf"}}}
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"facts": {"nvidia_smi_name": "NVIDIA H200"}, "runs": [
        {"scenario": "llama3_2_1b-b16-overloaded", "real": summary},                  # one run (before repeats)
        {"scenario": "llama3_8b-b16-overloaded", "real": [summary, summary]},
        {"scenario": "llama3_8b-b64-overloaded", "error": "not run"}]}))
    later = tmp_path / "later.json"
    later.write_text(json.dumps({"facts": {"nvidia_smi_name": "NVIDIA H200"}, "runs": [
        {"scenario": "llama3_8b-b16-overloaded", "real": [summary]},                  # measured again: it wins
        {"scenario": "llama3_8b-b64-overloaded", "real": [summary], "error": "a repeat failed"}]}))
    facts, runs = validate.recorded_real_side([path, later])
    assert facts["nvidia_smi_name"] == "NVIDIA H200"
    assert {name: len(real) for name, real in runs.items()} == {"llama3_2_1b-b16-overloaded": 1,
                                                                "llama3_8b-b16-overloaded": 1}
    # Summaries written before RunSummary kept the workload at the top; they read as RunSummary holds it.
    assert runs["llama3_2_1b-b16-overloaded"][0]["config"]["workload"] == {"arrival": {"rate": "inf"}}
    other_gpu = tmp_path / "h100.json"
    other_gpu.write_text(json.dumps({"facts": {"nvidia_smi_name": "NVIDIA H100 80GB HBM3"}, "runs": []}))
    with pytest.raises(ValueError, match="measured on NVIDIA H100 80GB HBM3, the files before it on NVIDIA H200"):
        validate.recorded_real_side([path, other_gpu])
    path.write_text("{}")
    with pytest.raises(ValueError, match="--real-from .*: not a runs.json of validate"):
        validate.recorded_real_side([path])


def _served(config, wall_s: float = 1.0) -> RunSummary:
    """What a stand-in for serve returns: the run's workload, the same metrics for every run."""
    return RunSummary(config={"workload": config.workload}, metrics=_metrics(100.0), wall_seconds=wall_s,
                      startup_wall_seconds=wall_s / 2, serving_wall_seconds=wall_s / 2)


def _an_h100_here(monkeypatch) -> None:
    """This machine as validate's real side sees a GPU machine: an H100, its host's speed measured."""
    monkeypatch.setattr(validate, "real_gpu", lambda python: {"nvidia_smi_name": "NVIDIA H100 80GB HBM3"})
    monkeypatch.setattr(host_cpu, "measure_in", lambda python: {"seconds": 0.038, "cpu": "Intel Xeon"})
    monkeypatch.setattr(TransformersAdapter, "python", lambda self: Path("python3"))


def test_real_only_serves_the_real_repeats_and_writes_runs_for_real_from(tmp_path, monkeypatch):
    """run_command --real-only with the GPU and serve replaced: no emulated run, capacity carried
    to the near scenario, and a runs.json that --real-from reads back."""
    served = []

    def fake_serve(config, out, *, emulated):
        served.append((out.parent.name, emulated))
        Path(config.server_args[config.server_args.index("--sample-host") + 1]).write_text("0.046 0.5 10\n0.040 0.4 10\n0.044 0.3 10\n")
        return _served(config)
    monkeypatch.setattr(validate, "serve", fake_serve)
    _an_h100_here(monkeypatch)
    args = validate.build_parser().parse_args(["llama3_2_1b-b16-near", "--real-only", "--real-repeats", "2",
                                               "--out", str(tmp_path)])
    assert validate.run_command(args) == 0
    assert served == [("llama3_2_1b-b16-overloaded", False)] * 2 + [("llama3_2_1b-b16-near", False)] * 2
    assert not (tmp_path / "fidelity.md").exists()
    facts, runs = validate.recorded_real_side([tmp_path / "runs.json"])
    assert facts["emulated_sku"] == "h100" and list(runs) == ["llama3_2_1b-b16-overloaded", "llama3_2_1b-b16-near"]
    # The near load is offered at 0.85 of the overloaded runs' median request throughput.
    assert runs["llama3_2_1b-b16-near"][0]["config"]["workload"]["arrival"]["rate"] == round(0.85 * 200.0, 4)
    # Each real run carries the host's CPU speed measured before it, for its emulation's charge.
    assert runs["llama3_2_1b-b16-near"][1]["host_cpu"] == {"seconds": 0.038, "cpu": "Intel Xeon"}
    # ... and the one its server timed in its generation thread between steps, from its own file.
    figure = runs["llama3_2_1b-b16-near"][1]["host_cpu_in_serving_thread"]
    assert figure["seconds"] == 0.044 and figure["step_cpu_s"] == pytest.approx(0.04) and figure["steps"] == 30
    assert (tmp_path / "llama3_2_1b-b16-near" / "real-2-host_cpu.txt").is_file()
    with pytest.raises(SystemExit):
        validate.build_parser().parse_args(["all", "--real-only", "--real-from", "runs.json"])


def test_sigterm_stops_validate_like_ctrl_c_keeping_the_scenarios_done(tmp_path, monkeypatch):
    """A device call's time limit sends SIGTERM: the run under way must be stopped as by Ctrl-C
    (serve ends its server on KeyboardInterrupt), not left serving on the GPU, and the finished
    scenarios stay in runs.json."""
    served = []

    def fake_serve(config, out, *, emulated):
        served.append(out.parent.name)
        if out.parent.name == "llama3_2_1b-b16-near":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)       # the signal interrupts this
            raise AssertionError("SIGTERM did not stop the run")
        return _served(config)
    monkeypatch.setattr(validate, "serve", fake_serve)
    _an_h100_here(monkeypatch)
    args = validate.build_parser().parse_args(["llama3_2_1b-b16-near", "--real-only", "--real-repeats", "1",
                                               "--out", str(tmp_path)])
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert validate.run_command(args) == validate.STOPPED_STATUS
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert served == ["llama3_2_1b-b16-overloaded", "llama3_2_1b-b16-near"]
    _, runs = validate.recorded_real_side([tmp_path / "runs.json"])
    assert list(runs) == ["llama3_2_1b-b16-overloaded"]


def test_no_scenario_starts_that_would_end_past_the_budget(tmp_path, monkeypatch):
    """--budget: a scenario starts only if the longest one so far would still end within it (a
    device call's limit kills a scenario that runs past it, and its server with it)."""
    clock = [0.0]

    def fake_serve(config, out, *, emulated):
        clock[0] += 100.0           # every run takes 100 s
        return _served(config, wall_s=100.0)
    monkeypatch.setattr(validate, "serve", fake_serve)
    monkeypatch.setattr(validate.time, "monotonic", lambda: clock[0])
    _an_h100_here(monkeypatch)
    args = validate.build_parser().parse_args(["llama3_2_1b-b16", "--real-only", "--real-repeats", "1",
                                               "--budget", "250", "--out", str(tmp_path)])
    assert validate.run_command(args) == 1
    runs = json.loads((tmp_path / "runs.json").read_text())["runs"]
    # 100 s each: the second starts at 100 s (ends by 200), the third would end at 300.
    assert [r["scenario"] for r in runs if "error" not in r] == ["llama3_2_1b-b16-overloaded", "llama3_2_1b-b16-near"]
    assert runs[2]["error"].startswith("not run: the 250 s budget would be spent before it ended")


def test_against_a_recorded_real_side_only_the_emulation_runs_with_the_recorded_workload(tmp_path, monkeypatch):
    """emulate_against with serve replaced: what it serves, and how it compares."""
    workload = {"num_requests": 96, "arrival": {"process": "poisson", "rate": 6.1}}
    figures = [{"seconds": s, "cpu": "Intel Xeon"} for s in (0.050, 0.038, 0.041)]
    reals = [{"metrics": _metrics(m), "config": {"workload": workload}, "host_cpu": f}
             for m, f in zip((100.0, 120.0, 115.0), figures)]
    served = []

    def fake_serve(config, out, *, emulated):
        served.append((config.model, config.workload, emulated, config.sku, config.server_args[:2], config.server_host_cpu))
        # The emulated server samples its thread as the real ones did: the same delay on both sides.
        assert config.server_args[2] == "--sample-host"
        return RunSummary(config={}, metrics=_metrics(110.0), wall_seconds=1.0, startup_wall_seconds=0.5,
                          serving_wall_seconds=0.5)
    monkeypatch.setattr(validate, "serve", fake_serve)
    scenario = validate.SCENARIOS["llama3_8b-b16-near"]
    record = {}
    rows = validate.emulate_against(TransformersAdapter(), scenario, {scenario.name: reals}, tmp_path, record, sku="h200", timeout_s=9,
                                    server_args=("--cudnn-attention", "off"))
    # The emulation is charged the host as the real runs found it at its fastest: a disturbance only
    # ever slows the benchmark down.
    assert served == [("llama3_8b", workload, True, "h200", ("--cudnn-attention", "off"), figures[1])]
    assert record["rate"] == 6.1
    ttft = next(r for r in rows if r["metric"] == "TTFT (ms)" and r["stat"] == "mean")
    assert (ttft["real"], ttft["real_min"], ttft["real_max"], ttft["emulated"]) == (115.0, 100.0, 120.0, 110.0)
    with pytest.raises(ValueError, match="no real runs of llama3_8b-b16-light in --real-from"):
        validate.emulate_against(None, validate.SCENARIOS["llama3_8b-b16-light"], {}, tmp_path, {}, sku="h200",
                                 timeout_s=9)


def test_the_host_speed_charged_is_the_one_timed_in_the_real_servers_while_they_served():
    before = [{"seconds": s, "cpu": "Intel Xeon"} for s in (0.050, 0.038, 0.041)]
    in_thread = [{"seconds": s, "rounds": 8, "cpu": "Intel Xeon", "in_serving_thread": True} for s in (0.061, 0.055, 0.058)]
    beside = [{"seconds": 0.070, "rounds": 30, "while_serving": True}] * 3
    reals = [{"host_cpu": b, "host_cpu_in_serving_thread": t, "host_cpu_while_serving": o}
             for b, t, o in zip(before, in_thread, beside)]
    figure = validate.server_host_speed(reals)
    assert (figure["seconds"], figure["rounds"], figure["in_serving_thread"]) == (0.058, 24, True)
    # Runs recorded before the serving thread timed it: the fastest figure measured before a run; a
    # sampler beside the server (runs of 2026-12-07) is not taken.
    assert validate.server_host_speed([{"host_cpu": b, "host_cpu_while_serving": o}
                                       for b, o in zip(before, beside)]) == before[1]
    assert validate.server_host_speed([{"metrics": {}}]) is None


def test_the_emulating_engines_versions_are_read_from_its_interpreter():
    from emulator.engines.envs import env_python, is_ready
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    versions = validate.engine_versions(env_python("vllm"))
    code = "import torch, transformers; print(torch.__version__, transformers.__version__)"
    expected = subprocess.run([str(env_python("vllm")), "-c", code], capture_output=True, text=True).stdout.split()
    assert [versions["emulating_torch"], versions["emulating_transformers"]] == expected
