"""How a trial reads its deployment's end (autotune/trial.py), with the deployment worker replaced:
what it records for a run that served every request, and for one whose requests failed."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from autotune import config, trial
from emulator.deployment import RunSummary

OK = {"request_id": "req-0", "first_token_s": 0.1, "error": None}
FAILED = {"request_id": "req-1", "first_token_s": None, "error": "EngineDeadError: engine core exited unexpectedly"}


def _serve_with_worker_that_writes(monkeypatch, tmp_path, records: list[dict]) -> trial.TrialResult:
    cfg = config.load("conf/smoke.yaml", ["search.space.tensor_parallel_size=[1]", f"out={tmp_path}"])
    real_popen = subprocess.Popen

    def worker(command, **kwargs):
        run_dir = Path(command[-1])
        (run_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        completed = sum(r["error"] is None for r in records)
        metrics = {"completed": completed, "failed": len(records) - completed, "request_goodput": 2.0,
                   "slo_attainment": completed / len(records)}
        RunSummary(config={}, metrics=metrics, wall_seconds=1.0, startup_wall_seconds=0.5,
                   serving_wall_seconds=0.5).write(run_dir)
        return real_popen(["true"], stdout=kwargs.get("stdout"), stderr=kwargs.get("stderr"))

    monkeypatch.setattr(trial.subprocess, "Popen", worker)
    return trial.evaluate(cfg, {"max_num_seqs": 8, "tensor_parallel_size": 1}, tmp_path / "trials" / "0000",
                          threading.Event())


def test_a_run_that_served_every_request_is_scored(monkeypatch, tmp_path):
    result = _serve_with_worker_that_writes(monkeypatch, tmp_path, [OK, {**OK, "request_id": "req-1"}])
    assert result.outcome == "ok" and result.goodput_per_gpu == pytest.approx(2.0) and result.slo_attainment == 1.0


def test_a_run_whose_requests_failed_fails_its_trial_with_the_first_error(monkeypatch, tmp_path):
    result = _serve_with_worker_that_writes(monkeypatch, tmp_path, [OK, FAILED, {**FAILED, "request_id": "req-2"}])
    assert result.outcome == "failed" and result.goodput_per_gpu == 0.0
    assert result.reason.startswith("2 of 3 requests failed, the first with: EngineDeadError")
    assert result.user_attrs["metrics"]["failed"] == 2          # kept for the report's drill-down
