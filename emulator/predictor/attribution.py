"""Where a run's virtual GPU time went, by kernel family.

Each emulated process writes its totals per (kind, name) at exit (REVATI_VGPU_STATS; kernels under
their demangled names, emulator/vgpu/time/stats.c). This sorts them into the families the predictor
knows, so a run can say, for example, that 61% of its GPU time was GEMMs and 22% attention.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import pandas as pd

# Kernel families by name, first match wins; the patterns cover the names vLLM, SGLang and
# PyTorch give their kernels (checked against the H200 profiles' kernel lists).
KERNEL_FAMILIES = (
    ("attention", r"flash_fwd|flash_attn|FlashAttn|attention|paged_attention|fmha|mla_|decode_kernel"),
    ("gemm", r"^nvjet|gemm|cutlass.*(sm90|gemm)|splitKreduce|cublas"),
    ("moe", r"moe|topk_softmax|expert"),
    ("norm", r"rms_?norm|layer_?norm|layernorm"),
    ("rotary", r"rotary|rope"),
    ("activation", r"silu|gelu|act_and_mul|swiglu"),
    ("kv_cache", r"reshape_and_cache|cache_kernel|concat_and_cache"),
    ("sampling", r"sampl|argmax|softmax|topk|top_k|top_p|multinomial|penalt"),
    ("collective_kernel", r"nccl|all_?reduce|allgather|custom_ar"),
    ("elementwise", r"elementwise|vectorized|unrolled|CatArray|index|copy|fill|reduce_kernel"),
)
OTHER = "other_kernel"


def family(kind: str, name: str) -> str:
    """The family of one (kind, name) row of a stats file."""
    if kind != "kernel":
        return kind                 # gemm, collective, copy, memset, graph, host_fn
    for label, pattern in KERNEL_FAMILIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return OTHER


def read_stats(paths: Iterable[Path]) -> pd.DataFrame:
    """All processes' stats files as one table (kind, name, count, seconds, family)."""
    frames = [pd.read_csv(path, keep_default_na=False) for path in paths if Path(path).stat().st_size]
    if not frames:
        return pd.DataFrame(columns=["kind", "name", "count", "seconds", "family"])
    stats = pd.concat(frames, ignore_index=True)
    missing = {"kind", "name", "count", "seconds"} - set(stats.columns)
    if missing:
        raise ValueError(f"stats files lack columns {sorted(missing)}: not written by the vGPU library")
    stats["family"] = [family(k, n) for k, n in zip(stats["kind"], stats["name"])]
    return stats


# Rows that are not GPU time: host time charged for a replaced library's own work, and the
# clock's catch-ups with the latest send anywhere.
NOT_GPU_KINDS = ("host_work", "catch_up")


def host_work(stats: pd.DataFrame) -> pd.DataFrame:
    """Host time charged for work a replaced library does on the host (cudnn.c: graph builds), by
    what: events and seconds."""
    return _events(stats, "host_work")


def catch_ups(stats: pd.DataFrame) -> pd.DataFrame:
    """Virtual time threads gained by catching up with the latest send anywhere, summed over the
    processes (clock.c): after a sleep the library did not see (unseen_sleep: a lock) and on a
    receive from a channel it cannot name (unnamed_channel). An upper bound on how much of the
    timeline the host's scheduling decided rather than the messages: what to look at when a
    deployment's numbers move with the host's core count."""
    return _events(stats, "catch_up")


def _events(stats: pd.DataFrame, kind: str) -> pd.DataFrame:
    rows = stats[stats["kind"] == kind]
    return rows.groupby("name", as_index=False).agg(events=("count", "sum"), seconds=("seconds", "sum"))


def by_family(stats: pd.DataFrame) -> pd.DataFrame:
    """Launches, seconds and share of GPU time per family, largest first. A replayed CUDA graph
    counts as its nodes (stats.c records each); only a graph nested in another stays whole.
    Host work charged for replaced libraries is not GPU time (host_work()), nor are the clock's
    catch-ups (catch_ups())."""
    table = stats[~stats["kind"].isin(NOT_GPU_KINDS)].groupby("family", as_index=False).agg(launches=("count", "sum"), seconds=("seconds", "sum"))
    total = table["seconds"].sum()
    table["share"] = table["seconds"] / total if total else 0.0
    return table.sort_values("seconds", ascending=False, ignore_index=True)
