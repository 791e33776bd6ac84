"""Running a multi-process deployment under a Timekeeper, for tests.

    from timekeeper_fixtures import run_deployment
    result = run_deployment([[prog, "0"], [prog, "1"]], gpus=2, predictor_rules="kernel * 1.0\\n")

Every process gets the vGPU environment, the Timekeeper's variables, the fixed predictor with the
given rules and one shared launch trace; result carries each process's CompletedProcess-like
output, the parsed trace rows and the Timekeeper (stopped) for its clock, jumps and failure.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

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
