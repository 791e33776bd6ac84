"""GEMMs: F.linear of real models' linear layers at every tensor-parallel size, by token count
(gemm.csv; README.md beside profile_gpu.py gives its columns)."""

from __future__ import annotations

import functools

import torch

from emulator.profiler.harness import Case, Run, random_tensor
from emulator.profiler.shapes import ModelShape

COLUMNS = ["m", "n", "k", "batch", "trans_a", "trans_b", "dtype",
           "seconds", "p10", "p90", "kernels", "split"]


def linear_shapes(model: ModelShape, tp: int):
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


def cases(run: Run):
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
