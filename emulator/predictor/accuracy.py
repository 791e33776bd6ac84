"""Held-out accuracy of the fitted models, from the committed tables alone (no GPU).

Every model is fitted on the `fit` rows and scored on the `holdout` rows: GEMMs at token counts off
the fitting grid, attention at batch compositions off it, and so on (emulator/profiler/README.md). The
error of a row is |predicted / measured - 1|; a group reports its count, median and 90th
percentile. Rows for what is modelled rather than measured (collectives where collectives.csv is
absent, and broadcast always) carry a count of 0 so that the gap shows in the table. FlashAttention 3
is modelled too, calibrated to published figures: on their SKU its rows are the fit's residual
against them, elsewhere a count of 0.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from emulator.hardware import load_sku
from emulator.predictor import modelfile, models, native, tables
from emulator.predictor.models import FittedModels, GemmKey, GemmTable
from emulator.predictor.tables import Tables

COLUMNS = ["family", "group", "count", "median", "p90", "target", "meets", "note"]
# The bar for GEMM and attention: median and p90 of the absolute relative error.
TARGET_MEDIAN = 0.05
TARGET_P90 = 0.15
# Its bar for collectives: median only.
COLLECTIVE_TARGET_MEDIAN = 0.10


def accuracy_table(sku: str) -> pd.DataFrame:
    """The held-out error table of a measured SKU (tables.NoMeasurements if it has none)."""
    measured = tables.load(sku)
    return accuracy_of(measured, models.fit(measured, load_sku(sku)), modelfile.ensure_model_file(sku))


def accuracy_of(measured: Tables, fitted: FittedModels, model_file: Path) -> pd.DataFrame:
    """`model_file` is what `fitted` writes (modelfile.py): the emulator's own predictor reads it."""
    rows = (_gemm(measured.gemm, fitted) + _attention(measured.attention, fitted, model_file)
            + _elementwise(measured.elementwise, fitted) + _copies(measured.copy, fitted)
            + _kernels(measured.kernels, fitted) + _flash_attention_3(fitted)
            + _collectives(models.collective_timings(measured, measured.sku)[0], fitted, model_file)
            + _memory(measured.memory, model_file) + _efficient_attention(measured.efficient_attention, fitted, model_file)
            + _cudnn_attention(measured.cudnn_graphs, model_file))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(family: str, group: str, predicted, measured, note: str = "",
         targeted: bool = False, target_median: float = TARGET_MEDIAN,
         target_p90: float | None = TARGET_P90) -> list:
    errors = np.abs(np.asarray(predicted, dtype=float) / np.asarray(measured, dtype=float) - 1)
    median, p90 = float(np.median(errors)), float(np.percentile(errors, 90))
    target = meets = ""
    if targeted:
        target = f"<={target_median:.0%} / " + ("-" if target_p90 is None else f"<={target_p90:.0%}")
        meets = "yes" if median <= target_median and (target_p90 is None or p90 <= target_p90) else "NO"
    return [family, group, len(errors), median, p90, target, meets, note]


def _holdout(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["split"] == "holdout"]


def _gemm(gemm: pd.DataFrame, fitted: FittedModels) -> list[list]:
    out = []
    held = _holdout(gemm)
    for dtype, group in held.groupby("dtype", sort=True):
        keys = [GemmKey(str(dtype), r.trans_a, r.trans_b, r.m, r.k, r.batch)
                for r in group.itertuples()]
        measured = group["seconds"].to_numpy()
        curve = [fitted.gemm.predict(key, n) for key, n in zip(keys, group["n"])]
        out.append(_row("gemm", str(dtype), curve, measured,
                        "measured (m, k); n off the fitting grid", targeted=True))
        # Each (m, k) in turn predicted from the others: how the nearest-key scaling does.
        unseen = [_without(fitted.gemm, key).predict(key, n) for key, n in zip(keys, group["n"])]
        out.append(_row("gemm unseen (m, k)", str(dtype), unseen, measured,
                        "leave-one-shape-out: nearest measured key, scaled by m*k"))
        roofline = [fitted.gemm_roofline.predict(key.dtype, key.m, n, key.k, key.batch)
                    for key, n in zip(keys, group["n"])]
        out.append(_row("gemm roofline", str(dtype), roofline, measured,
                        "fallback for unprofiled SKUs: datasheet peaks x fitted efficiencies"))
    return out


