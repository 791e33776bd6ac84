"""The measured tables of one GPU SKU, loaded from emulator/predictor/data/<sku>/ and checked.

The tables are written by the profiler, emulator/profiler/ (its README.md gives their columns):
profile_gpu.py (gemm, attention, elementwise, copy, meta.json) and forward_pass.py --kernel-profile
(forward_pass/kernels.csv, stored gzipped: 14 MB of text compresses 70 times). Every table comes back with a `split` column of "fit" or "holdout". kernels.csv has
none of its own: its split is by composition (KERNEL_FIT_COMPOSITIONS), so that whole forward
passes of the other compositions stay unseen by every fitted model.

collectives.csv (with meta_collectives.json), from emulator/profiler/profile_collectives.py on a machine of
several GPUs, is optional: a SKU without it keeps the modelled collectives (models.py). Only NCCL
rows are data; a table from a CPU test run (backend gloo) is refused. memory.csv and
efficient_attention.csv (with meta_memory_bound.json), from emulator/profiler/profile_memory_bound.py, are
optional too: without them memory-bound kernels are charged at the copy rate and PyTorch's
memory-efficient attention as flash attention of the same batch. cudnn_graphs.csv (with
cudnn_graphs_meta.json), from emulator/profiler/probe_cudnn_graphs.py, is the host time of cuDNN SDPA graph
builds; without it a build costs the emulated host nothing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emulator.host_cpu import read_figure
from emulator.paths import PREDICTOR_DATA as DATA_DIR

# Table name -> (file under the SKU's directory, columns the predictor reads).
TABLE_FILES = {
    "gemm": ("gemm.csv", ["m", "n", "k", "batch", "trans_a", "trans_b", "dtype", "seconds",
                          "split"]),
    "attention": ("attention.csv", ["backend", "phase", "num_seqs", "num_heads", "num_kv_heads",
                                    "head_dim", "dtype", "num_query_tokens", "composition",
                                    "seconds", "split"]),
    "elementwise": ("elementwise.csv", ["op", "tokens", "hidden", "dtype", "seconds", "split"]),
    "copy": ("copy.csv", ["direction", "bytes", "pinned", "seconds", "split"]),
    "kernels": ("forward_pass/kernels.csv.gz", ["model", "composition", "kernel_name", "grid_x",
                                             "grid_y", "grid_z", "block_x", "block_y", "block_z",
                                             "duration_us"]),
}
# Columns holding words; every other column read must be numeric.
TEXT_COLUMNS = {"dtype", "split", "backend", "phase", "composition", "op", "direction", "model",
                "kernel_name", "kind", "variant", "call"}
META_FILE = "meta.json"
SPLITS = ("fit", "holdout")
# Tables a SKU may lack: name -> (file, columns read, its metadata file).
OPTIONAL_TABLES = {
    "collectives": ("collectives.csv", ["op", "ranks", "bytes", "dtype", "backend", "seconds",
                                        "split"], "meta_collectives.json"),
    "memory": ("memory.csv", ["op", "dtype", "bytes", "seconds", "split"], "meta_memory_bound.json"),
    "efficient_attention": ("efficient_attention.csv", ["kind", "batch", "heads", "head_dim", "q_len",
                                                        "kv_len", "mask", "causal", "seconds", "split"],
                            "meta_memory_bound.json"),
    "cudnn_graphs": ("cudnn_graphs.csv", ["variant", "heads", "head_dim", "queries", "keys", "masked", "causal",
                                          "call", "seconds", "gpu_seconds", "split"],
                     "cudnn_graphs_meta.json"),
    "runtime_calls": ("runtime_calls.csv", ["call", "calls", "seconds", "split"], "meta.json"),
}
HOST_CPU_FILE = "host_cpu.json"
COLLECTIVE_OPS_MEASURED = ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
# Published node timings (emulator/profiler/published_collectives.py) of a SKU whose collectives were never
# measured here: NCCL's ops, and vLLM's custom all-reduce kernel (backend vllm_custom).
PUBLISHED_DIR = DATA_DIR / "published"
PUBLISHED_COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "custom_all_reduce")
PUBLISHED_COLLECTIVE_BACKENDS = ("nccl", "vllm_custom")

# The forward-pass compositions whose kernels the generic-kernel models are fitted on; the others
# (decode_b64_ctx1024, prefill_p512, mixed_p512_d32_ctx1024) are held out.
KERNEL_FIT_COMPOSITIONS = ("decode_b8_ctx1024", "decode_b256_ctx1024", "prefill_p2048",
                           "mixed_p2048_d128_ctx2048")


class NoMeasurements(ValueError):
    """A SKU without a measured table directory."""


@dataclass(frozen=True)
class Tables:
    sku: str
    directory: Path
    gemm: pd.DataFrame
    attention: pd.DataFrame
    elementwise: pd.DataFrame
    copy: pd.DataFrame
    # Every GPU kernel of the profiled forward passes, with `seconds` (from duration_us),
    # `threads` (grid x block, all dimensions) and `split` (by composition) added.
    kernels: pd.DataFrame
    meta: dict
    # sha256 over the files read, in a fixed order: what a model file is rebuilt from.
    sha256: str
    # NCCL collectives by (op, ranks, bytes) (collectives.csv), or None where none were measured.
    collectives: pd.DataFrame | None = None
    # Memory-bound torch ops by bytes moved (memory.csv), or None.
    memory: pd.DataFrame | None = None
    # PyTorch's memory-efficient SDPA kernel over batches (efficient_attention.csv), or None.
    efficient_attention: pd.DataFrame | None = None
    # Host seconds of cuDNN SDPA calls that build a graph and that find one, and their kernels' GPU
    # seconds (cudnn_graphs.csv), or None.
    cudnn_graphs: pd.DataFrame | None = None
    # The CUDA runtime's calls in a real step, microseconds each (runtime_calls.csv), or None.
    runtime_calls: pd.DataFrame | None = None
    # The server host's seconds per round of emulator/host_cpu.py's step work (host_cpu.json): the
    # speed that the host costs are charged at, or None.
    host_cpu_s: float | None = None


def measured_skus() -> list[str]:
    """SKUs with a complete table directory."""
    return sorted(d.name for d in DATA_DIR.iterdir()
                  if d.is_dir() and all((d / name).is_file() for name in _source_files()))


def load(sku: str) -> Tables:
    directory = DATA_DIR / sku
    missing = [name for name in _source_files() if not (directory / name).is_file()]
    if missing:
        what = (f"{directory} lacks {', '.join(missing)}" if directory.is_dir()
                else f"there is no {directory}")
        raise NoMeasurements(
            f"no predictor measurements for SKU {sku!r}: {what}. SKUs with measurements: "
            f"{', '.join(measured_skus()) or 'none'}. Measure one with "
            f"emulator/profiler/ (README.md there) on a real GPU of that SKU.")
    frames = {name: _read_table(directory / file, columns)
              for name, (file, columns) in TABLE_FILES.items()}
    kernels = frames["kernels"]
    kernels["seconds"] = kernels["duration_us"] * 1e-6
    kernels["threads"] = (kernels["grid_x"] * kernels["grid_y"] * kernels["grid_z"]
                          * kernels["block_x"] * kernels["block_y"] * kernels["block_z"])
    kernels["split"] = np.where(kernels["composition"].isin(KERNEL_FIT_COMPOSITIONS),
                                "fit", "holdout")
    absent = set(KERNEL_FIT_COMPOSITIONS) - set(kernels["composition"])
    if absent:
        raise ValueError(f"{directory / TABLE_FILES['kernels'][0]}: no rows for the fitting "
                         f"compositions {sorted(absent)}")
    for name in ("gemm", "attention", "elementwise", "copy"):
        _check_split(directory / TABLE_FILES[name][0], frames[name])
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{meta_path}: not valid JSON ({error})") from error
    return Tables(sku=sku, directory=directory, meta=meta, sha256=_sha256(directory),
                  collectives=load_collectives(directory / OPTIONAL_TABLES["collectives"][0]),
                  memory=_read_optional(directory / OPTIONAL_TABLES["memory"][0], "memory"),
                  efficient_attention=_read_optional(directory / OPTIONAL_TABLES["efficient_attention"][0],
                                                     "efficient_attention"),
                  cudnn_graphs=_read_optional(directory / OPTIONAL_TABLES["cudnn_graphs"][0], "cudnn_graphs"),
                  runtime_calls=_read_optional(directory / OPTIONAL_TABLES["runtime_calls"][0], "runtime_calls"),
                  host_cpu_s=_host_cpu_seconds(directory / HOST_CPU_FILE), **frames)


def _host_cpu_seconds(path: Path) -> float | None:
    figure = read_figure(path)
    return None if figure is None else float(figure["seconds"])


def _read_optional(path: Path, name: str) -> pd.DataFrame | None:
    """The optional table `name` at path, checked, or None if there is no such file."""
    if not path.is_file():
        return None
    frame = _read_table(path, OPTIONAL_TABLES[name][1])
    _check_split(path, frame)
    return frame


def load_collectives(path: Path, allow_gloo: bool = False) -> pd.DataFrame | None:
    """collectives.csv checked, or None if there is no such file. `allow_gloo` is for tests of the
    profiler's CPU path only: gloo rows are never GPU data."""
    frame = _read_optional(path, "collectives")
    if frame is None:
        return None
    backends = set(frame["backend"])
    if backends != {"nccl"} and not (allow_gloo and backends == {"gloo"}):
        raise ValueError(f"{path}: column backend must be nccl (GPU measurements), got "
                         f"{sorted(backends)}; a gloo table is a CPU test run, never data")
    unknown = sorted(set(frame["op"]) - set(COLLECTIVE_OPS_MEASURED))
    if unknown:
        raise ValueError(f"{path}: column op: unknown {unknown}; expected "
                         f"{', '.join(COLLECTIVE_OPS_MEASURED)}")
    if not ((frame["ranks"] >= 2) & (frame["bytes"] > 0)).all():
        raise ValueError(f"{path}: ranks must be at least 2 and bytes positive on every row")
    return frame


