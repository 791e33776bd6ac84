"""The predictor's fitted models: pure functions of a SKU's fit rows (tables.py), each with predict.

Every model here is rebuilt from the measured tables; none holds a hand-set number except the
collectives of a SKU without collectives.csv (no multi-GPU measurement), which are modelled and
say so. modelfile.py writes
these models as the text file the C predictor loads, so the C side must compute exactly what the
predict methods here compute; each docstring states its formula for that reason.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from emulator.hardware import Sku
from emulator.predictor.tables import Tables

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
# (attention_batch.c, add_triton_tiles, computes the same on the launch path).
TRITON_BLOCK_M = 16
TRITON_TILE = 32
# The batches the makespan model is fitted on and charges: neither all decodes nor one prompt
# length (those are interpolated in the measured curves).
MAKESPAN_PHASES = ("mixed", "chunked")


def triton_tiles(groups: list[tuple[int, int, int]], num_heads: int, num_kv_heads: int) -> tuple[float, float]:
    """(KV tiles over all programs, the longest program's tiles) of one launch over (query_len,
    context_len, count) groups: a program per BLOCK_Q query tokens of a sequence and per KV head,
    each reading the tiles up to what its last query sees (causal)."""
    per_kv = num_heads // num_kv_heads
    block_m = max(TRITON_BLOCK_M, 1 << max(per_kv - 1, 0).bit_length())
    block_q = max(block_m // per_kv, 1)
    work = longest = 0.0
    for query_len, context_len, count in groups:
        last = np.minimum(np.arange(block_q, query_len + block_q, block_q), query_len)
        tiles = np.ceil((context_len - query_len + last) / TRITON_TILE)
        work += count * float(tiles.sum()) * num_kv_heads
        longest = max(longest, float(tiles.max()))
    return work, longest


@dataclass(frozen=True)
class AttentionMakespan:
    """seconds = c . [1, max(tiles / slots, longest), tiles, kv_bytes]: the kernel's programs run
    about `slots` at a time over their KV tiles, so a batch takes its total work spread over them
    or its longest program, whichever is longer (a long prompt's last query blocks, a decode of a
    long context); plus K/V bytes read (attention_features' kv_bytes). Fitted on the mixed and
    chunked rows, where the linear model over totals missed by 45% at p90."""
    backend: str
    slots: float
    coefficients: np.ndarray

    @staticmethod
    def features(attention: pd.DataFrame, slots: float) -> np.ndarray:
        rows = []
        for r in attention.itertuples():
            groups = parse_composition(r.composition)
            tiles, longest = triton_tiles(groups, r.num_heads, r.num_kv_heads)
            kv_bytes = attention_features(groups, r.num_heads, r.num_kv_heads, r.head_dim, r.dtype)[2]
            rows.append([1.0, max(tiles / slots, longest), tiles, kv_bytes])
        return np.array(rows)

    @classmethod
    def fit(cls, attention: pd.DataFrame, sm_count: int, backend: str = "vllm_triton_unified"
            ) -> AttentionMakespan | None:
        """The slots (a quarter to 8 programs per SM, in quarters) that fit best; None without
        rows to fit."""
        rows = _fit_rows(attention)
        rows = rows[(rows["backend"] == backend) & rows["phase"].isin(MAKESPAN_PHASES)]
        if rows.empty:
            return None
        slots, c = fit_with_slots(lambda s: cls.features(rows, s), rows["seconds"].to_numpy(dtype=float),
                                  [sm_count * quarters / 4 for quarters in range(1, 33)])
        return cls(backend, slots, c)

    def predict(self, attention: pd.DataFrame) -> np.ndarray:
        return self.features(attention, self.slots) @ self.coefficients


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

# K heads of the rotary rows, by q hidden: profile_gpu.py's FULL.rotary_kv_heads.
ROTARY_KV_HEADS = {4096: 8, 2048: 4, 1024: 2, 512: 1, 8192: 8}
ROTARY_HEAD_DIM = 128


def elementwise_bytes(op: str, tokens: int, hidden: int, dtype: str) -> float:
    """Bytes an op reads and writes, for T tokens of width H (profiler/README.md says what H is
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
# that stand for each: torch's contiguous elementwise kernels (vectorized/unrolled), its strided
# one (elementwise_kernel: a transposing copy, repeat_interleave's copy of an expanded view), the
# vectorized and the plain CatArrayBatchedCopy (a cat with a non-contiguous input), and the
# gathers behind index_select.
MEMORY_CLASSES = {"elementwise": ("add", "copy"), "elementwise_strided": ("transpose_copy", "repeat_interleave"),
                  "cat": ("cat_kv",), "cat_strided": ("cat_kv_strided",), "gather": ("index_select",)}


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
    """Per class, from the fit rows: each (op, dtype) series is read at the powers of two near its
    sizes (a series moves a few bytes less than its nominal size) and the class takes the median
    over its series at each size."""
    rows = _fit_rows(memory)
    unknown = sorted(set(rows["op"]) - {op for ops in MEMORY_CLASSES.values() for op in ops})
    if unknown:
        raise ValueError(f"memory.csv column op: unknown {unknown}; expected one of "
                         f"{', '.join(op for ops in MEMORY_CLASSES.values() for op in ops)}")
    curves = {}
    for cls, ops in MEMORY_CLASSES.items():
        series = [(g["bytes"].to_numpy(dtype=float), g["seconds"].to_numpy(dtype=float))
                  for _, g in rows[rows["op"].isin(ops)].sort_values("bytes").groupby(["op", "dtype"])]
        if not series:
            continue
        sizes = np.unique(np.exp2(np.round(np.log2(np.concatenate([b for b, _ in series])))))
        seconds = [float(np.median([log_log_curve(size, b, t) for b, t in series])) for size in sizes]
        curves[cls] = MemoryCurve(cls, sizes, np.array(seconds))
    return curves


# ---- host work of replaced libraries (cudnn_graphs.csv) ----------------------------------------

def graph_build_seconds(graphs: pd.DataFrame) -> pd.DataFrame:
    """Per variant and shape of the fit rows: the host seconds a call that builds a graph takes
    beyond the call that finds it cached right after (`call` first or miss, `extra_s`)."""
    rows = _fit_rows(graphs)
    hits = rows[rows["call"] == "hit"].groupby(["variant", "queries", "keys"])["seconds"].median()
    builds = rows[rows["call"].isin(["first", "miss"])].copy()
    keys = list(zip(builds["variant"], builds["queries"], builds["keys"]))
    missing = [key for key in keys if key not in hits.index]
    if missing:
        raise ValueError(f"cudnn_graphs.csv: no hit row after the build of {missing[0]}: the probe times each "
                         f"shape twice (probe_cudnn_graphs.py)")
    builds["extra_s"] = builds["seconds"].to_numpy() - hits.loc[keys].to_numpy()
    return builds[["variant", "queries", "keys", "call", "extra_s"]]


def fit_host_costs(graphs: pd.DataFrame) -> dict[str, float]:
    """cuDNN attention graph builds: the first of a variant in the process, and a new shape of a
    variant met before, each the median over variants of the variant's median extra seconds."""
    extra = graph_build_seconds(graphs)
    def over_variants(call: str) -> float:
        per_variant = extra[extra["call"] == call].groupby("variant")["extra_s"].median()
        return max(float(per_variant.median()), 0.0) if len(per_variant) else 0.0
    return {"cudnn_attention_graph_first": over_variants("first"), "cudnn_attention_graph": over_variants("miss")}


# ---- PyTorch's memory-efficient attention (efficient_attention.csv) ---------------------------

def efficient_query_block(head_dim: int) -> int:
    """Queries per CTA of the fmha_cutlassF kernel PyTorch picks on sm80+ (its 64x64, 64x128 and
    32x128 tiles): what its grid.x counts blocks of."""
    return 64 if head_dim <= 128 else 32


def efficient_attention_work(frame: pd.DataFrame, slots: float) -> np.ndarray:
    """[1, waves, waves * keys * head_dim, the same for causal rows, bias bytes] per row: the CTAs
    (query blocks x heads x batch) run about `slots` at a time (waves = CTAs / slots, at least
    one: measured, time grows in proportion to CTAs past a full wave, not in whole waves), each
    streaming its keys (a causal CTA on average half its queries fewer, and paying for its mask)
    through head_dim; an additive mask is read once per query and key (bf16)."""
    head_dim = frame["head_dim"].to_numpy(dtype=float)
    queries = frame["q_len"].to_numpy(dtype=float)
    block = np.array([efficient_query_block(int(d)) for d in head_dim])
    ctas = np.ceil(queries / block) * frame["heads"].to_numpy(dtype=float) * frame["batch"].to_numpy(dtype=float)
    causal = frame["causal"].to_numpy() != 0
    keys = frame["kv_len"].to_numpy(dtype=float)
    keys = np.where(causal, np.maximum(keys - queries / 2, 1), keys)
    waves = np.maximum(ctas / slots, 1)
    bias = 2.0 * queries * frame["kv_len"].to_numpy(dtype=float) * (frame["mask"].to_numpy() != 0)
    return np.column_stack([np.ones(len(frame)), waves, waves * keys * head_dim, causal * waves * keys * head_dim,
                            bias])


@dataclass(frozen=True)
class EfficientAttentionModel:
    """seconds = c . efficient_attention_work(rows, slots), for one head_dim (the C predictor's
    efficient_attention record)."""
    head_dim: int
    slots: float
    coefficients: np.ndarray

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return efficient_attention_work(frame, self.slots) @ self.coefficients


def fit_efficient_attention(frame: pd.DataFrame, sm_count: int) -> dict[int, EfficientAttentionModel]:
    """Per head_dim: the CTAs at once (0.5 to 8 per SM, in eighths) that fit the fit rows best,
    and the non-negative coefficients at that count."""
    models = {}
    for head_dim, rows in _fit_rows(frame).groupby("head_dim", sort=True):
        slots, c = fit_with_slots(lambda s: efficient_attention_work(rows, s), rows["seconds"].to_numpy(dtype=float),
                                  [sm_count * eighths / 8 for eighths in range(4, 65)])
        models[int(head_dim)] = EfficientAttentionModel(int(head_dim), slots, c)
    return models


# ---- collectives: measured per (op, ranks) where collectives.csv exists, else MODELLED ----------

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv")
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
    if op == "all_reduce":
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
    line."""
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
    return curves, lines


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
    # Measured (op, ranks) -> curve over bytes; empty where collectives.csv is absent.
    collective_curves: dict[tuple[str, int], CollectiveCurve] = field(default_factory=dict)
    # Memory class -> curve over bytes; empty where memory.csv is absent.
    memory: dict[str, MemoryCurve] = field(default_factory=dict)
    # head_dim -> model; empty where efficient_attention.csv is absent.
    efficient_attention: dict[int, EfficientAttentionModel] = field(default_factory=dict)
    # Host work of replaced libraries (vgpu.h vgpu_host_work names) -> seconds; empty where
    # cudnn_graphs.csv is absent.
    host_costs: dict[str, float] = field(default_factory=dict)

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
    curves, collectives = ({}, CollectiveModel.modelled(sku)) if tables.collectives is None else \
        fit_collectives(tables.collectives, sku)
    return FittedModels(
        sku=tables.sku,
        gemm=GemmTable.fit(tables.gemm),
        gemm_efficiency=efficiency,
        gemm_roofline=GemmRoofline.for_sku(efficiency, sku),
        attention=AttentionModel.fit_all(tables.attention),
        attention_curves=attention_curves(tables.attention),
        attention_makespan=AttentionMakespan.fit(tables.attention, sku.sm_count),
        elementwise=fit_elementwise(tables.elementwise),
        copies=copies,
        memset=memset,
        kernels=KernelModels.fit(tables.kernels),
        collectives=collectives,
        collective_curves=curves,
        memory={} if tables.memory is None else fit_memory_curves(tables.memory),
        efficient_attention=({} if tables.efficient_attention is None
                             else fit_efficient_attention(tables.efficient_attention, sku.sm_count)),
        host_costs={} if tables.cudnn_graphs is None else fit_host_costs(tables.cudnn_graphs),
    )


# ---- SKUs without measurements: the measured SKU's models, carried by the roofline ----------------

def transfer(source: FittedModels, source_sku: Sku, target_sku: Sku) -> FittedModels:
    """A profiled SKU's models for an unprofiled one. Every measured time t at a point that does
    `flops` of arithmetic and moves `bytes` is scaled by roof(target) / roof(source), roof =
    max(flops / peak, bytes / bandwidth) from each SKU's datasheet (conf/hardware): a point that
    was memory-bound scales with the bandwidth ratio, a compute-bound one with the peak ratio.
    Kernels outside GEMM and attention are taken as memory-bound; host copies (PCIe) and the
    modelled collectives come from the target's own figures (measured collectives are not carried:
    the link, not the chip, sets them). Nothing here is checked against a
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
    return FittedModels(
        sku=target_sku.sku,
        gemm=GemmTable(curves),
        gemm_efficiency=efficiency,
        gemm_roofline=GemmRoofline.for_sku(efficiency, target_sku),
        attention=attention,
        attention_curves=attention_curves_,
        # The same programs per SM; tiles are tensor-core math on one SM, bytes are HBM's.
        attention_makespan=None if source.attention_makespan is None else AttentionMakespan(
            source.attention_makespan.backend, source.attention_makespan.slots * target_sku.sm_count / source_sku.sm_count,
            source.attention_makespan.coefficients * np.array([1.0, per_sm_flops, per_sm_flops, bandwidth])),
        elementwise={k: LinearModel(m.a, m.b * bandwidth) for k, m in source.elementwise.items()},
        copies=on_device,
        memset=dataclasses.replace(source.memset, bytes_per_s=source.memset.bytes_per_s / bandwidth),
        kernels=KernelModels({name: LinearModel(m.a, m.b * bandwidth) for name, m in source.kernels.by_name.items()},
                             LinearModel(source.kernels.default.a, source.kernels.default.b * bandwidth),
                             source.kernels.max_threads),
        collectives=CollectiveModel.modelled(target_sku),
        memory={cls: dataclasses.replace(c, seconds=c.seconds * bandwidth) for cls, c in source.memory.items()},
        # The same CTAs per SM; a wave's time scales with one SM's arithmetic rate, the mask's
        # read with bandwidth.
        efficient_attention={d: EfficientAttentionModel(
            d, m.slots * target_sku.sm_count / source_sku.sm_count,
            m.coefficients * np.array([1.0, 1.0, per_sm_flops, per_sm_flops, bandwidth]))
            for d, m in source.efficient_attention.items()},
        # The host's and the library's work, not the GPU's: the same on the target.
        host_costs=dict(source.host_costs),
    )
