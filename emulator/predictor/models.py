"""The predictor's fitted models: pure functions of a SKU's fit rows (tables.py), each with predict.

Every model here is rebuilt from the measured tables; none holds a hand-set number except the
collectives of a SKU with neither collectives.csv (no multi-GPU measurement) nor published node
timings (data/published/collectives_<sku>.csv), which are modelled and say so; FlashAttention 3,
which cannot run on the lent GPUs, and the collectives of a SKU without collectives.csv are fitted
to published figures (data/published/) instead. modelfile.py writes
these models as the text file the C predictor loads, so the C side must compute exactly what the
predict methods here compute; each docstring states its formula for that reason.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pandas as pd

from emulator.hardware import Sku, load_sku
from emulator.predictor.tables import DATA_DIR, Tables, load_published_collectives

# Bytes per element of each dtype token gemm.csv and attention.csv use (and the model file too).
ELEMENT_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "tf32": 4, "fp8_e4m3": 1}
# conf/hardware's peak_tflops key for each dtype token.
PEAK_TFLOPS_KEY = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32", "tf32": "tf32",
                   "fp8_e4m3": "fp8"}


def _element_bytes(dtype: str, where: str) -> int:
    if dtype not in ELEMENT_BYTES:
        raise ValueError(f"{where}: unknown dtype {dtype!r}; known: {', '.join(ELEMENT_BYTES)}")
    return ELEMENT_BYTES[dtype]


# ---- non-negative least squares ----------------------------------------------------------------

def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |a x - b|^2 (Lawson and Hanson's active-set method).

    Written here rather than taken from scipy, which the project does not depend on."""
    cols = a.shape[1]
    x = np.zeros(cols)
    passive = np.zeros(cols, dtype=bool)
    tolerance = 1e-10 * max(1.0, float(np.abs(a).max()) * float(np.abs(b).max()))
    for _ in range(3 * cols + 10):
        gradient = a.T @ (b - a @ x)
        candidates = ~passive & (gradient > tolerance)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        while True:
            z = np.zeros(cols)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            # Step from x towards z until the first passive coefficient reaches zero, drop it
            # (by index too: rounding may leave it a hair above zero, and the loop must shrink).
            shrinking = np.flatnonzero(passive & (z <= 0))
            ratios = x[shrinking] / (x[shrinking] - z[shrinking])
            x = x + ratios.min() * (z - x)
            x[shrinking[np.argmin(ratios)]] = 0.0
            passive &= x > 0
            x[~passive] = 0.0
    return x


# Iterations of the reweighting that turns least squares into least absolute error, and the
# smallest residual it divides by (so a row fitted exactly does not get infinite weight).
_ABSOLUTE_ERROR_ROUNDS = 50
_ABSOLUTE_ERROR_FLOOR = 1e-4


def fit_relative(features: np.ndarray, seconds: np.ndarray, absolute: bool = False) -> np.ndarray:
    """Non-negative coefficients c minimising the sum of ((features @ c - seconds) / seconds)^2:
    relative error, so microsecond kernels count as much as millisecond ones. With `absolute`,
    the sum of |relative error| instead (iteratively reweighted least squares), which follows
    the bulk of the rows and lets a few off-trend ones stay off."""
    scale = np.abs(features).max(axis=0)
    scale[scale == 0] = 1.0  # a feature that is zero on every row gets coefficient 0
    weighted = features / scale / seconds[:, None]
    weights = np.ones(len(seconds))
    coefficients = nnls(weighted, weights)
    for _ in range(_ABSOLUTE_ERROR_ROUNDS if absolute else 0):
        residual = np.abs(weighted @ coefficients - 1)
        weights = 1 / np.sqrt(np.maximum(residual, _ABSOLUTE_ERROR_FLOOR))
        coefficients = nnls(weighted * weights[:, None], weights)
    return coefficients / scale


def fit_with_slots(features_at, seconds: np.ndarray, candidates: list[float]) -> tuple[float, np.ndarray]:
    """(slots, coefficients) of a kernel model whose features depend on how many CTAs or programs
    run at once: the candidate whose fit_relative coefficients leave the least mean squared
    relative error on the rows."""
    best = None
    for slots in candidates:
        features = features_at(slots)
        c = fit_relative(features, seconds)
        error = float(np.mean((features @ c / seconds - 1) ** 2))
        if best is None or error < best[0]:
            best = (error, slots, c)
    return best[1], best[2]


def _fit_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["split"] == "fit"]


# ---- GEMM --------------------------------------------------------------------------------------

class GemmKey(NamedTuple):
    """A GEMM shape less n, in cuBLAS's column-major convention: m out features, k in features."""
    dtype: str
    trans_a: int
    trans_b: int
    m: int
    k: int
    batch: int


@dataclass(frozen=True)
class GemmCurve:
    """Measured seconds of one GemmKey against n (tokens), n ascending."""
    n: np.ndarray
    seconds: np.ndarray

    def predict(self, n: float) -> float:
        """Piecewise linear in log(n)-log(seconds) between measured n; above the largest n the
        time grows linearly with n (compute-bound); below the smallest it stays at its time."""
        return log_log_curve(n, self.n, self.seconds)


def log_log_curve(x: float, xs: np.ndarray, seconds: np.ndarray) -> float:
    """GemmCurve.predict's rule over any ascending xs (the C predictor's curve_at)."""
    if x >= xs[-1]:
        return float(seconds[-1] * x / xs[-1])
    if x <= xs[0]:
        return float(seconds[0])
    return float(np.exp(np.interp(math.log(x), np.log(xs), np.log(seconds))))


@dataclass(frozen=True)
class GemmTable:
    curves: dict[GemmKey, GemmCurve]

    @classmethod
    def fit(cls, gemm: pd.DataFrame) -> GemmTable:
        """One curve per key from the fit rows; repeated (key, n) rows take their median."""
        rows = _fit_rows(gemm)
        for dtype in rows["dtype"].unique():
            _element_bytes(dtype, "gemm.csv column dtype")
        curves = {}
        for key, group in rows.groupby(list(GemmKey._fields), sort=True):
            points = group.groupby("n")["seconds"].median()
            curves[GemmKey(str(key[0]), *(int(v) for v in key[1:]))] = GemmCurve(
                points.index.to_numpy(dtype=float), points.to_numpy(dtype=float))
        return cls(curves)

    def dtypes(self) -> set[str]:
        return {key.dtype for key in self.curves}

    def nearest(self, key: GemmKey) -> GemmKey:
        """The key itself if measured, else the measured key of the same dtype closest in
        log(m*k*batch), ties broken by closeness in log(k), then by the smaller key."""
        if key in self.curves:
            return key
        same = [other for other in self.curves if other.dtype == key.dtype]
        if not same:
            raise KeyError(f"no measured GEMM of dtype {key.dtype}")
        size = math.log(key.m * key.k * key.batch)
        return min(same, key=lambda o: (abs(math.log(o.m * o.k * o.batch) - size),
                                        abs(math.log(o.k) - math.log(key.k)), o))

    def predict(self, key: GemmKey, n: int) -> float:
        """Seconds for the key at n. An unmeasured key takes the nearest key's time at the same n
        scaled by its share of work, (m*k*batch) / (m'*k'*batch'): both the weight-read-bound
        (small n) and the compute-bound (large n) time grow with it."""
        near = self.nearest(key)
        ratio = (key.m * key.k * key.batch) / (near.m * near.k * near.batch)
        return self.curves[near].predict(n) * ratio


def gemm_flops(m: int, n: int, k: int, batch: int) -> float:
    return 2.0 * m * n * k * batch


def gemm_bytes(m: int, n: int, k: int, batch: int, dtype: str) -> float:
    """Bytes a GEMM must move at least: A, B and C once each."""
    return float((m * k + k * n + m * n) * ELEMENT_BYTES[dtype] * batch)


@dataclass(frozen=True)
class RooflineEfficiency:
    """Fraction of the datasheet peaks a dtype's GEMMs reach, plus a fixed floor (launch, tail)."""
    compute: float
    memory: float
    floor_s: float


# Grids the efficiencies are searched over: fine enough that the fit, not the grid, limits error.
_EFFICIENCY_GRID = np.geomspace(0.05, 1.0, 61)
_FLOOR_GRID_S = np.arange(0.0, 20.25e-6, 0.25e-6)


@dataclass(frozen=True)
class GemmRoofline:
    """seconds = max(flops / flops_per_s, bytes / bytes_per_s) + floor_s, per dtype: the
    fallback for SKUs (and dtypes) without a measured curve. The rates are the SKU's datasheet
    peaks (conf/hardware peak_tflops, hbm_bandwidth_gbps) times efficiencies fitted on a
    profiled SKU, so the same efficiencies carry to an unprofiled SKU's peaks."""
    flops_per_s: dict[str, float]
    bytes_per_s: dict[str, float]
    floor_s: dict[str, float]

    @staticmethod
    def fit_efficiencies(gemm: pd.DataFrame, sku: Sku) -> dict[str, RooflineEfficiency]:
        """Per measured dtype, the grid point minimising the mean |log(predicted / measured)|
        over the fit rows. A grid search: three parameters, a max() in the model, and a
        deterministic answer."""
        rows = _fit_rows(gemm)
        fitted = {}
        for dtype, group in rows.groupby("dtype", sort=True):
            peak = _peak_flops(sku, str(dtype))
            m, n, k, b = (group[c].to_numpy(dtype=float) for c in ("m", "n", "k", "batch"))
            flops = 2.0 * m * n * k * b
            nbytes = (m * k + k * n + m * n) * _element_bytes(str(dtype), "gemm.csv") * b
            measured = group["seconds"].to_numpy(dtype=float)
            grid = _EFFICIENCY_GRID
            # [compute eff, memory eff, row] times without the floor.
            bound = np.maximum(flops[None, None, :] / (peak * grid[:, None, None]),
                               nbytes[None, None, :] / (_hbm_bytes_per_s(sku) * grid[None, :, None]))
            best = (math.inf, None)
            for floor in _FLOOR_GRID_S:
                error = np.abs(np.log((bound + floor) / measured)).mean(axis=2)
                i, j = np.unravel_index(np.argmin(error), error.shape)
                if error[i, j] < best[0]:
                    best = (error[i, j], RooflineEfficiency(float(grid[i]), float(grid[j]),
                                                            float(floor)))
            fitted[str(dtype)] = best[1]
        return fitted

    @classmethod
    def for_sku(cls, efficiencies: dict[str, RooflineEfficiency], sku: Sku,
                reference: str = "bf16") -> GemmRoofline:
        """Rates for every dtype the SKU has a peak for; a dtype without fitted efficiencies
        (fp32, tf32: not profiled) borrows the reference dtype's."""
        flops, memory, floor = {}, {}, {}
        for dtype, key in PEAK_TFLOPS_KEY.items():
            if sku.peak_tflops.get(key) is None:
                continue
            eff = efficiencies.get(dtype, efficiencies[reference])
            flops[dtype] = _peak_flops(sku, dtype) * eff.compute
            memory[dtype] = _hbm_bytes_per_s(sku) * eff.memory
            floor[dtype] = eff.floor_s
        return cls(flops, memory, floor)

    def predict(self, dtype: str, m: int, n: int, k: int, batch: int = 1) -> float:
        if dtype not in self.flops_per_s:
            raise KeyError(f"no GEMM rate for dtype {dtype}")
        return max(gemm_flops(m, n, k, batch) / self.flops_per_s[dtype],
                   gemm_bytes(m, n, k, batch, dtype) / self.bytes_per_s[dtype]) + self.floor_s[dtype]


def _peak_flops(sku: Sku, dtype: str) -> float:
    peak = sku.peak_tflops.get(PEAK_TFLOPS_KEY[dtype])
    if peak is None:
        raise ValueError(f"{sku.source}: peak_tflops has no {PEAK_TFLOPS_KEY[dtype]} rate, "
                         f"but {dtype} GEMMs were measured")
    return peak * 1e12


