"""Attention by batch composition: vLLM's unified Triton kernel over a paged KV cache and torch
SDPA's flash backend, for decode, prefill, chunked and mixed batches (attention.csv; README.md
beside profile_gpu.py gives its columns). Each backend is checked against a float32 reference
before its rows are timed."""

from __future__ import annotations

import functools
import itertools
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from emulator.profiler.harness import DTYPE_NAMES, Case, Run, SkipRow, random_tensor

if TYPE_CHECKING:
    from emulator.profiler.grids import Grid

# .carry/ at the repository root: vLLM's kernel, copied there by fetch_vllm_kernels.py.
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CARRY_DIR = os.path.join(REPO_ROOT, ".carry")
BLOCK_SIZE = 16  # vLLM's default KV-cache block size
COLUMNS = ["backend", "phase", "num_seqs", "query_len", "context_len", "num_heads",
           "num_kv_heads", "head_dim", "dtype", "block_size", "num_query_tokens",
           "num_kv_tokens", "seconds", "p10", "p90", "composition", "kernels", "split"]


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


def cases(run: Run):
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