def _without(table: GemmTable, key: GemmKey) -> GemmTable:
    return GemmTable({k: curve for k, curve in table.curves.items() if k != key})


def _attention(attention: pd.DataFrame, fitted: FittedModels, model_file: Path) -> list[list]:
    """Batches of like sequences as the emulator charges them (the C predictor's interpolation);
    vLLM's mixed and chunked batches as published by its plugin (its programs' schedule over the SMs);
    other batches by the linear model the predictor falls back to."""
    out = []
    held = _holdout(attention).reset_index(drop=True)
    features = models.attention_row_features(held)
    for (backend, phase), index in held.groupby(["backend", "phase"], sort=True).indices.items():
        rows = held.iloc[index]
        if phase in ("decode", "prefill"):
            predicted = [native.attention_seconds(model_file, backend, r.num_seqs, r.query_len, r.context_len,
                                                  r.num_heads, r.num_kv_heads, r.head_dim)
                         for r in rows.itertuples()]
            note = ("measured kernel; CTA waves, FA2's split-KV choice" if backend == "sdpa_flash" and phase == "decode"
                    and fitted.flash_decode is not None else "measured kernel; interpolated")
        elif fitted.attention_makespan is not None and backend == fitted.attention_makespan.backend:
            predicted = [native.published_attention_seconds(model_file, models.parse_composition(r.composition),
                                                            r.num_heads, r.num_kv_heads, r.head_dim)
                         for r in rows.itertuples()]
            note = "measured kernel; its programs' schedule over the SMs (grid order, KV tiles)"
        else:
            predicted = fitted.attention[backend].predict(features[index])
            note = "measured kernel; linear in work"
        out.append(_row("attention", f"{backend} {phase}", np.asarray(predicted),
                        rows["seconds"].to_numpy(), note, targeted=True))
    return out


def _elementwise(elementwise: pd.DataFrame, fitted: FittedModels) -> list[list]:
    out = []
    held = _holdout(elementwise)
    nbytes = models.elementwise_row_bytes(held)
    for (op, dtype), index in held.reset_index(drop=True).groupby(
            ["op", "dtype"], sort=True).indices.items():
        predicted = fitted.elementwise[op, dtype].predict(nbytes[index])
        out.append(_row("elementwise", f"{op} {dtype}", predicted,
                        held["seconds"].to_numpy()[index], "torch eager op, a + b*bytes"))
    return out


def _copies(copy: pd.DataFrame, fitted: FittedModels) -> list[list]:
    out = []
    for (direction, pinned), group in _holdout(copy).groupby(["direction", "pinned"], sort=True):
        model = fitted.memset if direction == "memset" else fitted.copies[direction, pinned]
        label = {"memset": "memset", "D2D": "D2D"}.get(
            direction, f"{direction} {'pinned' if pinned else 'pageable'}")
        out.append(_row("copy", label, model.predict(group["bytes"].to_numpy(dtype=float)),
                        group["seconds"].to_numpy(), "latency + bytes / rate"))
    return out


def _kernels(kernels: pd.DataFrame, fitted: FittedModels) -> list[list]:
    held = _holdout(kernels)
    held = held[held["kernel_name"].map(models.is_generic_kernel)]
    predicted = np.array([fitted.kernels.predict(name, threads)
                          for name, threads in zip(held["kernel_name"], held["threads"])])
    measured = held["seconds"].to_numpy()
    steps = pd.DataFrame({"model": held["model"].to_numpy(), "composition":
                          held["composition"].to_numpy(), "predicted": predicted,
                          "measured": measured}).groupby(["model", "composition"]).sum()
    compositions = ", ".join(sorted(held["composition"].unique()))
    return [_row("kernels", "per launch", predicted, measured,
                 f"non-GEMM, non-attention kernels of held-out steps ({compositions})"),
            _row("kernels", "sum per step", steps["predicted"], steps["measured"],
                 "their total per (model, composition)")]


