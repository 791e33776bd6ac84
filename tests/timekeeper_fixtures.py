"""Running a multi-process deployment under a Timekeeper, for tests.

    from timekeeper_fixtures import run_deployment
    result = run_deployment([[prog, "0"], [prog, "1"]], gpus=2, predictor_rules="kernel * 1.0\\n")

Every process gets the vGPU environment, the Timekeeper's variables, the fixed predictor with the
given rules and one shared launch trace; result carries each process's CompletedProcess-like
output, the parsed trace rows and the Timekeeper (stopped) for its clock, jumps and failure.

    with live_deployment(tmp_path) as d:        # processes started one by one, talking to the test
        server = d.start([...]); port = d.first_line(server); d.start([..., port])
        results, wall = d.finish()
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pytest

from emulator.timekeeper.server import Timekeeper
from vgpu_fixtures import parse_trace, vgpu_env


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Deployment:
    processes: list[Finished]
    trace: list[dict]
    virtual_s: float
    wall_s: float
    jumps: int
    failure: str | None
    log: list[str]


def run_deployment(commands: Sequence[Sequence[str]], gpus: int = 1, predictor_rules: str = "",
                   env: Mapping[str, str] | None = None, timeout: float = 120,
                   deadlock_after_s: float = 5.0, cpu_scale: float = 1.0) -> Deployment:
    workdir = Path(tempfile.mkdtemp(prefix="revati-tk-test-"))
    log: list[str] = []
    timekeeper = Timekeeper(deadlock_after_s=deadlock_after_s, watchdog_s=timeout, cpu_scale=cpu_scale,
                            log=log.append)
    try:
        with timekeeper:
            run_env = vgpu_env(gpus, workdir=workdir)
            run_env.update(timekeeper.env())
            (workdir / "rules").write_text(predictor_rules)
            run_env["REVATI_PREDICTOR"] = f"fixed:{workdir / 'rules'}"
            run_env["REVATI_VGPU_TRACE"] = str(workdir / "trace.csv")
            run_env.update(env or {})
            start = time.monotonic()
            procs = [subprocess.Popen([str(c) for c in cmd], env=run_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for cmd in commands]
            while any(p.poll() is None for p in procs) and timekeeper.failure is None:
                time.sleep(0.02)
            for p in procs:                 # a Timekeeper failure ends the deployment
                if p.poll() is None:
                    p.kill()
            outputs = [p.communicate() for p in procs]
            wall = time.monotonic() - start
        return Deployment([Finished(p.returncode, out, err) for p, (out, err) in zip(procs, outputs)],
                          parse_trace(workdir / "trace.csv"), timekeeper.final_ns / 1e9, wall,
                          timekeeper.jumps, timekeeper.failure, log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class LiveDeployment:
    """Processes started one by one under one Timekeeper, with the vGPU library preloaded."""

    def __init__(self, timekeeper: Timekeeper, env: dict[str, str]) -> None:
        self.timekeeper = timekeeper
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.started: float | None = None

    def start(self, cmd) -> subprocess.Popen:
        if self.started is None:
            self.started = time.monotonic()
        proc = subprocess.Popen([str(c) for c in cmd], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def first_line(self, proc: subprocess.Popen) -> str:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            pytest.fail(f"{proc.args} exited {proc.returncode} before printing:\n{proc.stderr.read()[-3000:]}")
        return line.strip()

    def finish(self, timeout: float = 60) -> tuple[list[tuple[int, str, str]], float]:
        """Wait for every process; returns (returncode, stdout, stderr) each, and the wall time."""
        deadline = time.monotonic() + timeout
        while any(p.poll() is None for p in self.procs):
            if self.timekeeper.failure or time.monotonic() > deadline:
                for p in self.procs:
                    p.kill()
                break
            time.sleep(0.01)
        wall = time.monotonic() - self.started
        results = [(p.wait(), *p.communicate()) for p in self.procs]
        assert self.timekeeper.failure is None, self.timekeeper.failure
        for args, (code, out, err) in zip((p.args for p in self.procs), results):
            assert code == 0, f"{args} exited {code}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
        return results, wall


@contextmanager
def live_deployment(tmp_path: Path, gpus: int = 1, predictor_rules: str = ""):
    log: list[str] = []
    with Timekeeper(deadlock_after_s=10, watchdog_s=120, log=log.append) as tk:
        env = vgpu_env(gpus, workdir=tmp_path)
        env.update(tk.env())
        (tmp_path / "rules").write_text(predictor_rules)
        env["REVATI_PREDICTOR"] = f"fixed:{tmp_path / 'rules'}"
        yield LiveDeployment(tk, env)
    print("\n".join(log))


def json_line(stdout: str) -> dict:
    """The last line of a program's output that is a JSON object."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
