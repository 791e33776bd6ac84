"""One emulated deployment serving one workload: what `revati-tune run` and every search trial do.

    Timekeeper (this process)
    ├── the engine's server (its own session): `vllm serve` on virtual GPUs, dummy weights
    └── the load generator (emulator/loadgen.py): replays the workload against the server

Both run on the vGPU library under one Timekeeper, so the load generator's arrival times and the
server's step times are on one virtual clock. The run ends when the load generator has all its
answers (or fails, or the wall-clock timeout passes); the server's whole process group is then
ended. Results go to `out`: requests.parquet (one row per request), summary.json (the resolved
configuration, the metrics as `vllm bench serve` defines them, where the GPU time went, and the
run's virtual and wall time), and the processes' logs.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from emulator import feasibility, host_cpu, metrics
from emulator.engines.adapter import EngineAdapter, ServingKnobs
from emulator.engines.envs import env_python
from emulator.engines.hf_transformers import TransformersAdapter
from emulator.engines.sglang import SglangAdapter
from emulator.engines.vllm import VllmAdapter
from emulator.hardware import load_sku
from emulator.loadgen import READY_LINE
from emulator.predictor.attribution import by_family, read_stats
from emulator.process_groups import end_group
from emulator.timekeeper.server import Timekeeper
from emulator.vgpu_environment import vgpu_environment

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "conf" / "model"
ADAPTERS: dict[str, EngineAdapter] = {"vllm": VllmAdapter(), "sglang": SglangAdapter(),
                                      "transformers": TransformersAdapter()}
SERVER_STOP_S = 30.0


class RunFailed(RuntimeError):
    """The deployment did not serve the workload; the message says why (and where the logs are)."""


@dataclass(frozen=True)
class RunConfig:
    model: str                  # a folder under conf/model
    sku: str
    knobs: ServingKnobs
    workload: dict              # emulator.loadgen's spec, less base_url and model
    engine: str = "vllm"
    slos_ms: dict | None = None         # {"ttft": ms, "tpot": ms, "e2el": ms}
    timeout_s: float = 1800.0           # wall clock, for the whole run
    # Target host CPU seconds per second of this host's, where known better than emulator/host_cpu.py's
    # calibration (None: that calibration).
    cpu_scale: float | None = None

    def model_dir(self) -> Path:
        path = MODELS / self.model
        if not (path / "config.json").is_file():
            known = sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file())
            raise ValueError(f"model {self.model!r} has no conf/model/{self.model}/config.json; known: {', '.join(known)}")
        return path


def run(config: RunConfig, out: Path, progress: Callable[[float, bool], None] = lambda virtual_s, serving: None) -> dict:
    """Serve the workload; returns the summary (also written to out/summary.json). progress is
    called about ten times a wall second with the virtual seconds so far and whether the server
    has taken load yet."""
    if config.engine not in ADAPTERS:
        raise ValueError(f"engine must be one of {', '.join(ADAPTERS)}, got {config.engine!r}")
    adapter = ADAPTERS[config.engine]
    model_dir = config.model_dir()
    feasibility.check(model_dir, config.knobs, load_sku(config.sku))
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    spec = {**config.workload, "base_url": f"http://127.0.0.1:{port}", "model": str(model_dir), "api": adapter.api}
    (out / "workload.json").write_text(json.dumps(spec, indent=2))
    records_path = out / "requests.jsonl"
    if config.cpu_scale is not None and not config.cpu_scale > 0:
        raise ValueError(f"cpu_scale must be a positive number (target CPU seconds per host second), got {config.cpu_scale!r}")
    calibration = (host_cpu.Calibration(config.cpu_scale, f"host CPU time charged x{config.cpu_scale:g}, as configured")
                   if config.cpu_scale is not None else host_cpu.calibrate(load_sku(config.sku).sku, adapter.python()))
    started = time.monotonic()
    with Timekeeper(cpu_scale=calibration.cpu_scale, watchdog_s=config.timeout_s,
                    log=lambda line: _append(out / "timekeeper.log", line)) as tk:
        env = vgpu_environment(config.knobs.gpus, config.sku, engine=adapter.name, workdir=out / "vgpu")
        env.update(tk.env())
        env.update(adapter.environment())
        env["REVATI_VGPU_STATS"] = str(out / "vgpu" / "stats-%p.csv")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), adapter.environment().get("PYTHONPATH"))))
        with open(out / "server.log", "w") as server_log, open(out / "loadgen.log", "w") as loadgen_log:
            server = subprocess.Popen(adapter.server_command(model_dir, port, config.knobs), env=env,
                                      stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
            loadgen = subprocess.Popen([str(env_python(adapter.name)), "-m", "emulator.loadgen", "--spec",
                                        str(out / "workload.json"), "--out", str(records_path)], env=env,
                                       stdout=loadgen_log, stderr=subprocess.STDOUT, start_new_session=True)
            # Each leads a session of its own: what to look for if a run was killed outright.
            (out / "processes.json").write_text(json.dumps({"server": server.pid, "loadgen": loadgen.pid}))
            try:
                failure, serving_since = _wait(loadgen, server, tk, out / "loadgen.log", progress)
            finally:
                _stop(server)
                for process in (loadgen, server):
                    end_group(process.pid)
                    process.wait()
        virtual_s = tk.clock.now_ns / 1e9
    wall_s = time.monotonic() - started
    startup_wall_s = (serving_since or time.monotonic()) - started
    if failure:
        raise RunFailed(f"{failure}; the server's last lines:\n{_tail(out / 'server.log')}\n(all logs in {out})")
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line.startswith('{"request_id"')]
    metrics.records_frame(records).to_parquet(out / "requests.parquet")
    summary = {
        "config": {"model": config.model, "sku": config.sku, "engine": config.engine, "knobs": asdict(config.knobs),
                   "workload": config.workload, "slos_ms": config.slos_ms,
                   "server_command": adapter.server_command(model_dir, port, config.knobs),
                   "emulation_notes": [*adapter.emulation_notes(), calibration.note],
                   "cpu_scale": calibration.cpu_scale},
        "metrics": metrics.compute(records, config.slos_ms),
        "gpu_time_by_family": by_family(read_stats((out / "vgpu").glob("stats-*.csv"))).to_dict("records"),
        "virtual_seconds": virtual_s,
        "wall_seconds": wall_s,
        # Start-up (engine load, compilation, CUDA graphs) until the server took load, then serving.
        "startup_wall_seconds": startup_wall_s,
        "serving_wall_seconds": wall_s - startup_wall_s,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


def _wait(loadgen: subprocess.Popen, server: subprocess.Popen, tk: Timekeeper, loadgen_log: Path,
          progress: Callable[[float, bool], None]) -> tuple[str | None, float | None]:
    """(None once the load generator finished its workload, else what went wrong; the wall time
    at which the server took load, seen to within the polling interval)."""
    serving_since = None
    while True:
        if serving_since is None and READY_LINE in loadgen_log.read_text(errors="replace"):
            serving_since = time.monotonic()
        progress(tk.clock.now_ns / 1e9, serving_since is not None)
        if tk.failure:
            return tk.failure.splitlines()[0], serving_since
        code = loadgen.poll()
        if code is not None:
            return (None if code == 0 else f"the load generator exited with status {code}"), serving_since
        if server.poll() is not None:
            return (f"the {server.args[0]} server exited with status {server.returncode} before the workload "
                    f"ended"), serving_since
        time.sleep(0.1)


def _stop(server: subprocess.Popen) -> None:
    """Ask the server to shut down as an operator would (SIGTERM to it alone), so that it stops its
    engine processes in order; what is left after SERVER_STOP_S is ended with the group."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line[:300] for line in text[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