def _hbm_bytes_per_s(sku: Sku) -> float:
    return sku.hbm_bandwidth_gbps * 1e9


# ---- attention ---------------------------------------------------------------------------------

ATTENTION_FEATURES = ("const", "seqs", "kv_bytes", "flops", "q_bytes")


def parse_composition(text: str) -> list[tuple[int, int, int]]:
    """attention.csv's composition, "q:ctx x count; ...", as (query_len, context_len, count)."""
    groups = []
    for part in text.split(";"):
        match = re.fullmatch(r"\s*(\d+):(\d+) x (\d+)\s*", part)
        if not match:
            raise ValueError(f"attention.csv column composition: cannot read {text!r} "
                             f"(expected 'q:ctx x count; ...')")
        groups.append(tuple(int(v) for v in match.groups()))
    return groups


def attention_features(groups: list[tuple[int, int, int]], num_heads: int, num_kv_heads: int,
                       head_dim: int, dtype: str) -> np.ndarray:
    """[1, num_seqs, kv_bytes, flops, q_bytes] of one launch over (query_len, context_len, count)
    groups (context includes the query tokens):
      kv_bytes = sum of context_len * num_kv_heads * head_dim * 2 (K and V) * element bytes
      flops    = sum of 4 * query_len * (context_len - query_len / 2) * num_heads * head_dim,
                 causal queries see on average half of their own span
      q_bytes  = query tokens * num_heads * head_dim * 2 (read Q, write O) * element bytes"""
    size = _element_bytes(dtype, "attention dtype")
    seqs = kv_bytes = flops = q_tokens = 0.0
    for query_len, context_len, count in groups:
        seqs += count
        kv_bytes += count * context_len * num_kv_heads * head_dim * 2 * size
        flops += count * 4.0 * query_len * (context_len - query_len / 2) * num_heads * head_dim
        q_tokens += count * query_len
    return np.array([1.0, seqs, kv_bytes, flops, q_tokens * num_heads * head_dim * 2 * size])


def attention_row_features(attention: pd.DataFrame) -> np.ndarray:
    return np.array([attention_features(parse_composition(r.composition), r.num_heads,
                                        r.num_kv_heads, r.head_dim, r.dtype)
                     for r in attention.itertuples()])


@dataclass(frozen=True)
class AttentionModel:
    """seconds = coefficients . attention_features(...), coefficients >= 0, one set per backend.

    One set covers decode and prefill: on the H200 tables, separate decode-only and with-prefill
    sets did not clearly lower held-out error (decode medians 18-19% and 14% either way; only
    the 10 mixed Triton rows improved), so the model file keeps one line per backend."""
    backend: str
    coefficients: np.ndarray

    @classmethod
    def fit_all(cls, attention: pd.DataFrame) -> dict[str, AttentionModel]:
        rows = _fit_rows(attention)
        features = attention_row_features(rows)
        seconds = rows["seconds"].to_numpy(dtype=float)
        backends = rows["backend"].to_numpy()
        return {str(b): cls(str(b), fit_relative(features[backends == b], seconds[backends == b]))
                for b in sorted(set(backends))}

    def predict(self, features: np.ndarray) -> np.ndarray | float:
        return features @ self.coefficients


# vLLM's Triton unified attention (its 2D kernel): query rows per program and KV tokens per tile
# (attention_batch.c computes the same on the launch path).
TRITON_BLOCK_M = 16
TRITON_TILE = 32
# The batches the makespan model is fitted on and charges: neither all decodes nor one prompt
# length (those are interpolated in the measured curves).
MAKESPAN_PHASES = ("mixed", "chunked")
# The candidates the fit chooses among: programs resident on an SM at once (the kernel's
# occupancy), and a program's time per KV tile when it runs unhindered, in units of an SM's time
# per tile when its programs saturate it.
TRITON_RESIDENT = (4, 5, 6, 8)
TRITON_LATENCY = tuple(float(v) for v in np.arange(2.0, 6.01, 0.5))
# The latency is then refined by this step on either side of the best.
LATENCY_REFINE = 0.25


