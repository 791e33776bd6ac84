#!/usr/bin/env python3
"""How much host time cuDNN's SDPA costs when torch meets a new shape, on a real GPU.

    python3 emulator/profiler/probe_cudnn_graphs.py --out DIR

torch runs SDPA on cuDNN through cudnn_frontend graphs that it caches per shape (and strides,
mask, causality). A call with a shape not in the cache builds a graph: heuristics, plan
finalization and, the first time an engine is met, kernel compilation, all on the calling host
thread. Under the vGPU library that build costs next to nothing (emulator/vgpu/api/cudnn.c), so the
emulator charges it from this table. transformers' continuous batching calls SDPA with a new
(queries, keys) shape at every step: on the H100, transformers' TPOT at batch 16 was 4x longer with
torch's default backend choice (cuDNN) than with cuDNN off (docs/fidelity/h100_real/).

Per variant (the attention calls of decoders as engines make them), in one fresh process:
  first     the first call of the variant: the first build of its engine (kernel compilation)
  first_warm  the same first call in a second fresh process, once the first has compiled: what a
            server pays on a machine where this kernel ran before. The compilation outlives the
            process (the H100's transformers server: a first step of 1.16 s in the machine's first
            process, 0.38 s in the next; docs/fidelity/h100_timeline.md), so this is what is charged.
  miss      a call at a (queries, keys) shape not seen before (the graph is built)
  hit       the same call again (the graph comes from torch's cache)
  step      a decoder step: LAYERS calls at one new shape, as every layer of a model makes them,
            host time of the whole step (one build, LAYERS - 1 cache hits, if torch's key is the
            shape): checks that the charge per build explains a step
Host seconds are the wall time of the Python call with the GPU idle beforehand (the launches are
asynchronous: the kernels' own time is not in it); gpu_seconds is the kernels' time by CUDA events.
torch's own choice among SDPA backends is recorded per variant (`backend`): the probe forces
cuDNN, and also times the default choice's miss to show whether torch picks it.

Writes cudnn_graphs.csv: variant,heads,kv_heads,head_dim,queries,keys,masked,causal,call,layers,
backend,seconds (host),gpu_seconds,split (fit: first, miss and hit rows; holdout: step and the
default choice's rows, which no model is fitted on),host_cpu_s (the host's speed, measured before the
variant by emulator/host_cpu.py: the server's host changes speed for hours at a time, and the fit
brings the builds to one speed); and cudnn_graphs_meta.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

REPO = Path(__file__).resolve().parents[2]
SHAPES = 24          # new shapes per variant
LAYERS = 16          # calls per emulated decoder step
MASK_ROWS = 8192     # transformers' continuous batching keeps one mask buffer of max_batch_tokens rows
FIT_CALLS = ("first", "first_warm", "miss", "hit")


@dataclass(frozen=True)
class Variant:
    name: str
    heads: int
    kv_heads: int
    head_dim: int
    masked: bool        # an additive bf16 mask, a slice of a larger buffer (continuous batching)
    causal: bool
    queries: tuple      # query rows per shape: (first, step)
    keys_per_query: int  # keys = queries * keys_per_query (+ growth per shape)
    # As transformers' continuous batching passes them: K/V contiguous per head (repeat_kv's copy)
    # rather than a [batch, keys, heads, dim] projection transposed, and each query row seeing only
    # its own sequence's keys (-inf elsewhere) rather than an all-zero mask; the queries and keys
    # split evenly over `sequences` sequences (0: one query each, as in a decode step).
    as_engine: bool = False
    sequences: int = 0


VARIANTS = (
    # transformers' continuous batching (paged|sdpa): every scheduled token is one query row of a
    # single packed sequence, keys are all the batch's cached and new tokens, a mask says which
    # key each row may see. K/V are repeated to the query heads (no GQA with a mask).
    Variant("packed_masked_d64", 32, 32, 64, True, False, (16, 1), 300),
    Variant("packed_masked_d128", 32, 32, 128, True, False, (16, 1), 300),
    Variant("prefill_masked_d128", 32, 32, 128, True, False, (512, 97), 1),
    # the same at a batch of 48-112 sequences of ~1.2k tokens each (57-166k keys: a shared-prefix
    # workload at batch 64, where every sequence reads its prefix again), and prefill chunks of
    # 2-8k new tokens over ten times as many keys: the sizes the d128 rows above stop short of.
    Variant("packed_masked_wide_d128", 32, 32, 128, True, False, (48, 2), 1200),
    # ... and a 1B model's head size at batch 64 (32-80 sequences of 128-512-token prompts: 16-40k
    # keys), where its validate scenarios' steps grow with the load (docs/fidelity/h100_notes.md).
    Variant("packed_masked_wide_d64", 32, 32, 64, True, False, (32, 2), 500),
    Variant("prefill_masked_long_d128", 32, 32, 128, True, False, (2048, 128), 10),
    # the wide d128 shapes as the engine lays them out: on the H100 its profiled decode step at 64
    # sequences over 93k keys ran this kernel in 2.1 ms where the probe's layout above takes 3.6
    # (docs/fidelity/h100_notes.md). Not fitted until the library tells the layouts apart.
    Variant("engine_packed_wide_d128", 32, 32, 128, True, False, (48, 2), 1200, as_engine=True),
    # ... and a shared-prefix prefill chunk: four sequences' 2-5k new tokens over ten times the keys
    # (the H100's 8k-token chunks over 85k keys ran 1.09 s a step where the fit says 1.42).
    Variant("engine_prefill_long_d128", 32, 32, 128, True, False, (2048, 128), 10, as_engine=True, sequences=4),
    # plain decoders: one causal prompt, and one sequence decoding over a growing cache.
    Variant("prefill_causal_d128", 32, 32, 128, False, True, (256, 64), 1),
    Variant("decode_d128", 32, 32, 128, False, False, (1, 0), 1024),
)


def tensors(v: Variant, queries: int, keys: int, mask_buffer):
    q = torch.randn(1, queries, v.heads, v.head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    if v.as_engine:
        k = torch.randn(1, v.kv_heads, keys, v.head_dim, device="cuda", dtype=torch.bfloat16)
    else:
        k = torch.randn(1, keys, v.kv_heads, v.head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    val = torch.randn_like(k)
    mask = mask_buffer[..., :queries, :keys] if v.masked else None
    if mask is not None:
        mask.zero_()
        if v.as_engine:     # a query sees the keys of its own sequence
            sequences = v.sequences or queries
            query_sequence = torch.arange(queries, device="cuda")[:, None] * sequences // queries
            key_sequence = torch.arange(keys, device="cuda")[None, :] * sequences // keys
            mask.masked_fill_(key_sequence != query_sequence, float("-inf"))
    return q, k, val, mask


def shape(v: Variant, i: int) -> tuple[int, int]:
    first, step = v.queries
    queries = first + step * i
    keys = queries * v.keys_per_query + 7 * i if v.keys_per_query > 1 else queries + (1024 if not v.causal else 0) + 13 * i
    return queries, (queries if v.causal else keys)


def timed(call, q, k, val, mask, causal) -> tuple[float, float]:
    """(host seconds of the call, GPU seconds of its kernels), the GPU idle before."""
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    t0 = time.perf_counter()
    call(q, k, val, mask, causal)
    host = time.perf_counter() - t0
    end.record()
    end.synchronize()
    return host, start.elapsed_time(end) / 1e3


def sdpa(q, k, val, mask, causal):
    return F.scaled_dot_product_attention(q, k, val, attn_mask=mask, is_causal=causal)


def cudnn(q, k, val, mask, causal):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return sdpa(q, k, val, mask, causal)


def default_backend(q, k, val, mask, causal) -> str:
    """The SDPA kernel torch's default choice runs for these inputs (by the profiler's op name)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        sdpa(q, k, val, mask, causal)
    names = [e.key for e in prof.key_averages()]
    for op, backend in (("_cudnn_attention", "cudnn"), ("_flash_attention", "flash"),
                        ("_efficient_attention", "efficient"), ("_scaled_dot_product_attention_math", "math")):
        if any(op in name for name in names):
            return backend
    return "unknown"


