"""How fast a host runs an engine's host-side step work: the calibration that turns the emulating
host's CPU seconds into the GPU server's.

Under the Timekeeper every thread is charged its own CPU time times cpu_scale (emulator/vgpu/
clock.c). Charged 1:1, a study on a slow laptop core sees a slower server than the one it plans
for: transformers' step loop on this project's 2-core AMD EPYC host took ~14 ms of CPU a step where
the H100 machine's Xeon took under 9 (docs/fidelity/h100.md). So both hosts run the same workload,
in the engine's own Python, and cpu_scale = target seconds / this host's seconds.

The workload is what an engine's host does between kernels, single-threaded (the GIL): a
scheduler's Python (request objects in dicts and lists, sorting, block bookkeeping) and torch's
operator dispatch on tiny CPU tensors (the C++ path every launched op takes before the driver).
Its time is thread CPU time, the median of ROUNDS rounds, so a loaded host measures what the
Timekeeper charges (CPU, not wall). A measurement takes about two seconds and is cached per host,
interpreter and workload version under $REVATI_HOME/host_cpu/.

    python -m emulator.host_cpu                     this interpreter's seconds per round, as JSON
    python -m emulator.host_cpu --out FILE          the same into FILE (the device machine's run)

The GPU server's figure is emulator/predictor/data/<sku>/host_cpu.json, measured on the lent
machine of that SKU (emulator/profiler/run_on_device.sh, family host_cpu). A SKU without one is charged 1:1,
and the run's emulation notes say so.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from emulator.paths import PREDICTOR_DATA as DATA_DIR, REPO, revati_home

WORKLOAD_VERSION = 1
ROUNDS = 7


# ---- the workload ------------------------------------------------------------------------------

@dataclass
class _Request:
    request_id: str
    prompt_len: int
    generated: list
    blocks: list
    priority: float


def _scheduler_round(steps: int = 400, live: int = 64) -> int:
    """A continuous-batching scheduler's bookkeeping over `live` requests for `steps` steps."""
    requests = {f"req-{i}": _Request(f"req-{i}", 128 + 37 * i % 900, [], [], (i * 7919) % 97 / 97)
                for i in range(live)}
    free_blocks = list(range(4096))
    done = 0
    for step in range(steps):
        batch = sorted(requests.values(), key=lambda r: (r.priority, r.request_id))[:32]
        tokens = {}
        for r in batch:
            r.generated.append((step * 31 + len(r.generated)) % 32000)
            if (r.prompt_len + len(r.generated)) % 16 == 1:
                r.blocks.append(free_blocks.pop())
            tokens[r.request_id] = r.generated[-1]
        for request_id in [k for k, r in requests.items() if len(r.generated) >= 40 + r.prompt_len % 23]:
            free_blocks.extend(requests.pop(request_id).blocks)
            done += 1
        for i in range(live - len(requests)):
            new_id = f"req-{step}-{i}"
            requests[new_id] = _Request(new_id, 200 + i, [], [], (step + i) % 13 / 13)
        done += len(tokens) > 0
    return done


