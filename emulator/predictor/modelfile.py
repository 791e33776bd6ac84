"""The compact text model the C predictor loads: written from the fitted models, never edited.

One record per line, fields separated by single spaces, `#` lines are comments; seconds and rates
as %.9g:

    sku <id>
    gemm <dtype> <trans_a> <trans_b> <m> <k> <batch> <npoints> <n1> <s1> <n2> <s2> ...  (n ascending)
    gemm_fallback <dtype> <flops_per_s> <bytes_per_s> <floor_s>
    attention <backend> <c_const> <c_seqs> <c_kv_bytes> <c_flops> <c_q_bytes>
    attention_makespan <backend> <sms> <resident> <latency> <c_const> <c_makespan> <c_tiles> <c_kv_bytes>
    flash_decode <sms> <split: 5 coefficients> <whole-KV: 5 coefficients>
    attention_curve <backend> <decode|prefill> <heads> <kv_heads> <head_dim> <num_seqs> <points> <y1> <s1> ...
    copy <direction> <pinned> <latency_s> <bytes_per_s>
    memset <latency_s> <bytes_per_s>
    collective <op> <latency_s> <bus_bytes_per_s>
    collective_curve <op> <nranks> <npoints> <bytes1> <s1> <bytes2> <s2> ...  (bytes ascending)
    memory_curve <class: models.MEMORY_CLASSES> <npoints> <bytes1> <s1> ...  (bytes ascending)
    efficient_attention <head_dim> <sms> <resident> <latency> <mask_weight> <causal_extra> <c_const> <c_makespan> <c_key_blocks> <c_mask_bytes>
    flash_attention_3 <sms> <launch_s> <qo_s> <causal_s> <masked_s> <npoints> <head_dim1> <mma_s1> ...  (head_dim ascending)
    host_cost <cudnn_attention_graph_first|cudnn_attention_graph|launch> <seconds> [<fixed_seconds>]
    cudnn_attention <head_dim> <query_tile> <slots> <c_const> <c_waves> <c_wave_key_dims> <c_causal_wave_key_dims> <c_bias_bytes>
    kernel_default <a_s> <b_s_per_thread>
    kernel <a_s> <b_s_per_thread> <max_threads> <demangled name: the rest of the line, verbatim>

models.py's predict methods are the reference for what each record computes. The file lives at
$REVATI_HOME/predictor/<sku>.model and is rewritten (by an atomic rename) only when the tables or
the fitting code change, which its header records.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from pathlib import Path

from emulator.hardware import Sku, load_sku
from emulator.paths import revati_home
from emulator.predictor import models, tables
from emulator.predictor.models import FittedModels

# The fitting code, and the published figures FlashAttention 3 and unmeasured collectives are fitted
# to: a change to them changes the model as surely as new tables do.
FITTING_SOURCES = (Path(models.__file__), Path(__file__), models.FA3_PUBLISHED,
                   *sorted(tables.PUBLISHED_DIR.glob("collectives_*")))
# Optional tables that a SKU lacking them takes from another measured SKU: (the tables, the
# FittedModels fields fitted from them). Without the memory-bound ones a virtual GPU would charge
# PyTorch's memory-efficient attention as flash attention, 54-68% low on an H100, and copies of
# strided views at the contiguous rate; without cuDNN's graph builds and kernel times,
# transformers' steps on cuDNN SDPA would cost the host nothing for a new shape and their masked
# attention would be charged as the flash kernel, 5-20x too cheap at continuous batching's shapes.
CARRIED_TABLES = (
    (("memory", "efficient_attention"), ("memory", "efficient_attention")),
    (("cudnn_graphs",), ("host_costs", "cudnn_attention")),
    (("runtime_calls",), ("launch_host_s",)),
)
# How each carried field reaches the target (models.transfer): record name, and how.
_CARRIED_HOW = {"memory": ("memory_curve", "by the roofline"),
                "efficient_attention": ("efficient_attention", "by the roofline"),
                "host_costs": ("host_cost", "unchanged (host work)"),
                "launch_host_s": ("host_cost launch", "unchanged (host work)"),
                "cudnn_attention": ("cudnn_attention", "by one SM's arithmetic rate (the same CTAs per SM)")}


def model_path(sku: str) -> Path:
    return revati_home() / "predictor" / f"{sku}.model"


def ensure_model_file(sku: str) -> Path:
    """The model file of a SKU (a name or a SKU yaml path), fitted and written first if missing
    or stale. A SKU without tables gets a measured SKU's models carried over by the roofline
    (models.transfer), one of its own architecture if there is one; tables.NoMeasurements if no
    SKU has tables. The CARRIED_TABLES the source lacks come from another measured SKU that has
    them, carried the same way (_donor)."""
    target = load_sku(sku)
    source = _measured_source(target)
    donors = [(fields, donor) for names, fields in CARRIED_TABLES if (donor := _donor(source, names))]
    path = model_path(target.sku)
    digest = tables.sha256(source) + "".join(f" {donor} {tables.sha256(donor)}" for _, donor in donors)
    header = _header(target.sku, digest, None if source == target.sku else source, donors)
    if path.is_file() and path.read_text().startswith(header):
        return path
    fitted = _fitted_for(source, target)
    for fields, donor in donors:
        carried = _fitted_for(donor, target)
        fitted = dataclasses.replace(fitted, **{f: getattr(fitted, f) or getattr(carried, f) for f in fields})
    text = header + render(fitted)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{target.sku}.", suffix=".tmp",
                                     delete=False) as temporary:
        temporary.write(text)
    os.chmod(temporary.name, 0o644)  # NamedTemporaryFile makes it private
    os.replace(temporary.name, path)
    return path


def _fitted_for(source: str, target: Sku) -> FittedModels:
    """The models fitted on source's tables, carried to target by the roofline if they differ."""
    fitted = models.fit(tables.load(source), load_sku(source))
    return fitted if source == target.sku else models.transfer(fitted, load_sku(source), target)


