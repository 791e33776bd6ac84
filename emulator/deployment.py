"""One deployment serving one workload: the one place that starts an engine and drives it.

    Timekeeper (this process; emulated runs only)
    ├── the engine's server (its own session): on virtual GPUs of the SKU, dummy weights
    └── the load generator (emulator/loadgen.py): replays the workload against the server

Emulated, both run on the vGPU library under one Timekeeper, so the load generator's arrival times
and the server's step times are on one virtual clock. On a real GPU (validate's real side) the same
two processes run in real time with nothing preloaded. The run ends when the load generator has
all its answers, or fails, or the wall-clock limit passes; the server is then asked to stop as an
operator would, and what is left of both sessions is ended. Results go to `out`: requests.jsonl
(one record per request, as the load generator wrote them) and requests.parquet, summary.json
(RunSummary), the processes' logs, and processes.json (the sessions' leaders, for whoever must
clean up after a run that was killed outright).

`revati-tune run`, `validate` and the benchmarks call `serve` in-process. A search trial runs it
through the worker entry point, a process of its own that a hung or crashing deployment cannot
take down and that the study driver can stop like Ctrl-C:

    python -m emulator.deployment RUN_DIR
        serves RUN_DIR/run_config.json (RunConfig.write) into RUN_DIR; exit status 0 served,
        1 failed while running, 2 refused before launch, 130 stopped; the reason is the last
        stderr line that starts with "revati-tune: ".
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from emulator import endpoints, feasibility, host_cpu, leftovers, metrics, paths
from emulator.engines import envs
from emulator.engines.adapter import EngineAdapter, ServingKnobs
from emulator.engines.registry import adapter as engine_adapter
from emulator.hardware import load_sku
from emulator.loadgen import READY_LINE
from emulator.process_groups import end_group

SERVER_STOP_S = 30.0
# How often the processes' shared-memory files are looked at (leftovers.py), besides once at the end.
SHM_LOOK_S = 5.0
CONFIG_FILE, SUMMARY_FILE, ENDPOINTS_FILE = "run_config.json", "summary.json", "endpoints.json"
# The worker's exit statuses.
SERVED, FAILED, REFUSED, STOPPED = 0, 1, 2, 130
# Variables that put a process on virtual GPUs: a real-GPU run (or a deployment started from inside
# an emulated process) must not inherit them.
VGPU_VARIABLES = ("LD_PRELOAD", "REVATI_PREDICTOR", "REVATI_TK_ADDRESS", "VLLM_NCCL_SO_PATH", "SGLANG_NCCL_SO_PATH",
                  "TRITON_LIBCUDA_PATH", "CUTE_DSL_LIBS")


class RunFailed(RuntimeError):
    """The deployment did not serve the workload; the message says why (and where the logs are)."""


@dataclass(frozen=True)
class RunConfig:
    model: str                  # a folder under conf/model
    sku: str
    knobs: ServingKnobs
    workload: dict              # emulator.loadgen's spec, less base_url, model and api
    engine: str = "vllm"
    slos_ms: dict | None = None         # {"ttft": ms, "tpot": ms, "e2el": ms}
    timeout_s: float = 1800.0           # wall clock, for the whole run
    # Target host CPU seconds per second of this host's, where known better than emulator/host_cpu.py's
    # calibration (None: that calibration).
    cpu_scale: float | None = None
    # The GPU server's host-CPU figure (emulator/host_cpu.py) to calibrate against instead of the
    # SKU's committed one: validate's emulation of real runs is charged the host as it was then.
    server_host_cpu: dict | None = None
    server_args: tuple[str, ...] = ()   # appended to the engine's server command
    # Emulated runs: every launch with its device, virtual start and duration in OUT/vgpu/trace.csv,
    # or per instance of a disaggregated layout in OUT/vgpu/<instance>/trace.csv (the GPU timeline
    # of each step; tens of MB for a few hundred requests).
    launch_trace: bool = False

    def model_dir(self) -> Path:
        return paths.model_dir(self.model)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "knobs": asdict(self.knobs)}, indent=2))

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        data = json.loads(path.read_text())
        return cls(**{**data, "knobs": ServingKnobs.from_dict(data["knobs"]),
                      "server_args": tuple(data.get("server_args", ()))})


@dataclass
class RunSummary:
    """What a run measured, as summary.json holds it."""
    config: dict                # the resolved configuration, the server command, the emulation notes
    metrics: dict               # emulator.metrics.compute's: the metrics as `vllm bench serve` defines them
    wall_seconds: float
    # Start-up (engine load, compilation, CUDA graphs) until the server took load, then serving.
    startup_wall_seconds: float
    serving_wall_seconds: float
    virtual_seconds: float | None = None                        # emulated runs only
    gpu_time_by_family: list[dict] = field(default_factory=list)        # emulated: where GPU time went
    host_work: list[dict] = field(default_factory=list)                 # emulated: host work charged
    catch_ups: list[dict] = field(default_factory=list)     # emulated: clocks caught up with any send, serving
    host_cpu: dict | None = None        # the host's CPU speed measured just before the run (validate)
    host_cpu_in_serving_thread: dict | None = None  # ... and timed between steps in the server (validate)

    def write(self, out: Path) -> None:
        (out / SUMMARY_FILE).write_text(json.dumps(asdict(self), indent=2, default=float))

    @classmethod
    def read(cls, out: Path) -> RunSummary:
        data = json.loads((out / SUMMARY_FILE).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)


def serve(config: RunConfig, out: Path, *, emulated: bool = True,
          progress: Callable[[float, bool], None] = lambda virtual_s, serving: None) -> RunSummary:
    """Serve the workload, on virtual GPUs of config.sku (emulated) or on this machine's real GPU;
    returns the summary (also written to out/summary.json). progress is called about ten times a
    wall second with the virtual seconds so far (0 on a real GPU) and whether the server has taken
    load yet. Raises ValueError (feasibility.Infeasible among them) for a configuration refused
    before anything starts, RunFailed for a run that did not serve its workload."""
    adapter = engine_adapter(config.engine)
    model_dir = config.model_dir()
    out = out.resolve()         # the processes run in the repository, and are told paths under out
    if config.cpu_scale is not None and not config.cpu_scale > 0:
        raise ValueError(f"cpu_scale must be a positive number (target CPU seconds per host second), got {config.cpu_scale!r}")
    if emulated:
        feasibility.check(model_dir, config.knobs, load_sku(config.sku))
    elif config.knobs.disaggregated:
        raise ValueError("prefill_instances: a disaggregated layout runs on virtual GPUs only (a real run here has "
                         "one GPU); set prefill_instances to 0")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"out: cannot create {out} ({error.strerror}); give a folder you can write") from None
    port = _free_port()
    spec = {**config.workload, "base_url": f"http://127.0.0.1:{port}", "model": str(model_dir), "api": adapter.api}
    (out / "workload.json").write_text(json.dumps(spec, indent=2))
    instances = _instances(adapter, model_dir, port, config)
    env = plain_environment()
    env.update(adapter.environment())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(paths.REPO), adapter.environment().get("PYTHONPATH"))))
    notes = adapter.emulation_notes()
    if config.knobs.disaggregated:
        k = config.knobs
        notes.append(f"disaggregated: {k.prefill_instances} prefill instance(s) of {k.prefill_tp} GPU(s) and "
                     f"{k.decode_instances} decode instance(s) of {k.tensor_parallel} behind a proxy; "
                     + adapter.kv_transfer_note)
    started = time.monotonic()
    if not emulated:
        processes = _Processes(instances, adapter, {name: env for name in instances}, env, out)
        failure, serving_since, ended = processes.wait(None, config.timeout_s, progress, started)
        virtual_s, cpu_scale = None, None
    else:
        calibration = _calibration(config, adapter)
        notes.append(calibration.note)
        cpu_scale = calibration.cpu_scale
        from emulator.timekeeper.server import Timekeeper
        from emulator.vgpu_environment import vgpu_environment
        with Timekeeper(cpu_scale=calibration.cpu_scale, watchdog_s=config.timeout_s,
                        log=lambda line: _append(out / "timekeeper.log", line)) as tk:
            env.update(tk.env())
            env["REVATI_HOST_WORK_SCALE"] = repr(calibration.host_work_scale)
            env["REVATI_VGPU_STATS"] = str(out / "vgpu" / "stats-%p.csv")
            # Each engine instance on GPUs of its own (a spec, and a launch trace, in a folder of its
            # own: its GPUs are numbered from 0 like every other instance's); the proxy and the load
            # generator use none, and run with the first instance's.
            engine = adapter.name if envs.is_managed(adapter.name) else None
            envs_by_name = {}
            for name, (_, gpus) in instances.items():
                if gpus:
                    folder = out / "vgpu" / ("" if len(instances) == 1 else name)
                    envs_by_name[name] = vgpu_environment(gpus, config.sku, engine=engine, base_env=env, workdir=folder)
                    if config.launch_trace:
                        envs_by_name[name]["REVATI_VGPU_TRACE"] = str(folder / "trace.csv")
            host_env = next(iter(envs_by_name.values()))
            processes = _Processes(instances, adapter, {name: envs_by_name.get(name, host_env) for name in instances},
                                   host_env, out)
            catch_ups_before = _CatchUpsAtServing(out / "vgpu", progress)
            failure, serving_since, ended = processes.wait(tk, config.timeout_s, catch_ups_before, started)
            virtual_s = tk.clock.now_ns / 1e9
    exposed = sorted(str(e) for e in processes.endpoints if not e.loopback)
    if exposed:
        notes.append(f"the engine listens beyond loopback on {', '.join(exposed)} (all listening ports: "
                     f"{out / ENDPOINTS_FILE})")
    if failure:
        raise RunFailed(f"{failure}; {processes.last_lines()}\n(all logs in {out})")
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()
               if line.startswith('{"request_id"')]
    try:
        metrics.records_frame(records).to_parquet(out / "requests.parquet")
    except ImportError:         # no pyarrow (a GPU machine's bare image): requests.jsonl holds the same rows
        pass
    startup_end = serving_since or ended
    summary = RunSummary(
        config={"model": config.model, "sku": config.sku, "engine": config.engine, "knobs": asdict(config.knobs),
                "workload": config.workload, "slos_ms": config.slos_ms,
                **_commands(instances),
                "emulated": emulated, "emulation_notes": notes if emulated else [], "cpu_scale": cpu_scale},
        metrics=metrics.compute(records, config.slos_ms),
        wall_seconds=ended - started, startup_wall_seconds=startup_end - started,
        serving_wall_seconds=ended - startup_end, virtual_seconds=virtual_s)
    if emulated:
        from emulator.predictor.attribution import by_family, host_work, read_stats
        stats = read_stats((out / "vgpu").glob("stats-*.csv"))
        summary.gpu_time_by_family = by_family(stats).to_dict("records")
        summary.host_work = host_work(stats).to_dict("records")
        summary.catch_ups = catch_ups_before.since(stats)
    summary.write(out)
    return summary


class _CatchUpsAtServing:
    """A progress callback that also reads the clock's catch-ups (attribution.catch_ups) when the
    server takes load, so that a run reports those of its serving alone: start-up's (model load,
    compilation, threads waking after long jumps) say nothing of the measured timeline."""

    def __init__(self, stats_dir: Path, progress: Callable[[float, bool], None]) -> None:
        self.stats_dir, self.progress = stats_dir, progress
        self.before: dict | None = None

    def __call__(self, virtual_s: float, serving: bool) -> None:
        if serving and self.before is None:
            from emulator.predictor.attribution import catch_ups, read_stats
            self.before = catch_ups(read_stats(self.stats_dir.glob("stats-*.csv"))).set_index("name").to_dict("index")
        self.progress(virtual_s, serving)

    def since(self, stats) -> list[dict]:
        """Catch-ups from the server taking load to the end: events and seconds per kind."""
        from emulator.predictor.attribution import catch_ups
        before = self.before or {}
        return [{"name": row.name, "events": int(row.events - before.get(row.name, {}).get("events", 0)),
                 "seconds": float(row.seconds - before.get(row.name, {}).get("seconds", 0.0))}
                for row in catch_ups(stats).itertuples()]


def plain_environment() -> dict[str, str]:
    """This process's environment without anything that would put a child on virtual GPUs."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REVATI_VGPU") and k not in VGPU_VARIABLES}