def _flash_attention_3(fitted: FittedModels) -> list[list]:
    """FlashAttention 3's model against the published figures it was fitted to, and each sequence
    length's figures predicted by a fit to the others; on other SKUs, a row saying it is carried.
    The Python model charges the paper's launches (the C predictor only vLLM's, which the parity
    tests hold to the Python model)."""
    fa3 = fitted.flash_attention_3
    source = f"FA3 paper, {fa3.calibrated_on.upper()} SXM5, bf16 forward"
    if fa3.calibrated_on != fitted.sku:
        return [["attention", "flash_attn_3", 0, np.nan, np.nan, "", "",
                 f"MODELLED, not measured: calibrated to published figures ({source}) and carried from "
                 f"the {fa3.calibrated_on.upper()} calibration by one SM's arithmetic rate"]]
    published = models.fa3_published()
    out = [_row("attention", "flash_attn_3", models.fa3_benchmark_predictions(fa3, published), published["seconds"],
                f"calibrated to published figures ({source}), not measured here: the fit's residual")]
    predicted, figures = [], []
    for _, held in published.groupby("seqlen", sort=True):
        others = models.fit_flash_attention_3(published.drop(held.index), load_sku(fa3.calibrated_on), fa3.launch_s)
        predicted += list(models.fa3_benchmark_predictions(others, held))
        figures += list(held["seconds"])
    out.append(_row("attention unseen seqlen", "flash_attn_3", predicted, figures,
                    "leave-one-sequence-length-out: each length's 6 figures by a fit to the other lengths"))
    return out


def _modelled_collectives(group: str) -> list:
    return ["collective", group, 0, np.nan, np.nan, "", "",
            "MODELLED, not measured (no multi-GPU machine): ring over NVLink, "
            f"{models.COLLECTIVE_LATENCY_S * 1e6:.0f} us + bytes x factor / "
            f"({models.NVLINK_BUS_EFFICIENCY:.0%} of NVLink per direction)"]


def _collectives(collectives: pd.DataFrame | None, fitted: FittedModels, model_file: Path) -> list[list]:
    """Held-out rows per (op, ranks) as the emulator charges them (the C predictor, reading the
    model file's collective_curve records), and the pooled `collective` line each op falls back to
    for group sizes never measured. Without timings, one MODELLED row."""
    if collectives is None:
        return [_modelled_collectives("all ops")]
    out = []
    held = _holdout(collectives)
    origin = fitted.collectives_origin.split(":")[0]
    for (op, ranks), group in held.groupby(["op", "ranks"], sort=True):
        predicted = [native.collective_seconds(model_file, str(op), b, int(ranks)) for b in group["bytes"]]
        out.append(_row("collective", f"{op} x{ranks}", predicted, group["seconds"].to_numpy(),
                        f"{origin} ({', '.join(sorted(set(group['backend'])))}); log-log interpolated "
                        "over bytes", targeted=True, target_median=COLLECTIVE_TARGET_MEDIAN,
                        target_p90=None))
    for op, group in held.groupby("op", sort=True):
        line = fitted.collectives[str(op)]
        out.append(_row("collective line", str(op),
                        [line.predict(b, int(r)) for b, r in zip(group["bytes"], group["ranks"])],
                        group["seconds"].to_numpy(),
                        "fallback for group sizes not measured: latency + bus bytes / rate, "
                        "group sizes pooled"))
    unmeasured = [op for op in models.COLLECTIVE_OPS if not fitted.collectives[op].measured]
    if unmeasured:
        out.append(_modelled_collectives(", ".join(unmeasured)))
    return out


