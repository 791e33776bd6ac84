#!/usr/bin/env python3
"""The CUDA runtime and driver calls of a real step, as torch.profiler timed them on the GPU server.

    python3 emulator/profiler/runtime_calls.py PROFILE_TABLE... --out data/<sku>/runtime_calls.csv

A real launch costs the calling host thread the runtime's own work (argument packing, the driver's
push to the GPU's queue): several microseconds, about 1,700 times a decode step of an eager 8B
model. Under the vGPU library that work is replaced by the library's, which is far cheaper, so the
emulator charges it (models.fit_launch_cost). The figures come from the CUDA runtime rows of
torch.profiler's key_averages tables (docs/fidelity/step_timeline.py's profile_self_cpu_time_total.txt,
recorded with CUDA activity on a real GPU): calls and average microseconds per runtime function.
Those durations include the profiler's own callback on each call, which the fit takes from the
calls that do next to nothing (stream queries).

Writes CSV rows: call,calls,seconds (the average per call),split (fit),source.
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path



def runtime_rows(table: str) -> list[tuple[str, int, float]]:
    """(function, calls, average µs) of each CUDA runtime or driver row of a key_averages table
    (columns: name, self CPU %, self CPU, CPU total %, CPU total, CPU time avg, ..., # of calls)."""
    rows = []
    for line in table.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) < 7 or not re.match(r"^(cuda|cu)[A-Z]\w*$", cells[0]) or not cells[-1].isdigit():
            continue
        average = re.match(r"^([\d.]+)(us|ms|s)$", cells[5])
        if average:
            us = float(average.group(1)) * {"us": 1.0, "ms": 1e3, "s": 1e6}[average.group(2)]
            rows.append((cells[0], int(cells[-1]), us))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["call", "calls", "seconds", "split", "source"])
        for path in args.tables:
            for name, calls, us in runtime_rows(path.read_text()):
                writer.writerow([name, calls, f"{us * 1e-6:.4g}", "fit", str(path)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
