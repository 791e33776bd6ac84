"""Elementwise and other per-layer kernels, as plain torch eager ops timed whole: norms, residual
add, embedding, rotary, SiLU-and-mul, sampling, KV-cache writes (elementwise.csv; README.md
beside profile_gpu.py gives its columns)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from emulator.profiler.harness import Case, Run, random_tensor

COLUMNS = ["op", "tokens", "hidden", "dtype", "seconds", "p10", "p90", "kernels", "split"]


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


def cases(run: Run):
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
