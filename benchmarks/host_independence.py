#!/usr/bin/env python3
"""Whether the emulating host's core count leaks into virtual time: the same emulated deployment run
on one core of this host and on all of them, metric by metric.

Under the Timekeeper each thread is charged its own CPU time, so in principle a deployment's
virtual timeline does not depend on how many cores serve it. In practice ranks that share a core
are charged CPU unevenly (cache and scheduler effects, system time), and a collective waits for
the rank charged most. This runs each configuration twice, one after the other on the same host:
pinned to CPU 0 (sched_setaffinity, inherited by the Timekeeper here and every process it
starts), then on every CPU this process may use, and prints each latency statistic of the summary
(mean, p50, p90, p99 of TTFT, TPOT, ITL, E2EL) for both, their relative difference, and whether it
is within the bound (2% for mean and p50, 5% for p90 and p99). With --repeats N the placements
alternate N times (one, all, one, all, ...): each column is the median of its N runs, with their
spread (min-max) beside it, the run-to-run noise that a difference must stand out of.

    python3 benchmarks/host_independence.py [--config llama3_8b:2] [--config llama3_8b:4] [--requests 60] [--rate 4] [--repeats 1]

A configuration is MODEL:TP (vLLM, virtual H100s, CUDA graphs on, a Poisson workload of --requests
prompts of 128-512 tokens and outputs of 32-96 at --rate req/s, seed 0: the same requests each run).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emulator.engines.adapter import ServingKnobs  # noqa: E402
from emulator.deployment import RunConfig, serve  # noqa: E402

LATENCIES = ("ttft", "tpot", "itl", "e2el")
STATS = {"mean": 0.02, "median": 0.02, "p90": 0.05, "p99": 0.05}


def serve_pinned(model: str, tp: int, requests: int, rate: float, cpus: set[int], out: Path) -> dict:
    workload = {"num_requests": requests, "seed": 0, "arrival": {"process": "poisson", "rate": rate},
                "prompt_len": {"kind": "uniform", "low": 128, "high": 512},
                "output_len": {"kind": "uniform", "low": 32, "high": 96}}
    config = RunConfig(model=model, sku="h100", knobs=ServingKnobs(tensor_parallel=tp), workload=workload,
                       timeout_s=3600)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        return serve(config, out)
    finally:
        os.sched_setaffinity(0, before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, metavar="MODEL:TP")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per placement, alternating")
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: a temporary folder)")
    args = parser.parse_args()
    every = os.sched_getaffinity(0)
    if len(every) < 2:
        parser.error(f"this process may use {len(every)} CPU: nothing to compare one core with")
    configs = [(c.split(":")[0], int(c.split(":")[1])) for c in (args.config or ["llama3_8b:2", "llama3_8b:4"])]
    print(f"| deployment | metric | 1 core | {len(every)} cores | difference | bound | within |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for model, tp in configs:
        one, all_, catch_ups = [], [], {"1 core": [], f"{len(every)} cores": []}
        with tempfile.TemporaryDirectory(prefix="revati-host-independence-") as work:
            folder = args.out / f"{model}-tp{tp}" if args.out else Path(work)
            for repeat in range(args.repeats):
                for runs, cpus, name, label in ((one, {min(every)}, "one", "1 core"),
                                                (all_, every, "all", f"{len(every)} cores")):
                    summary = serve_pinned(model, tp, args.requests, args.rate, cpus, folder / f"{name}-{repeat}")
                    runs.append(summary.metrics)
                    catch_ups[label].append({c["name"]: c["events"] for c in summary.catch_ups})
        # How often a clock caught up with the latest send anywhere while serving (README, channels):
        # the host-dependent part of the timeline, per run.
        print(f"| {model} TP{tp} | catch-ups while serving (unseen sleeps, unnamed channels) per run | "
              + " | ".join(", ".join(f"{c.get('unseen_sleep', 0)}/{c.get('unnamed_channel', 0)}" for c in runs)
                           for runs in catch_ups.values()) + " | | | |", flush=True)
        for latency in LATENCIES:
            for stat, bound in STATS.items():
                key = f"{stat}_{latency}_ms"
                a, b = statistics.median(m[key] for m in one), statistics.median(m[key] for m in all_)
                difference = a / b - 1 if b else 0.0
                worst = max(worst, abs(difference) / bound)
                name = "p50" if stat == "median" else stat
                print(f"| {model} TP{tp} | {latency.upper()} {name} (ms) | {_cell(a, one, key)} | {_cell(b, all_, key)} | "
                      f"{difference:+.1%} | {bound:.0%} | {'yes' if abs(difference) <= bound else 'NO'} |", flush=True)
    print(f"\nlargest difference over its bound: {worst:.2f}x")
    return 0


def _cell(median: float, runs: list[dict], key: str) -> str:
    """A placement's median, and its runs' spread where there are several."""
    if len(runs) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} ({min(m[key] for m in runs):.2f}-{max(m[key] for m in runs):.2f})"


if __name__ == "__main__":
    sys.exit(main())
