#!/usr/bin/env python3
"""Measure the kernel-time tables that revati-tune's predictor reads, on one GPU.

    python3 emulator/predictor/profiler/profile_gpu.py --out $OUT/profile
        [--families gemm,attention,elementwise,copy] [--quick] [--dry-run]

Writes gemm.csv, attention.csv, elementwise.csv, copy.csv and meta.json under
--out; README.md beside this file gives their columns.  Every row is written
as soon as it is measured, so a run cut short still leaves its rows.

How a row is timed: inputs are random (never
zeros) and are rotated over enough copies that one pass reads more than the
60 MB L2; a CUDA graph of back-to-back launches is replayed several times with
an event between replays, and the per-launch time of each replay is one
sample.  That is the time the GPU spends per launch, which is what the
emulator charges, without the host's launch gaps.  --dry-run runs every
family on the CPU with tiny sizes (Triton in its interpreter) to exercise the
code; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import dataclasses
import datetime
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

# The dry run executes Triton kernels in Triton's CPU interpreter, which is
# chosen when a kernel is defined: set it before anything imports triton.
if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CARRY_DIR = os.path.join(REPO_ROOT, ".carry")
FAMILIES = ("gemm", "attention", "elementwise", "copy")
# Wall-clock cap per family; rows not reached by then are skipped and counted.
FAMILY_BUDGET_S = {"gemm": 150, "attention": 240, "elementwise": 60, "copy": 40}
BLOCK_SIZE = 16  # vLLM's default KV-cache block size
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
GiB = 1 << 30
MiB = 1 << 20

# ----------------------------------------------------------------------------
# What to measure
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int


MODELS = {
    "llama-3.1-8b": Model(4096, 14336, 32, 8, 128, 128256),
    "llama-3.1-70b": Model(8192, 28672, 64, 8, 128, 128256),
    "qwen2.5-72b": Model(8192, 29568, 64, 8, 128, 152064),
    "mixtral-8x7b": Model(4096, 14336, 32, 8, 128, 32000),  # experts as plain GEMMs
}


@dataclass(frozen=True)
class Grid:
    """Every size a run visits; FULL, QUICK and DRY below are the three runs."""

    models: dict
    tps: tuple
    gemm_tokens: tuple
    gemm_tokens_holdout: tuple
    gemm_subset: tuple  # (model, tp) whose shapes are also run in fp16 and fp8
    head_configs: tuple  # (q heads, kv heads, head dim)
    attention_dtype: torch.dtype
    decode_seqs: tuple
    decode_ctx: tuple
    decode_holdout: tuple  # (num_seqs, context)
    prefill_q: tuple
    prefill_seqs: tuple
    prefill_max_tokens: int
    prefill_holdout: tuple  # (num_seqs, query_len)
    chunked: tuple  # (num_seqs, query_len, context)
    chunked_holdout: tuple
    mixed: tuple  # compositions: ((query_len, context, count), ...)
    mixed_holdout: tuple
    ew_tokens: tuple
    ew_tokens_holdout: tuple
    ew_hidden: dict  # op -> hidden sizes
    sampling_max_tokens: int
    ew_head_dim: int
    rotary_kv_heads: dict  # rotary q hidden -> k heads
    ew_vocab: int
    ew_cache_slots: int
    copy_sizes: tuple
    copy_sizes_holdout: tuple
    pool_bytes: int  # random data kept per dtype to cut inputs from
    rotate_bytes: int  # rotate inputs until one pass reads this much
    max_rotations: int
    kv_cache_min_bytes: int
    ceiling_gemm: int  # m = n = k of the bf16 GEMM ceiling
    ceiling_copy_bytes: int


def _powers_of_two(lo, hi):
    return tuple(1 << i for i in range(lo.bit_length() - 1, hi.bit_length()))


FULL = Grid(
    models=MODELS,
    tps=(1, 2, 4, 8),
    gemm_tokens=_powers_of_two(1, 16384),
    gemm_tokens_holdout=(3, 24, 48, 96, 200, 384, 768, 1536, 3000, 6000, 12000),
    gemm_subset=(("llama-3.1-8b", 1), ("llama-3.1-8b", 2)),
    head_configs=((32, 8, 128), (64, 8, 128), (32, 4, 128), (16, 2, 128), (8, 1, 128)),
    attention_dtype=torch.bfloat16,
    # Dense in the sequence count: the kernels change their split over the keys as it grows
    # (between 64 and 128 sequences on the H200), which a sparse grid interpolates across.
    decode_seqs=(1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256),
    decode_ctx=(128, 512, 1024, 2048, 4096, 8192),
    decode_holdout=((12, 768), (12, 3000), (40, 2048), (40, 3000), (72, 768), (72, 2048),
                    (104, 768), (104, 3000), (144, 2048), (224, 768)),
    prefill_q=(128, 512, 1024, 2048, 4096, 8192),
    prefill_seqs=(1, 2, 4),
    prefill_max_tokens=16384,
    prefill_holdout=((1, 384), (2, 384), (1, 1536), (2, 1536), (1, 3000), (2, 3000)),
    chunked=((1, 256, 2048), (1, 512, 2048), (1, 2048, 2048 + 2048),
             (1, 256, 8192), (1, 512, 8192), (1, 2048, 8192),
             (4, 512, 2048), (4, 512, 8192)),
    chunked_holdout=((1, 1024, 4096), (2, 384, 3000)),
    mixed=(((512, 512, 1), (1, 1024, 63)),
           ((2048, 2048, 1), (1, 2048, 127)),
           ((256, 4096, 2), (1, 512, 30)),
           ((1024, 1024, 1), (512, 2048, 1), (1, 4096, 62)),
           ((128, 128, 4), (1, 8192, 16)),
           ((4096, 4096, 1), (1, 1024, 255))),
    mixed_holdout=(((1000, 1000, 1), (1, 3000, 40)),
                   ((300, 3000, 1), (1, 768, 90))),
    ew_tokens=_powers_of_two(1, 16384),
    ew_tokens_holdout=(3, 48, 384, 3000),
    ew_hidden={
        "rms_norm": (4096, 8192),
        "fused_add_rms_norm": (4096, 8192),
        "residual_add": (4096, 8192),
        "embedding": (4096, 8192),
        # q heads x 128 for Llama-8B at TP 1/2/4/8 (k heads = q/4) and 70B TP1.
        "rotary_neox": (4096, 2048, 1024, 512, 8192),
        # intermediate per rank: Llama-8B TP 1/2/4/8 and 70B TP1.
        "silu_and_mul": (14336, 7168, 3584, 1792, 28672),
        "sample_softmax_argmax": (128256, 152064),
        # kv heads x 128 per rank.
        "reshape_and_cache": (1024, 512, 256, 128),
    },
    sampling_max_tokens=4096,
    ew_head_dim=128,
    rotary_kv_heads={4096: 8, 2048: 4, 1024: 2, 512: 1, 8192: 8},
    ew_vocab=128256,
    ew_cache_slots=262144,
    copy_sizes=tuple(4 ** i * 1024 for i in range(1, 11)),
    copy_sizes_holdout=(40_000, 3_000_000, 100_000_000),
    pool_bytes=8 * GiB,
    rotate_bytes=256 * MiB,
    max_rotations=256,
    kv_cache_min_bytes=1 * GiB,
    ceiling_gemm=8192,
    ceiling_copy_bytes=2 * GiB,
)

QUICK = dataclasses.replace(
    FULL,
    models={"llama-3.1-8b": MODELS["llama-3.1-8b"]},
    tps=(1,),
    gemm_subset=(("llama-3.1-8b", 1),),
    head_configs=((32, 8, 128),),
    decode_seqs=(1, 16, 128),
    decode_ctx=(512, 2048, 8192),
    decode_holdout=((32, 3000),),
    prefill_q=(512, 2048),
    prefill_seqs=(1,),
    prefill_holdout=((1, 1536),),
    chunked=((1, 512, 2048),),
    chunked_holdout=((1, 384, 3000),),
    mixed=FULL.mixed[:1],
    mixed_holdout=FULL.mixed_holdout[:1],
    ew_tokens=(1, 16, 256, 4096),
    ew_tokens_holdout=(48, 3000),
    ew_hidden={op: sizes[:1] for op, sizes in FULL.ew_hidden.items()},
    copy_sizes=(4096, MiB, 256 * MiB),
    copy_sizes_holdout=(3_000_000,),
)

DRY = Grid(
    models={"tiny": Model(64, 96, 4, 2, 16, 160)},
    tps=(1, 2),
    gemm_tokens=(1, 8),
    gemm_tokens_holdout=(3,),
    gemm_subset=(("tiny", 1),),
    head_configs=((4, 2, 16),),
    attention_dtype=torch.float16,  # Triton's interpreter computes bf16 wrongly
    decode_seqs=(1, 2),
    decode_ctx=(16, 40),
    decode_holdout=((3, 24),),
    prefill_q=(16, 32),
    prefill_seqs=(1, 2),
    prefill_max_tokens=48,
    prefill_holdout=((1, 24),),
    chunked=((1, 8, 40),),
    chunked_holdout=((1, 5, 24),),
    mixed=(((16, 16, 1), (1, 40, 3)),),
    mixed_holdout=(((8, 24, 1), (1, 16, 2)),),
    ew_tokens=(1, 8),
    ew_tokens_holdout=(3,),
    ew_hidden={op: (64,) for op in FULL.ew_hidden},
    sampling_max_tokens=8,
    ew_head_dim=16,
    rotary_kv_heads={64: 2},
    ew_vocab=1000,
    ew_cache_slots=64,
    copy_sizes=(4096, 65536),
    copy_sizes_holdout=(3000,),
    pool_bytes=16 * MiB,
    rotate_bytes=64 * 1024,
    max_rotations=4,
    kv_cache_min_bytes=256 * 1024,
    ceiling_gemm=128,
    ceiling_copy_bytes=MiB,
)

# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How long to spend on one row."""

    target_s: float = 1e-3  # GPU time of one replay, at least
    budget_s: float = 10e-3  # GPU time of all timed replays, about
    min_reps: int = 3
    max_reps: int = 10
    max_launches: int = 256  # launches in one replay