def _memory(memory: pd.DataFrame | None, model_file: Path) -> list[list]:
    """Held-out sizes of each memory.csv op, charged by its class's curve (the C predictor)."""
    if memory is None:
        return [["memory", "all ops", 0, np.nan, np.nan, "", "",
                 "not measured on this SKU (no memory.csv): the model file carries another SKU's curves "
                 "(its header says whose), else the D2D copy rate"]]
    out = []
    for (op, dtype), group in _holdout(memory).groupby(["op", "dtype"], sort=True):
        if op in models.MEMCPY_OPS:     # a D2D cudaMemcpyAsync, no kernel: charged as the emulator charges those
            predicted = [native.d2d_copy_seconds(model_file, b / 2) for b in group["bytes"]]
            note = "a D2D cudaMemcpyAsync (torch's copy_ of a contiguous tensor), charged copy.csv's D2D line"
        else:
            classes = [models.memory_class(op, dtype, b) for b in group["bytes"]]
            predicted = [native.memory_seconds(model_file, cls, b) for cls, b in zip(classes, group["bytes"])]
            note = f"by bytes moved, {' / '.join(dict.fromkeys(classes))} curve"
        out.append(_row("memory", f"{op} {dtype}", predicted, group["seconds"].to_numpy(),
                        note + " (64 KiB-2 GiB)", targeted=True))
    return out


def _efficient_attention(frame: pd.DataFrame | None, fitted: FittedModels, model_file: Path) -> list[list]:
    """Held-out batches of PyTorch's memory-efficient SDPA kernel, charged by its work."""
    if frame is None:
        return [["attention", "sdpa_efficient", 0, np.nan, np.nan, "", "",
                 "not measured on this SKU (no efficient_attention.csv): the model file carries another "
                 "SKU's model (its header says whose), else sdpa_flash on the same batch"]]
    def charged(path: Path, rows: pd.DataFrame) -> list[float]:
        return [native.efficient_attention_seconds(
            path, r.batch, r.heads, r.q_len, r.kv_len, r.head_dim, bool(r.mask), bool(r.causal),
            math.ceil(r.q_len / models.efficient_query_block(r.head_dim))) for r in rows.itertuples()]

    out = []
    held = _holdout(frame)
    for kind, group in held.groupby("kind", sort=True):
        out.append(_row("attention", f"sdpa_efficient {kind}", charged(model_file, group), group["seconds"].to_numpy(),
                        "measured kernel; its CTAs' schedule over the SMs (grid order, key blocks, causal "
                        "diagonal, mask reads)", targeted=True))
    # Each head size in turn charged by the others' models, as one never measured would be.
    unseen_predicted, unseen_measured = [], []
    with tempfile.TemporaryDirectory(prefix="revati-accuracy-") as tmp:
        for head_dim, group in held.groupby("head_dim", sort=True):
            others = {d: m for d, m in fitted.efficient_attention.items() if d != head_dim}
            if not others:
                continue
            path = Path(tmp) / f"without_d{head_dim}.model"
            path.write_text(modelfile.render(dataclasses.replace(fitted, efficient_attention=others)))
            unseen_predicted += charged(path, group)
            unseen_measured += list(group["seconds"])
    if unseen_measured:
        out.append(_row("attention unseen head_dim", "sdpa_efficient", unseen_predicted, unseen_measured,
                        "leave-one-head-size-out: the nearest measured head size's model, scaled by "
                        "head_dim (between two measured sizes the predictor interpolates instead)"))
    return out


def _cudnn_attention(graphs: pd.DataFrame | None, model_file: Path) -> list[list]:
    """Held-out cached calls of cuDNN's SDPA forward with an additive mask, charged as cudnn.c's
    launch (models.cudnn_attention_rows says which calls, and whence their kernel time)."""
    if graphs is None:
        return [["attention", "cudnn_sdpa masked", 0, np.nan, np.nan, "", "",
                 "not measured on this SKU (no cudnn_graphs.csv): the model file carries another SKU's model "
                 "(its header says whose), else sdpa_flash on the same batch"]]
    held = _holdout(models.cudnn_attention_rows(graphs))
    charged = [native.cudnn_attention_seconds(model_file, r.batch, r.heads, r.q_len, r.kv_len, r.head_dim,
                                              bool(r.causal), True) for r in held.itertuples()]
    return [_row("attention", "cudnn_sdpa masked", charged, held["seconds"].to_numpy(),
                 "kernel = CUDA events - host time of cached calls; by CTA waves, keys, head_dim, mask bytes; "
                 "head_dim 64/128, 32 heads, one sequence, not causal", targeted=True)]


