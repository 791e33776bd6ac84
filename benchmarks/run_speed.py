#!/usr/bin/env python3
"""Emulation speed of `revati-tune run`: virtual seconds served per wall second, start-up wall time
and peak host memory of an emulated vLLM deployment on this machine.

Runs one deployment per configuration (default: Llama-3.1-8B TP1 on virtual H100s, CUDA graphs
on, as vLLM deploys it) serving a Poisson workload, and prints per configuration: serving virtual
seconds (vllm bench serve's duration) over serving wall seconds, the start-up wall time (engine
load, compilation, CUDA graph capture) and the peak resident memory of all the deployment's
processes together, sampled every 0.2 s.

    python3 benchmarks/run_speed.py [--config llama3_8b:1] [--config llama3_70b:4] [--requests 200] [--rate 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emulator.engines.adapter import ServingKnobs  # noqa: E402
from emulator.run import RunConfig, run  # noqa: E402


def deployment_rss(out: Path) -> int:
    """Resident bytes of every process of the run's server and load generator sessions."""
    groups = set()
    for log in ("server.log", "loadgen.log"):
        text = (out / log).read_text(errors="replace") if (out / log).exists() else ""
        if "pid=" in text:
            groups.add(int(text.split("pid=")[1].split(")")[0]))
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) in groups or int(fields[3]) in groups:       # pgrp or session
                with open(f"/proc/{entry.name}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def measure(model: str, tp: int, requests: int, rate: float, sku: str) -> dict:
    workload = {"num_requests": requests, "seed": 0, "arrival": {"process": "poisson", "rate": rate, "burstiness": 1.0},
                "prompt_len": {"kind": "uniform", "low": 128, "high": 1024},
                "output_len": {"kind": "uniform", "low": 32, "high": 256},
                "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 3600.0}
    with tempfile.TemporaryDirectory(prefix="revati-run-speed-") as tmp:
        out = Path(tmp)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], deployment_rss(out))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            summary = run(RunConfig(model=model, sku=sku, knobs=ServingKnobs(tensor_parallel=tp), workload=workload,
                                    timeout_s=3600), out)
        finally:
            done.set()
            sampler.join()
    serving_virtual = summary["metrics"]["duration"]
    return {"config": f"{model} TP{tp} on {sku}", "requests": summary["metrics"]["completed"],
            "serving_virtual_s": serving_virtual, "serving_wall_s": summary["serving_wall_seconds"],
            "speed": serving_virtual / summary["serving_wall_seconds"],
            "startup_wall_s": summary["startup_wall_seconds"], "peak_rss_gib": peak[0] / 2**30}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", help="MODEL:TP (default llama3_8b:1)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per (virtual) second")
    parser.add_argument("--sku", default="h100")
    args = parser.parse_args()
    rows = [measure(c.split(":")[0], int(c.split(":")[1]), args.requests, args.rate, args.sku)
            for c in (args.config or ["llama3_8b:1"])]
    print(f"{'configuration':<28}{'requests':>9}{'virtual s':>11}{'wall s':>9}{'virtual/wall':>14}"
          f"{'start-up s':>12}{'peak RSS GiB':>14}")
    for r in rows:
        print(f"{r['config']:<28}{r['requests']:>9}{r['serving_virtual_s']:>11.2f}{r['serving_wall_s']:>9.2f}"
              f"{r['speed']:>14.3f}{r['startup_wall_s']:>12.1f}{r['peak_rss_gib']:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
