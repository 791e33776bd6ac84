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
    python -m emulator.host_cpu --sample FILE       a round every second into FILE, until ended

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


def _timed_rounds():
    """The workload's rounds, each's thread-CPU seconds, after one round to warm imports, the
    allocator and caches; single-threaded torch, as an engine's step loop is."""
    import torch
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


def sample_while_running(out: Path, every_s: float) -> None:
    """One round of the workload every `every_s` seconds, appended to `out` as a line "wall-clock
    time, thread-CPU seconds", until this process is ended: the host's speed while a real server
    runs beside it, on another of the server host's cores (a round is ~40 ms of one core)."""
    with open(out, "a", buffering=1) as f:
        for seconds in _timed_rounds():
            f.write(f"{time.time():.3f} {seconds:.6f}\n")
            time.sleep(every_s)


def during(path: Path, start: float, end: float) -> dict | None:
    """A figure (measure_here's keys) from the rounds sample_while_running wrote to `path` between
    wall-clock times `start` and `end`, or None if there were none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    ordered = sorted(float(seconds) for when, seconds in (line.split() for line in lines if len(line.split()) == 2)
                     if start <= float(when) <= end)
    if not ordered:
        return None
    return {"seconds": statistics.median(ordered), "spread": [ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]],
            "rounds": len(ordered), "workload_version": WORKLOAD_VERSION, "cpu": cpu_model(), "while_serving": True}


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
    path = DATA_DIR / sku / "host_cpu.json"
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
    parser.add_argument("--sample", type=Path, metavar="FILE", help="instead: append one round's seconds to FILE "
                        "every --every seconds until ended (the host's speed while a server runs)")
    parser.add_argument("--every", type=float, default=1.0, metavar="S")
    args = parser.parse_args(argv)
    if args.sample:
        sample_while_running(args.sample, args.every)
        return 0
    figure = measure_here()
    text = json.dumps(figure)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figure, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
