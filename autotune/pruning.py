"""The study's early-stopping rule: a trial stops once its SLO attainment can no longer reach the
target.

Optuna's pruners compare intermediate values of single-objective studies; this study has two
objectives and a constraint, so the rule is its own and needs no intermediate values: while a
trial's deployment serves, the load generator streams each finished request's record
(emulator/loadgen.py, RecordStream), and once more requests have missed the SLOs than the target
allows (more than (1 - slo.attainment) x the planned requests), the trial can only end infeasible.
It is stopped then, and told to the study as PRUNED with the reason. Only finished requests count:
the rule never stops a trial that could still have met the target.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from emulator import metrics

# How often a running trial's records are read.
CHECK_INTERVAL_S = 5.0


def metrics_so_far(records_path: Path, slos_ms: dict) -> dict:
    """The metrics of the requests that finished before a trial was stopped (what a report shows of
    a pruned trial: they are the ones it was pruned for, not a run's whole metrics)."""
    if not records_path.is_file():
        return {}
    records = []
    for line in records_path.read_text(errors="replace").splitlines():
        if line.startswith('{"request_id"'):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:      # the line being written when the run stopped
                continue
    return metrics.compute(records, slos_ms) if records else {}


def reason_to_stop(records_path: Path, slos_ms: dict, attainment: float) -> str | None:
    """Why the trial cannot reach `attainment` any more, from the records streamed so far; None
    while it still can (or nothing can be read yet)."""
    if not slos_ms or not records_path.is_file():
        return None
    planned, finished, missed = None, 0, 0
    for line in records_path.read_text(errors="replace").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:          # the line being written
            continue
        if "planned_requests" in item:
            planned = item["planned_requests"]
        elif "request_id" in item:
            finished += 1
            missed += not metrics.record_meets_slos(item, slos_ms)
    if not planned:
        return None
    allowed = math.floor((1 - attainment) * planned + 1e-9)
    if missed <= allowed:
        return None
    best = (planned - missed) / planned
    slos = ", ".join(f"{key} {value:g} ms" for key, value in slos_ms.items())
    return (f"pruned after {finished} of {planned} requests: {missed} missed the SLOs ({slos}), so at most "
            f"{best:.0%} can meet them, below slo.attainment {attainment:.0%}")
