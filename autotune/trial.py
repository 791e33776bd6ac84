"""One trial: a configuration checked, then served by a real emulated deployment, then scored.

The deployment runs in the deployment module's worker (`python -m emulator.deployment RUN_DIR`,
with the trial's RunConfig in RUN_DIR/run_config.json): a process of its own, a boundary that a
hung or crashing deployment cannot cross, which the study driver stops like Ctrl-C. The trial also
records the `revati-tune run` command that reproduces it by hand. Both runners (local, Ray) score
trials here.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from autotune import pruning
from autotune.config import StudyConfig, hydra_value, refusal, without_engine_overrides
from emulator import deployment, leftovers
from emulator.deployment import RunSummary
from emulator.engines import registry
from emulator.engines.adapter import ServingKnobs
from emulator.hardware import goodput_per_dollar
from emulator.process_groups import end_group

# After the run's own wall-clock limit, what a deployment gets to stop before it is killed.
STOP_GRACE_S = 60.0


@dataclass
class TrialResult:
    outcome: str                # ok | infeasible | pruned | failed | timeout | interrupted
    gpus: int
    reason: str = ""
    goodput_per_gpu: float = 0.0
    slo_attainment: float = 0.0
    user_attrs: dict = field(default_factory=dict)

    def values(self, per_dollar: bool = False) -> tuple[float, float]:
        """The study's objectives: good requests per second per GPU (up) and GPUs (down); per
        dollar (a study over GPU types), good requests per dollar (up) and dollars per hour (down),
        at the price per GPU-hour in user_attrs."""
        if not per_dollar:
            return self.goodput_per_gpu, float(self.gpus)
        price = self.user_attrs["price_per_gpu_hour"]
        return goodput_per_dollar(self.goodput_per_gpu, price), self.gpus * price


def command(config: StudyConfig, engine: str, args: dict, run_dir: Path, sku: str | None = None) -> list[str]:
    """The trial's `revati-tune run`; args are the engine's arguments (the trial's engine and SKU
    knobs aside)."""
    knobs = [f"engine.{name}={hydra_value(value)}" for name, value in args.items()]
    study = [o for o in config.overrides if not o.startswith("out=")]      # the study's out, not the run's
    if engine != config.engine:     # the study's engine.* overrides are in its engine's names
        study = without_engine_overrides(study)
    hardware = [f"hardware={sku}"] if sku not in (None, config.sku) else []
    return ["revati-tune", "run", str(config.source), *study, *hardware, *config.engines[engine].overrides, *knobs,
            f"out={run_dir}"]


def evaluate(config: StudyConfig, args: dict, run_dir: Path, stop: threading.Event) -> TrialResult:
    """Serve the study's workload with these engine arguments (and, when the study searches several
    engines or GPU types, the `engine` and `sku` they are for); never raises for a bad trial."""
    args = dict(args)
    engine = args.pop("engine", config.engine)
    sku = args.pop("sku", config.sku)
    run_config = config.run_config(args, engine, sku)
    gpus = run_config.knobs.gpus
    cmd = command(config, engine, args, run_dir, sku)
    model = config.hf_id or str(run_config.model_dir())
    attrs = {"knobs": {**config.engines[engine].args, **args}, "gpus": gpus, "engine": engine,
             "layout": run_config.knobs.layout,
             "sku": sku, "price_per_gpu_hour": config.prices[sku],
             "run_dir": str(run_dir), "command": shlex.join(cmd),
             "deploy_command": shlex.join(registry.adapter(engine).deploy_command(model, run_config.knobs)),
             "deploy_roles": _deploy_roles(engine, model, run_config.knobs)}
    reason = refusal(config, run_config)
    if reason:
        return TrialResult("infeasible", gpus, reason, user_attrs=attrs)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_config.write(run_dir / deployment.CONFIG_FILE)
    with open(run_dir / "trial.log", "w") as log:
        # Its own session: the terminal's Ctrl-C reaches the study driver, which stops trials in order.
        process = subprocess.Popen([sys.executable, "-m", "emulator.deployment", str(run_dir)], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "REVATI_DIE_WITH_PARENT": str(os.getpid())})
        check = (lambda: pruning.reason_to_stop(run_dir / "requests.jsonl", config.slos_ms, config.attainment)) \
            if config.search["prune"] else None
        outcome, why = _wait(process, run_config.timeout_s + STOP_GRACE_S, stop, check)
    end_leftovers(run_dir)      # a worker that died (SIGKILL, the OOM killer) ended nothing itself
    if outcome == "pruned":
        attrs["metrics"] = pruning.metrics_so_far(run_dir / "requests.jsonl", config.slos_ms)
        return TrialResult("pruned", gpus, why, user_attrs=attrs)
    if outcome == "ok" and process.returncode == deployment.SERVED and (run_dir / deployment.SUMMARY_FILE).is_file():
        summary = RunSummary.read(run_dir)
        attrs.update(metrics=summary.metrics, virtual_seconds=summary.virtual_seconds,
                     wall_seconds=summary.wall_seconds)
        if summary.metrics.get("failed"):
            # The engine refused or dropped requests (it died, or cannot serve some of them): a
            # configuration to fix, not one to rank by the requests that happened to get through.
            return TrialResult("failed", gpus, _failed_requests(summary.metrics, run_dir), user_attrs=attrs)
        goodput = summary.metrics.get("request_goodput", 0.0) / gpus
        return TrialResult("ok", gpus, goodput_per_gpu=goodput, slo_attainment=summary.metrics["slo_attainment"],
                           user_attrs=attrs)
    if outcome == "ok":
        outcome = "infeasible" if process.returncode == deployment.REFUSED else "failed"
    return TrialResult(outcome, gpus, _reason(outcome, process.returncode, run_dir), user_attrs=attrs)


def _wait(process: subprocess.Popen, limit_s: float, stop: threading.Event, check=None) -> tuple[str, str]:
    """(outcome, why): ok once the run exited by itself; interrupted, timeout or pruned (`check`
    gave a reason, asked every pruning.CHECK_INTERVAL_S) after stopping it like Ctrl-C."""
    waited = 0.0
    while waited < limit_s:
        try:
            process.wait(1.0)
            return "ok", ""
        except subprocess.TimeoutExpired:
            waited += 1.0
        if stop.is_set():
            interrupt(process)
            return "interrupted", ""
        why = check() if check and waited % pruning.CHECK_INTERVAL_S == 0 else None
        if why:
            interrupt(process)
            return "pruned", why
    interrupt(process)
    return "timeout", ""


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl-C to the run (it ends its deployment), then SIGKILL to what is left of its session
    (evaluate then ends what the deployment left)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    end_group(process.pid)
    process.wait()


def _deploy_roles(engine: str, model: str, knobs: ServingKnobs) -> str | None:
    """A disaggregated layout's instances on real GPUs, for its manifests: JSON of role -> [command, GPUs]."""
    if not knobs.disaggregated:
        return None
    adapter = registry.adapter(engine)
    return json.dumps({role.name: [shlex.join(adapter.deploy_instance(model, role)), role.knobs.gpus]
                       for role in knobs.roles()})


