#!/usr/bin/env python3
"""Where a pipeline-parallel decode token's time goes, against TP1 with and without vLLM's async
scheduling, on virtual H100s (docs/notes/pp2_tpot.md).

    python3 benchmarks/pipeline_timeline.py [--model llama3_8b] [--requests 50] [--rate 8]

Serves the same Poisson workload three times (vLLM, CUDA graphs on): TP1, TP1 with
--no-async-scheduling, and PP2 (vLLM turns async scheduling off under pipeline parallelism), and
prints each run's mean TTFT and TPOT. For PP2 it reads the run's launch trace (RunConfig.launch_trace)
and splits each decode token into its GPU bursts: stage 0's layers on device 0, the hand-off, stage
1's layers (and sampling) on device 1, and the way back to device 0 (output to the engine core,
scheduling, the broadcast to both workers, their input preparation). A burst is a run of launches
on one device with gaps under BURST_GAP_S; a decode burst has DECODE_LAUNCHES launches.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emulator.deployment import RunConfig, serve  # noqa: E402
from emulator.engines.adapter import ServingKnobs  # noqa: E402

BURST_GAP_S = 300e-6
# Launches of one stage's decode step (16 of Llama-3.1-8B's 32 layers under piecewise CUDA graphs:
# ~200); prefill chunks launch thousands, and capture or housekeeping a handful.
DECODE_LAUNCHES = (150, 260)


def bursts(trace: Path) -> pd.DataFrame:
    t = pd.read_csv(trace, usecols=["kind", "device", "start", "seconds"], low_memory=False)
    t = t[t["kind"] != "kind"].astype({"device": int, "start": float, "seconds": float})     # repeated headers
    t["end"] = t["start"] + t["seconds"]
    rows = []
    for device, g in t.sort_values("start").groupby("device"):
        starts, ends = g["start"].to_numpy(), np.maximum.accumulate(g["end"].to_numpy())
        ids = np.cumsum(np.r_[True, starts[1:] - ends[:-1] > BURST_GAP_S])
        for i in np.unique(ids):
            sel = ids == i
            rows.append((device, starts[sel][0], ends[sel][-1], int(sel.sum())))
    # "gpu", not "device": numpy records answer .device with the array API's own attribute.
    return pd.DataFrame(rows, columns=["gpu", "start", "end", "launches"]).sort_values("start")


def token_cycles(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Decode bursts in the order device 0, device 1, device 0: each such triple is one token."""
    low, high = DECODE_LAUNCHES
    seq = frame[frame["launches"].between(low, high)].to_records()
    parts: dict[str, list[float]] = {"stage 0": [], "hand-off 0 -> 1": [], "stage 1": [], "back 1 -> 0": [],
                                     "token": []}
    for a, b, c in zip(seq, seq[1:], seq[2:]):
        if (a.gpu, b.gpu, c.gpu) == (0, 1, 0):
            parts["stage 0"].append(a.end - a.start)
            parts["hand-off 0 -> 1"].append(b.start - a.end)
            parts["stage 1"].append(b.end - b.start)
            parts["back 1 -> 0"].append(c.start - b.end)
            parts["token"].append(c.start - a.start)
    return {name: np.array(values) * 1e3 for name, values in parts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama3_8b")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rate", type=float, default=8.0)
    args = parser.parse_args()
    workload = {"num_requests": args.requests, "seed": 0,
                "arrival": {"process": "poisson", "rate": args.rate, "burstiness": 1.0},
                "prompt_len": {"kind": "uniform", "low": 128, "high": 1024},
                "output_len": {"kind": "uniform", "low": 32, "high": 256},
                "shared_prefix": None, "trace": None, "max_concurrency": None, "ready_timeout_s": 3600.0}
    runs = [("TP1", 1, ()), ("TP1, async scheduling off", 1, ("--no-async-scheduling",)), ("PP2", 2, ())]
    with tempfile.TemporaryDirectory(prefix="revati-pipeline-") as tmp:
        for name, pp, server_args in runs:
            out = Path(tmp) / str(len(name))
            summary = serve(RunConfig(model=args.model, sku="h100", workload=workload, timeout_s=3600,
                                      knobs=ServingKnobs(pipeline_parallel=pp), server_args=server_args,
                                      launch_trace=pp > 1), out)
            m = summary.metrics
            print(f"{name}: mean TTFT {m['mean_ttft_ms']:.1f} ms, mean TPOT {m['mean_tpot_ms']:.2f} ms", flush=True)
            if pp > 1:
                for part, ms in token_cycles(bursts(out / "vgpu" / "trace.csv")).items():
                    print(f"  {part:16s} median {np.median(ms):6.2f} ms  p10 {np.percentile(ms, 10):6.2f}  "
                          f"p90 {np.percentile(ms, 90):6.2f}  ({len(ms)} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