def _calibration(config: RunConfig, adapter: EngineAdapter) -> host_cpu.Calibration:
    if config.cpu_scale is not None:
        return host_cpu.Calibration(config.cpu_scale, f"host CPU time charged x{config.cpu_scale:g}, as configured")
    return host_cpu.calibrate(config.sku, adapter.python(), config.server_host_cpu)


def _instances(adapter: EngineAdapter, model_dir: Path, port: int, config: RunConfig) -> dict[str, tuple[list[str], int]]:
    """name -> (command, GPUs) of every process tree the deployment starts besides the load
    generator: the engine's server on `port`, or a disaggregated layout's instances and its proxy
    on `port`."""
    if not config.knobs.disaggregated:
        return {"server": ([*adapter.server_command(model_dir, port, config.knobs), *config.server_args],
                           config.knobs.gpus)}
    instances, urls = {}, {"prefill": [], "decode": []}
    for role in config.knobs.roles():
        http = _free_port()
        command = [*adapter.server_command(model_dir, http, role.knobs),
                   *adapter.role_arguments(role, _free_ports(role.knobs.tensor_parallel)), *config.server_args]
        instances[role.name] = (command, role.knobs.gpus)
        urls[role.kind].append(f"http://127.0.0.1:{http}")
    instances["proxy"] = (adapter.proxy_command(port, urls["prefill"], urls["decode"]), 0)
    return instances


