#!/usr/bin/env python3
"""Faults injected into a real study, one at a time, and what each leaves behind.

    python3 benchmarks/fault_matrix.py [--faults NAME,...] [--table docs/reliability.md]

Each fault runs `revati-tune search conf/smoke.yaml` (vLLM on the two-layer tiny_llama, TP1, two
trials of 120 requests, one at a time) in a folder of its own, injects the fault into the first
trial (or the driver) once that trial serves, and lets the study finish. Then it records:
  finished     the study ended by itself with every trial recorded (for the killed study: after
               the same command was run again)
  outcome      the faulted trial's outcome and reason, as the study recorded them
  noticed (s)  from the injection to the faulted trial's end in the study's storage
  orphans      processes still running that name the study's folder (command line or environment)
  /dev/shm     files in /dev/shm that were not there before the study
  tmp          entries in /tmp that were not there before the study
  rows lost    trials recorded before the injection that are gone or changed after the study
Faults that cannot be injected on this host say why instead of a row of numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import sqlalchemy.exc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autotune import config  # noqa: E402

STUDY = "conf/smoke.yaml"
# 120 requests at the smoke study's 6 per second: some 20 virtual seconds of serving to fault.
BASE = ["search.space.tensor_parallel_size=[1]", "engine.enforce_eager=true", "search.trials=2",
        "search.parallel=1", "search.prune=false", "workload.num_requests=120"]
STUDY_TIMEOUT_S = 900


@dataclass
class Injection:
    """What a fault did, filled in by its injector."""
    at: float | None = None             # time.time() of the injection
    note: str = ""
    rows_before: list = field(default_factory=list)
    timed: bool = True                  # whether "noticed after" means anything for this fault


# ---- looking at a study and its processes -----------------------------------------------------

def trials(cfg) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage).get_trials()
    except (KeyError, sqlalchemy.exc.OperationalError):     # not created yet, or its folder not yet
        return []


def run_dir(out: Path, number: int) -> Path:
    return out / "trials" / f"{number:04d}"


def serving(out: Path, number: int) -> bool:
    requests = run_dir(out, number) / "requests.jsonl"
    return requests.is_file() and '"request_id"' in requests.read_text(errors="replace")


def processes_naming(text: str) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (text in cmdline or text in environ):
            found.append(f"{entry.name} {cmdline[:120]}")
    return found


def session_members(leader: int) -> list[tuple[int, str]]:
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if int(stat.rsplit(")", 1)[1].split()[3]) == leader:
            members.append((int(entry.name), comm))
    return members


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def server_pid(out: Path, number: int) -> int | None:
    path = run_dir(out, number) / "processes.json"
    return json.loads(path.read_text())["server"] if path.is_file() else None


def engine_worker(out: Path, number: int) -> int | None:
    """The trial's engine process that does the GPU work (vLLM's EngineCore), not its API server."""
    server = server_pid(out, number)
    if server is None:
        return None
    members = [(pid, comm) for pid, comm in session_members(server) if pid != server]
    cores = [pid for pid, comm in members if "EngineCor" in comm]
    return cores[0] if cores else None


def deployment_worker(out: Path, number: int) -> int | None:
    """The trial's `python -m emulator.deployment RUN_DIR` (it hosts the Timekeeper)."""
    target = str(run_dir(out, number))
    for line in processes_naming(target):
        pid, cmdline = line.split(" ", 1)
        if "emulator.deployment" in cmdline:
            return int(pid)
    return None


# ---- the faults ---------------------------------------------------------------------------------

