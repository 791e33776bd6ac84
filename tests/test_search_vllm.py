"""`revati-tune search` end to end with the real vLLM on virtual GPUs (end-to-end tier, several
minutes on 2 cores): a study killed with SIGKILL mid-trial leaves no process and loses no
completed trial; the resumed study writes a report whose Pareto plot draws in headless Chromium;
failing trials are recorded and do not stop the study."""
import csv
import json
import signal
import subprocess
import sys
import time

import optuna
import pytest

from autotune import config
from autotune.search import search
from reports import screenshot
from reports.figures import PARETO_COLOR

# TP1 in eager mode: the driver is what is tested, and every trial compiling for CUDA graphs
# would double these tests' time on two cores.
SMOKE = ["search.space.tensor_parallel_size=[1]", "engine.enforce_eager=true", "search.trials=2", "search.parallel=1"]

pytestmark = pytest.mark.e2e


def _trials(cfg):
    return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage).get_trials()


def _processes_mentioning(text: str) -> list[str]:
    lines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in lines if text in line and "pytest" not in line]


def test_a_killed_study_resumes_losing_nothing_and_reports(tmp_path):
    overrides = [*SMOKE, f"out={tmp_path}"]
    cfg = config.load("conf/smoke.yaml", overrides)
    driver = subprocess.Popen([sys.executable, "-m", "autotune.cli", "search", "conf/smoke.yaml", *overrides],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            states = [t.state for t in _trials(cfg)]
        except KeyError:                            # the driver has not created the study yet
            states = []
        if states[:1] == [optuna.trial.TrialState.COMPLETE] and len(states) == 2 and \
                (tmp_path / "trials" / "0001" / "server.log").exists():
            break
        time.sleep(2)
    else:
        driver.kill()
        pytest.fail("the first trial did not complete in time")
    first = _trials(cfg)[0]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    # The running trial stops its deployment by itself (it dies with its driver).
    deadline = time.monotonic() + 120
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(2)
    assert not _processes_mentioning(str(tmp_path))

    report = search(cfg)
    trials = _trials(cfg)
    assert trials[0].values == first.values and trials[0].user_attrs == first.user_attrs     # kept as it was
    assert trials[1].user_attrs["outcome"] == "interrupted"
    assert [t.user_attrs["outcome"] for t in trials[2:]] == ["ok"]
    assert trials[2].params == trials[1].params                                                # run again
    ok = trials[0].user_attrs
    assert ok["outcome"] == "ok" and ok["metrics"]["completed"] == 12 and ok["goodput_per_gpu"] > 0
    assert "vllm serve" in ok["deploy_command"] and "--max-num-seqs" in ok["deploy_command"]
    assert not _processes_mentioning(str(tmp_path))

    if screenshot.chromium() is None:
        pytest.skip("headless Chromium not installed (apt-get install -y chromium)")
    png = screenshot.render(report, tmp_path / "report.png", width=1200, height=900)
    # One front marker of 13 px (~130 px of its colour) besides the legend's (~110 px); measured: 246,
    # and 154 when a dominated trial's marker was drawn over the front's.
    assert screenshot.color_pixels(png, PARETO_COLOR) > 200


def test_failing_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path):
    cfg = config.load("conf/smoke.yaml", [*SMOKE, "engine.kv_cache_dtype=no_such_dtype", f"out={tmp_path}"])
    report = search(cfg)
    trials = _trials(cfg)
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["outcome"] == "failed"
        assert "no_such_dtype" in (tmp_path / "trials" / f"{trial.number:04d}" / "server.log").read_text()
        assert "server exited with status" in trial.user_attrs["reason"]
    assert "server exited with status" in report.read_text()


def test_a_trial_that_cannot_reach_the_slo_target_is_pruned_before_its_workload_ends(tmp_path):
    # No request can meet a 1 us TTFT: at 90% attainment of 120 requests, the 13th miss settles it,
    # some 20 virtual seconds before the workload would have ended.
    cfg = config.load("conf/smoke.yaml", [*SMOKE, "search.trials=1", "slo.ttft_ms=0.001", "workload.num_requests=120",
                                          f"out={tmp_path}"])
    report = search(cfg)
    (trial,) = _trials(cfg)
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs["outcome"] == "pruned"
    reason = trial.user_attrs["reason"]
    finished = int(reason.removeprefix("pruned after ").split(" of ")[0])
    assert 13 <= finished < 120 and "below slo.attainment 90%" in reason, reason
    assert not (tmp_path / "trials" / "0000" / "summary.json").exists()        # stopped, not run to the end
    assert not _processes_mentioning(str(tmp_path))
    assert "1 pruned" in report.read_text() and reason in report.read_text()


