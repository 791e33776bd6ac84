#!/usr/bin/env python3
"""How long the small host-to-device copies of an engine's step loop take on a real GPU.

    python3 emulator/profiler/probe_small_copies.py --out DIR

copy.csv (profile_gpu.py) times pageable copies with CUDA events around an eager copy_: 170-190 us
even at 4 KiB, where the emulated transformers step (~27 such copies) came out 4-7 ms too long
(docs/fidelity/h200_notes.md). This probe times the same copies three ways, to tell which the
emulator should charge: events around the copy (what copy.csv holds), the host's wall time of copy
plus synchronize, and torch.tensor(python list, device="cuda"), as step loops build their inputs.
Writes small_copies.csv: `how,pinned,bytes,seconds,p10,p90` (seconds: median per copy).
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

import torch

SIZES = [64, 1024, 4096, 65536, 1 << 20]
REPEATS = 200


def quantiles(times):
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), deciles[0], deciles[-1]


def events(copy):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(REPEATS):
        start.record()
        copy()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return quantiles(times)


def wall(call):
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return quantiles(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.cuda.init()
    sync_only = wall(lambda: None)[0]
    rows = [("synchronize_only", 0, 0, sync_only, sync_only, sync_only)]
    for nbytes in SIZES:
        device = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
        for pinned in (0, 1):
            host = torch.randint(0, 255, (nbytes,), dtype=torch.uint8).pin_memory() if pinned else \
                torch.randint(0, 255, (nbytes,), dtype=torch.uint8)
            copy = lambda: device.copy_(host, non_blocking=True)  # noqa: E731
            for _ in range(20):
                copy()
            torch.cuda.synchronize()
            rows.append(("events", pinned, nbytes, *events(copy)))
            rows.append(("wall_with_sync", pinned, nbytes, *wall(copy)))
        values = [int(v) for v in torch.randint(0, 1000, (nbytes // 8,))]
        rows.append(("torch_tensor_from_list", 0, nbytes, *wall(lambda: torch.tensor(values, device="cuda"))))
    with open(os.path.join(args.out, "small_copies.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["how", "pinned", "bytes", "seconds", "p10", "p90"])
        for how, pinned, nbytes, *times in rows:
            writer.writerow([how, pinned, nbytes, *(f"{t:.3e}" for t in times)])
            print(f"{how:<24} pinned={pinned} {nbytes:>8} B  {times[0] * 1e6:8.1f} us "
                  f"(p10 {times[1] * 1e6:.1f}, p90 {times[2] * 1e6:.1f})", flush=True)


if __name__ == "__main__":
    main()