def _when_serving_signal(find: Callable[[Path, int], int | None], signum: int, what: str):
    def inject(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
        if not wait_for(lambda: serving(out, 0) and find(out, 0) is not None, STUDY_TIMEOUT_S):
            injection.note = f"trial 0 never served with a {what} to signal"
            return
        injection.rows_before = trials(cfg)
        os.kill(find(out, 0), signum)
        injection.at = time.time()
    return inject


def ray_worker(out: Path, number: int) -> int | None:
    """The Ray worker process that runs the trial's trainable: the deployment worker's parent."""
    worker = deployment_worker(out, number)
    if worker is None:
        return None
    parent = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    comm = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    return parent if comm.startswith("ray::") else None


def _kill_server_at_startup(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
    if not wait_for(lambda: server_pid(out, 0) is not None, STUDY_TIMEOUT_S):
        injection.note = "trial 0's server never started"
        return
    time.sleep(3)           # inside the engine's start-up (it takes tens of seconds here)
    injection.rows_before = trials(cfg)
    os.kill(server_pid(out, 0), signal.SIGKILL)
    injection.at = time.time()


def _time_budget(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
    # The fault is the override (search.trial_timeout_s); it "happens" when the budget runs out.
    if wait_for(lambda: server_pid(out, 0) is not None, STUDY_TIMEOUT_S):
        injection.at = time.time() + cfg.search["trial_timeout_s"]


def _kill_study_and_resume(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
    if not wait_for(lambda: len(trials(cfg)) == 2 and server_pid(out, 1) is not None, STUDY_TIMEOUT_S):
        injection.note = "the second trial never started"
        return
    injection.rows_before = trials(cfg)
    driver.send_signal(signal.SIGKILL)
    injection.at = time.time()


READ_ONLY_S = 10.0


def _read_only_for_a_moment(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
    """The study folder (its SQLite storage and the trials' folders) read-only for READ_ONLY_S: a
    read-only bind mount over it (root ignores file modes)."""
    if not wait_for(lambda: serving(out, 0), STUDY_TIMEOUT_S):
        injection.note = "trial 0 never served"
        return
    injection.rows_before = trials(cfg)
    for step in (["mount", "--bind", str(out), str(out)], ["mount", "-o", "remount,bind,ro", str(out)]):
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            injection.note = f"not injected: {' '.join(step)}: {done.stderr.strip()}"
            subprocess.run(["umount", str(out)], capture_output=True)
            return
    injection.at = time.time()
    time.sleep(READ_ONLY_S)
    subprocess.run(["umount", str(out)], check=True)


def _second_study_on_the_storage(out: Path, cfg, driver: subprocess.Popen, injection: Injection) -> None:
    if not wait_for(lambda: server_pid(out, 0) is not None, STUDY_TIMEOUT_S):
        injection.note = "trial 0 never started"
        return
    injection.rows_before = trials(cfg)
    second = [*BASE, f"search.storage={cfg.storage}", "search.study_name=second", f"out={out}-second"]
    injection.at, injection.timed = time.time(), False
    with open(f"{out}-second.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "autotune.cli", "search", STUDY, *second], cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT, timeout=STUDY_TIMEOUT_S).returncode
    recorded = trials(config.load(STUDY, second))
    injection.note = (f"the second study exited with {code}, "
                      f"{sum(t.state.is_finished() for t in recorded)} of 2 trials recorded")


FAULTS: dict[str, tuple[str, list[str], Callable]] = {
    "engine_worker_sigkill": ("an engine worker (vLLM's EngineCore) killed by SIGKILL mid-serving", [],
                              _when_serving_signal(engine_worker, signal.SIGKILL, "EngineCore")),
    "engine_worker_sigstop": ("an engine worker (vLLM's EngineCore) stopped by SIGSTOP mid-serving (a hang)",
                              ["search.trial_timeout_s=240"],
                              _when_serving_signal(engine_worker, signal.SIGSTOP, "EngineCore")),
    "engine_exits_at_startup": ("the engine's server killed during its start-up", [], _kill_server_at_startup),
    "trial_time_budget": ("a trial past its time budget (search.trial_timeout_s=25)",
                          ["search.trial_timeout_s=25"], _time_budget),
    "timekeeper_killed": ("the deployment worker, which hosts the Timekeeper, killed by SIGKILL mid-serving", [],
                          _when_serving_signal(deployment_worker, signal.SIGKILL, "deployment worker")),
    "study_killed_and_resumed": ("the study driver killed by SIGKILL during trial 1, then run again", [],
                                 _kill_study_and_resume),
    "read_only_study_folder": (f"the study folder read-only for {READ_ONLY_S:.0f} s while trial 0 serves", [],
                               _read_only_for_a_moment),
    "two_studies_one_storage": ("a second study started on the same SQLite storage while the first runs",
                                ["search.storage=sqlite:///{root}/shared.db", "search.study_name=first"],
                                _second_study_on_the_storage),
    "ray_worker_lost": ("the Ray worker running trial 0 killed by SIGKILL mid-serving (search.runner=ray)",
                        ["search.runner=ray"], _when_serving_signal(ray_worker, signal.SIGKILL, "Ray worker")),
}


# ---- one fault ----------------------------------------------------------------------------------

def run_fault(name: str, root: Path) -> dict:
    title, overrides, inject = FAULTS[name]
    out = root / name
    args = [*BASE, *(o.format(root=root) for o in overrides), f"out={out}"]
    cfg = config.load(STUDY, args)
    shm_before, tmp_before = set(os.listdir("/dev/shm")), set(os.listdir("/tmp"))
    command = [sys.executable, "-m", "autotune.cli", "search", STUDY, *args]
    with open(root / f"{name}.log", "w") as log:
        driver = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        injection = Injection()
        injector = threading.Thread(target=inject, args=(out, cfg, driver, injection), daemon=True)
        injector.start()
        try:
            driver.wait(STUDY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        injector.join(STUDY_TIMEOUT_S)
        finished = driver.returncode == 0
        if name == "study_killed_and_resumed" and injection.at is not None:
            wait_for(lambda: not processes_naming(str(out)), 120)
            resumed = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=STUDY_TIMEOUT_S)
            finished = resumed.returncode == 0
    wait_for(lambda: not processes_naming(str(out)), 15)
    after = trials(cfg)
    faulted = next((t for t in after if t.number == (1 if name == "study_killed_and_resumed" else 0)), None)
    finished = finished and len([t for t in after if t.state.is_finished()]) >= 2
    by_number = {t.number: t for t in after}
    lost = [t.number for t in injection.rows_before if t.state.is_finished() and (
        t.number not in by_number or by_number[t.number].values != t.values
        or by_number[t.number].user_attrs != t.user_attrs)]
    noticed = (faulted.datetime_complete.timestamp() - injection.at
               if faulted and faulted.datetime_complete and injection.at and injection.timed else None)
    return {"fault": title, "finished": finished, "note": injection.note,
            "outcome": f"{faulted.user_attrs.get('outcome')}: {faulted.user_attrs.get('reason', '')}" if faulted else "-",
            "noticed_s": noticed, "orphans": processes_naming(str(out)),
            "shm": sorted(set(os.listdir("/dev/shm")) - shm_before),
            "tmp": sorted(set(os.listdir("/tmp")) - tmp_before), "rows_lost": lost}


def table(rows: list[dict]) -> str:
    lines = ["| fault | study finished | faulted trial: outcome and reason | noticed after (s) | orphans | "
             "/dev/shm files left | /tmp entries left | rows lost |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        outcome = r["outcome"].replace("|", "/").replace("\n", " ")[:220]
        noticed = "-" if r["noticed_s"] is None else f"{r['noticed_s']:.1f}"
        left = lambda items: f"{len(items)}" + (f" ({', '.join(items[:3])})" if items else "")  # noqa: E731
        lines.append(f"| {r['fault']} | {'yes' if r['finished'] else 'NO'}{' - ' + r['note'] if r['note'] else ''} | "
                     f"{outcome} | {noticed} | {left(r['orphans'])} | {left(r['shm'])} | {left(r['tmp'])} | "
                     f"{len(r['rows_lost'])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--table", type=Path, help="write the table (markdown) into this file, and its rows into "
                        "the same name with .json; rows of faults not run this time are kept from that file")
    args = parser.parse_args()
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    stored = args.table.with_suffix(".json") if args.table else None
    rows = json.loads(stored.read_text()) if stored and stored.is_file() else {}
    root = Path(tempfile.mkdtemp(prefix="revati-faults-"))
    for name in names:
        print(f"{name}: running (logs in {root})", flush=True)
        rows[name] = {**run_fault(name, root), "date": time.strftime("%Y-%m-%d", time.gmtime())}
        print(f"{name}: {rows[name]}", flush=True)
    ordered = [rows[name] for name in FAULTS if name in rows]
    text = table(ordered)
    print(text)
    if args.table:
        stored.write_text(json.dumps(rows, indent=1) + "\n")
        args.table.write_text(
            "# Faults injected into a study, and what each left behind\n\n"
            f"Written by `python3 benchmarks/fault_matrix.py --table {args.table}` "
            f"({', '.join(sorted({r['date'] for r in ordered}))}, {os.cpu_count()}-core host; the rows in "
            f"{stored.name}): each fault in a study of its own, `revati-tune search {STUDY}` with "
            f"{' '.join(BASE)}. The columns are explained in the script's docstring; `noticed after` runs "
            "from the injection to the faulted trial's end in the study's storage.\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