def host_speed() -> float:
    """The host's seconds per round of emulator/host_cpu.py's step work, now (a fresh process)."""
    done = subprocess.run([sys.executable, "-m", "emulator.host_cpu"], cwd=REPO, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def probe(v: Variant, writer, mask_buffer) -> None:
    host_cpu_s = host_speed()       # graph builds are host work: the host's speed beside them

    def row(call, queries, keys, host, gpu, layers=1, backend="cudnn"):
        writer.writerow({"variant": v.name, "heads": v.heads, "kv_heads": v.kv_heads, "head_dim": v.head_dim,
                         "queries": queries, "keys": keys, "masked": int(v.masked), "causal": int(v.causal),
                         "call": call, "layers": layers, "backend": backend, "seconds": f"{host:.7g}",
                         "gpu_seconds": f"{gpu:.7g}", "split": "fit" if call in FIT_CALLS else "holdout",
                         "host_cpu_s": f"{host_cpu_s:.5g}"})

    queries, keys = shape(v, 0)
    inputs = tensors(v, queries, keys, mask_buffer)
    row("first", queries, keys, *timed(cudnn, *inputs, v.causal))
    row("hit", queries, keys, *timed(cudnn, *inputs, v.causal))
    warm = subprocess.run([sys.executable, __file__, "--first-of", v.name], capture_output=True, text=True, check=True)
    row("first_warm", queries, keys, *json.loads(warm.stdout.strip().splitlines()[-1]))
    row("hit", queries, keys, *timed(cudnn, *inputs, v.causal))
    for i in range(1, SHAPES + 1):
        queries, keys = shape(v, i)
        inputs = tensors(v, queries, keys, mask_buffer)
        row("miss", queries, keys, *timed(cudnn, *inputs, v.causal))
        row("hit", queries, keys, *timed(cudnn, *inputs, v.causal))
    for i in range(SHAPES + 1, SHAPES + 9):
        queries, keys = shape(v, i)
        layers = [tensors(v, queries, keys, mask_buffer) for _ in range(LAYERS)]

        def step(*_):
            for q, k, val, mask in layers:
                cudnn(q, k, val, mask, v.causal)
        row("step", queries, keys, *timed(step, None, None, None, None, None), layers=LAYERS)
    # torch's own choice, at one more new shape: which kernel, and what its miss costs.
    queries, keys = shape(v, SHAPES + 20)
    inputs = tensors(v, queries, keys, mask_buffer)
    backend = default_backend(*inputs, v.causal)
    queries, keys = shape(v, SHAPES + 21)
    inputs = tensors(v, queries, keys, mask_buffer)
    row("default_miss", queries, keys, *timed(sdpa, *inputs, v.causal), backend=backend)
    row("default_hit", queries, keys, *timed(sdpa, *inputs, v.causal), backend=backend)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--first-of", metavar="VARIANT", help="time only this variant's first call, in this "
                        "process, and print (host seconds, GPU seconds) as JSON (the first_warm row)")
    args = parser.parse_args()
    if args.first_of:
        v = next(v for v in VARIANTS if v.name == args.first_of)
        queries, keys = shape(v, 0)
        mask_buffer = torch.zeros(1, 1, MASK_ROWS, keys + MASK_ROWS, device="cuda", dtype=torch.bfloat16)
        print(json.dumps(timed(cudnn, *tensors(v, queries, keys, mask_buffer), v.causal)))
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    max_keys = max(shape(v, SHAPES + 21)[1] for v in VARIANTS)
    mask_buffer = torch.zeros(1, 1, MASK_ROWS, max_keys + MASK_ROWS, device="cuda", dtype=torch.bfloat16)
    errors = {}
    with open(args.out / "cudnn_graphs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["variant", "heads", "kv_heads", "head_dim", "queries", "keys", "masked",
                                               "causal", "call", "layers", "backend", "seconds", "gpu_seconds",
                                               "split", "host_cpu_s"])
        writer.writeheader()
        for v in VARIANTS:
            try:
                probe(v, writer, mask_buffer)
            except RuntimeError as error:      # cuDNN refuses the variant: say so, go on
                errors[v.name] = str(error)[:500]
                print(f"{v.name}: {error}", flush=True)
            f.flush()
    meta = {"gpu_name": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(), "cuda_runtime": torch.version.cuda,
            "python": platform.python_version(), "cpu": platform.processor(),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shapes": SHAPES, "layers": LAYERS,
            "variants": [v.__dict__ for v in VARIANTS], "errors": errors, "elapsed_s": round(time.time() - started, 1)}
    (args.out / "cudnn_graphs_meta.json").write_text(json.dumps(meta, indent=1))
    return 1 if len(errors) == len(VARIANTS) else 0


if __name__ == "__main__":
    raise SystemExit(main())