def _donor(source: str, names: tuple[str, ...]) -> str | None:
    """A measured SKU with the optional tables `names` that source lacks (one of its architecture
    first), or None if source has them or no SKU does."""
    wanted = [tables.OPTIONAL_TABLES[name][0] for name in names]
    if all((tables.DATA_DIR / source / file).is_file() for file in wanted):
        return None
    having = [s for s in tables.measured_skus() if all((tables.DATA_DIR / s / file).is_file() for file in wanted)]
    arch = load_sku(source).compute_capability
    having.sort(key=lambda s: load_sku(s).compute_capability != arch)
    return having[0] if having else None


def _measured_source(target: Sku) -> str:
    profiled = tables.measured_skus()
    if target.sku in profiled:
        return target.sku
    same_arch = [s for s in profiled if load_sku(s).compute_capability == target.compute_capability]
    if not profiled:
        tables.load(target.sku)         # raises NoMeasurements, saying what is missing
    return (same_arch or profiled)[0]


def _header(sku: str, tables_sha256: str, source: str | None, donors=()) -> str:
    code = hashlib.sha256(b"".join(p.read_bytes() for p in FITTING_SOURCES)).hexdigest()
    origin = (f"from emulator/predictor/data/{sku}/" if source is None else
              f"from {source}'s measurements (emulator/predictor/data/{source}/) carried to {sku} by the "
              f"roofline of the two datasheets: NOT measured on {sku}")
    for fields, donor in donors:
        origin += "".join(f"; {_CARRIED_HOW[f][0]} records from {donor}'s measurements carried to {sku} "
                          f"{_CARRIED_HOW[f][1]}" for f in fields) + f": NOT measured on {sku}"
    return (f"# revati-tune predictor model for {sku}: written by `revati-tune predictor fit "
            f"--sku {sku}` {origin}; do not edit\n"
            f"# tables_sha256 {tables_sha256}\n"
            f"# code_sha256 {code}\n")


def _g(value: float) -> str:
    return f"{value:.9g}"


