#!/usr/bin/env python3
"""Host time of one eager torch op on a CUDA tensor, by kind of work it launches, real or emulated.

    python3 emulator/profiler/probe_launch_cost.py --out DIR            (a real GPU)
    revati-tune exec --gpus 1 --sku SKU -- python3 .../probe_launch_cost.py --out DIR   (emulated)

An eager step of a model that is not CUDA-graphed is bounded by its host: about 1,300 launches a
decode step for Llama-3-8B in transformers' continuous batching, each an ATen dispatch followed by
the CUDA runtime's launch. Under the vGPU library the runtime's own CPU work (argument packing,
the driver's push to the GPU's queue) is replaced by the library's, which is cheaper, so an
emulated eager step comes out short (docs/fidelity/h100.md). This probe times, per op kind, the
host's time per call in a tight loop on tiny tensors (the GPU never the bottleneck: each kernel
takes less than the host's issue time), and the same op on CPU tensors, where no launch happens:
the difference between the real and the emulated CUDA column is what the library must charge.
CUDA ops are timed twice: with the GPU idle when the round starts (`cuda_idle`: every launch finds
an empty queue) and behind BUSY_MS of queued GEMMs (`cuda_busy`: every launch queues), because
whether the driver's cost of a launch depends on the queue is what a per-launch charge must know.

Writes launch_cost.json: per op its microseconds per call (median of ROUNDS rounds of CALLS calls,
thread CPU time and wall time) per condition, with the device and torch versions.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

CALLS = 2000
ROUNDS = 7
BUSY_GEMMS = 40


def ops(device: str) -> dict:
    x = torch.ones(256, device=device)
    y = torch.ones(256, device=device)
    a = torch.ones(64, 64, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    pinned = torch.ones(256, pin_memory=device == "cuda")
    return {
        "mul_": lambda: x.mul_(1.0),                 # one elementwise kernel, no allocation
        "add": lambda: x + y,                        # allocation and one kernel
        "view": lambda: x.view(16, 16),              # no launch: dispatch only
        "empty": lambda: torch.empty(256, device=device),   # caching allocator only
        "mm": lambda: a @ a,                         # cuBLAS: heuristics and a launch
        "copy_d2d": lambda: x.copy_(y),              # a copy kernel (or cudaMemcpyAsync)
        "copy_h2d": lambda: x.copy_(pinned, non_blocking=True),   # cudaMemcpyAsync from pinned memory
        "index_select": lambda: torch.index_select(x, 0, idx),
    }


def measure(fn, sync, before_round=lambda: None) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(ROUNDS):
        sync()
        before_round()
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(CALLS):
            fn()
        cpu.append((time.thread_time() - c0) / CALLS)
        wall.append((time.perf_counter() - w0) / CALLS)
    sync()
    return 1e6 * statistics.median(cpu), 1e6 * statistics.median(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    global idx
    big = torch.ones(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def busy():     # about 1.1 ms a GEMM on an H100: longer than a round's issue time
        for _ in range(BUSY_GEMMS):
            big @ big

    results = {}
    conditions = (("cuda_idle", "cuda", lambda: None), ("cuda_busy", "cuda", busy), ("cpu", "cpu", lambda: None))
    for condition, device, before_round in conditions:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        idx = torch.arange(0, 256, 2, device=device)
        for name, fn in ops(device).items():
            for _ in range(200):       # warm: allocator blocks, cuBLAS handle and heuristics
                fn()
            cpu_us, wall_us = measure(fn, sync, before_round)
            results.setdefault(name, {})[condition] = {"cpu_us": round(cpu_us, 3), "wall_us": round(wall_us, 3)}
            print(f"{condition:9s} {name:14s} cpu {cpu_us:7.2f} us  wall {wall_us:7.2f} us", flush=True)
    facts = {"gpu_name": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
             "cpu": platform.processor(), "calls": CALLS, "rounds": ROUNDS,
             "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (args.out / "launch_cost.json").write_text(json.dumps({"facts": facts, "ops": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