def _commands(instances: dict[str, tuple[list[str], int]]) -> dict:
    """The summary's record of what ran: the server's command, or every instance's."""
    if list(instances) == ["server"]:
        return {"server_command": instances["server"][0]}
    return {"server_commands": {name: command for name, (command, _) in instances.items()}}


class _Processes:
    """The engine's processes (its server, or a disaggregated layout's instances and proxy) and the
    load generator, each leading a session of its own; each writes NAME.log."""

    def __init__(self, instances: dict[str, tuple[list[str], int]], adapter: EngineAdapter, envs_by_name: dict,
                 loadgen_env: dict, out: Path):
        self.out = out
        self.leftovers = leftovers.Leftovers(out / leftovers.RECORD_FILE)
        self.servers: dict[str, subprocess.Popen] = {}
        for name, (command, _) in instances.items():
            with open(out / f"{name}.log", "w") as log:
                self.servers[name] = subprocess.Popen(command, env=self.leftovers.environment(envs_by_name[name]),
                                                      cwd=paths.REPO, stdout=log, stderr=subprocess.STDOUT,
                                                      start_new_session=True)
        with open(out / "loadgen.log", "w") as loadgen_log:
            self.loadgen = subprocess.Popen([str(adapter.python()), "-m", "emulator.loadgen", "--spec",
                                             str(out / "workload.json"), "--out", str(out / "requests.jsonl")],
                                            env=self.leftovers.environment(loadgen_env), cwd=paths.REPO,
                                            stdout=loadgen_log, stderr=subprocess.STDOUT, start_new_session=True)
        (out / "processes.json").write_text(json.dumps({**{name: p.pid for name, p in self.servers.items()},
                                                        "loadgen": self.loadgen.pid}))
        self.sessions = {p.pid for p in self.servers.values()} | {self.loadgen.pid}
        self.endpoints: set[endpoints.Endpoint] = set()

    def wait(self, tk, timeout_s: float, progress: Callable[[float, bool], None],
             started: float) -> tuple[str | None, float | None, float]:
        """(None once the load generator finished its workload, else what went wrong; the wall time
        at which the server took load, seen to within the polling interval; the wall time at which
        the run ended), with every session ended, whatever happened, before it returns."""
        serving_since = None
        last_look = 0.0
        try:
            while True:
                if time.monotonic() - last_look > SHM_LOOK_S:
                    self._look()
                    last_look = time.monotonic()
                if serving_since is None and READY_LINE in (self.out / "loadgen.log").read_text(errors="replace"):
                    serving_since = time.monotonic()
                progress(tk.clock.now_ns / 1e9 if tk else 0.0, serving_since is not None)
                if tk is not None and tk.failure:
                    failure = tk.failure.splitlines()[0]
                    break
                code = self.loadgen.poll()
                if code is not None:
                    failure = None if code == 0 else f"the load generator exited with status {code}"
                    break
                exited = next((name for name, p in self.servers.items() if p.poll() is not None), None)
                if exited is not None:
                    server = self.servers[exited]
                    what = f"the {Path(server.args[0]).name} server" if exited == "server" else f"the {exited} process"
                    failure = f"{what} exited with status {server.returncode} before the workload ended"
                    break
                if time.monotonic() - started > timeout_s:
                    failure = f"not done after {timeout_s:.0f} s of wall time"
                    break
                time.sleep(0.1)
            return failure, serving_since, time.monotonic()
        finally:
            # A failed Timekeeper answers nothing more: virtual time stands still, and a server
            # asked to stop would spend its whole grace period waiting on it.
            self._stop(graceful=tk is None or tk.failure is None)

    def last_lines(self) -> str:
        """The end of every log, for a failure's message."""
        parts = [f"the {name}'s last lines:\n{_tail(self.out / f'{name}.log')}" for name in self.servers]
        parts.append(f"the load generator's last lines:\n{_tail(self.out / 'loadgen.log', 8)}")
        return "\n".join(parts)

    def _look(self) -> None:
        """Note what the sessions hold: /dev/shm files (to remove them later) and listening ports
        (written to endpoints.json, each with whether it is loopback only)."""
        pids = leftovers.session_pids(self.sessions)
        self.leftovers.look_at(pids)
        new = set(endpoints.listening(pids)) - self.endpoints
        if new:
            self.endpoints |= new
            (self.out / ENDPOINTS_FILE).write_text(json.dumps(
                [{**asdict(e), "loopback": e.loopback} for e in sorted(self.endpoints, key=str)], indent=1))

    def _stop(self, graceful: bool) -> None:
        """SIGTERM to the servers alone, as an operator would, so that each stops its engine
        processes in order (when `graceful`); what is left after SERVER_STOP_S is ended with the
        sessions, and what they left on the host is removed."""
        self._look()
        running = [p for p in self.servers.values() if p.poll() is None] if graceful else []
        for server in running:
            server.terminate()
        deadline = time.monotonic() + SERVER_STOP_S
        for server in running:
            try:
                server.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for process in (self.loadgen, *self.servers.values()):
            end_group(process.pid)
            process.wait()
        leftovers.sweep(self.leftovers.record)