def _dispatch_round(torch, ops: int = 10000) -> float:
    """torch's operator dispatch on tiny CPU tensors: the host cost of an op, not its arithmetic."""
    x = torch.zeros(16)
    index = torch.arange(4)
    total = 0.0
    for _ in range(ops // 5):
        y = x + 1
        z = torch.cat([x, y])
        w = z.index_select(0, index)
        v = w.view(2, 2).sum(dim=0)
        total += float(v[0])
    return total


def _timed_rounds(single_threaded: bool = True):
    """The workload's rounds, each's thread-CPU seconds, after one round to warm imports, the
    allocator and caches; single-threaded torch, as an engine's step loop is (its tiny tensors run
    on one thread either way: a sampler inside a server leaves the server's setting alone)."""
    import torch
    if single_threaded:
        torch.set_num_threads(1)
    _scheduler_round(), _dispatch_round(torch)
    while True:
        started = time.thread_time()
        _scheduler_round()
        _dispatch_round(torch)
        yield time.thread_time() - started


def measure_here() -> dict:
    """This interpreter's thread-CPU seconds per round of the workload (median of ROUNDS)."""
    import torch
    rounds = _timed_rounds()
    times = [next(rounds) for _ in range(ROUNDS)]
    return {"seconds": statistics.median(times), "spread": [min(times), max(times)], "rounds": ROUNDS,
            "workload_version": WORKLOAD_VERSION, "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class ServingThreadSampler:
    """The host's speed as the serving thread finds it: one round of the workload, in that thread,
    at most every `every_s` seconds of the server's clock. The server calls tick() before each step.
    Each sample is a line of `out`: the round's thread-CPU seconds, then the thread-CPU seconds the
    steps since the previous sample took, and how many steps that was (what the host's speed is
    used for: the step work itself, real against emulated).

    Why in that thread: a sampler in another process, on another core, measured 53-73 ms a round
    on the H100's server (2026-12-07) while that server's steps ran as at ~40 ms: its rounds
    flipped between ~42 and ~72 ms as it moved between cores, whatever the serving thread saw. A
    round in the serving thread runs on the core, beside the neighbours, that the steps run on.
    It delays the step after it by one round (~40-75 ms every `every_s`); a server samples on both
    sides of validate, so the real and the emulated runs carry the same delay."""

    def __init__(self, out: Path, every_s: float):
        self.out, self.every_s = out, every_s
        self._rounds = _timed_rounds(single_threaded=False)     # the engine's thread settings stay
        next(self._rounds)          # the warm-up round, and a first one, at start-up rather than mid-serving
        self._due = None
        self._steps, self._cpu = 0, 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if self._due is None:       # the first step loads caches: count from the next
            self._due, self._cpu = now + self.every_s, time.thread_time()
            return
        self._steps += 1
        if now >= self._due:
            steps_cpu = time.thread_time() - self._cpu
            seconds = next(self._rounds)
            with open(self.out, "a") as f:
                f.write(f"{seconds:.6f} {steps_cpu:.6f} {self._steps}\n")
            self._steps, self._cpu = 0, time.thread_time()
            self._due = time.monotonic() + self.every_s


def figure_of_samples(path: Path) -> dict | None:
    """A figure (measure_here's keys, and the serving thread's CPU seconds per step) from the
    samples a ServingThreadSampler wrote, or None."""
    try:
        samples = [tuple(float(x) for x in line.split()) for line in path.read_text().splitlines()]
    except (OSError, ValueError):
        return None
    if not samples:
        return None
    rounds = sorted(sample[0] for sample in samples)
    steps = sum(sample[2] for sample in samples)
    return {"seconds": statistics.median(rounds), "spread": [rounds[0], rounds[-1]], "rounds": len(rounds),
            "workload_version": WORKLOAD_VERSION, "cpu": cpu_model(), "in_serving_thread": True,
            "step_cpu_s": sum(sample[1] for sample in samples) / steps if steps else None, "steps": int(steps)}


def cpu_model() -> str:
    """The host CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---- the calibration ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Calibration:
    cpu_scale: float
    note: str               # how it was found, for the run's emulation notes
    # The server host's speed during the real runs against when the SKU's host costs (cuDNN graph
    # builds, the runtime's launch work) were measured: they scale with it (REVATI_HOST_WORK_SCALE).
    host_work_scale: float = 1.0


def target(sku: str) -> dict | None:
    """The GPU server's measurement for a SKU, or None where it was never measured."""
    return read_figure(DATA_DIR / sku / "host_cpu.json")


def read_figure(path: Path) -> dict | None:
    """A committed measurement of this workload (a SKU's host_cpu.json), or None where there is none;
    one of another workload version, or not a measurement, is refused."""
    if not path.is_file():
        return None
    try:
        figure = json.loads(path.read_text())
        if figure["workload_version"] != WORKLOAD_VERSION or not figure["seconds"] > 0:
            raise ValueError(f"workload version {figure['workload_version']}, seconds {figure['seconds']}")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a host_cpu measurement of workload version {WORKLOAD_VERSION} ({error}); "
                         f"measure it again with `python -m emulator.host_cpu --out {path}` on that SKU's "
                         f"machine") from error
    return figure


def measure_in(python: Path) -> dict:
    """The workload's seconds in `python` (an engine's interpreter) on this host, measured now."""
    proc = subprocess.run([str(python), "-m", "emulator.host_cpu"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise RuntimeError(f"measuring this host's CPU in {python} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def this_host(python: Path, cache_dir: Path) -> dict:
    """The workload's seconds on this host in `python` (the engine's interpreter), cached."""
    key = hashlib.sha256(f"{cpu_model()}|{Path(python).resolve()}|{WORKLOAD_VERSION}".encode()).hexdigest()[:16]
    cached = cache_dir / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    figure = measure_in(python)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(figure, indent=1))
    return figure


def calibrate(sku: str, python: Path, server: dict | None = None) -> Calibration:
    """cpu_scale for emulating `sku` with the engine in `python` on this host. server: the GPU
    server's figure as measured alongside a particular real run (validate); by default the SKU's
    committed one. A server host's speed moves between runs (docs/fidelity/h100_timeline.md), so a
    comparison with a real run is charged the host as it was then: its CPU time, and the host work
    measured on the server (host_work_scale: that figure against the committed one)."""
    committed = target(sku)
    when = ", measured with the real runs" if server is not None else ""
    server = server if server is not None else committed
    if server is None:
        return Calibration(1.0, f"host CPU not calibrated for {sku} (no emulator/predictor/data/{sku}/host_cpu.json): "
                                f"this host's CPU seconds are charged 1:1")
    here = this_host(python, revati_home() / "host_cpu")
    scale = server["seconds"] / here["seconds"]
    note = (f"host CPU time charged x{scale:.3f}: the step-work benchmark (emulator/host_cpu.py) took "
            f"{server['seconds'] * 1e3:.1f} ms on {sku}'s server ({server['cpu']}{when}) and "
            f"{here['seconds'] * 1e3:.1f} ms here ({here['cpu']})")
    work_scale = server["seconds"] / committed["seconds"] if committed else 1.0
    if work_scale != 1.0:
        note += (f"; the server's measured host work (cuDNN graph builds, launches) charged x{work_scale:.3f}: "
                 f"{committed['seconds'] * 1e3:.1f} ms when it was measured")
    return Calibration(scale, note, work_scale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator.host_cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the measurement to this file as well")
    args = parser.parse_args(argv)
    figure = measure_here()
    text = json.dumps(figure)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figure, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