def render(fitted: FittedModels) -> str:
    """The records of the model, in a fixed order (the file is deterministic)."""
    lines = [f"sku {fitted.sku}",
             "# gemm: cuBLAS column-major m (out features), k (in features); seconds against n "
             "(tokens), log-log interpolated"]
    for key, curve in sorted(fitted.gemm.curves.items()):
        points = " ".join(f"{int(n)} {_g(s)}" for n, s in zip(curve.n, curve.seconds))
        lines.append(f"gemm {key.dtype} {key.trans_a} {key.trans_b} {key.m} {key.k} {key.batch} "
                     f"{len(curve.n)} {points}")
    lines.append("# gemm_fallback: roofline of this SKU's datasheet peaks x efficiencies fitted "
                 "on the measured GEMMs")
    roofline = fitted.gemm_roofline
    for dtype in models.ELEMENT_BYTES:
        if dtype in roofline.flops_per_s:
            lines.append(f"gemm_fallback {dtype} {_g(roofline.flops_per_s[dtype])} "
                         f"{_g(roofline.bytes_per_s[dtype])} {_g(roofline.floor_s[dtype])}")
    lines.append("# attention: coefficients of [1, num_seqs, kv_bytes, flops, q_bytes] "
                 "(models.attention_features)")
    for backend, model in sorted(fitted.attention.items()):
        lines.append(f"attention {backend} " + " ".join(_g(c) for c in model.coefficients))
    if fitted.attention_makespan is not None:
        m = fitted.attention_makespan
        lines.append("# attention_makespan: backend, SMs, programs resident per SM, a lone program's time per KV "
                     "tile (in an SM's tile times), then coefficients of [1, the programs' makespan over the SMs, "
                     "KV tiles, K/V bytes] (models.AttentionMakespan, triton_schedule)")
        lines.append(f"attention_makespan {m.backend} {m.sms} {m.resident} {_g(m.latency)} "
                     + " ".join(_g(c) for c in m.coefficients))
    if fitted.flash_decode is not None:
        f = fitted.flash_decode
        lines.append("# flash_decode: SMs, then coefficients of [1, waves x KV blocks per CTA, waves, seqs x heads x "
                     "head_dim x splits, splits] for the split-KV kernel, then for the whole-KV one "
                     "(models.FlashDecodeModel: sdpa_flash decode, charged instead of its curves)")
        lines.append(f"flash_decode {f.sm_count} " + " ".join(_g(c) for c in (*f.split, *f.whole)))
    lines.append("# attention_curve: backend phase heads kv_heads head_dim num_seqs points, then y "
                 "seconds pairs (y: context for decode, prompt length for prefill)")
    for c in fitted.attention_curves:
        points = " ".join(f"{y} {_g(s)}" for y, s in zip(c.y, c.seconds))
        lines.append(f"attention_curve {c.backend} {c.phase} {c.heads} {c.kv_heads} {c.head_dim} "
                     f"{c.num_seqs} {len(c.y)} {points}")
    for (direction, pinned), copy in sorted(fitted.copies.items()):
        lines.append(f"copy {direction} {pinned} {_g(copy.latency_s)} {_g(copy.bytes_per_s)}")
    lines.append(f"memset {_g(fitted.memset.latency_s)} {_g(fitted.memset.bytes_per_s)}")
    fitted_ops = [op for op in models.COLLECTIVE_OPS if fitted.collectives[op].measured]
    modelled = [op for op in models.COLLECTIVE_OPS if op not in fitted_ops]
    lines.append("# collective: latency + bus bytes / rate; bytes are the full buffer, factor "
                 "2(n-1)/n all_reduce and custom_all_reduce, (n-1)/n all_gather and reduce_scatter, "
                 "1 broadcast and send_recv; for group sizes without a collective_curve. "
                 + (f"Fitted (all group sizes pooled) on the {fitted.collectives_origin} timings: "
                    f"{', '.join(fitted_ops)}. " if fitted_ops else "")
                 + (f"MODELLED over NVLink, neither measured nor published: {', '.join(modelled)}"
                    if modelled else ""))
    for op in models.COLLECTIVE_OPS:
        collective = fitted.collectives[op]
        lines.append(f"collective {op} {_g(collective.latency_s)} "
                     f"{_g(collective.bus_bytes_per_s)}")
    if fitted.collective_curves:
        lines.append("# collective_curve: op nranks points, then bytes (full buffer) seconds pairs, "
                     f"{fitted.collectives_origin.split(':')[0]}, log-log interpolated; send_recv's (2 ranks) "
                     "serves any communicator")
    for (op, nranks), curve in sorted(fitted.collective_curves.items()):
        points = " ".join(f"{int(b)} {_g(s)}" for b, s in zip(curve.bytes, curve.seconds))
        lines.append(f"collective_curve {op} {nranks} {len(curve.bytes)} {points}")
    if fitted.memory:
        lines.append("# memory_curve: class points, then bytes moved (read plus written) seconds pairs, "
                     "measured (memory.csv), log-log interpolated")
    for cls, curve in sorted(fitted.memory.items()):
        points = " ".join(f"{int(b)} {_g(s)}" for b, s in zip(curve.bytes, curve.seconds))
        lines.append(f"memory_curve {cls} {len(curve.bytes)} {points}")
    if fitted.efficient_attention:
        lines.append("# efficient_attention: head_dim, SMs, CTAs resident per SM, a lone CTA's time per key block "
                     "(in an SM's key-block times), a masked key block's extra and a causal CTA's extra (in key "
                     "blocks), then coefficients of [1, the CTAs' makespan over the SMs, key blocks, mask bytes] "
                     "(models.EfficientAttentionCTAs)")
    for head_dim, m in sorted(fitted.efficient_attention.items()):
        lines.append(f"efficient_attention {head_dim} {m.sms} {m.resident} {_g(m.latency)} {_g(m.mask_weight)} "
                     f"{_g(m.causal_extra)} " + " ".join(_g(c) for c in m.coefficients))
    if fitted.flash_attention_3 is not None:
        fa3 = fitted.flash_attention_3
        origin = ("" if fa3.calibrated_on == fitted.sku else
                  f", carried to {fitted.sku} by one SM's arithmetic rate: NOT calibrated on {fitted.sku}")
        lines.append("# flash_attention_3: MODELLED, calibrated to the FA3 paper's forward throughput on "
                     f"{fa3.calibrated_on} (data/published/){origin}. sms launch_s, seconds per Q/O element, "
                     "per MMA element if causal, per masked element, then head_dim and seconds per MMA element "
                     "pairs (models.FlashAttention3)")
        points = " ".join(f"{d} {_g(s)}" for d, s in zip(fa3.head_dims, fa3.mma_s))
        lines.append(f"flash_attention_3 {fa3.sms} {_g(fa3.launch_s)} {_g(fa3.qo_s)} {_g(fa3.causal_s)} "
                     f"{_g(fa3.masked_s)} {len(fa3.head_dims)} {points}")
    if fitted.host_costs:
        lines.append("# host_cost: host seconds of work a replaced library does on the calling thread, measured "
                     "on the target's host (cudnn_graphs.csv: a cuDNN attention graph built, first of its kind "
                     "in the process on a machine where it ran before (models.fit_host_costs), or a new shape), "
                     "at its committed host speed, then the seconds of it that do not scale with the host's speed "
                     "(REVATI_HOST_WORK_SCALE; absent: all of it scales; models.build_cost_law)")
    for name, cost in sorted(fitted.host_costs.items()):
        lines.append(f"host_cost {name} {_g(cost.seconds)}" + (f" {_g(cost.fixed_seconds)}" if cost.fixed_seconds else ""))
    if fitted.launch_host_s:
        lines.append("# host_cost launch: host seconds of the CUDA runtime's own work per launch, which the vGPU "
                     "library does not do (runtime_calls.csv, models.fit_launch_cost)")
        lines.append(f"host_cost launch {_g(fitted.launch_host_s)}")
    if fitted.cudnn_attention:
        lines.append("# cudnn_attention: cuDNN's SDPA forward with an additive mask (cudnn.c's masked attention "
                     "launches; unmasked ones are charged as sdpa_flash): head_dim query_tile slots, then "
                     "coefficients of [1, waves, waves * keys * head_dim, the same if causal, mask bytes], CTAs = "
                     "ceil(queries / query_tile) x heads x batch, waves = ceil(CTAs / slots) "
                     "(models.efficient_attention_work, whole_waves; measured on cudnn_graphs.csv)")
    for head_dim, m in sorted(fitted.cudnn_attention.items()):
        lines.append(f"cudnn_attention {head_dim} {m.query_block} {_g(m.slots)} "
                     + " ".join(_g(c) for c in m.coefficients))
    lines.append("# kernel: seconds = a + b * grid.x*grid.y*grid.z*block.x*block.y*block.z, "
                 "by exact demangled name, measured up to max_threads")
    default = fitted.kernels.default
    lines.append(f"kernel_default {_g(default.a)} {_g(default.b)}")
    for name, line in sorted(fitted.kernels.by_name.items()):
        lines.append(f"kernel {_g(line.a)} {_g(line.b)} {_g(fitted.kernels.max_threads[name])} {name}")
    return "\n".join(lines) + "\n"