def _triton_block_q(num_heads: int, num_kv_heads: int) -> int:
    """Query tokens per program: BLOCK_M query rows (16, or the next power of two of the query heads
    per KV head) hold BLOCK_M // (query heads per KV head) tokens."""
    per_kv = num_heads // num_kv_heads
    block_m = max(TRITON_BLOCK_M, 1 << max(per_kv - 1, 0).bit_length())
    return max(block_m // per_kv, 1)


def triton_tiles(groups: list[tuple[int, int, int]], num_heads: int, num_kv_heads: int) -> tuple[float, float]:
    """(KV tiles over all programs, the longest program's tiles) of one launch over (query_len,
    context_len, count) groups: a program per BLOCK_Q query tokens of a sequence and per KV head,
    each reading the tiles up to what its last query sees (causal)."""
    block_q = _triton_block_q(num_heads, num_kv_heads)
    work = longest = 0.0
    for query_len, context_len, count in groups:
        last = np.minimum(np.arange(block_q, query_len + block_q, block_q), query_len)
        tiles = np.ceil((context_len - query_len + last) / TRITON_TILE)
        work += count * float(tiles.sum()) * num_kv_heads
        longest = max(longest, float(tiles.max()))
    return work, longest


def triton_programs(groups: list[tuple[int, int, int]], num_heads: int, num_kv_heads: int) -> list[tuple[int, int]]:
    """The programs of one launch in the order the GPU starts them, as runs of (KV tiles, programs
    in a row with that many). The grid is (query blocks, KV heads), x fastest: for each KV head, each
    sequence's query blocks in turn (the kernel's spare programs past a sequence's queries return at
    once and are left out), block i of a sequence reading the tiles its last query sees
    (context - query_len + min((i + 1) * BLOCK_Q, query_len) keys)."""
    block_q = _triton_block_q(num_heads, num_kv_heads)
    head: list[tuple[int, int]] = []
    for query_len, context_len, count in groups:
        runs: list[list[int]] = []
        for i in range(-(-query_len // block_q)):
            tiles = -(-(context_len - query_len + min((i + 1) * block_q, query_len)) // TRITON_TILE)
            if runs and runs[-1][0] == tiles:
                runs[-1][1] += 1
            else:
                runs.append([tiles, 1])
        head += [(t, n) for t, n in runs] * count
    return head * num_kv_heads


def triton_schedule(programs: list[tuple[int, int]], sms: int, resident: int) -> tuple[np.ndarray, np.ndarray]:
    """How the programs share the GPU: (KV tiles each running program advances by between successive
    completions, programs running meanwhile). Programs start in order while fewer than `resident` per
    SM run; all running programs advance alike (processor sharing), so the order in which they end
    and the next ones start does not depend on how fast they go."""
    capacity = sms * resident
    running: list[tuple[float, int]] = []          # (tiles served when it ends, programs)
    served = 0.0
    active = 0
    advance, concurrent = [], []
    queue = iter(programs)
    tiles, left = next(queue, (0, 0))
    while True:
        while active < capacity and left:
            start = min(left, capacity - active)
            heapq.heappush(running, (served + tiles, start))
            active += start
            left -= start
            if not left:
                tiles, left = next(queue, (0, 0))
        if not running:
            break
        ends, done = heapq.heappop(running)
        advance.append(ends - served)
        concurrent.append(active)
        served = ends
        active -= done
    return np.array(advance), np.array(concurrent, dtype=float)


def triton_makespan(schedule: tuple[np.ndarray, np.ndarray], sms: int, latency: float) -> float:
    """The schedule's length in an SM's tile times: a program takes `latency` per tile when few run,
    and shares the SMs' throughput (one tile per SM per unit) when more than `latency` per SM do."""
    advance, concurrent = schedule
    return float(np.sum(advance * np.maximum(latency, concurrent / sms)))


@dataclass(frozen=True)
class AttentionMakespan:
    """seconds = c . [1, makespan, tiles, kv_bytes] for vLLM's Triton attention over a batch that is
    neither all decodes nor one prompt length. The kernel runs a program per BLOCK_Q query tokens of
    each sequence and KV head over its KV tiles (triton_programs); the GPU starts them in grid order
    while fewer than `resident` per SM run, and they share the SMs (triton_schedule): a program alone
    takes `latency` SM tile times per tile (it waits on its loads), more than `latency` per SM share
    one tile per SM per unit. makespan = the schedule's length (triton_makespan) on `sms` SMs: late
    programs of long contexts (the decodes after a prompt's query blocks, the last query blocks of a
    long prompt) start late and end last. Plus every tile's share of the GPU's load bandwidth, and
    the K/V bytes read (attention_features' kv_bytes). The linear model over totals missed these
    batches by 45% at p90; a makespan over a fixed number of slots, max(tiles / slots, longest
    program), by 20% (the decodes after a long prompt start late)."""
    backend: str
    sms: int
    resident: int
    latency: float
    coefficients: np.ndarray

    @staticmethod
    def work(attention: pd.DataFrame, sms: int, resident: int) -> list[tuple[tuple[np.ndarray, np.ndarray], float, float]]:
        """Per row: (its schedule, its KV tiles, its K/V bytes)."""
        out = []
        for r in attention.itertuples():
            groups = parse_composition(r.composition)
            schedule = triton_schedule(triton_programs(groups, r.num_heads, r.num_kv_heads), sms, resident)
            kv_bytes = attention_features(groups, r.num_heads, r.num_kv_heads, r.head_dim, r.dtype)[2]
            out.append((schedule, triton_tiles(groups, r.num_heads, r.num_kv_heads)[0], kv_bytes))
        return out

    @staticmethod
    def features(work, sms: int, latency: float) -> np.ndarray:
        return np.array([[1.0, triton_makespan(schedule, sms, latency), tiles, kv_bytes]
                         for schedule, tiles, kv_bytes in work])

    @classmethod
    def fit(cls, attention: pd.DataFrame, sm_count: int, backend: str = "vllm_triton_unified"
            ) -> AttentionMakespan | None:
        """The programs per SM and latency (TRITON_RESIDENT, TRITON_LATENCY, then the latency
        LATENCY_REFINE either side of the best) whose coefficients, fitted for least absolute
        relative error, leave the least mean absolute relative error on the fit rows; None without
        rows to fit."""
        rows = _fit_rows(attention)
        rows = rows[(rows["backend"] == backend) & rows["phase"].isin(MAKESPAN_PHASES)]
        if rows.empty:
            return None
        seconds = rows["seconds"].to_numpy(dtype=float)
        work = {resident: cls.work(rows, sm_count, resident) for resident in TRITON_RESIDENT}

        def scored(resident: int, latency: float) -> tuple[float, int, float, np.ndarray]:
            features = cls.features(work[resident], sm_count, latency)
            c = fit_relative(features, seconds, absolute=True)
            return float(np.mean(np.abs(features @ c / seconds - 1))), resident, latency, c

        best = min((scored(r, latency) for r in TRITON_RESIDENT for latency in TRITON_LATENCY), key=lambda b: b[0])
        best = min([best] + [scored(best[1], best[2] + step) for step in (-LATENCY_REFINE, LATENCY_REFINE)
                             if best[2] + step > 0], key=lambda b: b[0])
        return cls(backend, sm_count, best[1], best[2], best[3])

    def predict(self, attention: pd.DataFrame) -> np.ndarray:
        return self.features(self.work(attention, self.sms, self.resident), self.sms, self.latency) @ self.coefficients


# ---- SDPA's FlashAttention 2 decode: waves of CTAs, with its own split-KV choice -----------------

def flash_decode_launch(num_seqs: int, heads: int, kv_heads: int, head_dim: int, context: int,
                        sm_count: int) -> tuple[int, int, int]:
    """(splits, CTAs, KV blocks per CTA) of PyTorch's FlashAttention 2 (SDPA's flash backend) for a
    decode batch, one query token per sequence over `context` keys, as its mha_fwd launches it. The
    query heads of a KV head run as one query block (FA2's "seqlenq_ngroups_swapped"). Keys come in
    blocks of 256, 128 or 64 by head size. Where the batch's query blocks fill less than 80% of the
    GPU at two CTAs per SM, the keys are split among CTAs to fill it: FA2's num_splits_heuristic,
    the fewest splits whose wave efficiency (waves / whole waves) is within 85% of the best, a
    count of splits being a candidate only if it changes the blocks per split. The measured
    kernel counts (1 without splits, 2 with: the split kernel and its combine) agree on every row
    of the H100 and H200 tables."""
    groups = heads // kv_heads if kv_heads and heads % kv_heads == 0 else 1
    query_heads, query_rows = (kv_heads, groups) if groups > 1 else (heads, 1)
    block_n = 256 if head_dim <= 64 else 128 if head_dim <= 128 else 64
    blocks = -(-context // block_n)
    query_blocks = num_seqs * query_heads * -(-query_rows // 64)
    room = 2 * sm_count
    splits = 1
    if query_blocks < 0.8 * room:
        most = min(128, room, blocks)
        efficiency = []
        for n in range(1, most + 1):
            eligible = n == 1 or -(-blocks // n) != -(-blocks // (n - 1))
            waves = query_blocks * n / room
            efficiency.append(waves / math.ceil(waves) if eligible else 0.0)
        best = max(efficiency)
        splits = next(n for n in range(1, most + 1) if efficiency[n - 1] > 0 and efficiency[n - 1] >= 0.85 * best)
    return splits, query_blocks * splits, -(-blocks // splits)


@dataclass(frozen=True)
class FlashDecodeModel:
    """seconds = c . [1, waves x blocks per CTA, waves, seqs x heads x head_dim x splits, splits] for
    SDPA's FlashAttention 2 decode, c one set for the split kernel (and its combine: the measured
    call holds both) and one for the whole-KV kernel; waves = CTAs / concurrent CTAs, rounded up:
    two per SM for the split kernel (FA2's own assumption), one for the whole-KV kernel (its tile
    uses an SM's shared memory). Quantised waves are what the curves over sequence counts could not
    follow: 40 sequences of 8 KV heads (320 CTAs, 3 waves on 132 SMs) take longer than 48 (384, 3
    waves) and far longer than 32 (256, 2 waves); interpolating between measured counts missed by
    up to 33%. Fitted on the sdpa_flash decode rows of the tables."""
    sm_count: int
    split: np.ndarray
    whole: np.ndarray

    def features(self, num_seqs: int, heads: int, kv_heads: int, head_dim: int, context: int) -> tuple[bool, list[float]]:
        splits, ctas, per_cta = flash_decode_launch(num_seqs, heads, kv_heads, head_dim, context, self.sm_count)
        waves = math.ceil(ctas / (2 * self.sm_count if splits > 1 else self.sm_count))
        return splits > 1, [1.0, waves * per_cta, waves, num_seqs * heads * head_dim * splits, splits]

    def predict(self, num_seqs: int, heads: int, kv_heads: int, head_dim: int, context: int) -> float:
        split, features = self.features(num_seqs, heads, kv_heads, head_dim, context)
        return float(np.dot(self.split if split else self.whole, features))

    @classmethod
    def fit(cls, attention: pd.DataFrame, sm_count: int) -> FlashDecodeModel | None:
        rows = _fit_rows(attention)
        rows = rows[(rows["backend"] == "sdpa_flash") & (rows["phase"] == "decode") & (rows["query_len"] == 1)]
        if rows.empty:
            return None
        shape = cls(sm_count, np.zeros(5), np.zeros(5))
        labelled = [shape.features(r.num_seqs, r.num_heads, r.num_kv_heads, r.head_dim, r.context_len)
                    for r in rows.itertuples()]
        split = np.array([s for s, _ in labelled])
        features = np.array([f for _, f in labelled])
        seconds = rows["seconds"].to_numpy(dtype=float)
        coefficients = [fit_relative(features[mask], seconds[mask]) if mask.any() else np.zeros(5)
                        for mask in (split, ~split)]
        return cls(sm_count, *coefficients)


@dataclass(frozen=True)
class AttentionCurve:
    """Measured seconds of `num_seqs` like sequences over y: the context of decoding sequences,
    the prompt length of prefilling ones (the C predictor interpolates these, then across the
    sequence counts of one backend, phase and head shape; predictor_profiled.c)."""
    backend: str
    phase: str
    heads: int
    kv_heads: int
    head_dim: int
    num_seqs: int
    y: tuple[int, ...]
    seconds: tuple[float, ...]


def attention_curves(attention: pd.DataFrame) -> list[AttentionCurve]:
    """The fit rows of uniform batches (all decoding, or all prefilling from scratch) as curves,
    sorted as the model file needs them (by table, then sequence count)."""
    rows = _fit_rows(attention)
    decode = rows[(rows["phase"] == "decode") & (rows["query_len"] == 1)].assign(y=lambda r: r["context_len"])
    prefill = rows[(rows["phase"] == "prefill") & (rows["query_len"] == rows["context_len"])].assign(
        y=lambda r: r["query_len"])
    curves = []
    for frame in (decode, prefill):
        keys = ["backend", "phase", "num_heads", "num_kv_heads", "head_dim", "num_seqs"]
        for key, group in frame.groupby(keys, sort=True):
            group = group.sort_values("y")
            curves.append(AttentionCurve(*(str(k) if i < 2 else int(k) for i, k in enumerate(key)),
                                         tuple(int(v) for v in group["y"]),
                                         tuple(float(v) for v in group["seconds"])))
    return curves


# ---- elementwise (torch eager ops: norms, rotary, activation, KV writes, sampling) --------------

# K heads of the rotary rows, by q hidden: emulator/profiler/grids.py's FULL.rotary_kv_heads.
ROTARY_KV_HEADS = {4096: 8, 2048: 4, 1024: 2, 512: 1, 8192: 8}
ROTARY_HEAD_DIM = 128


def elementwise_bytes(op: str, tokens: int, hidden: int, dtype: str) -> float:
    """Bytes an op reads and writes, for T tokens of width H (emulator/profiler/README.md says what H is
    per op). Against tokens*hidden alone this only changes rotary_neox (its K width), where it
    lowered held-out error (median 6.0% against 6.3%); the other ops are equal either way."""
    t, h, e = tokens, hidden, _element_bytes(dtype, "elementwise.csv column dtype")
    if op == "rms_norm":  # read x and the weight, write y
        return (2 * t * h + h) * e
    if op == "fused_add_rms_norm":  # read x, residual, weight; write y and the new residual
        return (4 * t * h + h) * e
    if op == "residual_add":  # read two, write one
        return 3 * t * h * e
    if op == "embedding":  # gather T rows, write them
        return 2 * t * h * e
    if op == "rotary_neox":  # read and write q (H) and k; read cos/sin per token
        if h not in ROTARY_KV_HEADS:
            raise ValueError(f"elementwise.csv: rotary_neox hidden {h} has no known K heads "
                             f"(known hiddens: {sorted(ROTARY_KV_HEADS)})")
        k_width = ROTARY_KV_HEADS[h] * ROTARY_HEAD_DIM
        return (2 * t * (h + k_width) + t * ROTARY_HEAD_DIM) * e
    if op == "silu_and_mul":  # read gate and up (2H), write H
        return 3 * t * h * e
    if op == "sample_softmax_argmax":  # read logits, write probabilities, read them for argmax
        return 3 * t * h * e
    if op == "reshape_and_cache":  # read K and V, write them into the cache
        return 4 * t * h * e
    raise ValueError(f"elementwise.csv column op: unknown op {op!r}")


@dataclass(frozen=True)
class LinearModel:
    """seconds = a + b * x, a and b >= 0."""
    a: float
    b: float

    @classmethod
    def fit(cls, x: np.ndarray, seconds: np.ndarray, absolute: bool = False) -> LinearModel:
        a, b = fit_relative(np.column_stack([np.ones(len(x)), x]), seconds, absolute)
        return cls(float(a), float(b))

    def predict(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.a + self.b * x


def elementwise_row_bytes(elementwise: pd.DataFrame) -> np.ndarray:
    return np.array([elementwise_bytes(r.op, r.tokens, r.hidden, r.dtype)
                     for r in elementwise.itertuples()])


def fit_elementwise(elementwise: pd.DataFrame) -> dict[tuple[str, str], LinearModel]:
    """Per (op, dtype): seconds = a + b * elementwise_bytes."""
    rows = _fit_rows(elementwise)
    nbytes = elementwise_row_bytes(rows)
    return {(str(op), str(dtype)): LinearModel.fit(nbytes[index], rows["seconds"].to_numpy()[index])
            for (op, dtype), index in _group_positions(rows, ["op", "dtype"]).items()}


def _group_positions(frame: pd.DataFrame, columns: list[str]) -> dict[tuple, np.ndarray]:
    """Row positions of each group, keyed by a tuple of the group's values (also for one column,
    where pandas gives a bare value)."""
    groups = frame.reset_index(drop=True).groupby(columns, sort=True).indices
    return {key if isinstance(key, tuple) else (key,): np.asarray(index)
            for key, index in groups.items()}


# ---- copies and memset -------------------------------------------------------------------------

COPY_DIRECTIONS = ("H2D", "D2H", "D2D")


@dataclass(frozen=True)
class TransferModel:
    """seconds = latency_s + bytes / bytes_per_s.

    Fitted for least absolute relative error: copy.csv's D2D copies and memsets up to 16 MiB
    stay in the 60 MB L2 between the eager repeats that time them, a flat run off the line that
    least squares lets drag the rate (held-out D2D median error 27% against 6.6%)."""
    latency_s: float
    bytes_per_s: float

    @classmethod
    def fit(cls, nbytes: np.ndarray, seconds: np.ndarray, what: str) -> TransferModel:
        line = LinearModel.fit(nbytes, seconds, absolute=True)
        if line.b <= 0:
            raise ValueError(f"copy.csv: {what} time does not grow with bytes; cannot fit a rate")
        return cls(line.a, 1.0 / line.b)

    def predict(self, nbytes: np.ndarray | float) -> np.ndarray | float:
        return self.latency_s + nbytes / self.bytes_per_s


def fit_copies(copy: pd.DataFrame) -> tuple[dict[tuple[str, int], TransferModel], TransferModel]:
    """(per (direction, pinned) copy models, the memset model); copy.csv's memset rows are
    direction "memset"."""
    rows = _fit_rows(copy)
    unknown = sorted(set(rows["direction"]) - set(COPY_DIRECTIONS) - {"memset"})
    if unknown:
        raise ValueError(f"copy.csv column direction: unknown {unknown}; expected "
                         f"{', '.join(COPY_DIRECTIONS)} or memset")
    models = {(str(d), int(p)): TransferModel.fit(g["bytes"].to_numpy(dtype=float),
                                                  g["seconds"].to_numpy(dtype=float), f"{d} pinned={p}")
              for (d, p), g in rows.groupby(["direction", "pinned"], sort=True)}
    memset = [models.pop(key) for key in list(models) if key[0] == "memset"]
    if len(memset) != 1:
        raise ValueError(f"copy.csv: expected memset rows with one pinned value, "
                         f"got {len(memset)} memset models")
    return models, memset[0]


# ---- generic kernels (by demangled name and launch geometry) -----------------------------------

# GEMM internals are predicted from the cuBLAS call, attention from the batch composition, so
# neither is fitted as a generic kernel. "gemm" but not "gemma" (vLLM's gemma_rms_norm is a norm).
_GEMM_KERNEL = re.compile(r"^nvjet|cublas|gemm(?!a)|splitKreduce")


def is_generic_kernel(name: str) -> bool:
    return "flash_fwd" not in name and not _GEMM_KERNEL.search(name)


@dataclass(frozen=True)
class KernelModels:
    """Per exact demangled name, seconds = a + b * total_threads (grid x block, all dimensions);
    names never profiled use `default`, fitted over every generic kernel pooled. `max_threads`:
    the largest launch each name was measured at. Past it, the C predictor charges a kernel whose
    bytes it can decode (kernel_bytes.c) the line at max_threads plus the added bytes on the
    memory curve: a line fitted on small launches, where the intercept rules, says little of the
    slope at gigabytes."""
    by_name: dict[str, LinearModel]
    default: LinearModel
    max_threads: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, kernels: pd.DataFrame) -> KernelModels:
        rows = _fit_rows(kernels)
        rows = rows[rows["kernel_name"].map(is_generic_kernel)]
        if rows.empty:
            raise ValueError("kernels.csv: no generic kernels in the fitting compositions")
        if rows["kernel_name"].str.contains("\n").any():
            raise ValueError("kernels.csv column kernel_name: a name spans lines")
        threads = rows["threads"].to_numpy(dtype=float)
        seconds = rows["seconds"].to_numpy(dtype=float)
        groups = _group_positions(rows, ["kernel_name"])
        by_name = {str(name): LinearModel.fit(threads[index], seconds[index]) for (name,), index in groups.items()}
        max_threads = {str(name): float(threads[index].max()) for (name,), index in groups.items()}
        return cls(by_name, LinearModel.fit(threads, seconds), max_threads)

    def predict(self, name: str, threads: float) -> float:
        return self.by_name.get(name, self.default).predict(threads)


# ---- memory-bound torch ops, by bytes moved (memory.csv) ---------------------------------------

# The kernel classes the C predictor decodes bytes for (kernel_bytes.c), and the memory.csv ops
# that stand for each: torch's contiguous elementwise kernels (vectorized/unrolled: add), its
# strided one (elementwise_kernel: a transposing copy, repeat_interleave's copy of an expanded
# view), the vectorized and the plain CatArrayBatchedCopy (a cat with a non-contiguous input), the
# gathers behind index_select (indexSelectLargeIndex, vectorized_gather_kernel) and
# indexSelectSmallIndex, which index_select runs for at most INDEX_SELECT_SMALL indices and which
# loops over them one after another (on an H100 3, 4.5 and 7.4 us for 4, 8 and 16 rows of 4096
# elements, where 32 rows take 1.7 us in the other kernel).
MEMORY_CLASSES = {"elementwise": ("add",), "elementwise_strided": ("transpose_copy", "repeat_interleave"),
                  "cat": ("cat_kv",), "cat_strided": ("cat_kv_strided",), "gather": ("index_select",),
                  "gather_small": ("index_select",)}
# memory.csv ops that run no kernel: torch's copy_ of a contiguous tensor of the same dtype is a
# device-to-device cudaMemcpyAsync (ATen's copy_device_to_device), charged as the emulator charges
# every D2D memcpy (FittedModels.d2d_copy_seconds), not by a kernel class's curve.
MEMCPY_OPS = ("copy",)
# ATen's index_select takes its small-index kernel for at most this many indices.
INDEX_SELECT_SMALL = 16
# The width, in elements, of the rows memory.csv's index_select gathers (profile_memory_bound.py).
INDEX_SELECT_ROW = 4096


def memory_class(op: str, dtype: str, nbytes: float) -> str:
    """The class of the kernel a memory.csv row ran: by its op, and for index_select by how many
    rows it gathers (bytes = 2 x rows x INDEX_SELECT_ROW x element size)."""
    if op == "index_select":
        rows = nbytes / (2 * INDEX_SELECT_ROW * _element_bytes(dtype, "memory.csv column dtype"))
        return "gather_small" if rows <= INDEX_SELECT_SMALL else "gather"
    for cls, ops in MEMORY_CLASSES.items():
        if op in ops:
            return cls
    raise ValueError(f"memory.csv column op: unknown op {op!r}")


@dataclass(frozen=True)
class MemoryCurve:
    """Seconds over bytes moved (read plus written) of one kernel class, bytes ascending;
    log_log_curve between and beyond them (the C predictor's memory_curve record)."""
    cls: str
    bytes: np.ndarray
    seconds: np.ndarray

    def predict(self, nbytes: float) -> float:
        return log_log_curve(nbytes, self.bytes, self.seconds)


def fit_memory_curves(memory: pd.DataFrame) -> dict[str, MemoryCurve]:
    """Per class (memory_class of each row), from the fit rows: each (op, dtype) series is read at
    the powers of two near its sizes (a series moves a few bytes less than its nominal size) and the
    class takes the median over its series at each size."""
    rows = _fit_rows(memory)
    known = {op for ops in MEMORY_CLASSES.values() for op in ops} | set(MEMCPY_OPS)
    unknown = sorted(set(rows["op"]) - known)
    if unknown:
        raise ValueError(f"memory.csv column op: unknown {unknown}; expected one of {', '.join(sorted(known))}")
    rows = rows[~rows["op"].isin(MEMCPY_OPS)]
    rows = rows.assign(cls=[memory_class(r.op, r.dtype, r.bytes) for r in rows.itertuples()])
    curves = {}
    for cls in MEMORY_CLASSES:
        series = [(g["bytes"].to_numpy(dtype=float), g["seconds"].to_numpy(dtype=float))
                  for _, g in rows[rows["cls"] == cls].sort_values("bytes").groupby(["op", "dtype"])]
        if not series:
            continue
        sizes = np.unique(np.exp2(np.round(np.log2(np.concatenate([b for b, _ in series])))))
        seconds = [float(np.median([log_log_curve(size, b, t) for b, t in series])) for size in sizes]
        curves[cls] = MemoryCurve(cls, sizes, np.array(seconds))
    return curves


# ---- host work of replaced libraries (cudnn_graphs.csv) ----------------------------------------

def graph_build_seconds(graphs: pd.DataFrame, host_cpu_s: float | None = None) -> pd.DataFrame:
    """Per variant and shape of the fit rows: the host seconds a call that builds a graph takes
    beyond the call that finds it cached right after (`call` first, first_warm or miss, `extra_s`),
    and the host's speed beside it (`host_s`: seconds a round of emulator/host_cpu.py, the row's
    host_cpu_s where the probe measured one (since 2026-12-07), else `host_cpu_s`)."""
    rows = _fit_rows(graphs)
    hits = rows[rows["call"] == "hit"].groupby(["variant", "queries", "keys"])["seconds"].median()
    builds = rows[rows["call"].isin(["first", "first_warm", "miss"])].copy()
    keys = list(zip(builds["variant"], builds["queries"], builds["keys"]))
    missing = [key for key in keys if key not in hits.index]
    if missing:
        raise ValueError(f"cudnn_graphs.csv: no hit row after the build of {missing[0]}: the probe times each "
                         f"shape twice (probe_cudnn_graphs.py)")
    builds["extra_s"] = builds["seconds"].to_numpy() - hits.loc[keys].to_numpy()
    measured = builds["host_cpu_s"].to_numpy(dtype=float) if "host_cpu_s" in builds else np.full(len(builds), np.nan)
    builds["host_s"] = np.where(measured > 0, measured, np.nan if host_cpu_s is None else host_cpu_s)
    return builds[["variant", "queries", "keys", "call", "extra_s", "host_s"]]


class HostCost(NamedTuple):
    """Host seconds of one event at the SKU's host speed (its host_cpu.json), of which
    `fixed_seconds` do not change with the host's speed; the rest scales with it."""
    seconds: float
    fixed_seconds: float = 0.0


def build_cost_law(extra: pd.DataFrame, host_cpu_s: float | None) -> HostCost:
    """One kind of graph build (graph_build_seconds' rows of one call) at the host speed
    `host_cpu_s`: extra = fixed + slope x host_s. The slope comes from the variants probed at two
    host speeds or more (each with its own level); each variant's level is the median of its rows'
    extra - slope x host_s, and the cost the median over variants. The server's host runs in a fast
    and a slow state (35-42 against 51-75 ms a round on the H100's, for hours at a time;
    docs/fidelity/h100_notes.md): builds probed in both took 37-62 ms at 38 ms a round and 64-78 at
    61-72 (slope 0.45, a fixed 26-46 ms): not in proportion to the host's speed, as a proportional
    law would charge them (84-100 ms at the slow state). Without two speeds, or without the SKU's
    figure, builds are brought to it in proportion (no fixed part): the best that one speed says."""
    known = extra.dropna(subset=["host_s"])
    per_speed = known.groupby(["variant", "host_s"])["extra_s"].median().reset_index()
    spread = per_speed.groupby("variant")["host_s"].transform("nunique") >= 2
    # With the SKU's figure given, graph_build_seconds gave every row a speed.
    if host_cpu_s is None or not spread.any():
        scaled = extra["extra_s"] if host_cpu_s is None else extra["extra_s"] * (host_cpu_s / extra["host_s"])
        per_variant = scaled.groupby(extra["variant"]).median()
        return HostCost(max(float(per_variant.median()), 0.0))
    several = per_speed[spread]
    levels = pd.get_dummies(several["variant"]).astype(float).to_numpy()
    slope = float(nnls(np.column_stack([levels, several["host_s"].to_numpy(dtype=float)]),
                       several["extra_s"].to_numpy(dtype=float))[-1])
    fixed = float((known["extra_s"] - slope * known["host_s"]).groupby(known["variant"]).median().median())
    fixed = max(fixed, 0.0)
    return HostCost(fixed + slope * host_cpu_s, fixed)


def fit_host_costs(graphs: pd.DataFrame, host_cpu_s: float | None = None) -> dict[str, HostCost]:
    """cuDNN attention graph builds: the first of a variant in a process, and a new shape of a
    variant met before, each at the host speed `host_cpu_s` (build_cost_law).

    The first build is charged as a server pays it on a machine where the kernel ran before
    (first_warm rows): its compilation outlives the process. A table without first_warm rows
    (before 2026-12-07) charges it as a new shape: on the H100, a transformers server's first
    step took 1.16 s in the machine's first process, 0.38 s in the next, against 0.31 s with cuDNN
    off (docs/fidelity/h100_timeline.md); the cold first rows stay in the table, not charged."""
    extra = graph_build_seconds(graphs, host_cpu_s)
    def law(call: str) -> HostCost | None:
        rows = extra[extra["call"] == call]
        return build_cost_law(rows, host_cpu_s) if len(rows) else None
    miss = law("miss") or HostCost(0.0)
    return {"cudnn_attention_graph_first": law("first_warm") or miss, "cudnn_attention_graph": miss}


# The runtime calls that queue work on the GPU (one a kernel, copy or memset the library submits),
# and calls that do next to nothing, whose time under torch.profiler is the profiler's own.
LAUNCH_CALLS = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cudaMemcpyAsync",
                "cudaMemsetAsync")
QUERY_CALLS = ("cudaStreamIsCapturing", "cudaStreamGetPriority", "cudaDeviceGetStreamPriorityRange",
               "cudaGetErrorString")


def fit_launch_cost(calls: pd.DataFrame) -> float:
    """Host seconds the CUDA runtime spends on one launch, beyond what the vGPU library spends:
    the launch calls' mean time weighted by their counts, less the profiler's own time per call
    (the median of the do-nothing calls' times). The library's own cost per launch, a few hundred
    nanoseconds, is left in (it is charged as this host's CPU time)."""
    launches = calls[calls["call"].isin(LAUNCH_CALLS)]
    if launches.empty:
        raise ValueError(f"runtime_calls.csv: no launch call ({', '.join(LAUNCH_CALLS)}): nothing to fit")
    mean_s = float((launches["seconds"] * launches["calls"]).sum() / launches["calls"].sum())
    queries = calls[calls["call"].isin(QUERY_CALLS)]["seconds"]
    profiler_s = float(queries.median()) if len(queries) else 0.0
    return max(mean_s - profiler_s, 0.0)


# ---- PyTorch's memory-efficient attention (efficient_attention.csv) ---------------------------

def efficient_query_block(head_dim: int) -> int:
    """Queries per CTA of the fmha_cutlassF kernel PyTorch picks on sm80+ (its 64x64, 64x128 and
    32x128 tiles): what its grid.x counts blocks of."""
    return 64 if head_dim <= 128 else 32


def efficient_attention_work(frame: pd.DataFrame, slots: float, query_block: int = 0,
                             whole_waves: bool = False) -> np.ndarray:
    """[1, waves, waves * keys * head_dim, the same for causal rows, bias bytes] per row: the CTAs
    (query blocks x heads x batch) run about `slots` at a time (waves = CTAs / slots, at least
    one: measured, time grows in proportion to CTAs past a full wave, not in whole waves; with
    `whole_waves`, in whole waves instead), each streaming its keys (a causal CTA on average half
    its queries fewer, and paying for its mask) through head_dim; an additive mask is read once per
    query and key (bf16). Query blocks are `query_block` rows, or fmha_cutlassF's for the head size."""
    head_dim = frame["head_dim"].to_numpy(dtype=float)
    queries = frame["q_len"].to_numpy(dtype=float)
    block = query_block or np.array([efficient_query_block(int(d)) for d in head_dim])
    ctas = np.ceil(queries / block) * frame["heads"].to_numpy(dtype=float) * frame["batch"].to_numpy(dtype=float)
    causal = frame["causal"].to_numpy() != 0
    keys = frame["kv_len"].to_numpy(dtype=float)
    keys = np.where(causal, np.maximum(keys - queries / 2, 1), keys)
    waves = np.maximum(np.ceil(ctas / slots) if whole_waves else ctas / slots, 1)
    bias = 2.0 * queries * frame["kv_len"].to_numpy(dtype=float) * (frame["mask"].to_numpy() != 0)
    return np.column_stack([np.ones(len(frame)), waves, waves * keys * head_dim, causal * waves * keys * head_dim,
                            bias])


@dataclass(frozen=True)
class EfficientAttentionModel:
    """seconds = c . efficient_attention_work(rows, slots, query_block, whole_waves), for one
    head_dim (the C predictor's cudnn_attention records)."""
    head_dim: int
    slots: float
    coefficients: np.ndarray
    query_block: int = 0            # 0: fmha_cutlassF's for the head size
    whole_waves: bool = False

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return efficient_attention_work(frame, self.slots, self.query_block, self.whole_waves) @ self.coefficients

    def carried(self, source: Sku, target: Sku) -> EfficientAttentionModel:
        """The same CTAs per SM; a wave's time scales with one SM's arithmetic rate, the mask's
        read with bandwidth."""
        per_sm_flops = ((_peak_flops(source, "bf16") / source.sm_count)
                        / (_peak_flops(target, "bf16") / target.sm_count))
        bandwidth = _hbm_bytes_per_s(source) / _hbm_bytes_per_s(target)
        return dataclasses.replace(self, slots=self.slots * target.sm_count / source.sm_count,
                                   coefficients=self.coefficients * np.array([1.0, 1.0, per_sm_flops, per_sm_flops,
                                                                              bandwidth]))


def efficient_key_block(head_dim: int) -> int:
    """Keys per step of an fmha_cutlassF CTA's loop (its 64x64, 64x128 and 32x128 tiles)."""
    return 64 if head_dim <= 64 else 128


# The candidates the fit of the memory-efficient kernel chooses among: CTAs resident per SM, a lone
# CTA's time per key block (in an SM's key-block times when its CTAs saturate it), a masked key
# block's extra cost (reading the additive mask), and a causal CTA's extra cost (its masked
# diagonal block), both in key blocks.
EFFICIENT_RESIDENT = (1, 2, 3, 4, 6)
EFFICIENT_LATENCY = tuple(float(v) for v in np.arange(1.0, 6.01, 0.5))
EFFICIENT_MASK_WEIGHT = (0.0, 0.25, 0.5, 1.0)
EFFICIENT_CAUSAL_EXTRA = (0.0, 1.0, 2.0)


def efficient_ctas(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, causal: bool,
                   query_blocks: int = 0) -> list[tuple[int, int]]:
    """The CTAs of one fmha_cutlassF launch in the order the GPU starts them, as runs of (key blocks,
    CTAs in a row with that many). Its grid is (query blocks, heads, batch), x fastest; a CTA
    streams the keys in blocks (efficient_key_block), a causal one only up to its last query's
    diagonal (the kv_len - q_len keys before the first query being the cache). `query_blocks`: the
    launch's grid.x, else ceil(q_len / efficient_query_block)."""
    q_block, k_block = efficient_query_block(head_dim), efficient_key_block(head_dim)
    blocks = query_blocks or -(-q_len // q_block)
    if not causal:
        return [(-(-kv_len // k_block), blocks * heads * batch)]
    head: list[list[int]] = []
    for i in range(blocks):
        keys = max(min(kv_len, (i + 1) * q_block + kv_len - q_len), 1)
        n = -(-keys // k_block)
        if head and head[-1][0] == n:
            head[-1][1] += 1
        else:
            head.append([n, 1])
    return [(n, count) for n, count in head] * (heads * batch)


@dataclass(frozen=True)
class EfficientAttentionCTAs:
    """PyTorch's memory-efficient attention kernel (fmha_cutlassF, xFormers' AttentionKernel) for
    one head_dim: seconds = c . [1, makespan, key blocks, mask bytes] (the C predictor's
    efficient_attention record). Its CTAs (efficient_ctas) start in grid order while fewer than
    `resident` per SM run and share the SMs as vLLM's Triton programs do (triton_schedule): a CTA
    alone takes `latency` SM key-block times per key block, more than `latency` per SM share one
    key block per SM per unit. A CTA's work is its key blocks, each (1 + mask_weight) if an
    additive mask is read with it, plus causal_extra if causal (its diagonal block is masked
    element by element); makespan = the schedule's length (triton_makespan). Plus every key
    block's share of the GPU's bandwidth, and the mask's bytes (bf16, queries x keys). At a head
    size other than its own the CTAs are the other size's and the work terms scale with the head
    size. The former model, waves of CTAs x keys, missed decodes of few sequences (32 CTAs, one an
    SM, each waiting on its loads) by 30% and causal prefills by up to 52% (long ones have few
    short CTAs early and many long ones late)."""
    head_dim: int
    sms: int
    resident: int
    latency: float
    mask_weight: float
    causal_extra: float
    coefficients: np.ndarray

    @staticmethod
    def work(frame: pd.DataFrame, sms: int, resident: int, mask_weight: float, causal_extra: float
             ) -> list[tuple[tuple[np.ndarray, np.ndarray], float, float]]:
        """Per row: (its CTAs' schedule, its key blocks, its mask bytes)."""
        out = []
        for r in frame.itertuples():
            runs = efficient_ctas(int(r.batch), int(r.heads), int(r.q_len), int(r.kv_len), int(r.head_dim),
                                  bool(r.causal))
            weight = 1.0 + mask_weight * (r.mask != 0)
            extra = causal_extra * (r.causal != 0)
            schedule = triton_schedule([(n * weight + extra, count) for n, count in runs], sms, resident)
            out.append((schedule, float(sum(n * count for n, count in runs)),
                        2.0 * r.q_len * r.kv_len * (r.mask != 0)))
        return out

    @staticmethod
    def features(work, sms: int, latency: float) -> np.ndarray:
        return np.array([[1.0, triton_makespan(schedule, sms, latency), blocks, mask_bytes]
                         for schedule, blocks, mask_bytes in work])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        work = self.work(frame, self.sms, self.resident, self.mask_weight, self.causal_extra)
        features = self.features(work, self.sms, self.latency)
        features[:, 1:3] *= frame["head_dim"].to_numpy(dtype=float)[:, None] / self.head_dim
        return features @ self.coefficients

    def carried(self, source: Sku, target: Sku) -> EfficientAttentionCTAs:
        """The same CTAs per SM on the target's SMs; an SM's key-block time scales with one SM's
        arithmetic rate, the GPU-wide share with the whole GPU's, the mask's read with bandwidth."""
        per_sm_flops = ((_peak_flops(source, "bf16") / source.sm_count)
                        / (_peak_flops(target, "bf16") / target.sm_count))
        return dataclasses.replace(self, sms=target.sm_count, coefficients=self.coefficients * np.array(
            [1.0, per_sm_flops, _peak_flops(source, "bf16") / _peak_flops(target, "bf16"),
             _hbm_bytes_per_s(source) / _hbm_bytes_per_s(target)]))


def fit_efficient_attention(frame: pd.DataFrame, sm_count: int) -> dict[int, EfficientAttentionCTAs]:
    """Per head_dim: the CTAs per SM, latency, mask weight and causal extra (EFFICIENT_*, then the
    latency LATENCY_REFINE either side of the best) whose non-negative coefficients leave the least
    mean squared relative error on the fit rows."""
    models = {}
    for head_dim, rows in _fit_rows(frame).groupby("head_dim", sort=True):
        seconds = rows["seconds"].to_numpy(dtype=float)

        def scored(work, latency: float, *shape) -> tuple:
            features = EfficientAttentionCTAs.features(work, sm_count, latency)
            c = fit_relative(features, seconds)
            return float(np.mean((features @ c / seconds - 1) ** 2)), latency, shape, work, c

        best = None
        for shape in ((r, m, e) for r in EFFICIENT_RESIDENT for m in EFFICIENT_MASK_WEIGHT for e in EFFICIENT_CAUSAL_EXTRA):
            work = EfficientAttentionCTAs.work(rows, sm_count, *shape)
            best = min([scored(work, latency, *shape) for latency in EFFICIENT_LATENCY]
                       + ([best] if best else []), key=lambda b: b[0])
        best = min([best] + [scored(best[3], best[1] + step, *best[2]) for step in (-LATENCY_REFINE, LATENCY_REFINE)
                             if best[1] + step > 0], key=lambda b: b[0])
        _, latency, (resident, mask_weight, causal_extra), _, c = best
        models[int(head_dim)] = EfficientAttentionCTAs(int(head_dim), sm_count, resident, latency, mask_weight,
                                                       causal_extra, c)
    return models


# ---- cuDNN's SDPA forward kernel (cudnn_graphs.csv) --------------------------------------------

# The probe's events bracket the call with the GPU idle before it, so gpu_seconds - seconds is the
# kernel's time past the end of the host call, plus a constant of its own (the gaps between the
# events and the call): the kernel's time while it outlasts the call's tail, else only that
# constant, 16-20 us with +-15 us of host noise (decodes and short causal prefills sit there
# whatever their size). Estimates under this many seconds say nothing of the kernel.
CUDNN_KERNEL_MEASURABLE_S = 50e-6
# Query rows per CTA the fit chooses among (cuDNN's Hopper SDPA tiles).
CUDNN_QUERY_TILES = (64, 128)
# Every this-many-th cached call of a variant (by shape) is held out, as are torch's default
# choice's (a larger shape than any fitted).
CUDNN_HOLDOUT_EVERY = 4
# Variants whose kernel times are not fitted: K/V laid out and masked as transformers' continuous
# batching does (probe_cudnn_graphs.py), which the library does not yet tell from the probe's own
# layout; measured to compare the two (docs/fidelity/h100_notes.md).
CUDNN_UNFITTED_VARIANTS = ("engine_packed_wide_d128", "engine_prefill_long_d128")


def cudnn_attention_rows(graphs: pd.DataFrame) -> pd.DataFrame:
    """The cached calls (`hit`, `default_hit`: no graph build in their host time) with an additive
    mask whose kernel time is measurable, in efficient_attention.csv's columns, `seconds` the
    kernel's. Unmasked calls are left out: their kernel is another one, far faster (a causal
    3136-token prefill took 160 us, where the masked kernel's rate says 690 us), and only one of
    them is measurable."""
    cached = graphs[graphs["call"].isin(["hit", "default_hit"]) & ~graphs["variant"].isin(CUDNN_UNFITTED_VARIANTS)].copy()
    position = cached[cached["call"] == "hit"].groupby("variant").cumcount()
    held = (cached["call"] == "default_hit") | (position.reindex(cached.index) % CUDNN_HOLDOUT_EVERY
                                                 == CUDNN_HOLDOUT_EVERY - 1)
    kernel = cached["gpu_seconds"] - cached["seconds"]
    rows = pd.DataFrame({"kind": cached["variant"], "batch": 1, "heads": cached["heads"],
                         "head_dim": cached["head_dim"], "q_len": cached["queries"], "kv_len": cached["keys"],
                         "mask": cached["masked"], "causal": cached["causal"], "seconds": kernel,
                         "split": np.where(held, "holdout", "fit")})
    return rows[(rows["mask"] != 0) & (rows["seconds"] >= CUDNN_KERNEL_MEASURABLE_S)]


def fit_cudnn_attention(frame: pd.DataFrame, sm_count: int) -> dict[int, EfficientAttentionModel]:
    """Per head_dim, the efficient-attention law in whole waves (the measured prefills step by
    ~100 us exactly where another wave of 128-row CTAs starts), with one query tile, CTAs at once
    (0.5 to 8 per SM, in eighths) and mask cost per byte shared by the head sizes (the mask is the
    same bytes whatever the head size; only d128 has prefills, whose masks are large enough to
    tell): the tile and CTAs whose coefficients fit the fit rows best."""
    rows = _fit_rows(frame)
    head_dims = sorted(int(d) for d in rows["head_dim"].unique())
    which = rows["head_dim"].to_numpy()

    def features(candidate: tuple[int, float]) -> np.ndarray:
        work = efficient_attention_work(rows, candidate[1], candidate[0], whole_waves=True)
        per_head_dim = [work[:, :-1] * (which == d)[:, None] for d in head_dims]
        return np.hstack(per_head_dim + [work[:, -1:]])

    (tile, slots), c = fit_with_slots(features, rows["seconds"].to_numpy(dtype=float),
                                      [(tile, sm_count * eighths / 8) for tile in CUDNN_QUERY_TILES
                                       for eighths in range(4, 65)])
    width = (len(c) - 1) // len(head_dims)
    return {d: EfficientAttentionModel(d, slots, np.append(c[i * width:(i + 1) * width], c[-1]), tile, True)
            for i, d in enumerate(head_dims)}


# ---- FlashAttention 3: MODELLED, calibrated to published figures (data/published/) --------------

# The FA3 paper's forward throughput on an H100 (the file says whence and how it was measured), and
# that SKU: the model is calibrated to it there and carried to other SKUs by the roofline.
FA3_PUBLISHED = DATA_DIR / "published" / "fa3_h100.csv"
FA3_PUBLISHED_SKU = "h100"
# The head sizes FA3 compiles kernels for: a head is run by the next one up.
FA3_HEAD_DIMS = (64, 96, 128, 192, 256)
# Rounds of the calibration: fix each point's schedule, fit the costs on it, schedule again.
_FA3_FIT_ROUNDS = 30


def fa3_tile(head_dim: int, causal: bool, paged: bool) -> tuple[int, int]:
    """(query rows, keys) of an FA3 CTA's tile on Hopper in bf16 with V's head size Q's
    (hopper/tile_size.h, tile_size_fwd_sm90). `paged`: K/V read from a paged cache without TMA,
    as vLLM's pages of 16 tokens (fewer than a tile's keys) are, which takes narrower key tiles."""
    if head_dim <= 64:
        return 192, 128 if causal or paged else 192
    if head_dim <= 96:
        return 192, 128 if paged else 144
    if head_dim <= 128:
        return 128, 128 if causal or paged else 176
    if head_dim <= 192:
        return 128, 96 if paged else 112
    return 128, 80


def fa3_kernel_head_dim(head_dim: int) -> int:
    """The head size of the kernel that runs a head of `head_dim` (its tiles span that many)."""
    return next((d for d in FA3_HEAD_DIMS if head_dim <= d), FA3_HEAD_DIMS[-1])


def _fa3_query_blocks(query_len: int, context_len: int, per_kv: int, tile: tuple[int, int],
                      causal: bool) -> list[tuple[int, int]]:
    """Per query block of one sequence and (packed) head, first to last: (the KV blocks it reads,
    the first of them that is causally masked; none is if not causal). With `per_kv` query heads
    packed per KV head a block's rows are (query, head) pairs, query-major (FA3's PackGQA); causal
    queries see up to their own position, the context_len - query_len keys before the first query
    being the cache (hopper/block.h)."""
    block_m, block_n = tile
    rows, cached, kv_blocks = query_len * per_kv, context_len - query_len, -(-context_len // block_n)
    blocks = []
    for first in range(0, rows, block_m):
        last = min(first + block_m, rows) - 1
        if not causal:
            blocks.append((kv_blocks, kv_blocks))
            continue
        end = min(-(-(cached + last // per_kv + 1) // block_n), kv_blocks)
        blocks.append((end, (cached + first // per_kv) // block_n))
    return blocks


def _fa3_split_blocks(end: int, mask_from: int, splits: int) -> list[tuple[int, int]]:
    """(KV blocks, masked ones) of each of `splits` CTAs sharing a query block's `end` KV blocks,
    an equal run each (the last ones may get fewer, or none)."""
    per = -(-end // splits)
    out = []
    for s in range(splits):
        lo, hi = s * per, min(s * per + per, end)
        out.append((max(hi - lo, 0), max(hi - max(lo, mask_from), 0)))
    return out


def fa3_num_splits(total_m_blocks: int, sms: int, kv_blocks: int, max_splits: int = 128) -> int:
    """FA3's split-KV count for a causal launch (hopper/heuristics.h, num_splits_heuristic): none
    when the query blocks nearly fill the SMs or the keys are few, else the fewest splits whose
    wave efficiency is within 85% of the best."""
    if total_m_blocks >= 0.8 * sms or kv_blocks <= 4:
        return 1
    efficiency = []
    for splits in range(1, min(max_splits, sms, kv_blocks) + 1):
        waves = total_m_blocks * splits / sms
        efficiency.append(waves / math.ceil(waves))
    return next(s for s, e in enumerate(efficiency, 1) if e >= 0.85 * max(efficiency))


# FA3 splits K/V per sequence for at most this many: the one CTA that prepares its schedule handles
# that many (hopper/flash_prepare_scheduler.cu); more get no splits.
_FA3_DYNAMIC_SPLIT_SEQS = 992


def fa3_ctas(groups: list[tuple[int, int, int]], heads: int, kv_heads: int, head_dim: int,
             sms: int) -> tuple[tuple[int, int], np.ndarray]:
    """(the tile, [KV blocks, masked blocks] per CTA) of FA3 over one vLLM batch of (query_len,
    context_len, count) groups, in the order its persistent scheduler hands CTAs to free SMs. As
    vLLM launches it: varlen, causal, a paged cache of 16-token pages (fa3_tile's `paged`), query
    heads packed per KV head. The split-KV count is the heuristic's for the longest query and
    context, then per sequence the blocks per SM of the whole batch (with 10% margin) decide
    (flash_prepare_scheduler.cu). Sequences go longest first (by keys per split less queries, in
    whole tiles), and within one its query blocks longest first, then its KV heads, then its splits
    (FA3 goes by L2-sized sections of heads: one section here). attention_batch.c
    (vgpu_attention_batch_fa3_makespan) computes the same."""
    per_kv = heads // kv_heads
    tile = fa3_tile(head_dim, True, True)
    block_m, block_n = tile
    seqs = [(q, ctx) for q, ctx, count in groups for _ in range(count)]
    m_blocks = [-(-q * per_kv // block_m) for q, _ in seqs]
    kv_blocks = [-(-ctx // block_n) for _, ctx in seqs]
    most = fa3_num_splits(kv_heads * -(-max(q for q, _ in seqs) * per_kv // block_m), sms,
                          -(-max(ctx for _, ctx in seqs) // block_n))
    splits = [1] * len(seqs)
    if most > 1 and len(seqs) <= _FA3_DYNAMIC_SPLIT_SEQS:
        per_sm = math.ceil(sum(m * n for m, n in zip(m_blocks, kv_blocks)) * 1.1 * kv_heads / sms)
        splits = [max(min(-(-n // per_sm), most), 1) for n in kv_blocks]
    order = sorted(range(len(seqs)),
                   key=lambda i: -(-(-kv_blocks[i] // splits[i]) * block_n - m_blocks[i] * block_m))
    ctas = []
    for i in order:
        for end, mask_from in reversed(_fa3_query_blocks(*seqs[i], per_kv, tile, True)):
            ctas += _fa3_split_blocks(end, mask_from, splits[i]) * kv_heads
    return tile, np.array(ctas, dtype=float).reshape(-1, 2)


def fa3_benchmark_ctas(seqlen: int, batch: int, heads: int, head_dim: int,
                       causal: bool) -> tuple[tuple[int, int], np.ndarray]:
    """fa3_ctas for the paper's benchmark: `batch` sequences of `seqlen` queries and keys, no cache
    pages, no GQA, no splits (its query blocks fill the SMs many times). Causal launches go longest
    query block first within sections of (sequence, head) pairs whose K/V fit 32 MiB of L2
    (tile_scheduler.hpp, DynamicPersistentTileScheduler); non-causal CTAs all cost the same."""
    tile = fa3_tile(head_dim, causal, False)
    blocks = _fa3_query_blocks(seqlen, seqlen, 1, tile, causal)
    if not causal:
        return tile, np.array([(end, end - mask_from) for end, mask_from in blocks] * batch * heads, dtype=float)
    kv_head_bytes = seqlen * 2 * head_dim * 2
    section = 1 << max((32 * 2**20 // kv_head_bytes).bit_length() - 1, 0)
    ctas = []
    for start in range(0, batch * heads, section):
        pairs = min(section, batch * heads - start)
        for end, mask_from in reversed(blocks):
            ctas += [(end, end - mask_from)] * pairs
    return tile, np.array(ctas, dtype=float)


def _greedy(costs: np.ndarray, sms: int) -> np.ndarray:
    """The SM each CTA runs on when each, in order, goes to the SM that frees first."""
    free = [(0.0, sm) for sm in range(sms)]
    placed = np.empty(len(costs), dtype=int)
    for i, cost in enumerate(costs):
        load, sm = free[0]
        placed[i] = sm
        heapq.heapreplace(free, (load + cost, sm))
    return placed


def fa3_cta_work(tile: tuple[int, int], blocks: np.ndarray, head_dim: int, causal: bool) -> np.ndarray:
    """Per CTA (fa3_ctas' or fa3_benchmark_ctas' rows), what FlashAttention3 charges for: [Q and O
    elements (rows x head_dim), MMA elements of its KV blocks (rows x keys x head_dim), the same if
    the launch is causal, rows x keys of its masked blocks], head_dim the kernel's."""
    rows, keys = tile
    dim = fa3_kernel_head_dim(head_dim)
    mma = rows * keys * dim * blocks[:, 0]
    return np.column_stack([np.full(len(blocks), rows * dim), mma, mma * causal, rows * keys * blocks[:, 1]])


@dataclass(frozen=True)
class FlashAttention3:
    """FlashAttention 3's forward kernel, MODELLED (it cannot run on the lent GPUs) and calibrated
    to the FA3 paper's H100 figures. One CTA per query block of a (sequence, packed head), handed
    to `sms` SMs by a persistent scheduler; a CTA costs (fa3_cta_work's elements)

        qo_s * its Q and O elements                     loading Q, storing O
      + (mma_s(head_dim) + causal_s if causal) * its KV blocks' MMA elements
      + masked_s * its masked blocks' elements          the causal diagonal

    and a launch launch_s (the SKU's measured kernel floor, kernel_default's intercept) plus the
    makespan of its CTAs taken in scheduler order, each by the SM that frees first (_greedy).
    mma_s is fitted per head size (`head_dims`, ascending; linear in the head size between them,
    the nearest one's beyond). causal_s: the published causal launches stay 5-15% below the
    non-causal ones even at 16k tokens, where masked blocks are a few per cent of all. A launch
    also moves at least its K/V and Q/O bytes: FittedModels.flash_attention_3_seconds charges the
    larger of the two, which is what decides decodes. `calibrated_on`: the SKU whose published
    figures were fitted."""
    sms: int
    launch_s: float
    qo_s: float
    causal_s: float
    masked_s: float
    head_dims: tuple[int, ...]
    mma_s: tuple[float, ...]
    calibrated_on: str

    def mma_seconds(self, head_dim: int) -> float:
        return float(np.interp(head_dim, self.head_dims, self.mma_s))

    def compute_seconds(self, tile: tuple[int, int], blocks: np.ndarray, head_dim: int, causal: bool) -> float:
        """launch_s + the makespan of the CTAs (fa3_ctas' or fa3_benchmark_ctas' blocks)."""
        costs = fa3_cta_work(tile, blocks, head_dim, causal) @ np.array(
            [self.qo_s, self.mma_seconds(head_dim), self.causal_s, self.masked_s])
        return self.launch_s + float(np.bincount(_greedy(costs, self.sms), costs, self.sms).max())

    def benchmark_seconds(self, seqlen: int, batch: int, heads: int, head_dim: int, causal: bool) -> float:
        """One launch of the paper's benchmark (compute only: it never comes near its bytes)."""
        return self.compute_seconds(*fa3_benchmark_ctas(seqlen, batch, heads, head_dim, causal), head_dim, causal)

    def carried(self, source: Sku, target: Sku) -> FlashAttention3:
        """On another SKU: its SMs, each element's math at one SM's arithmetic rate there, the
        launch and the Q/O loads as they are (bytes are charged on the target's memory curve)."""
        per_sm = (_peak_flops(source, "bf16") / source.sm_count) / (_peak_flops(target, "bf16") / target.sm_count)
        return dataclasses.replace(self, sms=target.sm_count, causal_s=self.causal_s * per_sm,
                                   masked_s=self.masked_s * per_sm, mma_s=tuple(m * per_sm for m in self.mma_s))


def fa3_published() -> pd.DataFrame:
    """The published figures with the seconds they imply (FLOPs / throughput)."""
    frame = pd.read_csv(FA3_PUBLISHED, comment="#")
    flops = (4.0 * frame["seqlen"] ** 2 * frame["head_dim"] * frame["heads"] * frame["batch"]
             * np.where(frame["causal"] != 0, 0.5, 1.0))
    return frame.assign(seconds=flops / (frame["tflops"] * 1e12))


def fa3_benchmark_predictions(model: FlashAttention3, published: pd.DataFrame) -> np.ndarray:
    return np.array([model.benchmark_seconds(r.seqlen, r.batch, r.heads, r.head_dim, bool(r.causal))
                     for r in published.itertuples()])


def fit_flash_attention_3(published: pd.DataFrame, sku: Sku, launch_s: float) -> FlashAttention3:
    """The coefficients (all but launch_s, which the figures, launches of 118 us and more, cannot
    tell from the per-CTA work) minimising the squared relative error over the published rows. Given each
    row's schedule its time is linear in them (the sums over the slowest SM's CTAs), so: schedule
    every row with the current coefficients (at first, every CTA's math at the SM's datasheet
    peak), fit those sums (fit_relative), and again, keeping the best round, until one does not
    improve on it."""
    head_dims = tuple(sorted(int(d) for d in published["head_dim"].unique()))
    rows = [(fa3_benchmark_ctas(r.seqlen, r.batch, r.heads, r.head_dim, bool(r.causal)), int(r.head_dim),
             bool(r.causal)) for r in published.itertuples()]
    seconds = published["seconds"].to_numpy(dtype=float)
    peak = 4.0 * sku.sm_count / _peak_flops(sku, "bf16")        # QK^T and PV, 2 FLOPs an element each
    model = FlashAttention3(sku.sm_count, launch_s, 0.0, 0.0, 0.0, head_dims, (peak,) * len(head_dims), sku.sku)
    best = None
    for _ in range(_FA3_FIT_ROUNDS):
        sums = []
        for (tile, blocks), head_dim, causal in rows:
            work = fa3_cta_work(tile, blocks, head_dim, causal)
            costs = work @ np.array([model.qo_s, model.mma_seconds(head_dim), model.causal_s, model.masked_s])
            placed = _greedy(costs, model.sms)
            qo, mma, causal_mma, masked = work[placed == np.argmax(np.bincount(placed, costs, model.sms))].sum(axis=0)
            sums.append([qo, causal_mma, masked] + [mma * (d == head_dim) for d in head_dims])
        c = [float(v) for v in fit_relative(np.array(sums), seconds - launch_s)]
        model = dataclasses.replace(model, qo_s=c[0], causal_s=c[1], masked_s=c[2], mma_s=tuple(c[3:]))
        error = float(np.mean((fa3_benchmark_predictions(model, published) / seconds - 1) ** 2))
        if best is not None and error >= best[0]:
            break
        best = (error, model)
    return best[1]


@lru_cache(maxsize=None)
def _fa3_calibration(launch_s: float) -> FlashAttention3:
    return fit_flash_attention_3(fa3_published(), load_sku(FA3_PUBLISHED_SKU), launch_s)


def calibrated_flash_attention_3(sku: Sku, launch_s: float) -> FlashAttention3:
    """The FA3 model on `sku`, whose kernel floor is launch_s: fitted to the published figures on
    their SKU (once a process), carried to others."""
    fitted = _fa3_calibration(launch_s)
    return fitted if sku.sku == fitted.calibrated_on else fitted.carried(load_sku(fitted.calibrated_on), sku)


# ---- collectives: measured (collectives.csv), else published (data/published/), else MODELLED ----

# custom_all_reduce: an engine's own all-reduce kernel over peer memory (vLLM's and SGLang's
# cross_device_reduce_*stage), charged by its own curve where one is known, else as all_reduce.
COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv", "custom_all_reduce")
# Fixed cost of one NCCL collective within a node, the order NCCL tests show at small sizes.
COLLECTIVE_LATENCY_S = 10e-6
# Share of the SKU's per-direction NVLink bandwidth NCCL reaches as bus bandwidth at large sizes:
# nccl-tests all_reduce on 8x H100 SXM (NVLink 4, 450 GB/s per direction) report ~360 GB/s.
NVLINK_BUS_EFFICIENCY = 360.0 / 450.0


def collective_factor(op: str, nranks: int) -> float:
    """nccl-tests' bus-bandwidth factor: bytes on the busiest link per byte of the buffer (the full
    buffer: the gathered output of all_gather, the input of reduce_scatter)."""
    if nranks < 1:
        raise ValueError(f"collective over {nranks} ranks")
    if op in ("all_reduce", "custom_all_reduce"):
        return 2.0 * (nranks - 1) / nranks
    if op in ("all_gather", "reduce_scatter"):
        return (nranks - 1) / nranks
    if op in ("broadcast", "send_recv"):
        return 1.0
    raise ValueError(f"unknown collective {op!r}; known: {', '.join(COLLECTIVE_OPS)}")


@dataclass(frozen=True)
class CollectiveModel:
    """seconds = latency_s + bytes * collective_factor(op, nranks) / bus_bytes_per_s: the model
    file's `collective` record, used for group sizes without a measured curve. `measured`: fitted
    on collectives.csv (pooled over its group sizes) rather than modelled."""
    op: str
    latency_s: float
    bus_bytes_per_s: float
    measured: bool = False

    @classmethod
    def modelled(cls, sku: Sku) -> dict[str, CollectiveModel]:
        bus = sku.nvlink_bandwidth_gbps * 1e9 * NVLINK_BUS_EFFICIENCY
        return {op: cls(op, COLLECTIVE_LATENCY_S, bus) for op in COLLECTIVE_OPS}

    @classmethod
    def fit(cls, op: str, nbytes: np.ndarray, ranks: np.ndarray, seconds: np.ndarray) -> CollectiveModel:
        """Least absolute relative error over the rows, all group sizes pooled: NCCL's protocol
        changes (LL, LL128, Simple) bend the curve, which a line follows in the bulk only. Rows
        whose time does not grow with bytes (a noisy CPU test table) give an infinite rate:
        latency only."""
        bus = nbytes * np.array([collective_factor(op, int(r)) for r in ranks])
        line = LinearModel.fit(bus, seconds, absolute=True)
        return cls(op, line.a, 1.0 / line.b if line.b > 0 else math.inf, measured=True)

    def predict(self, nbytes: float, nranks: int) -> float:
        return self.latency_s + nbytes * collective_factor(self.op, nranks) / self.bus_bytes_per_s


@dataclass(frozen=True)
class CollectiveCurve:
    """Measured seconds of one (op, ranks) over bytes (the whole buffer, collectives.csv's
    convention), bytes ascending; log_log_curve between and beyond them. send_recv is measured
    between two GPUs and its curve serves any communicator size."""
    op: str
    ranks: int
    bytes: np.ndarray
    seconds: np.ndarray

    def predict(self, nbytes: float) -> float:
        return log_log_curve(nbytes, self.bytes, self.seconds)


def fit_collectives(collectives: pd.DataFrame, sku: Sku
                    ) -> tuple[dict[tuple[str, int], CollectiveCurve], dict[str, CollectiveModel]]:
    """(a curve per measured (op, ranks), the `collective` line per op): from the fit rows, repeated
    (op, ranks, bytes) rows taking their median. Ops never measured (broadcast) keep the modelled
    line; an engine's custom all-reduce never measured takes all_reduce's."""
    rows = _fit_rows(collectives)
    for dtype in rows["dtype"].unique():
        _element_bytes(dtype, "collectives.csv column dtype")
    curves = {}
    for (op, ranks), group in rows.groupby(["op", "ranks"], sort=True):
        points = group.groupby("bytes")["seconds"].median()
        curves[str(op), int(ranks)] = CollectiveCurve(str(op), int(ranks), points.index.to_numpy(dtype=float),
                                                      points.to_numpy(dtype=float))
    lines = CollectiveModel.modelled(sku)
    for op, group in rows.groupby("op", sort=True):
        lines[str(op)] = CollectiveModel.fit(str(op), group["bytes"].to_numpy(dtype=float),
                                             group["ranks"].to_numpy(), group["seconds"].to_numpy(dtype=float))
    if "custom_all_reduce" not in set(rows["op"]):
        lines["custom_all_reduce"] = dataclasses.replace(lines["all_reduce"], op="custom_all_reduce")
    return curves, lines


def collective_timings(measured: Tables | None, sku: str) -> tuple[pd.DataFrame | None, str]:
    """(the timings a SKU's collectives are fitted on, where they come from): its own measured
    collectives.csv, else the node timings published for it (data/published/), else none: the
    model over its NVLink figure ("modelled")."""
    if measured is not None and measured.collectives is not None:
        return measured.collectives, "measured (collectives.csv)"
    published = load_published_collectives(sku)
    if published is None:
        return None, "modelled"
    frame, source = published
    return frame, (f"published: {source['source']}, aiconfigurator {source.get('aiconfigurator', '?')}, "
                   f"{source['device']}, NCCL {source['nccl_version']} and vLLM {source['vllm_version']}'s custom "
                   f"all-reduce ({source['custom_all_reduce_mode']}), not measured here")


def sku_collectives(measured: Tables | None, sku: Sku
                    ) -> tuple[dict[tuple[str, int], CollectiveCurve], dict[str, CollectiveModel], str]:
    """(curves, lines, where they come from) for a SKU (collective_timings)."""
    frame, origin = collective_timings(measured, sku.sku)
    if frame is None:
        return {}, CollectiveModel.modelled(sku), origin
    return (*fit_collectives(frame, sku), origin)


# ---- everything for one SKU --------------------------------------------------------------------

@dataclass(frozen=True)
class FittedModels:
    sku: str
    gemm: GemmTable
    gemm_efficiency: dict[str, RooflineEfficiency]
    gemm_roofline: GemmRoofline
    attention: dict[str, AttentionModel]
    attention_curves: list[AttentionCurve]
    # vLLM's Triton attention over mixed and chunked batches; None where not measured.
    attention_makespan: AttentionMakespan | None
    elementwise: dict[tuple[str, str], LinearModel]
    copies: dict[tuple[str, int], TransferModel]
    memset: TransferModel
    kernels: KernelModels
    collectives: dict[str, CollectiveModel]
    # Measured or published (op, ranks) -> curve over bytes; empty where neither exists.
    collective_curves: dict[tuple[str, int], CollectiveCurve] = field(default_factory=dict)
    # Whence the collectives: "measured (collectives.csv)", "published: <source>" or "modelled".
    collectives_origin: str = "modelled"
    # Memory class -> curve over bytes; empty where memory.csv is absent.
    memory: dict[str, MemoryCurve] = field(default_factory=dict)
    # head_dim -> model; empty where efficient_attention.csv is absent.
    efficient_attention: dict[int, EfficientAttentionCTAs] = field(default_factory=dict)
    # Host work of replaced libraries (vgpu.h vgpu_host_work names) -> seconds; empty where
    # cudnn_graphs.csv is absent.
    host_costs: dict[str, HostCost] = field(default_factory=dict)
    # head_dim -> cuDNN's SDPA forward kernel with an additive mask; empty where cudnn_graphs.csv is
    # absent.
    cudnn_attention: dict[int, EfficientAttentionModel] = field(default_factory=dict)
    # Host seconds of the CUDA runtime's own work per launch (runtime_calls.csv); 0 where absent.
    launch_host_s: float = 0.0
    # FlashAttention 3, calibrated to published figures (never measured here); None: charged as
    # vLLM's Triton attention.
    flash_attention_3: FlashAttention3 | None = None
    # SDPA's FlashAttention 2 decode by CTA waves; None where its decode was not measured (the
    # curves interpolate instead).
    flash_decode: FlashDecodeModel | None = None

    def collective_seconds(self, op: str, nbytes: float, nranks: int) -> float:
        """What the C predictor charges (predict_collective): the measured curve of (op, nranks)
        (send_recv: of two ranks) if there is one, else the op's `collective` line; bytes are
        the whole buffer."""
        if nranks <= 1:
            return self.collectives[op].latency_s
        curve = self.collective_curves.get((op, 2 if op == "send_recv" else nranks))
        if curve is not None:
            return curve.predict(nbytes)
        return self.collectives[op].predict(nbytes, nranks)

    def memory_seconds(self, cls: str, nbytes: float) -> float:
        """What the C predictor charges a memory-bound kernel moving `nbytes` (memory_seconds): on
        its class's curve, else the elementwise one, else the generic kernels' floor plus the bytes
        at the device-to-device copy rate (a copy moves each byte twice)."""
        curve = self.memory.get(cls) or self.memory.get("elementwise")
        if curve is not None:
            return curve.predict(max(nbytes, 1.0))
        d2d = self.copies.get(("D2D", 0))
        return self.kernels.default.a + (nbytes / 2 / d2d.bytes_per_s if d2d else 0.0)

    def d2d_copy_seconds(self, nbytes: float) -> float:
        """What the C predictor charges a device-to-device memcpy of `nbytes` (predict_copy): the D2D
        line of copy.csv. Not memory.csv's copy rows: those are memcpys back to back in a graph of
        nothing else, 1.2 us at 64 KiB where copy.csv's eager ones take 5.5; charged at those, the
        whole engine forward passes on an H200 (docs/predictor/forward_pass_h200.md) fell from 15 to
        13 of 21 steps within 5% (median error 2.2% to 4.5%): among kernels a memcpy costs more."""
        return float(self.copies[("D2D", 0)].predict(nbytes))

    def flash_attention_3_seconds(self, groups: list[tuple[int, int, int]], heads: int, kv_heads: int,
                                  head_dim: int, kv_element_bytes: int = 2) -> float:
        """What the C predictor charges an FA3 launch over a vLLM batch of (query_len, context_len,
        count) groups: the model's time for its CTAs (fa3_ctas), or moving its bytes (K/V read
        once, Q read and O written in bf16) on the elementwise memory curve, whichever is longer."""
        fa3 = self.flash_attention_3
        compute = fa3.compute_seconds(*fa3_ctas(groups, heads, kv_heads, head_dim, fa3.sms), head_dim, True)
        kv_bytes = sum(ctx * count for _, ctx, count in groups) * kv_heads * head_dim * 2 * kv_element_bytes
        qo_bytes = sum(q * count for q, _, count in groups) * heads * head_dim * 2 * 2
        return max(compute, self.memory_seconds("elementwise", kv_bytes + qo_bytes))

    def gemm_seconds(self, dtype: str, trans_a: int, trans_b: int, m: int, n: int, k: int,
                     batch: int = 1) -> float:
        """From the measured curves when the dtype was profiled, else the roofline."""
        if dtype in self.gemm.dtypes():
            return self.gemm.predict(GemmKey(dtype, trans_a, trans_b, m, k, batch), n)
        return self.gemm_roofline.predict(dtype, m, n, k, batch)


def fit(tables: Tables, sku: Sku) -> FittedModels:
    """Every model of the SKU, from its tables' fit rows and its conf/hardware entry."""
    efficiency = GemmRoofline.fit_efficiencies(tables.gemm, sku)
    copies, memset = fit_copies(tables.copy)
    kernels = KernelModels.fit(tables.kernels)
    curves, collectives, collectives_origin = sku_collectives(tables, sku)
    return FittedModels(
        sku=tables.sku,
        gemm=GemmTable.fit(tables.gemm),
        gemm_efficiency=efficiency,
        gemm_roofline=GemmRoofline.for_sku(efficiency, sku),
        attention=AttentionModel.fit_all(tables.attention),
        attention_curves=attention_curves(tables.attention),
        attention_makespan=AttentionMakespan.fit(tables.attention, sku.sm_count),
        flash_decode=FlashDecodeModel.fit(tables.attention, sku.sm_count),
        elementwise=fit_elementwise(tables.elementwise),
        copies=copies,
        memset=memset,
        kernels=kernels,
        collectives=collectives,
        collective_curves=curves,
        collectives_origin=collectives_origin,
        memory={} if tables.memory is None else fit_memory_curves(tables.memory),
        efficient_attention=({} if tables.efficient_attention is None
                             else fit_efficient_attention(tables.efficient_attention, sku.sm_count)),
        host_costs={} if tables.cudnn_graphs is None else fit_host_costs(tables.cudnn_graphs, tables.host_cpu_s),
        cudnn_attention=({} if tables.cudnn_graphs is None
                         else fit_cudnn_attention(cudnn_attention_rows(tables.cudnn_graphs), sku.sm_count)),
        launch_host_s=0.0 if tables.runtime_calls is None else fit_launch_cost(tables.runtime_calls),
        flash_attention_3=calibrated_flash_attention_3(sku, kernels.default.a),
    )


# ---- SKUs without measurements: the measured SKU's models, carried by the roofline ----------------

def transfer(source: FittedModels, source_sku: Sku, target_sku: Sku) -> FittedModels:
    """A profiled SKU's models for an unprofiled one. Every measured time t at a point that does
    `flops` of arithmetic and moves `bytes` is scaled by roof(target) / roof(source), roof =
    max(flops / peak, bytes / bandwidth) from each SKU's datasheet (conf/hardware): a point that
    was memory-bound scales with the bandwidth ratio, a compute-bound one with the peak ratio.
    Kernels outside GEMM and attention are taken as memory-bound; host copies (PCIe) and the
    collectives come from the target's own figures, published or modelled (measured collectives are
    not carried: the link, not the chip, sets them). Nothing here is checked against a
    measurement of the target: `accuracy` reports none for it."""
    def ratio(flops: float, nbytes: float, dtype: str) -> float:
        def roof(sku: Sku) -> float:
            return max(flops / _peak_flops(sku, dtype), nbytes / _hbm_bytes_per_s(sku))
        return roof(target_sku) / roof(source_sku)

    bandwidth = _hbm_bytes_per_s(source_sku) / _hbm_bytes_per_s(target_sku)    # time ratio, memory-bound
    per_sm_flops = ((_peak_flops(source_sku, "bf16") / source_sku.sm_count)      # time ratio, one SM's math
                    / (_peak_flops(target_sku, "bf16") / target_sku.sm_count))
    # Types the target has no rate for (fp8 on an A100) have no GEMMs there.
    supported = {d for d in source.gemm_efficiency if target_sku.peak_tflops.get(PEAK_TFLOPS_KEY[d]) is not None}
    efficiency = {d: e for d, e in source.gemm_efficiency.items() if d in supported}
    curves = {}
    for key, curve in ((k, c) for k, c in source.gemm.curves.items() if k.dtype in supported):
        scale = [ratio(gemm_flops(key.m, n, key.k, key.batch), gemm_bytes(key.m, n, key.k, key.batch, key.dtype),
                       key.dtype) for n in curve.n]
        curves[key] = GemmCurve(curve.n, curve.seconds * np.array(scale))
    attention_curves_ = []
    for c in source.attention_curves:
        scale = []
        for y in c.y:
            q, ctx = (1, y) if c.phase == "decode" else (y, y)
            features = attention_features([(q, ctx, c.num_seqs)], c.heads, c.kv_heads, c.head_dim, "bf16")
            scale.append(ratio(features[3], features[2] + features[4], "bf16"))
        attention_curves_.append(dataclasses.replace(
            c, seconds=tuple(float(s * r) for s, r in zip(c.seconds, scale))))
    attention = {}
    for backend, model in source.attention.items():
        c = model.coefficients.copy()
        c[2] *= bandwidth
        c[4] *= bandwidth
        c[3] *= _peak_flops(source_sku, "bf16") / _peak_flops(target_sku, "bf16")
        attention[backend] = AttentionModel(backend, c)
    on_device = {k: dataclasses.replace(v, bytes_per_s=v.bytes_per_s / bandwidth) if k[0] == "D2D" else v
                 for k, v in source.copies.items()}
    collective_curves, collectives, collectives_origin = sku_collectives(None, target_sku)
    return FittedModels(
        sku=target_sku.sku,
        gemm=GemmTable(curves),
        gemm_efficiency=efficiency,
        gemm_roofline=GemmRoofline.for_sku(efficiency, target_sku),
        attention=attention,
        attention_curves=attention_curves_,
        # The same programs per SM on the target's SMs; an SM's tile time scales with one SM's math,
        # the GPU-wide share per tile with the whole GPU's, bytes with HBM's.
        attention_makespan=None if source.attention_makespan is None else dataclasses.replace(
            source.attention_makespan, sms=target_sku.sm_count,
            coefficients=source.attention_makespan.coefficients * np.array(
                [1.0, per_sm_flops, _peak_flops(source_sku, "bf16") / _peak_flops(target_sku, "bf16"), bandwidth])),
        elementwise={k: LinearModel(m.a, m.b * bandwidth) for k, m in source.elementwise.items()},
        copies=on_device,
        memset=dataclasses.replace(source.memset, bytes_per_s=source.memset.bytes_per_s / bandwidth),
        kernels=KernelModels({name: LinearModel(m.a, m.b * bandwidth) for name, m in source.kernels.by_name.items()},
                             LinearModel(source.kernels.default.a, source.kernels.default.b * bandwidth),
                             source.kernels.max_threads),
        collectives=collectives,
        collective_curves=collective_curves,
        collectives_origin=collectives_origin,
        memory={cls: dataclasses.replace(c, seconds=c.seconds * bandwidth) for cls, c in source.memory.items()},
        efficient_attention={d: m.carried(source_sku, target_sku) for d, m in source.efficient_attention.items()},
        cudnn_attention={d: m.carried(source_sku, target_sku) for d, m in source.cudnn_attention.items()},
        # The host's and the library's work, not the GPU's: the same on the target.
        host_costs=dict(source.host_costs),
        launch_host_s=source.launch_host_s,
        flash_attention_3=(None if source.flash_attention_3 is None
                           else source.flash_attention_3.carried(source_sku, target_sku)),
        # Decode is memory-bound: each wave's time scales with the bandwidth, on the target's SMs.
        flash_decode=None if source.flash_decode is None else FlashDecodeModel(
            target_sku.sm_count, source.flash_decode.split * bandwidth, source.flash_decode.whole * bandwidth),
    )