def _percent(value: float) -> str:
    return "-" if np.isnan(value) else f"{value * 100:.1f}%"


def _cells(table: pd.DataFrame) -> list[list[str]]:
    return [[r.family, r.group, str(r.count), _percent(r.median), _percent(r.p90), r.target,
             r.meets, r.note] for r in table.itertuples()]


# How the table's flash_attn_3 rows come about, in words.
FLASH_ATTENTION_3 = (
    "**FlashAttention 3 is modelled, not measured.** vLLM's default attention on Hopper (H100, H200) is "
    "FlashAttention 3, which cannot run on the lent GPUs, so no FA3 kernel was ever timed here. Its "
    "kernels read the batch from device memory; revati-tune's vLLM plugin publishes each step's batch "
    "(query and context length of every sequence, heads, head size) to the vGPU library, which works out "
    "FA3's CTAs for it as vLLM launches the kernel (FA3's Hopper tile sizes for the head size, query heads "
    "packed per KV head, its split-KV heuristic, its persistent scheduler's longest-first order) and charges "
    "every FA3 forward kernel the SKU's kernel floor plus the makespan of those CTAs over the SMs, or the "
    "time its K/V and Q/O bytes take on the SKU's measured memory curve where that is longer (decodes), "
    "re-charged at every CUDA graph replay. The CTAs' costs (per Q and O element, per MMA element for each "
    "head size, extra per MMA element when causal, per element of the masked diagonal blocks) are fitted to "
    "the forward throughput the FlashAttention-3 paper published for an H100 SXM5 (Shah et al. 2024, 36 "
    "figures: head sizes 64, 128 and 256, causal or not, 512 to 16k tokens a sequence; "
    "`emulator/predictor/data/published/fa3_h100.csv`): the `flash_attn_3` rows give the fit's residual "
    "and a leave-one-sequence-length-out check on the H100. Other SKUs carry the H100 calibration by one "
    "SM's arithmetic rate (an H200's is the H100's) with their own memory curve. The paper's benchmark has "
    "no paged KV cache, grouped-query heads, decodes or splits: those parts of the model follow FA3's "
    "source and are not validated against a real FA3 launch.")

HEADER = ["family", "group", "count", "median", "p90", "target (median / p90)", "meets", "note"]

# Why a targeted row misses, by (family, group) or (family, the group's first word): what the table
# alone cannot say.
MISS_REASONS = {
    ("memory", "copy"): (
        "torch's `copy_` of a contiguous tensor is a device-to-device `cudaMemcpyAsync`, not a kernel, and is "
        "charged as the emulator charges every D2D memcpy: copy.csv's line, 5.5 us below a few MiB (eager "
        "copies back to back). These rows time memcpys back to back in a CUDA graph of nothing else, 1.2 us at "
        "64 KiB. Charged those times instead, the whole engine forward passes on an H200 "
        "(forward_pass_h200.md) got worse, 13 instead of 15 of 21 steps within 5%: a memcpy among kernels "
        "costs more than among memcpys, and no table measures one there yet."),
    ("memory", "index_select"): (
        "ATen's index_select runs its small-index kernel for at most 16 indices (charged on a curve of its "
        "own, gather_small). The misses left are held-out sizes of 8-32 MiB, between fit sizes 4x apart "
        "where the benchmark's operands leave the L2 (it rotates 8 copies: at 4 MiB a call's operands are "
        "still in the L2, at 16 MiB they are not), and 512 KiB, below the large-index kernel's smallest "
        "fit size (1 MiB)."),
    ("memory", "repeat_interleave"): (
        "one kernel class (torch's strided elementwise_kernel copying) for two ops of which the transpose "
        "takes 12-24% longer at the same bytes from 8 MiB up: repeat_interleave's expanded input is read "
        "once for four outputs, a transpose reads every element, and the launch shows the C predictor "
        "neither the strides nor an element count beyond the bytes. The class curve, the median of the two, "
        "misses each by 6-11%."),
    ("attention", "sdpa_efficient prefill"): (
        "causal prefills: 6 held-out rows against 2 (head_dim 64) or 4 (head_dim 128) fit ones; the CTAs' "
        "schedule is fitted mostly on decodes and packed batches, and the 512-token prefills of 32 heads "
        "(256 CTAs of 1-4 key blocks) run 8-22% slower than it says, the 8192-token ones 3-8% faster."),
    ("attention", "cudnn_sdpa masked"): (
        "the packed d128 rows (16-96 queries of 32 heads over 4.8-115k keys: one wave of 32 CTAs) run 7-8% "
        "longer than the law of whole waves says, narrow and wide alike, where the prefills (many waves) fit "
        "within 1%: the law gives a wave one time per key and head size whatever its number of CTAs. The "
        "engine's own call at one of these sizes (transformers, contiguous K/V, a -inf mask) ran 2.1 ms where "
        "the probe's layout takes 3.6 (docs/fidelity/h100_notes.md): the probe's variant as the engine lays "
        "it out is still to run."),
}
MISS_REASONS["memory", "transpose_copy"] = MISS_REASONS["memory", "repeat_interleave"]