def published_collectives_path(sku: str) -> Path:
    return PUBLISHED_DIR / f"collectives_{sku}.csv"


def load_published_collectives(sku: str) -> tuple[pd.DataFrame, dict] | None:
    """(the published collectives table of `sku`, its source record), or None if there is none."""
    path = published_collectives_path(sku)
    frame = _read_optional(path, "collectives")
    if frame is None:
        return None
    unknown = sorted(set(frame["op"]) - set(PUBLISHED_COLLECTIVE_OPS))
    backends = sorted(set(frame["backend"]) - set(PUBLISHED_COLLECTIVE_BACKENDS))
    if unknown or backends:
        raise ValueError(f"{path}: columns op and backend: unknown {unknown + backends}; expected ops "
                         f"{', '.join(PUBLISHED_COLLECTIVE_OPS)}, backends {', '.join(PUBLISHED_COLLECTIVE_BACKENDS)}")
    if not ((frame["ranks"] >= 2) & (frame["bytes"] > 0)).all():
        raise ValueError(f"{path}: ranks must be at least 2 and bytes positive on every row")
    return frame, json.loads(path.with_suffix(".json").read_text())


def _source_files() -> list[str]:
    return sorted([file for file, _ in TABLE_FILES.values()] + [META_FILE])


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    blank = [c for c in columns if frame[c].isna().any()]
    if blank:
        raise ValueError(f"{path}: empty values in column(s) {', '.join(blank)}")
    wordy = [c for c in columns if c not in TEXT_COLUMNS
             and not pd.api.types.is_numeric_dtype(frame[c])]
    if wordy:
        raise ValueError(f"{path}: column(s) {', '.join(wordy)} must hold numbers only")
    time_column = "seconds" if "seconds" in columns else "duration_us"
    times = frame[time_column].to_numpy(dtype=float)
    if not (np.isfinite(times) & (times > 0)).all():
        bad = frame.index[~(np.isfinite(times) & (times > 0))][0]
        raise ValueError(f"{path}: column {time_column} must be positive and finite; "
                         f"row {bad + 2} has {frame[time_column][bad]!r}")
    return frame


def _check_split(path: Path, frame: pd.DataFrame) -> None:
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"{path}: column split must be one of {', '.join(SPLITS)}, got {bad}")
    if not (frame["split"] == "fit").any():
        raise ValueError(f"{path}: no rows with split=fit to fit a model on")


def sha256(sku: str) -> str:
    """The hash of a SKU's table files, without parsing them (cheap: the model file is checked
    against it at every start of an emulated process)."""
    return _sha256(DATA_DIR / sku)


def _sha256(directory: Path) -> str:
    """Over the required files and whichever optional ones exist (a SKU without collectives hashes
    as it did before they existed)."""
    digest = hashlib.sha256()
    names = {name for file, _, meta in OPTIONAL_TABLES.values() for name in (file, meta)} | {HOST_CPU_FILE}
    optional = sorted(name for name in names if (directory / name).is_file())
    for name in _source_files() + optional:
        digest.update(name.encode() + b"\0")
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()
