#!/usr/bin/env python3
"""Time whole Llama-3 decoder forward steps on one GPU, as a serving engine runs them.

    python3 emulator/profiler/forward_pass.py --out DIR
        [--models llama3_8b,llama3_70b_tp4,llama3_70b_tp8] [--layers N]
        [--kernel-profile] [--quick]

The per-kernel tables of profile_gpu.py predict single launches; this script
measures what the predictor must add up to: one engine step (a batch of
decodes, a prefill, or both mixed) through the full decoder stack.  Run it on
a real GPU for the reference numbers and under `revati-tune exec` for the
emulator's prediction of the same steps; the two CSVs compare row by row.

The model is plain PyTorch in bf16 with random weights (never zeros): per layer
RMSNorm, fused QKV, neox rotary, FlashAttention through SDPA, o_proj, residual,
RMSNorm, fused gate_up, SiLU*up, down, residual; then the final RMSNorm and the
lm_head on the last token of each sequence.  The 70B models are one GPU's
slice of tensor parallelism (heads, MLP and vocab divided; no collectives).

Tokens of a step are flattened as an engine flattens them: prefill tokens
first, then one token per decode.  GEMMs, norms and the MLP run over all of
them; attention runs separately on the prefill (causal over its own tokens,
a fresh prompt) and on the decodes (against a preallocated KV cache
[B, KV, ctx, D] per layer, into whose last slot the step writes its new K/V).

The primary number (graph_ms) is the median of CUDA-graph replays timed with
CUDA events: it excludes host launch gaps, which differ between machines and
which the emulator charges separately.  eager_ms is the same step launched
from Python, for reference.  Rows are written as they are measured, so a run
cut short keeps what it had.

--kernel-profile also runs each step once under torch.profiler and writes
every GPU kernel with its launch geometry and enclosing aten op to
kernels.csv.  It needs CUPTI; where the profiler records no kernels (under
the emulator) it is skipped with a message.

The decoder itself is decoder.py; the models' shapes come from conf/model/ (shapes.py).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import asdict

# Run as a file (python3 emulator/profiler/forward_pass.py, no install, also on virtual GPUs):
# import this checkout's emulator package.
if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import torch  # noqa: E402
from torch.nn.attention import sdpa_kernel  # noqa: E402

from emulator.profiler import decoder, shapes  # noqa: E402
from emulator.profiler.decoder import (DTYPE, GiB, Composition, Model, build_inputs, build_model, forward_step,  # noqa: E402
                                       is_plain, plain_forward_step, plain_sdpa_backends, weight_bytes)
from emulator.profiler.shapes import model_shape  # noqa: E402

WARMUP_STEPS = 3  # eager steps before capture: cuBLAS handles, autotuning, allocator
WARMUP_REPLAYS = 3
TIMED_REPLAYS = 20
EAGER_STEPS = 5

CSV_COLUMNS = ["model", "composition", "num_seqs", "num_prefill_tokens", "num_decode_seqs",
               "context_len", "total_tokens", "layers", "graph_ms", "graph_p10_ms", "graph_p90_ms",
               "eager_ms", "kernels_per_step", "device_name", "torch_version"]
KERNEL_COLUMNS = ["model", "composition", "kernel_name", "grid_x", "grid_y", "grid_z",
                  "block_x", "block_y", "block_z", "duration_us", "op_name", "op_input_shapes"]

# ----------------------------------------------------------------------------
# What to measure
# ----------------------------------------------------------------------------


# The measured models by the names of their rows (forward_pass.csv's model column, which the
# predictor's data and forward_check.py key on), each a conf/model/ shape (shapes.py); _tpN is one
# GPU's slice of tensor parallelism N (heads, MLP and vocabulary divided; no collectives).
LLAMA3_8B = model_shape("llama3_8b")
LLAMA3_70B = model_shape("llama3_70b")
MODELS = {
    "llama3_8b": LLAMA3_8B,
    "llama3_70b_tp4": LLAMA3_70B.tp_slice(4),
    "llama3_70b_tp8": LLAMA3_70B.tp_slice(8),
    # The same shapes written as a plain PyTorch program writes them (see plain_decoder_layer),
    # with SDPA's default backend choice, or pinned to the backend named last.
    "llama3_8b_plain": LLAMA3_8B,
    "llama3_70b_tp8_plain": LLAMA3_70B.tp_slice(8),
    "llama3_8b_plain_efficient": LLAMA3_8B,
    "llama3_8b_plain_flash": LLAMA3_8B,
}
ENGINE_MODELS = [name for name in MODELS if "_plain" not in name]
PLAIN_MODELS = [name for name in MODELS if "_plain" in name]

COMPOSITIONS = [
    Composition(0, 8, 1024),
    Composition(0, 64, 1024),
    Composition(0, 256, 1024),
    Composition(0, 8, 4096),
    Composition(0, 64, 4096),
    Composition(0, 256, 4096),
    Composition(512, 0, 0),
    Composition(2048, 0, 0),
    Composition(512, 32, 1024),
    Composition(2048, 128, 2048),
]
# A plain program runs a batch of sequences at one length: no mixed steps.
PLAIN_COMPOSITIONS = [
    Composition(0, 1, 1024),
    Composition(0, 8, 1024),
    Composition(0, 32, 1024),
    Composition(0, 8, 4096),
    Composition(0, 32, 4096),
    Composition(512, 0, 0),
    Composition(2048, 0, 0),
]
QUICK_MODELS = ["llama3_8b"]
QUICK_COMPOSITIONS = ["decode_b64_ctx1024", "mixed_p512_d32_ctx1024"]

# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------


def event_times_ms(fn, repeats: int) -> list[float]:
    """Device time of each call, from a pair of CUDA events around it."""
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
             for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def capture(step) -> torch.cuda.CUDAGraph:
    """Warm the step up on a side stream (as torch requires before capture), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def time_step(step) -> dict:
    graph = capture(step)
    event_times_ms(graph.replay, WARMUP_REPLAYS)
    replays = event_times_ms(graph.replay, TIMED_REPLAYS)
    del graph  # releases its private memory pool before the eager runs
    step()  # the warm-up ran on a side stream; the allocator caches blocks per stream
    eager = event_times_ms(step, EAGER_STEPS)
    deciles = statistics.quantiles(replays, n=10, method="inclusive")
    return {"graph_ms": statistics.median(replays), "graph_p10_ms": deciles[0],
            "graph_p90_ms": deciles[-1], "eager_ms": statistics.median(eager)}