def miss_reasons(table: pd.DataFrame) -> list[str]:
    """A line per targeted row that misses its target, saying why where that is known."""
    lines = []
    for r in table[table["meets"] == "NO"].itertuples():
        reason = MISS_REASONS.get((r.family, r.group)) or MISS_REASONS.get((r.family, r.group.split()[0]))
        if reason:
            lines.append(f"- {r.family} `{r.group}`: {reason}")
    return lines


def render_text(table: pd.DataFrame) -> str:
    cells = [HEADER] + _cells(table)
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
                     for row in cells).rstrip() + "\n"


def render_markdown(table: pd.DataFrame, measured: Tables) -> str:
    meta = measured.meta
    lines = [
        f"# Predictor held-out accuracy: {measured.sku}",
        "",
        f"Generated by `revati-tune predictor accuracy --sku {measured.sku} --markdown`; "
        "regenerate it with that command rather than editing it.",
        "",
        f"Tables: `emulator/predictor/data/{measured.sku}/` (sha256 `{measured.sha256[:16]}`), "
        f"measured on {meta.get('gpu_name', '?')} (driver {meta.get('driver_version', '?')}, "
        f"torch {meta.get('torch', '?')}) on {str(meta.get('date_utc', '?'))[:10]}.",
        "Each model is fitted on the `fit` rows and scored on the `holdout` rows; error is "
        "|predicted / measured - 1|. Count 0 marks what is modelled or missing, not measured.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _cells(table)]
    if misses := miss_reasons(table):
        lines += ["", "Targeted rows that miss, and why:", ""] + misses
    collectives_meta = measured.directory / tables.OPTIONAL_TABLES["collectives"][2]
    if measured.collectives is not None and collectives_meta.is_file():
        cm = json.loads(collectives_meta.read_text())
        lines += ["", f"Collectives: `collectives.csv`, measured on {cm.get('gpu_name', '?')} with NCCL "
                      f"{cm.get('nccl', '?')} (torch {cm.get('torch', '?')}) on "
                      f"{str(cm.get('date_utc', '?'))[:10]}, group sizes "
                      f"{', '.join(str(r) for r in sorted(set(measured.collectives['ranks'])))}, NVLink "
                      "multicast off (NCCL_NVLS_ENABLE=0)."]
    elif (published := tables.load_published_collectives(measured.sku)) is not None:
        frame, source = published
        lines += ["", f"Collectives: PUBLISHED, not measured here (no multi-GPU machine is lent): "
                      f"`data/published/{tables.published_collectives_path(measured.sku).name}`, from "
                      f"{source['source']} (aiconfigurator {source.get('aiconfigurator', '?')}, "
                      f"`{source['nccl_file']}` and `{source['custom_all_reduce_file']}`), {source['device']}, "
                      f"NCCL {source['nccl_version']}, vLLM {source['vllm_version']}'s custom all-reduce "
                      f"kernel under CUDA graphs, group sizes "
                      f"{', '.join(str(r) for r in sorted(set(frame['ranks'])))}; every third size held out "
                      "(`emulator/profiler/published_collectives.py`)."]
    lines += ["", FLASH_ATTENTION_3]
    return "\n".join(lines) + "\n"