def end_leftovers(run_dir: Path) -> None:
    """The deployment's sessions (processes.json) and what they left on the host (leftovers.py): a
    run stopped like Ctrl-C ends and removes them itself; this is for a run killed before it could."""
    path = run_dir / "processes.json"
    if path.is_file():
        for pid in json.loads(path.read_text()).values():
            end_group(pid)
    leftovers.sweep(run_dir / leftovers.RECORD_FILE)


def _failed_requests(metrics: dict, run_dir: Path) -> str:
    errors = (json.loads(line).get("error") for line in (run_dir / "requests.jsonl").read_text().splitlines()
              if line.startswith('{"request_id"'))
    first = next((e for e in errors if e), "?")
    return (f"{metrics['failed']} of {metrics['failed'] + metrics['completed']} requests failed, the first with: "
            f"{str(first)[:300]} (logs in {run_dir})")


def _reason(outcome: str, returncode: int, run_dir: Path) -> str:
    log = (run_dir / "trial.log").read_text(errors="replace") if (run_dir / "trial.log").exists() else ""
    errors = [line for line in log.splitlines() if line.startswith("revati-tune: ")]
    detail = errors[-1].removeprefix("revati-tune: ") if errors else f"exit status {returncode}"
    if outcome == "timeout":
        return f"no result within search.trial_timeout_s; {detail} (logs in {run_dir})"
    if outcome == "interrupted":
        return "the study was stopped while this trial ran"
    return f"{detail} (logs in {run_dir})"