@dataclass(frozen=True)
class Timing:
    seconds: float  # median per launch
    p10: float
    p90: float
    kernels: float  # kernel nodes per launch in the captured graph; -1: unknown


def _percentile(sorted_xs, q):
    pos = (len(sorted_xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def _clamp(x, lo, hi):
    return max(lo, min(hi, x))


class Driver:
    """The CUDA driver calls torch does not expose, through ctypes."""

    KERNEL_NODE = 0  # CU_GRAPH_NODE_TYPE_KERNEL

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")

    def _check(self, result, what):
        if result != 0:
            raise RuntimeError(f"{what} returned CUresult {result}")

    def kernel_nodes(self, graph_handle: int) -> int:
        graph = ctypes.c_void_p(graph_handle)
        count = ctypes.c_size_t(0)
        self._check(self.lib.cuGraphGetNodes(graph, None, ctypes.byref(count)), "cuGraphGetNodes")
        nodes = (ctypes.c_void_p * count.value)()
        self._check(self.lib.cuGraphGetNodes(graph, nodes, ctypes.byref(count)), "cuGraphGetNodes")
        kind = ctypes.c_int(0)
        kernels = 0
        for node in nodes:
            self._check(self.lib.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind)),
                        "cuGraphNodeGetType")
            kernels += kind.value == self.KERNEL_NODE
        return kernels

    def memset(self, tensor: torch.Tensor, nbytes: int) -> None:
        # torch's zero_/fill_ launch a fill kernel; an engine's cudaMemsetAsync does not.
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self._check(self.lib.cuMemsetD8Async(ctypes.c_uint64(tensor.data_ptr()), ctypes.c_ubyte(0x5A),
                                             ctypes.c_size_t(nbytes), stream), "cuMemsetD8Async")


class Bench:
    """Times lists of zero-argument callables as the GPU sees them."""

    def __init__(self, cuda: bool, driver: Driver | None):
        self.cuda = cuda
        self.driver = driver
        self.capture_stream = torch.cuda.Stream() if cuda else None
        self.graph_fallbacks = 0  # rows timed eagerly because capture failed
        self.last_capture_error = ""

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()  # also raises any asynchronous CUDA error

    def run(self, calls: list[Callable], graph: bool = True, policy: Policy = Policy()) -> Timing:
        """Median per-call time of `calls`, launched round-robin."""
        warm = calls[:3]
        for call in warm:  # compiles, picks cuBLAS algorithms, touches memory
            call()
        self.sync()
        if not self.cuda:
            start = time.perf_counter()
            for call in calls:
                call()
            t = (time.perf_counter() - start) / len(calls)
            return Timing(t, t, t, -1.0)
        # A rough per-call time sizes the replay; host-bound for tiny kernels,
        # which only makes the replay shorter than target_s.
        t0 = max(self._replay_times(lambda: [c() for c in warm], 1)[0] / len(warm), 1e-7)
        launches = _clamp(max(math.ceil(policy.target_s / t0), len(calls)), 1, policy.max_launches)
        sequence = [calls[i % len(calls)] for i in range(launches)]
        replay, kernels = self._graph(sequence) if graph else (None, -1.0)
        if replay is None:
            replay = lambda: [c() for c in sequence]  # noqa: E731
        reps = _clamp(math.ceil(policy.budget_s / (t0 * launches)), policy.min_reps, policy.max_reps)
        samples = sorted(t / launches for t in self._replay_times(replay, reps))
        return Timing(_percentile(samples, 50), _percentile(samples, 10),
                      _percentile(samples, 90), kernels)

    def host_wall(self, calls: list[Callable], reps: int = 50, budget_s: float = 0.5) -> Timing:
        """Per-call host wall time, each call followed by a synchronize, less a bare synchronize's
        own time: what a thread that issues the call and then waits for it spends. Up to `reps`
        samples, at least 5, fewer once they have taken `budget_s`."""
        def walls(call):
            times = []
            while len(times) < reps and (len(times) < 5 or sum(times) < budget_s):
                start = time.perf_counter()
                call()
                self.sync()
                times.append(time.perf_counter() - start)
            return sorted(times)
        for call in calls[:3]:
            call()
        self.sync()
        bare = _percentile(walls(lambda: None), 50)
        samples = [max(t - bare, 1e-7) for t in walls(calls[0])]
        return Timing(_percentile(samples, 50), _percentile(samples, 10), _percentile(samples, 90), -1.0)

    def _replay_times(self, fn, reps):
        # Replays are queued back to back with one event between each and read
        # after a single synchronize, so the GPU does not idle between samples;
        # the first replay only keeps the GPU busy while the rest is queued.
        events = [torch.cuda.Event(enable_timing=True) for _ in range(reps + 1)]
        fn()
        events[0].record()
        for i in range(reps):
            fn()
            events[i + 1].record()
        torch.cuda.synchronize()
        return [events[i].elapsed_time(events[i + 1]) * 1e-3 for i in range(reps)]

    def _graph(self, sequence):
        """Capture `sequence` in one CUDA graph: (replay, kernels per call)."""
        try:
            try:
                graph, kept = torch.cuda.CUDAGraph(keep_graph=True), True
            except TypeError:  # torch before keep_graph: no node count
                graph, kept = torch.cuda.CUDAGraph(), False
            # As torch.cuda.graph does, minus its empty_cache() on every
            # capture, which would cost each row a round of cudaFree/cudaMalloc.
            self.capture_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.capture_stream):
                graph.capture_begin()
                try:
                    for call in sequence:
                        call()
                finally:
                    graph.capture_end()
            torch.cuda.current_stream().wait_stream(self.capture_stream)
            kernels = self._kernels_per_call(graph, len(sequence)) if kept else -1.0
            if kept:
                graph.instantiate()
        except Exception as e:  # noqa: BLE001 - any capture failure falls back to eager
            self.graph_fallbacks += 1
            self.last_capture_error = f"{type(e).__name__}: {e}"[:300]
            torch.cuda.synchronize()
            return None, -1.0
        return graph.replay, kernels

    def _kernels_per_call(self, graph, calls):
        try:
            return self.driver.kernel_nodes(graph.raw_cuda_graph()) / calls
        except Exception:  # noqa: BLE001 - the count is optional
            return -1.0


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------