def test_a_study_over_two_gpu_types_runs_each_and_its_pick_follows_the_prices(tmp_path):
    """conf/smoke_skus.yaml: one real deployment per GPU type (grid), each on virtual GPUs of its
    type, scored per dollar; re-priced, the report picks the other type without running again."""
    from emulator.hardware import load_sku
    from reports.loading import trials_frame
    from reports.pareto import pick

    cfg = config.load("conf/smoke_skus.yaml", ["engine.enforce_eager=true", "search.parallel=1", f"out={tmp_path}"])
    report = search(cfg)
    study = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage)
    trials = study.get_trials()
    assert sorted(t.params["sku"] for t in trials) == ["h100", "h200"]
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["outcome"] == "ok", attrs.get("reason")
        assert attrs["metrics"]["completed"] == 12 and attrs["sku"] == trial.params["sku"]
        spec = (tmp_path / "trials" / f"{trial.number:04d}" / "vgpu" / "vgpu.spec").read_text()
        assert f"name={load_sku(attrs['sku']).name}\n" in spec          # the GPUs the engine saw
        assert trial.values[1] == pytest.approx(cfg.prices[attrs["sku"]])      # one GPU's dollars an hour
    html = report.read_text()
    assert 'id="skus-table"' in html and "good requests per dollar" in html
    # Goodput is bounded by the offered load at this size, so the price decides: the cheaper GPU
    # per good request wins, whichever it is.
    goodput = {t.params["sku"]: t.user_attrs["goodput_per_gpu"] for t in trials}
    for cheap, dear in (("h100", "h200"), ("h200", "h100")):
        prices = {cheap: 1.0, dear: 10.0}
        assert goodput[cheap] / prices[cheap] > goodput[dear] / prices[dear]
        assert pick(trials_frame(study, prices))["sku"] == cheap


def test_a_study_of_layouts_serves_a_disaggregated_one_whose_decode_pulls_every_prompt(tmp_path):
    """conf/smoke_disagg.yaml: an aggregated instance and a prefill + decode pair, both on virtual
    H100s; the pair's decode instance computes no prompt itself (every prompt's KV cache arrives
    from the prefill instance, every layer's blocks in one NCCL send/recv), and the report compares the two."""
    cfg = config.load("conf/smoke_disagg.yaml", ["engine.enforce_eager=true", "search.parallel=1", f"out={tmp_path}"])
    report = search(cfg)
    trials = {t.params["prefill_instances"]: t for t in _trials(cfg)}
    assert sorted(trials) == [0, 1]
    for trial in trials.values():
        assert trial.user_attrs["outcome"] == "ok", trial.user_attrs.get("reason")
        assert trial.user_attrs["metrics"]["completed"] == 12
    pair = trials[1]
    assert pair.user_attrs["layout"] == "disaggregated" and pair.user_attrs["gpus"] == 2
    run_dir = tmp_path / "trials" / f"{pair.number:04d}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sorted(summary["config"]["server_commands"]) == ["decode-0", "prefill-0", "proxy"]
    transfers = {op: sum(int(row[2]) for path in (run_dir / "vgpu").glob("stats-*.csv")
                         for row in csv.reader(path.open()) if row[:2] == ["collective", op])
                 for op in ("ncclSend", "ncclRecv")}
    assert transfers == {"ncclSend": 12, "ncclRecv": 12}
    for role in ("prefill-0", "decode-0"):
        lines = [line for line in (run_dir / f"{role}.log").read_text().splitlines() if "revati NCCL connector" in line]
        assert any("2 layers of KV blocks" in line for line in lines) and not any("failed" in line for line in lines)
    html = report.read_text()
    assert 'id="layouts-table"' in html and "disaggregated" in html
    assert not _processes_mentioning(str(tmp_path))
