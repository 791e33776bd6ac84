"""How profile_gpu.py times a row, shared by every kernel family (families/).

A family turns its grid into Cases: a row's fields and a function that builds the calls to time.
Run.measure times them one by one under the family's deadline (Bench: a CUDA graph of
back-to-back launches replayed with an event between replays, or eager launches, or the host's
clock), and Table writes each row the moment it is measured. Inputs are views into one large
random buffer per dtype (Pool), rotated so that a pass misses the L2. README.md beside this file
says the same for the tables' readers.
"""

from __future__ import annotations

import csv
import ctypes
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}

if TYPE_CHECKING:
    from emulator.profiler.grids import Grid

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
    # Timed one call at a time by the host's clock, to its synchronize (see families/copies.py).
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