def _tail(path: Path, lines: int = 25) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line[:300] for line in text[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(count: int) -> int:
    """The first of `count` consecutive ports free on loopback now (a KV side channel's, one per rank)."""
    while True:
        first = _free_port()
        if first + count <= 65536 and all(_port_free(first + i) for i in range(1, count)):
            return first


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


# ---- the worker entry point --------------------------------------------------------------------

def die_with_parent() -> None:
    """A deployment started by a study driver is stopped (as by Ctrl-C) if the driver dies, even by
    SIGKILL, so that a killed study leaves no deployment running (REVATI_DIE_WITH_PARENT: the
    driver's pid)."""
    parent = os.environ.pop("REVATI_DIE_WITH_PARENT", None)
    if parent is None:
        return
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != int(parent):     # the driver died before the request took effect
        raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """A stop request (the study driver's, or an operator's) ends the deployment like Ctrl-C does,
    even where SIGINT came in ignored (a shell's background job)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.deployment", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help=f"the run folder: reads {CONFIG_FILE}, writes the results")
    args = parser.parse_args(argv)
    stop_like_ctrl_c()
    try:
        die_with_parent()
        summary = serve(RunConfig.read(args.run_dir / CONFIG_FILE), args.run_dir)
    except RunFailed as error:
        print(f"revati-tune: the run failed: {error}", file=sys.stderr)
        return FAILED
    except ValueError as error:         # refused before launch: names the field or knob and the fix
        print(f"revati-tune: {error}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        print("revati-tune: interrupted; the deployment was stopped", file=sys.stderr)
        return STOPPED
    print(f"served {summary.metrics.get('completed')} requests in {summary.virtual_seconds:.1f} virtual s")
    return SERVED


if __name__ == "__main__":
    sys.exit(main())