# ----------------------------------------------------------------------------
# Kernel profile
# ----------------------------------------------------------------------------


def trace_events(step) -> list[dict]:
    """Chrome-trace events of one eager step; kernels there carry grid and block."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        step()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            return json.load(f)["traceEvents"]


def enclosing_ops(events: list[dict]) -> dict:
    """Launch correlation id -> the innermost aten op around that launch on its thread.

    Ops on one thread nest, so a sweep in time order with a stack of open
    ops finds it; the launch (runtime or driver call) shares the kernel's
    correlation id.
    """
    ops = [e for e in events if e.get("cat") == "cpu_op" and e["name"].startswith("aten::")]
    launches = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                and "correlation" in e.get("args", {})]
    # At equal start times, ops open before launches and outer ops before inner ones.
    timeline = sorted([(e["ts"], 0, -e["dur"], i, e) for i, e in enumerate(ops)]
                      + [(e["ts"], 1, 0, i, e) for i, e in enumerate(launches)],
                      key=lambda item: item[:4])
    open_ops, found = defaultdict(list), {}
    for ts, is_launch, _, _, event in timeline:
        stack = open_ops[event["tid"]]
        while stack and stack[-1]["ts"] + stack[-1]["dur"] < ts:
            stack.pop()
        if is_launch:
            found[event["args"]["correlation"]] = stack[-1] if stack else None
        else:
            stack.append(event)
    return found


def kernel_rows(model_name: str, comp: Composition, events: list[dict]) -> list[dict]:
    ops = enclosing_ops(events)
    rows = []
    for e in sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"]):
        args = e.get("args", {})
        grid, block = args.get("grid", [None] * 3), args.get("block", [None] * 3)
        op = ops.get(args.get("correlation"))
        rows.append({"model": model_name, "composition": comp.name, "kernel_name": e["name"],
                     "grid_x": grid[0], "grid_y": grid[1], "grid_z": grid[2],
                     "block_x": block[0], "block_y": block[1], "block_z": block[2],
                     "duration_us": e.get("dur"),
                     "op_name": op["name"] if op else "",
                     "op_input_shapes": json.dumps(op["args"].get("Input Dims"),
                                                   separators=(",", ":")) if op else ""})
    return rows


def profiler_sees_kernels(device) -> bool:
    """Whether torch.profiler records GPU kernels here (it needs CUPTI, which the emulator lacks)."""
    x = torch.randn(256, 256, device=device, dtype=DTYPE)
    return any(e.get("cat") == "kernel" for e in trace_events(lambda: x @ x))

# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


class Output:
    """forward_pass.csv, kernels.csv and forward_pass_meta.json, written as results arrive."""

    def __init__(self, out_dir: str, meta: dict):
        os.makedirs(out_dir, exist_ok=True)
        self.dir, self.meta, self.rows = out_dir, meta, []
        self._csv_file = open(os.path.join(out_dir, "forward_pass.csv"), "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, CSV_COLUMNS)
        self._csv.writeheader()
        self._kernels_file = self._kernels = None

    def add_row(self, row: dict):
        self.rows.append(row)
        self._csv.writerow(row)
        self._csv_file.flush()

    def add_kernels(self, rows: list[dict]):
        if self._kernels is None:
            self._kernels_file = open(os.path.join(self.dir, "kernels.csv"), "w", newline="")
            self._kernels = csv.DictWriter(self._kernels_file, KERNEL_COLUMNS)
            self._kernels.writeheader()
        self._kernels.writerows(rows)
        self._kernels_file.flush()

    def error(self, where: str, exc: BaseException):
        message = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR {where}: {message}", flush=True)
        traceback.print_exc()
        self.meta["errors"][where] = message[:2000]
        self.write_meta()

    def write_meta(self):
        path = os.path.join(self.dir, "forward_pass_meta.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.meta, f, indent=1, default=str)
        os.replace(path + ".tmp", path)

    def close(self):
        self._csv_file.close()
        if self._kernels_file:
            self._kernels_file.close()
        self.write_meta()


def measure(out: Output, model_name: str, model: Model, comp: Composition, profile: bool, device):
    plain = is_plain(model_name)
    inputs = build_inputs(model, comp, device, plain)
    step = functools.partial(plain_forward_step if plain else forward_step, model, inputs)
    if plain:
        forward = step

        def step():
            with sdpa_kernel(plain_sdpa_backends(model_name)):
                return forward()
    timing = time_step(step)
    kernels = ""
    if profile:
        rows = kernel_rows(model_name, comp, trace_events(step))
        out.add_kernels(rows)
        kernels = len(rows)
    out.add_row({"model": model_name, "composition": comp.name, "num_seqs": comp.num_seqs,
                 "num_prefill_tokens": comp.prefill_tokens, "num_decode_seqs": comp.decode_seqs,
                 "context_len": comp.context_len, "total_tokens": comp.total_tokens,
                 "layers": len(model.layers), **{k: round(v, 4) for k, v in timing.items()},
                 "kernels_per_step": kernels, "device_name": out.meta["gpu_name"],
                 "torch_version": torch.__version__})
    print(f"  {comp.name:<28} graph {timing['graph_ms']:9.3f} ms  eager {timing['eager_ms']:9.3f} ms"
          f"  kernels {kernels}", flush=True)


def run_model(out: Output, name: str, comps: list[Composition], args, device):
    spec = MODELS[name]
    if is_plain(name):
        comps = [c for c in PLAIN_COMPOSITIONS if args.wanted(c)]
    layers = min(args.layers or spec.layers, spec.layers)
    largest_kv = max(c.kv_bytes(spec, layers) for c in comps)
    print(f"{name}: {layers} layers, weights {weight_bytes(spec, layers) / GiB:.1f} GiB, "
          f"largest KV cache {largest_kv / GiB:.1f} GiB", flush=True)
    model = None
    try:
        model = build_model(spec, layers, device)
        for comp in comps:
            try:
                measure(out, name, model, comp, args.kernel_profile, device)
            except Exception as e:  # noqa: BLE001 - the next composition still runs
                out.error(f"{name}/{comp.name}", e)
            finally:
                gc.collect()
                torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001 - the next model still runs
        out.error(name, e)
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def describe(args) -> dict:
    return {"gpu_name": torch.cuda.get_device_name(0),
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "python": sys.version.split()[0],
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": [sys.executable] + sys.argv, "script_sha256": _sha256(__file__),
            # The rest of the code that ran, and the shapes it read from conf/model/.
            "modules_sha256": {os.path.basename(m.__file__): _sha256(m.__file__) for m in (decoder, shapes)},
            "model_shapes": {name: asdict(MODELS[name]) for name in args.models},
            "attention": "sdpa, FlashAttention backend, enable_gqa=True; *_plain models: SDPA's "
                         "default backend choice over repeat_interleave'd K/V",
            "timing": {"warmup_steps": WARMUP_STEPS, "warmup_replays": WARMUP_REPLAYS,
                       "timed_replays": TIMED_REPLAYS, "eager_steps": EAGER_STEPS},
            "kernel_profile": "off" if not args.kernel_profile else "on",
            "errors": {}}


def print_table(rows: list[dict]):
    print("\n=== forward_pass (ms per step) ===")
    print(f"{'model':<16}{'composition':<28}{'tokens':>7}{'graph':>10}{'p10':>10}{'p90':>10}"
          f"{'eager':>10}{'kernels':>9}")
    for r in rows:
        print(f"{r['model']:<16}{r['composition']:<28}{r['total_tokens']:>7}{r['graph_ms']:>10.3f}"
              f"{r['graph_p10_ms']:>10.3f}{r['graph_p90_ms']:>10.3f}{r['eager_ms']:>10.3f}"
              f"{r['kernels_per_step']!s:>9}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the CSVs and meta JSON")
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)} (default: every "
                                         f"engine-style one, {','.join(ENGINE_MODELS)}; "
                                         f"--quick: {','.join(QUICK_MODELS)})")
    parser.add_argument("--layers", type=int, help="cap on decoder layers (default: the model's own)")
    parser.add_argument("--kernel-profile", action="store_true",
                        help="also write every kernel of each step to kernels.csv (needs CUPTI)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {','.join(QUICK_COMPOSITIONS)} (and, unless --models, "
                             f"{','.join(QUICK_MODELS)})")
    parser.add_argument("--compositions", help="comma-separated step names (e.g. decode_b32_ctx4096): "
                                               "only those")
    args = parser.parse_args(argv)
    chosen = set(args.compositions.split(",")) if args.compositions else set(QUICK_COMPOSITIONS) if args.quick \
        else None
    args.wanted = lambda comp: chosen is None or comp.name in chosen
    names = args.models.split(",") if args.models else QUICK_MODELS if args.quick else ENGINE_MODELS
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    args.models = names
    return args


@torch.inference_mode()
def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    out = Output(args.out, describe(args))
    if args.kernel_profile and not profiler_sees_kernels(device):
        print("--kernel-profile skipped: torch.profiler recorded no GPU kernels (no CUPTI; "
              "expected under the revati-tune emulator). kernels.csv is not written.", flush=True)
        args.kernel_profile = False
        out.meta["kernel_profile"] = "skipped: profiler recorded no GPU kernels (no CUPTI)"
    comps = [c for c in COMPOSITIONS if args.wanted(c)]
    started = time.monotonic()
    for name in args.models:
        run_model(out, name, comps, args, device)
        out.write_meta()
    out.meta["elapsed_s"] = round(time.monotonic() - started, 1)
    out.close()
    print_table(out.rows)
    if out.meta["errors"]:
        print(f"{len(out.meta['errors'])} errors; see forward_pass_meta.json")
    return 1 if out.meta["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
