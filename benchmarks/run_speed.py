#!/usr/bin/env python3
"""Emulation speed of `revati-tune run`: virtual seconds served per wall second, start-up wall time
and peak host memory of an emulated vLLM or SGLang deployment on this machine.

Runs one deployment per configuration (default: vLLM serving Llama-3.1-8B TP1 on virtual H100s,
CUDA graphs on, as vLLM deploys it) serving a Poisson workload, and prints per configuration: serving virtual
seconds (vllm bench serve's duration) over serving wall seconds, the start-up wall time (engine
load, compilation, CUDA graph capture) and the peak resident memory of all the deployment's
processes together, sampled every 0.2 s, and where the host CPU went while serving: CPU seconds
per process name (engine core, API server, workers, load generator, and this process, which holds
the Timekeeper) for each serving virtual second. CPU time is what each emulated thread is charged
in virtual time, so when the processes together need more CPU seconds per virtual second than the
host has cores, the emulation cannot run faster than real time.

    python3 benchmarks/run_speed.py [--config llama3_8b:1] [--config sglang/llama3_70b:4:1:200] [--rate 8]

A configuration is [ENGINE/]MODEL:TP[:PP[:REQUESTS]] (ENGINE defaults to vllm, REQUESTS to
--requests); configurations of both engines side by side compare their emulation costs in one run. The table also
carries each run's mean TTFT/TPOT/ITL, so the same runs show that the sizes of the run issue
(8B TP1 and 70B TP4 at 200 requests, TP8 and PP2 at 50) are served end to end.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emulator.engines.adapter import ServingKnobs  # noqa: E402
from emulator.deployment import RunConfig, serve  # noqa: E402


def deployment_processes(out: Path) -> dict[int, tuple[str, int, float]]:
    """pid -> (name, resident bytes, CPU seconds) of every process of the run's server and load
    generator sessions, and of this process (the Timekeeper's)."""
    sessions = out / "processes.json"         # the sessions' leaders, written by emulator.deployment
    groups = set(json.loads(sessions.read_text()).values()) if sessions.is_file() else set()
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                name, fields = f.read().split("(", 1)[1].rsplit(")", 1)
            fields = fields.split()
            if int(fields[2]) in groups or int(fields[3]) in groups or int(entry.name) == os.getpid():
                with open(f"/proc/{entry.name}/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime
                own = int(entry.name) == os.getpid()
                found[int(entry.name)] = ("Timekeeper (and this sampler)" if own else name, 0 if own else rss, cpu)
        except (OSError, IndexError, ValueError):
            continue
    return found


def serving_cpu(samples: list[tuple[float, dict]], serving_from: float) -> dict[str, float]:
    """CPU seconds spent after `serving_from` (wall), by process name, from the samples."""
    before: dict[int, float] = {}
    last: dict[int, tuple[str, float]] = {}
    for t, processes in samples:
        for pid, (name, _, cpu) in processes.items():
            if t <= serving_from:
                before[pid] = cpu
            last[pid] = (name, cpu)
    by_name: dict[str, float] = {}
    for pid, (name, cpu) in last.items():
        by_name[name] = by_name.get(name, 0.0) + cpu - before.get(pid, 0.0)
    return dict(sorted(by_name.items(), key=lambda item: -item[1]))


def measure(engine: str, model: str, tp: int, pp: int, requests: int, rate: float, sku: str) -> dict:
    workload = {"num_requests": requests, "seed": 0, "arrival": {"process": "poisson", "rate": rate, "burstiness": 1.0},
                "prompt_len": {"kind": "uniform", "low": 128, "high": 1024},
                "output_len": {"kind": "uniform", "low": 32, "high": 256},
                "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 3600.0}
    with tempfile.TemporaryDirectory(prefix="revati-run-speed-") as tmp:
        out = Path(tmp)
        samples: list[tuple[float, dict]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                samples.append((time.monotonic(), deployment_processes(out)))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        sampler.start()
        try:
            summary = serve(RunConfig(model=model, sku=sku, engine=engine, workload=workload, timeout_s=3600,
                                      knobs=ServingKnobs(tensor_parallel=tp, pipeline_parallel=pp)), out)
        finally:
            done.set()
            sampler.join()
    serving_virtual = summary.metrics["duration"]
    m = summary.metrics
    peak = max((sum(rss for _, rss, _ in processes.values()) for _, processes in samples), default=0)
    cpu = serving_cpu(samples, started + summary.startup_wall_seconds)
    return {"config": f"{engine}: {model} TP{tp} PP{pp} on {sku}", "requests": m["completed"],
            "ttft_ms": m["mean_ttft_ms"], "tpot_ms": m["mean_tpot_ms"], "itl_ms": m["mean_itl_ms"],
            "serving_virtual_s": serving_virtual, "serving_wall_s": summary.serving_wall_seconds,
            "speed": serving_virtual / summary.serving_wall_seconds,
            "startup_wall_s": summary.startup_wall_seconds, "peak_rss_gib": peak / 2**30,
            "cpu_s_per_virtual_s": {name: seconds / serving_virtual for name, seconds in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help="[ENGINE/]MODEL:TP[:PP[:REQUESTS]] (default vllm/llama3_8b:1)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per (virtual) second")
    parser.add_argument("--sku", default="h100")
    args = parser.parse_args()
    rows = []
    for config in args.config or ["llama3_8b:1"]:
        engine, _, config = config.rpartition("/")
        model, tp, pp, requests = (config.split(":") + ["1", str(args.requests)][len(config.split(":")) - 2:])[:4]
        rows.append(measure(engine or "vllm", model, int(tp), int(pp), int(requests), args.rate, args.sku))
        print(rows[-1], flush=True)
    print("| configuration | requests | TTFT ms | TPOT ms | ITL ms | virtual s | wall s | virtual/wall | start-up s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['requests']} | {r['ttft_ms']:.2f} | {r['tpot_ms']:.2f} | {r['itl_ms']:.2f} | "
              f"{r['serving_virtual_s']:.2f} | {r['serving_wall_s']:.2f} | {r['speed']:.3f} | {r['startup_wall_s']:.1f} | "
              f"{r['peak_rss_gib']:.2f} |")
    print(f"\nHost CPU seconds per serving virtual second, by process ({os.cpu_count()} cores here):")
    for r in rows:
        shares = r["cpu_s_per_virtual_s"]
        print(f"- {r['config']}: {sum(shares.values()):.2f} in all; "
              + ", ".join(f"{name} {value:.2f}" for name, value in shares.items() if value >= 0.005))
    return 0


if __name__ == "__main__":
    sys.exit(main())