def random_tensor(shape, dtype, device):
    if dtype.is_floating_point and dtype.itemsize == 1:  # fp8: no randn kernel
        return torch.randn(shape, dtype=torch.bfloat16, device=device).to(dtype)
    return torch.randn(shape, dtype=dtype, device=device)


class Pool:
    """Random inputs as views into one large random buffer per dtype.

    Successive takes are disjoint until the buffer wraps, so rotating over
    views costs no extra memory and no per-row random generation.
    """

    ALIGN = 128  # elements: keeps every view 256-byte aligned

    def __init__(self, device, nbytes):
        self.device = device
        self.nbytes = nbytes
        self.buffers: dict = {}
        self.cursor: dict = {}

    def take(self, dtype, shape):
        numel = math.prod(shape)
        if dtype not in self.buffers:
            self.buffers[dtype] = random_tensor((self.nbytes // dtype.itemsize,), dtype, self.device)
            self.cursor[dtype] = 0
        buf = self.buffers[dtype]
        if numel > buf.numel():
            return random_tensor(shape, dtype, self.device)
        start = self.cursor[dtype]
        if start + numel > buf.numel():
            start = 0
        self.cursor[dtype] = start + -(-numel // self.ALIGN) * self.ALIGN
        return buf[start:start + numel].view(shape)

    def release(self):
        self.buffers.clear()
        self.cursor.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------

GEMM_COLUMNS = ["m", "n", "k", "batch", "trans_a", "trans_b", "dtype",
                "seconds", "p10", "p90", "kernels", "split"]
ATTENTION_COLUMNS = ["backend", "phase", "num_seqs", "query_len", "context_len", "num_heads",
                     "num_kv_heads", "head_dim", "dtype", "block_size", "num_query_tokens",
                     "num_kv_tokens", "seconds", "p10", "p90", "composition", "kernels", "split"]
ELEMENTWISE_COLUMNS = ["op", "tokens", "hidden", "dtype", "seconds", "p10", "p90", "kernels", "split"]
COPY_COLUMNS = ["direction", "bytes", "pinned", "seconds", "p10", "p90", "split"]


class Table:
    """One CSV, appended and flushed row by row so a cut-short run keeps its rows."""

    def __init__(self, path, columns):
        self.columns = columns
        self.rows: list[dict] = []
        self.file = open(path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(columns)
        self.file.flush()

    def add(self, fields: dict, timing: Timing, split: str):
        row = dict(fields, seconds=timing.seconds, p10=timing.p10, p90=timing.p90,
                   kernels=f"{timing.kernels:.3g}", split=split)
        self.writer.writerow([_fmt(row[c]) for c in self.columns])
        self.file.flush()
        self.rows.append(row)

    def close(self):
        self.file.close()


def _fmt(value):
    return f"{value:.6e}" if isinstance(value, float) else value


@dataclass
class Case:
    """One row to measure: its fields, and how to build the calls to time."""

    fields: dict
    split: str
    build: Callable[[], list[Callable]]
    graph: bool = True
    # Timed one call at a time by the host's clock, to its synchronize (see family_copy).
    host_wall: bool = False


@dataclass
class FamilyReport:
    rows: int = 0
    fit: int = 0
    holdout: int = 0
    errors: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    error_samples: list = field(default_factory=list)
    notes: list = field(default_factory=list)


class Run:
    """State shared by the families: device, inputs, output, deadlines, reports."""

    def __init__(self, args, grid: Grid):
        self.args = args
        self.grid = grid
        self.cuda = not args.dry_run
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.driver = _try(Driver) if self.cuda else None
        self.bench = Bench(self.cuda, self.driver)
        self.pool = Pool(self.device, grid.pool_bytes)
        self.started = time.monotonic()
        self.deadline = self.started + args.max_seconds
        self.reports: dict[str, FamilyReport] = {}
        self.tables: dict[str, Table] = {}
        self.log_file = open(os.path.join(args.out, "profile.log"), "a", encoding="utf-8")
        self.meta: dict = {}
        self.ew_state: dict | None = None  # elementwise family's shared tables
        self.fatal = ""  # set when the CUDA context broke: later families are skipped

    def log(self, message, quiet=False):
        line = f"[{time.monotonic() - self.started:7.1f}s] {message}"
        if not quiet:
            print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def rotations(self, bytes_per_call):
        """How many input copies one pass must cycle through to miss the L2."""
        return _clamp(math.ceil(self.grid.rotate_bytes / max(bytes_per_call, 1)),
                      1, self.grid.max_rotations)

    def measure(self, family: str, table: Table, cases: list[Case], deadline: float):
        report = self.reports[family]
        last_progress = time.monotonic()
        for index, case in enumerate(cases):
            if time.monotonic() > deadline:
                report.skipped += len(cases) - index
                self.log(f"[{family}] time budget spent: {len(cases) - index} rows skipped")
                break
            try:
                calls = case.build()
                timing = self.bench.host_wall(calls) if case.host_wall else self.bench.run(calls, graph=case.graph)
                table.add(case.fields, timing, case.split)
                report.rows += 1
                setattr(report, case.split, getattr(report, case.split) + 1)
            except SkipRow:
                report.skipped += 1
            except Exception as e:  # noqa: BLE001 - one bad row must not stop the family
                self.row_failed(family, case, e)
            if time.monotonic() - last_progress > 20:
                last_progress = time.monotonic()
                self.log(f"[{family}] {index + 1}/{len(cases)} rows, {report.errors} errors")

    def row_failed(self, family, case, error):
        report = self.reports[family]
        report.errors += 1
        message = f"{case.fields}: {type(error).__name__}: {str(error)[:300]}"
        if len(report.error_samples) < 5:
            report.error_samples.append(message)
        self.log(f"[{family}] row failed: {message}", quiet=report.errors > 3)
        self.log_file.write(traceback.format_exc())
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        elif self.cuda:
            try:
                torch.cuda.synchronize()
            except Exception as sticky:  # noqa: BLE001
                raise FatalDeviceError(f"CUDA context unusable after {message}") from sticky


class SkipRow(Exception):
    """A row not measured because its backend's setup already failed."""


class FatalDeviceError(RuntimeError):
    """The CUDA context is broken (a sticky error): nothing more can be measured."""


def _try(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - callers treat None as "not available"
        return None


# ----------------------------------------------------------------------------
# Ceilings
# ----------------------------------------------------------------------------


def measure_ceilings(run: Run) -> dict:
    """D2D copy bandwidth and dense bf16 GEMM rate, the two roofline ceilings."""
    many = Policy(target_s=5e-3, budget_s=100e-3, min_reps=10, max_reps=20)
    size = run.grid.ceiling_gemm
    src = run.pool.take(torch.bfloat16, (run.grid.ceiling_copy_bytes // 2,))
    dst = torch.empty_like(src)
    copy_t = run.bench.run([functools.partial(dst.copy_, src)], graph=False, policy=many)
    a = run.pool.take(torch.bfloat16, (size, size))
    b = run.pool.take(torch.bfloat16, (size, size))
    out = torch.empty((size, size), dtype=torch.bfloat16, device=run.device)
    gemm_t = run.bench.run([functools.partial(torch.mm, a, b, out=out)], policy=many)
    return {
        "d2d_copy_bytes": 2 * src.nbytes,
        "d2d_bytes_per_s": 2 * src.nbytes / copy_t.seconds,
        "gemm_bf16_mnk": size,
        "gemm_bf16_flop_per_s": 2 * size ** 3 / gemm_t.seconds,
    }


# ----------------------------------------------------------------------------
# GEMM
# ----------------------------------------------------------------------------


def linear_shapes(model: Model, tp: int):
    """(out features N, in features K) of one rank's linear layers."""
    q_heads = model.heads // tp
    kv_heads = max(1, model.kv_heads // tp)  # vLLM replicates kv heads past tp = kv_heads
    d = model.head_dim
    return [((q_heads + 2 * kv_heads) * d, model.hidden),  # qkv_proj
            (model.hidden, q_heads * d),  # o_proj
            (2 * model.inter // tp, model.hidden),  # gate_up_proj
            (model.hidden, model.inter // tp),  # down_proj
            (model.vocab // tp, model.hidden)]  # lm_head


def unique_shapes(pairs):
    seen = []
    for model, tp in pairs:
        for shape in linear_shapes(model, tp):
            if shape not in seen:
                seen.append(shape)
    return seen


def gemm_calls(run: Run, n, k, tokens, dtype):
    """F.linear(x[T, K], W[N, K]) without bias, as the engine calls it."""
    fp8 = dtype.itemsize == 1
    out = None if fp8 else torch.empty((tokens, n), dtype=dtype, device=run.device)
    one = torch.ones((), dtype=torch.float32, device=run.device)
    calls = []
    for _ in range(run.rotations((tokens * k + n * k) * dtype.itemsize)):
        x = run.pool.take(dtype, (tokens, k))
        w = run.pool.take(dtype, (n, k))
        if fp8:  # per-tensor scales; _scaled_mm wants the weight column-major
            calls.append(functools.partial(torch._scaled_mm, x, w.t(), scale_a=one, scale_b=one,
                                           out_dtype=torch.bfloat16))
        else:
            calls.append(functools.partial(torch.mm, x, w.t(), out=out))
    return calls


def check_fp8(run: Run) -> float:
    """Relative error of fp8 _scaled_mm against bf16 on the same values."""
    x = random_tensor((64, 256), torch.float8_e4m3fn, run.device)
    w = random_tensor((128, 256), torch.float8_e4m3fn, run.device)
    one = torch.ones((), dtype=torch.float32, device=run.device)
    got = torch._scaled_mm(x, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16).float()
    ref = x.float() @ w.float().t()
    return ((got - ref).norm() / ref.norm()).item()


def family_gemm(run: Run):
    grid = run.grid
    all_pairs = [(grid.models[name], tp) for name in grid.models for tp in grid.tps]
    subset = unique_shapes([(grid.models[name], tp) for name, tp in grid.gemm_subset])
    dtypes = [("bf16", torch.bfloat16, unique_shapes(all_pairs)), ("fp16", torch.float16, subset)]
    try:
        err = check_fp8(run)
        run.meta["checks"]["fp8_scaled_mm_rel_err"] = err
        dtypes.append(("fp8_e4m3", torch.float8_e4m3fn, subset))
    except Exception as e:  # noqa: BLE001 - fp8 is optional
        run.reports["gemm"].notes.append(f"fp8 skipped: {type(e).__name__}: {str(e)[:200]}")
    tokens = [(t, "fit") for t in grid.gemm_tokens] + [(t, "holdout") for t in grid.gemm_tokens_holdout]
    cases = []
    for label, dtype, shapes in dtypes:
        for n, k in shapes:
            for t, split in tokens:
                # cuBLAS column-major view of F.linear: C[N, T] = W^T(op T) . x(op N)
                fields = dict(m=n, n=t, k=k, batch=1, trans_a=1, trans_b=0, dtype=label)
                cases.append(Case(fields, split, functools.partial(gemm_calls, run, n, k, t, dtype)))
    run.log(f"[gemm] {len(cases)} rows: " + ", ".join(f"{lbl} {len(s)} shapes" for lbl, _, s in dtypes))
    return cases


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One attention launch: groups of identical sequences (query_len, context_len, count)."""

    groups: tuple
    split: str

    @property
    def seqs(self):
        return [(q, c) for q, c, count in self.groups for _ in range(count)]

    @property
    def phase(self):
        if len(self.groups) > 1:
            return "mixed"
        q, c, _ = self.groups[0]
        return "decode" if q == 1 else "prefill" if q == c else "chunked"

    def fields(self, backend, heads, dtype, block_size):
        q_heads, kv_heads, head_dim = heads
        uniform = len(self.groups) == 1
        seqs = self.seqs
        return dict(backend=backend, phase=self.phase, num_seqs=len(seqs),
                    query_len=self.groups[0][0] if uniform else -1,
                    context_len=self.groups[0][1] if uniform else -1,
                    num_heads=q_heads, num_kv_heads=kv_heads, head_dim=head_dim, dtype=DTYPE_NAMES[dtype],
                    block_size=block_size, num_query_tokens=sum(q for q, _ in seqs),
                    num_kv_tokens=sum(c for _, c in seqs),
                    composition="; ".join(f"{q}:{c} x {n}" for q, c, n in self.groups))


def attention_batches(grid: Grid):
    """(uniform batches both backends run, batches only the paged kernel runs)."""
    decode = [Batch(((1, c, s),), "fit") for s in grid.decode_seqs for c in grid.decode_ctx]
    decode += [Batch(((1, c, s),), "holdout") for s, c in grid.decode_holdout]
    prefill = [Batch(((q, q, s),), "fit") for q in grid.prefill_q for s in grid.prefill_seqs
               if q * s <= grid.prefill_max_tokens]
    prefill += [Batch(((q, q, s),), "holdout") for s, q in grid.prefill_holdout]
    paged_only = [Batch(((q, c, s),), "fit") for s, q, c in grid.chunked]
    paged_only += [Batch(((q, c, s),), "holdout") for s, q, c in grid.chunked_holdout]
    paged_only += [Batch(tuple(g), "fit") for g in grid.mixed]
    paged_only += [Batch(tuple(g), "holdout") for g in grid.mixed_holdout]
    return decode + prefill, paged_only


def load_vllm_triton():
    """vLLM's unified attention module copied by fetch_vllm_kernels.py, or None."""
    if not os.path.isdir(os.path.join(CARRY_DIR, "vllm_triton")):
        return None, "no .carry/vllm_triton (run fetch_vllm_kernels.py and carry .carry)"
    if CARRY_DIR not in sys.path:
        sys.path.insert(0, CARRY_DIR)
    try:
        import vllm_triton.triton_unified_attention as module
    except Exception as e:  # noqa: BLE001 - reported, backend skipped
        return None, f"import failed: {type(e).__name__}: {e}"
    with open(os.path.join(CARRY_DIR, "vllm_triton", "MANIFEST.json"), encoding="utf-8") as f:
        return module, json.load(f)


class PagedCache:
    """A vLLM Triton-backend KV cache: [blocks, kv_heads, block_size, 2*head_dim], split into K and V."""

    def __init__(self, run: Run, num_blocks, kv_heads, head_dim):
        self.num_blocks = num_blocks
        kv = random_tensor((num_blocks, kv_heads, BLOCK_SIZE, 2 * head_dim), run.grid.attention_dtype,
                           run.device)
        # As TritonAttentionImpl.forward does: transpose to (B, N, H, 2hs) and split.
        self.key, self.value = kv.transpose(1, 2).split(head_dim, dim=-1)

    def block_tables(self, seqs, count, device):
        """`count` tables of random distinct blocks per sequence, as a fragmented cache has them."""
        per_seq = [-(-c // BLOCK_SIZE) for _, c in seqs]
        rows = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor(per_seq)).to(device)
        cols = torch.cat([torch.arange(n) for n in per_seq]).to(device)
        tables = []
        for _ in range(count):
            table = torch.zeros((len(seqs), max(per_seq)), dtype=torch.int32, device=device)
            table[rows, cols] = torch.randperm(self.num_blocks, device=device)[:len(rows)].to(torch.int32)
            tables.append(table)
        return tables

    def gather(self, table_row, context):
        """(K, V) of one sequence as [context, kv_heads, head_dim], for checking."""
        blocks = table_row[:-(-context // BLOCK_SIZE)].long()
        k = self.key[blocks].flatten(0, 1)[:context]
        v = self.value[blocks].flatten(0, 1)[:context]
        return k, v


def triton_calls(run: Run, module, cache: PagedCache, batch: Batch, heads, rotations=None):
    """Calls of vLLM's unified_attention with the metadata its Triton backend builds."""
    q_heads, kv_heads, head_dim = heads
    seqs = batch.seqs
    dev = run.device
    query_lens = [q for q, _ in seqs]
    context_lens = [c for _, c in seqs]
    cu_seqlens_q = torch.tensor([0, *itertools.accumulate(query_lens)], dtype=torch.int32, device=dev)
    seqused_k = torch.tensor(context_lens, dtype=torch.int32, device=dev)
    total_q = sum(query_lens)
    # TritonAttentionMetadataBuilder: the 3D (split-K) path below this many
    # sequences, 16 softmax segments, scratch for that many decode tokens.
    threshold = 128 // kv_heads
    segments = 16
    scratch_rows = min(threshold, 256)
    padded = triton_next_pow2(head_dim)
    f32 = dict(dtype=torch.float32, device=dev)
    segm_out = torch.empty((scratch_rows, q_heads, segments, padded), **f32)
    segm_max = torch.empty((scratch_rows, q_heads, segments), **f32)
    segm_sum = torch.empty((scratch_rows, q_heads, segments), **f32)
    descale = torch.ones((), **f32).expand(len(seqs), kv_heads)
    dtype = run.grid.attention_dtype
    out = torch.empty((total_q, q_heads, head_dim), dtype=dtype, device=dev)
    kv_bytes = sum(context_lens) * kv_heads * head_dim * 2 * dtype.itemsize
    calls, state = [], []
    for table in cache.block_tables(seqs, rotations or run.rotations(kv_bytes + out.nbytes), dev):
        q = run.pool.take(dtype, (total_q, q_heads, head_dim))
        state.append((q, table))
        calls.append(functools.partial(
            module.unified_attention, q=q, k=cache.key, v=cache.value, out=out,
            cu_seqlens_q=cu_seqlens_q, max_seqlen_q=max(query_lens), seqused_k=seqused_k,
            max_seqlen_k=max(context_lens), softmax_scale=head_dim ** -0.5, causal=True,
            window_size=(-1, -1), block_table=table, softcap=0, q_descale=None,
            k_descale=descale, v_descale=descale, seq_threshold_3D=threshold,
            num_par_softmax_segments=segments, softmax_segm_output=segm_out,
            softmax_segm_max=segm_max, softmax_segm_expsum=segm_sum))
    return calls, state, out


def triton_next_pow2(x):
    return 1 << (x - 1).bit_length()


def sdpa_flash(q, k, v, is_causal, enable_gqa):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=enable_gqa)


def sdpa_tensors(run: Run, batch: Batch, heads, native_gqa: bool):
    """q, k, v as [B, heads, S, D] views of [B, S, heads, D] storage."""
    q_heads, kv_heads, head_dim = heads
    q_len, ctx, seqs = batch.groups[0]
    dtype = run.grid.attention_dtype
    q = run.pool.take(dtype, (seqs, q_len, q_heads, head_dim)).transpose(1, 2)
    k = run.pool.take(dtype, (seqs, ctx, kv_heads, head_dim)).transpose(1, 2)
    v = run.pool.take(dtype, (seqs, ctx, kv_heads, head_dim)).transpose(1, 2)
    if not native_gqa:  # expanded outside the timed region; the kernel reads more
        k = k.repeat_interleave(q_heads // kv_heads, dim=1)
        v = v.repeat_interleave(q_heads // kv_heads, dim=1)
    return q, k, v


def sdpa_calls(run: Run, batch: Batch, heads, native_gqa: bool):
    q_len, ctx, seqs = batch.groups[0]
    q_heads, kv_heads, head_dim = heads
    nbytes = seqs * (q_len * q_heads + 2 * ctx * kv_heads) * head_dim * run.grid.attention_dtype.itemsize
    calls = []
    for _ in range(run.rotations(nbytes)):
        q, k, v = sdpa_tensors(run, batch, heads, native_gqa)
        calls.append(functools.partial(sdpa_flash, q, k, v, batch.phase == "prefill", native_gqa))
    return calls


def reference_attention(q, k, v):
    """float32 causal attention of one sequence; q [Lq, H, D], k/v [Lk, Hkv, D]."""
    group = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)
    v = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * q.shape[-1] ** -0.5
    offset = k.shape[0] - q.shape[0]  # the queries are the last tokens of the context
    visible = torch.arange(k.shape[0], device=q.device)[None, :] <= (
        torch.arange(q.shape[0], device=q.device)[:, None] + offset)
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def _rel_err(got, ref):
    return ((got.float() - ref).norm() / ref.norm()).item()


def check_triton(run: Run, module, cache: PagedCache, heads) -> float:
    """Worst relative error over a batch with a prefill, a chunk and decodes (2D and 3D paths)."""
    worst = 0.0
    for groups in (((40, 40, 1), (24, 70, 1), (1, 33, 2)), ((1, 50, 2),)):
        batch = Batch(groups, "fit")
        calls, state, out = triton_calls(run, module, cache, batch, heads, rotations=1)
        out.fill_(float("nan"))  # poisoned: every element must be written
        calls[0]()
        q, table = state[0]
        start = 0
        for i, (q_len, ctx) in enumerate(batch.seqs):
            k, v = cache.gather(table[i], ctx)
            ref = reference_attention(q[start:start + q_len], k, v)
            worst = max(worst, _rel_err(out[start:start + q_len], ref))
            start += q_len
    return worst


def check_sdpa(run: Run, heads, native_gqa: bool) -> float:
    worst = 0.0
    for batch in (Batch(((40, 40, 2),), "fit"), Batch(((1, 70, 2),), "fit")):
        q, k, v = sdpa_tensors(run, batch, heads, native_gqa)
        out = sdpa_flash(q, k, v, batch.phase == "prefill", native_gqa)
        for b in range(q.shape[0]):
            ref = reference_attention(q[b].transpose(0, 1), k[b].transpose(0, 1), v[b].transpose(0, 1))
            worst = max(worst, _rel_err(out[b].transpose(0, 1), ref))
    return worst


def sdpa_gqa_native(run: Run, heads) -> bool:
    """Whether the flash backend takes grouped K/V itself (enable_gqa)."""
    try:
        q, k, v = sdpa_tensors(run, Batch(((16, 16, 1),), "fit"), heads, True)
        sdpa_flash(q, k, v, True, True)
        run.bench.sync()
        return True
    except Exception:  # noqa: BLE001 - falls back to expanded K/V
        return False


def family_attention(run: Run):
    grid = run.grid
    report = run.reports["attention"]
    module, manifest = load_vllm_triton()
    if module is None:
        report.notes.append(f"vllm_triton_unified skipped: {manifest}")
        run.log(f"[attention] vllm_triton_unified skipped: {manifest}")
    else:
        run.meta["vllm_triton"] = manifest
    both, paged_only = attention_batches(grid)
    cases = []
    for heads in grid.head_configs:
        if module is not None:
            cases += _triton_cases(run, module, heads, both + paged_only)
        cases += _sdpa_cases(run, heads, both)
    run.log(f"[attention] {len(cases)} rows over {len(grid.head_configs)} head configs")
    return cases


def _triton_cases(run: Run, module, heads, batches):
    """Cases sharing one KV cache, made when the first of them is measured and
    dropped with the last, so only one head config's cache is alive at a time."""
    q_heads, kv_heads, head_dim = heads
    block_bytes = kv_heads * BLOCK_SIZE * 2 * head_dim * run.grid.attention_dtype.itemsize
    need = max(sum(-(-c // BLOCK_SIZE) for _, c in b.seqs) for b in batches)
    num_blocks = max(need, run.grid.kv_cache_min_bytes // block_bytes)
    holder = {}

    def build(batch, last):
        if "error" in holder:
            raise SkipRow(holder["error"])
        if "cache" not in holder:
            try:
                holder["cache"] = PagedCache(run, num_blocks, kv_heads, head_dim)
                err = check_triton(run, module, holder["cache"], heads)
            except Exception as e:
                holder.clear()
                holder["error"] = f"vllm_triton_unified {heads} setup failed: {type(e).__name__}: {e}"
                raise
            run.meta["checks"][f"vllm_triton_rel_err_{q_heads}_{kv_heads}_{head_dim}"] = err
            if not err < 2e-2:
                run.log(f"[attention] WARNING vllm_triton_unified {heads} rel err {err:.3g}")
        cache = holder["cache"]
        if last:
            holder.clear()
        return triton_calls(run, module, cache, batch, heads)[0]

    dtype = run.grid.attention_dtype
    return [Case(b.fields("vllm_triton_unified", heads, dtype, BLOCK_SIZE), b.split,
                 functools.partial(build, b, i == len(batches) - 1))
            for i, b in enumerate(batches)]


def _sdpa_cases(run: Run, heads, batches):
    state = {}

    def build(batch):
        if "error" in state:
            raise SkipRow(state["error"])
        if "gqa" not in state:
            state["gqa"] = sdpa_gqa_native(run, heads)
            try:
                err = check_sdpa(run, heads, state["gqa"])
            except Exception as e:
                state["error"] = f"sdpa_flash {heads} check failed: {type(e).__name__}: {e}"
                raise
            q_heads, kv_heads, head_dim = heads
            run.meta["checks"][f"sdpa_flash_rel_err_{q_heads}_{kv_heads}_{head_dim}"] = err
            run.meta["sdpa_flash_gqa"] = "enable_gqa" if state["gqa"] else "expanded K/V"
        return sdpa_calls(run, batch, heads, state["gqa"])

    return [Case(b.fields("sdpa_flash", heads, run.grid.attention_dtype, -1), b.split,
                 functools.partial(build, b))
            for b in batches]


# ----------------------------------------------------------------------------
# Elementwise and other per-layer kernels, as plain torch eager ops
# ----------------------------------------------------------------------------


def rms_norm(x, weight, eps=1e-6):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype) * weight


def fused_add_rms_norm(x, residual, weight):
    x = x + residual
    return rms_norm(x, weight), x


def _rotate_neox(x, cos, sin, head_dim):
    x = x.view(x.shape[0], -1, head_dim)
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(1)


def rotary_neox(positions, q, k, cos_sin_cache, head_dim):
    cos, sin = cos_sin_cache.index_select(0, positions).chunk(2, dim=-1)
    return _rotate_neox(q, cos, sin, head_dim), _rotate_neox(k, cos, sin, head_dim)


def silu_and_mul(x):
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def sample_softmax_argmax(logits):
    return torch.softmax(logits, dim=-1).argmax(dim=-1)


def reshape_and_cache(key, value, key_cache, value_cache, slots):
    key_cache.index_copy_(0, slots, key)
    value_cache.index_copy_(0, slots, value)


def _ew_inputs(run: Run, tokens, hidden, op):
    """(function, argument tuple, bytes read) of one call of `op`."""
    bf16 = torch.bfloat16
    take = run.pool.take
    dev = run.device
    if op == "rms_norm":
        args = (take(bf16, (tokens, hidden)), take(bf16, (hidden,)))
        return rms_norm, args, 2 * tokens * hidden
    if op == "fused_add_rms_norm":
        args = (take(bf16, (tokens, hidden)), take(bf16, (tokens, hidden)), take(bf16, (hidden,)))
        return fused_add_rms_norm, args, 4 * tokens * hidden
    if op == "residual_add":
        return torch.add, (take(bf16, (tokens, hidden)), take(bf16, (tokens, hidden))), 4 * tokens * hidden
    if op == "embedding":
        table = run.ew_state["embedding", hidden]
        ids = torch.randint(0, table.shape[0], (tokens,), device=dev)
        return F.embedding, (ids, table), 2 * tokens * hidden
    if op == "rotary_neox":
        head_dim = run.grid.ew_head_dim
        k_hidden = run.grid.rotary_kv_heads[hidden] * head_dim
        cos_sin = run.ew_state["cos_sin"]
        positions = torch.randint(0, cos_sin.shape[0], (tokens,), device=dev)
        args = (positions, take(bf16, (tokens, hidden)), take(bf16, (tokens, k_hidden)), cos_sin, head_dim)
        return rotary_neox, args, 2 * tokens * (hidden + k_hidden)
    if op == "silu_and_mul":
        return silu_and_mul, (take(bf16, (tokens, 2 * hidden)),), 4 * tokens * hidden
    if op == "sample_softmax_argmax":
        return sample_softmax_argmax, (take(torch.float32, (tokens, hidden)),), 4 * tokens * hidden
    if op == "reshape_and_cache":
        key_cache, value_cache = run.ew_state["kv_cache", hidden]
        slots = torch.randperm(key_cache.shape[0], device=dev)[:tokens]
        args = (take(bf16, (tokens, hidden)), take(bf16, (tokens, hidden)), key_cache, value_cache, slots)
        return reshape_and_cache, args, 4 * tokens * hidden
    raise ValueError(op)


def elementwise_calls(run: Run, op, tokens, hidden):
    fn, args, nbytes = _ew_inputs(run, tokens, hidden, op)
    calls = [functools.partial(fn, *args)]
    for _ in range(run.rotations(nbytes) - 1):
        fn, args, _ = _ew_inputs(run, tokens, hidden, op)
        calls.append(functools.partial(fn, *args))
    return calls


def _ew_shared_state(run: Run) -> dict:
    """Large read-mostly tensors that rotation would not help: tables and caches."""
    grid = run.grid
    bf16 = torch.bfloat16
    state = {"cos_sin": random_tensor((8192, grid.ew_head_dim), bf16, run.device)}  # max positions
    for hidden in grid.ew_hidden["embedding"]:
        state["embedding", hidden] = random_tensor((grid.ew_vocab, hidden), bf16, run.device)
    for hidden in grid.ew_hidden["reshape_and_cache"]:
        state["kv_cache", hidden] = tuple(random_tensor((grid.ew_cache_slots, hidden), bf16, run.device)
                                          for _ in range(2))
    return state


def family_elementwise(run: Run):
    grid = run.grid
    run.ew_state = _ew_shared_state(run)
    tokens = [(t, "fit") for t in grid.ew_tokens] + [(t, "holdout") for t in grid.ew_tokens_holdout]
    cases = []
    for op, hiddens in grid.ew_hidden.items():
        dtype = "fp32" if op == "sample_softmax_argmax" else "bf16"
        for hidden in hiddens:
            for t, split in tokens:
                if op == "sample_softmax_argmax" and t > grid.sampling_max_tokens:
                    continue  # sampling sees one row per sequence, not per token
                fields = dict(op=op, tokens=t, hidden=hidden, dtype=dtype)
                cases.append(Case(fields, split, functools.partial(elementwise_calls, run, op, t, hidden)))
    run.log(f"[elementwise] {len(cases)} rows")
    return cases


# ----------------------------------------------------------------------------
# Copies
# ----------------------------------------------------------------------------


def family_copy(run: Run):
    grid = run.grid
    sizes = [(b, "fit") for b in grid.copy_sizes] + [(b, "holdout") for b in grid.copy_sizes_holdout]
    largest = max(b for b, _ in sizes)
    src = random_tensor((largest // 4 + 1,), torch.float32, run.device).view(torch.uint8)[:largest]
    dst = torch.empty_like(src)
    pageable = src.cpu()  # the same random bytes
    pinned = torch.empty(largest, dtype=torch.uint8, pin_memory=run.cuda).copy_(pageable)
    memset = lambda t, n: t[:n].fill_(0x5A)  # noqa: E731
    run.meta["memset_impl"] = "torch fill_ (a kernel, not cudaMemset)"
    if run.driver is None:
        run.reports["copy"].notes.append("memset by torch fill_: no libcuda")
    else:
        try:
            run.driver.memset(dst, 4096)
            run.bench.sync()
            memset = run.driver.memset
            run.meta["memset_impl"] = "cuMemsetD8Async"
        except Exception as e:  # noqa: BLE001 - fall back to the fill kernel
            run.reports["copy"].notes.append(f"memset by torch fill_: {type(e).__name__}: {str(e)[:200]}")

    def copy_calls(direction, nbytes):
        d, s, hp, hq = dst[:nbytes], src[:nbytes], pinned[:nbytes], pageable[:nbytes]
        return [{
            "H2D_pinned": lambda: d.copy_(hp, non_blocking=True),
            "H2D_pageable": lambda: d.copy_(hq, non_blocking=True),
            "D2H_pinned": lambda: hp.copy_(s, non_blocking=True),
            "D2H_pageable": lambda: hq.copy_(s),
            "D2D": lambda: d.copy_(s),
            "memset": lambda: memset(d, nbytes),
        }[direction]]

    cases = []
    for direction in ("H2D_pinned", "H2D_pageable", "D2H_pinned", "D2H_pageable", "D2D", "memset"):
        name, _, kind = direction.partition("_")
        for nbytes, split in sizes:
            fields = dict(direction=name, bytes=nbytes, pinned=int(kind == "pinned"))
            # Pageable copies synchronize with the host and cannot be captured, so they are timed
            # one at a time by the host's clock: back to back between two events, a 4 KiB one
            # measured 190 us on an H100 where alone it takes 12 us (probe_small_copies.py).
            # The others are timed eagerly with events.
            cases.append(Case(fields, split, functools.partial(copy_calls, direction, nbytes), graph=False,
                              host_wall=kind == "pageable"))
    run.log(f"[copy] {len(cases)} rows")
    return cases


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------

FAMILY_FUNCTIONS = {"gemm": (family_gemm, GEMM_COLUMNS),
                    "attention": (family_attention, ATTENTION_COLUMNS),
                    "elementwise": (family_elementwise, ELEMENTWISE_COLUMNS),
                    "copy": (family_copy, COPY_COLUMNS)}


def nvidia_smi(query):
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=15)
        return result.stdout.strip() or result.stderr.strip()
    except Exception as e:  # noqa: BLE001 - optional information
        return f"unavailable: {type(e).__name__}"


CLOCK_QUERY = "pstate,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw,power.limit"


def describe_machine(run: Run) -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "hostname": socket.gethostname(),
        "command": [sys.executable] + sys.argv,
        "mode": "dry-run" if run.args.dry_run else "quick" if run.args.quick else "full",
        "script_sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "triton": _try(lambda: __import__("triton").__version__),
        "blas_library": _try(lambda: str(torch.backends.cuda.preferred_blas_library())),
    }
    if run.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=torch.cuda.get_device_name(0), sm_count=props.multi_processor_count,
                    memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    l2_cache_bytes=getattr(props, "L2_cache_size", None),
                    driver_version=nvidia_smi("driver_version"),
                    clocks_before=nvidia_smi(CLOCK_QUERY), clocks_query=CLOCK_QUERY)
    return info


def run_family(run: Run, name: str):
    fn, columns = FAMILY_FUNCTIONS[name]
    report = run.reports[name] = FamilyReport()
    start = time.monotonic()
    deadline = min(start + FAMILY_BUDGET_S[name], run.deadline)
    table = run.tables[name] = Table(os.path.join(run.args.out, f"{name}.csv"), columns)
    run.log(f"[{name}] start (budget {deadline - start:.0f} s)")
    try:
        run.measure(name, table, fn(run), deadline)
    except FatalDeviceError as e:
        run.fatal = str(e)
        report.notes.append(f"fatal: {e}")
        run.log(f"[{name}] FATAL, remaining families skipped: {e}")
    except Exception as e:  # noqa: BLE001 - the next family still runs
        report.notes.append(f"family aborted: {type(e).__name__}: {str(e)[:300]}")
        run.log(f"[{name}] ABORTED: {type(e).__name__}: {e}")
        run.log_file.write(traceback.format_exc())
    finally:
        table.close()
        run.ew_state = None
        _try(run.pool.release)  # may raise when the CUDA context is broken
        report.wall_s = time.monotonic() - start
        if run.bench.graph_fallbacks:
            report.notes.append(f"{run.bench.graph_fallbacks} rows timed eagerly: "
                                f"{run.bench.last_capture_error}")
            run.bench.graph_fallbacks = 0
        run.log(f"[{name}] done: {report.rows} rows ({report.fit} fit, {report.holdout} holdout), "
                f"{report.errors} errors, {report.skipped} skipped, {report.wall_s:.1f} s")
        write_meta(run)


def write_meta(run: Run):
    run.meta["families"] = {name: dataclasses.asdict(r) for name, r in run.reports.items()}
    run.meta["elapsed_s"] = time.monotonic() - run.started
    path = os.path.join(run.args.out, "meta.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(run.meta, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def _headlines(run: Run) -> list[str]:
    """A few derived numbers to eyeball: achieved rates against the ceilings."""
    lines = []
    gemm = [r for r in getattr(run.tables.get("gemm"), "rows", []) if r["dtype"] == "bf16"]
    if gemm:
        best = max(gemm, key=lambda r: 2 * r["m"] * r["n"] * r["k"] / r["seconds"])
        rate = 2 * best["m"] * best["n"] * best["k"] / best["seconds"]
        lines.append(f"gemm bf16 best {rate / 1e12:.0f} TFLOP/s at m={best['m']} n={best['n']} k={best['k']}")
        decode = [r for r in gemm if r["n"] == 1]
        if decode:
            bw = max(2 * r["m"] * r["k"] / r["seconds"] for r in decode)
            lines.append(f"gemm bf16 T=1 best weight-read {bw / 1e9:.0f} GB/s")
    for r in getattr(run.tables.get("attention"), "rows", []):
        first_heads = run.grid.head_configs[0]
        if r["phase"] == "decode" and r["num_seqs"] == max(run.grid.decode_seqs) and \
                r["context_len"] == max(run.grid.decode_ctx) and \
                (r["num_heads"], r["num_kv_heads"], r["head_dim"]) == first_heads:
            kv = r["num_kv_tokens"] * r["num_kv_heads"] * r["head_dim"] * 2 * run.grid.attention_dtype.itemsize
            lines.append(f"attention {r['backend']} decode {r['num_seqs']}x{r['context_len']}: "
                         f"{r['seconds'] * 1e6:.0f} us, KV read {kv / r['seconds'] / 1e9:.0f} GB/s")
    for r in getattr(run.tables.get("copy"), "rows", []):
        if r["bytes"] == max(run.grid.copy_sizes):
            lines.append(f"copy {r['direction']} pinned={r['pinned']} {r['bytes']} B: "
                         f"{r['bytes'] / r['seconds'] / 1e9:.1f} GB/s")
    return lines


def print_summary(run: Run):
    print("\n=== summary ===")
    print(f"{'family':<12}{'rows':>6}{'fit':>6}{'hold':>6}{'err':>5}{'skip':>6}{'wall_s':>8}")
    for name, r in run.reports.items():
        print(f"{name:<12}{r.rows:>6}{r.fit:>6}{r.holdout:>6}{r.errors:>5}{r.skipped:>6}{r.wall_s:>8.1f}")
    ceilings = run.meta.get("ceilings", {})
    if "d2d_bytes_per_s" in ceilings:
        print(f"ceilings: D2D {ceilings['d2d_bytes_per_s'] / 1e12:.2f} TB/s (read+write), "
              f"bf16 GEMM {ceilings['gemm_bf16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    for line in _headlines(run):
        print(line)
    for name, value in run.meta.get("checks", {}).items():
        print(f"check {name}: {value:.3g}" if isinstance(value, float) else f"check {name}: {value}")
    for name, r in run.reports.items():
        for note in r.notes + r.error_samples[:2]:
            print(f"{name}: {note[:300]}")
    print(f"total {time.monotonic() - run.started:.1f} s; files in {run.args.out}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="reduced grid for a smoke run")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, timings meaningless")
    parser.add_argument("--max-seconds", type=float, default=420,
                        help="stop starting rows after this long (default 420)")
    args = parser.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {sorted(unknown)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device; use --dry-run to exercise the script on the CPU")
    grid = DRY if args.dry_run else QUICK if args.quick else FULL
    torch.manual_seed(0)
    run = Run(args, grid)
    run.meta.update(describe_machine(run), checks={})
    run.log(f"profile_gpu: {run.meta['mode']} on {run.meta.get('gpu_name', 'cpu')}, "
            f"torch {torch.__version__}, triton {run.meta['triton']}, families {args.families}")
    write_meta(run)
    try:
        run.meta["ceilings"] = measure_ceilings(run)
        c = run.meta["ceilings"]
        run.log(f"ceilings: D2D {c['d2d_bytes_per_s'] / 1e12:.2f} TB/s (read+write); "
                f"bf16 {c['gemm_bf16_mnk']}^3 GEMM {c['gemm_bf16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    except Exception as e:  # noqa: BLE001
        run.meta["ceilings"] = {"error": f"{type(e).__name__}: {e}"}
        run.log(f"ceilings failed: {type(e).__name__}: {e}")
    _try(run.pool.release)
    for name in args.families:
        if run.fatal:
            run.reports[name] = FamilyReport(notes=["not run: CUDA context broken earlier"])
            continue
        run_family(run, name)
    if run.cuda:
        run.meta["clocks_after"] = nvidia_smi(CLOCK_QUERY)
    write_meta(run)
    print_summary(run)


if __name__ == "__main__":
    main()
