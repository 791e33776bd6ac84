#!/usr/bin/env python3
"""Time the kernels a plain PyTorch program spends its decode steps in, on one GPU.

    python3 emulator/profiler/profile_memory_bound.py --out DIR [--quick]

Two tables that profile_gpu.py's engine-shaped families do not cover:

- efficient_attention.csv: SDPA pinned to the memory-efficient backend (the `fmha_cutlassF_*`
  kernels) over the batches programs give it: a packed batch with an additive mask (one query
  row per token of every sequence against all gathered keys, as transformers' paged|sdpa does),
  batched decodes (one query a sequence, no mask) and causal prefills. Columns:
  `kind,batch,heads,head_dim,q_len,kv_len,mask,causal,seconds,p10,p90,split`.
- memory.csv: memory-bound ops over 64 KiB-2 GiB: elementwise add and copy, a transposing copy,
  torch.cat growing a KV cache (from a contiguous new token, and from one sliced out of a fused
  QKV output: a non-contiguous input makes torch pick its slower non-vectorized cat),
  repeat_interleave of grouped K/V heads, index_select of rows. `bytes` counts every operand's
  elements as the emulator decodes them (emulator/vgpu/predict/kernel_bytes.c): repeat_interleave, a copy
  of an expanded view, counts its output twice. Columns: `op,dtype,bytes,seconds,p10,p90,split`.

How a row is timed: random inputs (never zeros), rotated over enough copies that a pass moves
more than 256 MiB (past the L2); the calls captured in one CUDA graph and replayed, CUDA events
around each replay; `seconds` the median per call. Rows at every other size are `holdout`.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPE = torch.bfloat16
ROTATE_BYTES = 256 << 20
MAX_CALLS = 64          # calls per replay
TARGET_S = 2e-3         # GPU time of one replay, at least
REPLAYS = 7
HEADS = [(32, 64), (32, 128), (8, 128)]     # (query heads, head dim): Llama-3.2-1B/-3B/-8B, 70B at TP4


def time_calls(make_call, bytes_per_call: int) -> tuple[float, float, float]:
    """Median, p10 and p90 seconds per call over graph replays; make_call makes fresh inputs."""
    copies = max(1, min(8, math.ceil(ROTATE_BYTES / max(bytes_per_call, 1))))
    calls = [make_call() for _ in range(copies)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    calls[0]()
    end.record()
    torch.cuda.synchronize()
    once = max(start.elapsed_time(end) / 1e3, 1e-6)
    per_replay = max(1, min(MAX_CALLS, math.ceil(TARGET_S / once)))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(per_replay):
            calls[i % copies]()
    graph.replay()
    times = []
    for _ in range(REPLAYS):
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / per_replay)
    del graph
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return statistics.median(times), deciles[0], deciles[-1]


def rand(*shape, dtype=DTYPE):
    return torch.randn(shape, device="cuda", dtype=torch.float32).to(dtype)


def attention_rows(quick: bool):
    """(kind, batch, heads, head_dim, q_len, kv_len, mask, causal)"""
    heads = HEADS[1:2] if quick else HEADS
    for h, d in heads:
        for q in ([16, 256] if quick else [1, 4, 16, 64, 256, 1024, 4096]):
            for kv in ([1024, 8192] if quick else [256, 1024, 4096, 16384, 65536]):
                if kv >= q and q * kv * 2 <= 1 << 30:
                    yield ("packed", 1, h, d, q, kv, 1, 0)
        for b in ([8] if quick else [1, 8, 32, 128]):
            for kv in ([1024] if quick else [512, 2048, 8192]):
                yield ("decode", b, h, d, 1, kv, 0, 0)
        for s in ([512] if quick else [128, 512, 2048, 8192]):
            yield ("prefill", 1, h, d, s, s, 0, 1)


def efficient_attention_call(batch, heads, head_dim, q_len, kv_len, mask, causal):
    q = rand(batch, heads, q_len, head_dim)
    k, v = rand(batch, heads, kv_len, head_dim), rand(batch, heads, kv_len, head_dim)
    bias = rand(1, 1, q_len, kv_len) if mask else None

    def call():
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bool(causal))
    return call


def memory_rows(quick: bool):
    """(op, dtype, bytes moved): read plus written."""
    sizes = [1 << e for e in (range(16, 32, 4) if quick else range(16, 32))]
    for op in ("add", "copy", "transpose_copy", "cat_kv", "cat_kv_strided", "repeat_interleave", "index_select"):
        for dtype in ("bf16", "fp32") if op in ("add", "copy") else ("bf16",):
            for nbytes in sizes:
                yield op, dtype, nbytes


def memory_call(op: str, dtype: str, nbytes: int):
    """A call moving about nbytes, and the exact bytes it moves."""
    dt = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    size = dt.itemsize
    if op == "add":
        n = max(nbytes // (3 * size), 1)
        a, b = rand(n, dtype=dt), rand(n, dtype=dt)
        return (lambda: a + b), 3 * n * size
    if op == "copy":
        n = max(nbytes // (2 * size), 1)
        a, out = rand(n, dtype=dt), torch.empty(n, device="cuda", dtype=dt)
        return (lambda: out.copy_(a)), 2 * n * size
    if op == "transpose_copy":       # [B, H, S, D] -> [B, S, H, D] contiguous, as after attention
        s = max(nbytes // (2 * size * 32 * 128), 1)
        a = rand(1, 32, s, 128, dtype=dt)
        return (lambda: a.transpose(1, 2).contiguous()), 2 * s * 32 * 128 * size
    if op == "cat_kv":               # cache [B, 8, L, 128] + one new token
        length = max(nbytes // (2 * size * 8 * 128 * 8), 1)
        past, new = rand(8, 8, length, 128, dtype=dt), rand(8, 8, 1, 128, dtype=dt)
        return (lambda: torch.cat([past, new], dim=2)), (2 * length + 2) * 8 * 8 * 128 * size
    if op == "cat_kv_strided":       # the same, the new token a slice of a [B, 1, 3 x 8 x 128] QKV
        length = max(nbytes // (2 * size * 8 * 128 * 8), 1)
        past = rand(8, 8, length, 128, dtype=dt)
        new = rand(8, 1, 3 * 8 * 128, dtype=dt)[..., 2048:].view(8, 1, 8, 128).transpose(1, 2)
        return (lambda: torch.cat([past, new], dim=2)), (2 * length + 2) * 8 * 8 * 128 * size
    if op == "repeat_interleave":    # [B, 8, L, 128] -> [B, 32, L, 128]: a copy of an expanded view
        length = max(nbytes // (8 * size * 8 * 128 * 8), 1)
        kv = rand(8, 8, length, 128, dtype=dt)
        return (lambda: kv.repeat_interleave(4, dim=1)), 8 * 8 * 8 * length * 128 * size
    if op == "index_select":         # rows of a [N, 4096] table, as an embedding or a gather
        rows = max(nbytes // (2 * size * 4096), 1)
        table = rand(rows * 2, 4096, dtype=dt)
        index = torch.randint(0, rows * 2, (rows,), device="cuda")
        return (lambda: table.index_select(0, index)), 2 * rows * 4096 * size
    raise ValueError(op)


def measure(path, columns, rows, build, log):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i, row in enumerate(rows):
            try:
                _, nbytes, fields = build(*row)
                seconds, p10, p90 = time_calls(lambda: build(*row)[0], nbytes)
            except Exception as e:  # noqa: BLE001 - one row failing must not end the table
                log(f"  {row}: {type(e).__name__}: {str(e)[:200]}")
                torch.cuda.empty_cache()
                continue
            writer.writerow([*fields, f"{seconds:.6e}", f"{p10:.6e}", f"{p90:.6e}",
                             "holdout" if i % 2 else "fit"])
            f.flush()
            torch.cuda.empty_cache()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="a few rows of each table")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.monotonic()
    log_file = open(os.path.join(args.out, "memory_bound.log"), "w", encoding="utf-8")

    def log(message):
        line = f"[{time.monotonic() - started:7.1f}s] {message}"
        print(line, flush=True)
        log_file.write(line + "\n")

    def attention(kind, batch, heads, head_dim, q_len, kv_len, mask, causal):
        call = efficient_attention_call(batch, heads, head_dim, q_len, kv_len, mask, causal)
        nbytes = batch * heads * (q_len + 2 * kv_len) * head_dim * 2 + mask * q_len * kv_len * 2
        return call, nbytes, (kind, batch, heads, head_dim, q_len, kv_len, mask, causal)

    def memory(op, dtype, nbytes):
        call, moved = memory_call(op, dtype, nbytes)
        return call, moved, (op, dtype, moved)

    log(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with torch.inference_mode():
        measure(os.path.join(args.out, "efficient_attention.csv"),
                ["kind", "batch", "heads", "head_dim", "q_len", "kv_len", "mask", "causal",
                 "seconds", "p10", "p90", "split"],
                attention_rows(args.quick), attention, log)
        log("efficient_attention done")
        measure(os.path.join(args.out, "memory.csv"),
                ["op", "dtype", "bytes", "seconds", "p10", "p90", "split"],
                memory_rows(args.quick), memory, log)
        log("memory done")
    with open(__file__, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    meta = {"gpu_name": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": [sys.executable] + sys.argv, "script_sha256": sha,
            "elapsed_s": round(time.monotonic() - started, 1)}
    with open(os.path.join(args.out, "meta_memory_bound.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
