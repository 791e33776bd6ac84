#!/usr/bin/env python3
"""Time whole Llama-3 decoder forward steps on one GPU, as a serving engine runs them.

    python3 emulator/predictor/profiler/forward_pass.py --out DIR
        [--models llama3_8b,llama3_70b_tp4,llama3_70b_tp8] [--layers N]
        [--kernel-profile] [--quick]

The per-kernel tables of profile_gpu.py predict single launches; this script
measures what the predictor must add up to: one engine step (a batch of
decodes, a prefill, or both mixed) through the full decoder stack.  Run it on
a real GPU for the reference numbers and under `revati-tune exec` for the
emulator's prediction of the same steps; the two CSVs compare row by row.

The model is plain PyTorch in bf16 with random weights (never zeros): per layer
RMSNorm, fused QKV, neox rotary, FlashAttention through SDPA, o_proj, residual,
RMSNorm, fused gate_up, SiLU*up, down, residual; then the final RMSNorm and the
lm_head on the last token of each sequence.  The 70B models are one GPU's
slice of tensor parallelism (heads, MLP and vocab divided; no collectives).

Tokens of a step are flattened as an engine flattens them: prefill tokens
first, then one token per decode.  GEMMs, norms and the MLP run over all of
them; attention runs separately on the prefill (causal over its own tokens,
a fresh prompt) and on the decodes (against a preallocated KV cache
[B, KV, ctx, D] per layer, into whose last slot the step writes its new K/V).

The primary number (graph_ms) is the median of CUDA-graph replays timed with
CUDA events: it excludes host launch gaps, which differ between machines and
which the emulator charges separately.  eager_ms is the same step launched
from Python, for reference.  Rows are written as they are measured, so a run
cut short keeps what it had.

--kernel-profile also runs each step once under torch.profiler and writes
every GPU kernel with its launch geometry and enclosing aten op to
kernels.csv.  It needs CUPTI; where the profiler records no kernels (under
the emulator) it is skipped with a message.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPE = torch.bfloat16
RMS_EPS = 1e-5
ROPE_THETA = 500000.0  # Llama 3
MAX_POSITION = 4096  # covers every composition below
L2_SAFE_BYTES = 256 << 20  # KV read between two reuses of one cache buffer: well above any L2
KV_MEMORY_SHARE = 0.85  # of the memory free after the weights, for the KV caches
WARMUP_STEPS = 3  # eager steps before capture: cuBLAS handles, autotuning, allocator
WARMUP_REPLAYS = 3
TIMED_REPLAYS = 20
EAGER_STEPS = 5
GiB = 1 << 30

CSV_COLUMNS = ["model", "composition", "num_seqs", "num_prefill_tokens", "num_decode_seqs",
               "context_len", "total_tokens", "layers", "graph_ms", "graph_p10_ms", "graph_p90_ms",
               "eager_ms", "kernels_per_step", "device_name", "torch_version"]
KERNEL_COLUMNS = ["model", "composition", "kernel_name", "grid_x", "grid_y", "grid_z",
                  "block_x", "block_y", "block_z", "duration_us", "op_name", "op_input_shapes"]

# ----------------------------------------------------------------------------
# What to measure
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    layers: int
    vocab: int

    def weight_bytes(self, layers: int) -> int:
        qkv = (self.heads + 2 * self.kv_heads) * self.head_dim * self.hidden
        o = self.hidden * self.heads * self.head_dim
        mlp = 3 * self.inter * self.hidden
        per_layer = qkv + o + mlp + 2 * self.hidden
        return (layers * per_layer + self.vocab * self.hidden + self.hidden) * DTYPE.itemsize


def llama3_70b_slice(tp: int) -> ModelSpec:
    return ModelSpec(hidden=8192, heads=64 // tp, kv_heads=8 // tp, head_dim=128,
                     inter=28672 // tp, layers=80, vocab=128256 // tp)


LLAMA3_8B = ModelSpec(hidden=4096, heads=32, kv_heads=8, head_dim=128, inter=14336, layers=32,
                      vocab=128256)
MODELS = {
    "llama3_8b": LLAMA3_8B,
    "llama3_70b_tp4": llama3_70b_slice(4),
    "llama3_70b_tp8": llama3_70b_slice(8),
    # The same shapes written as a plain PyTorch program writes them (see plain_decoder_layer),
    # with SDPA's default backend choice, or pinned to the backend named last.
    "llama3_8b_plain": LLAMA3_8B,
    "llama3_70b_tp8_plain": llama3_70b_slice(8),
    "llama3_8b_plain_efficient": LLAMA3_8B,
    "llama3_8b_plain_flash": LLAMA3_8B,
}
ENGINE_MODELS = [name for name in MODELS if "_plain" not in name]
PLAIN_MODELS = [name for name in MODELS if "_plain" in name]
PLAIN_BACKENDS = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


@dataclass(frozen=True)
class Composition:
    """One engine step: an optional prefill of a fresh prompt plus decodes at one context."""
    prefill_tokens: int
    decode_seqs: int
    context_len: int  # KV length of each decode, the new token included; 0 without decodes

    @property
    def name(self) -> str:
        if not self.decode_seqs:
            return f"prefill_p{self.prefill_tokens}"
        if not self.prefill_tokens:
            return f"decode_b{self.decode_seqs}_ctx{self.context_len}"
        return f"mixed_p{self.prefill_tokens}_d{self.decode_seqs}_ctx{self.context_len}"

    @property
    def num_seqs(self) -> int:
        return self.decode_seqs + (1 if self.prefill_tokens else 0)

    @property
    def total_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    def kv_bytes(self, spec: ModelSpec, layers: int) -> int:
        per_layer = 2 * self.decode_seqs * spec.kv_heads * self.context_len * spec.head_dim
        return layers * per_layer * DTYPE.itemsize


COMPOSITIONS = [
    Composition(0, 8, 1024),
    Composition(0, 64, 1024),
    Composition(0, 256, 1024),
    Composition(0, 8, 4096),
    Composition(0, 64, 4096),
    Composition(0, 256, 4096),
    Composition(512, 0, 0),
    Composition(2048, 0, 0),
    Composition(512, 32, 1024),
    Composition(2048, 128, 2048),
]
# A plain program runs a batch of sequences at one length: no mixed steps.
PLAIN_COMPOSITIONS = [
    Composition(0, 1, 1024),
    Composition(0, 8, 1024),
    Composition(0, 32, 1024),
    Composition(0, 8, 4096),
    Composition(0, 32, 4096),
    Composition(512, 0, 0),
    Composition(2048, 0, 0),
]
QUICK_MODELS = ["llama3_8b"]
QUICK_COMPOSITIONS = ["decode_b64_ctx1024", "mixed_p512_d32_ctx1024"]

# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------


def rand(shape, scale: float, device) -> torch.Tensor:
    return torch.randn(shape, dtype=DTYPE, device=device).mul_(scale)


def linear_weight(out_features: int, in_features: int, device) -> torch.Tensor:
    # 1/sqrt(fan_in) keeps activations near unit scale through 80 layers, so
    # nothing overflows bf16 into inf/NaN (which could change kernel speed).
    return rand((out_features, in_features), in_features ** -0.5, device)


def norm_weight(hidden: int, device) -> torch.Tensor:
    return rand((hidden,), 0.1, device).add_(1.0)


@dataclass
class Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor  # [(H + 2 KV) D, hidden]
    o: torch.Tensor  # [hidden, H D]
    mlp_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 I, hidden]
    down: torch.Tensor  # [hidden, I]


@dataclass
class Model:
    spec: ModelSpec
    layers: list[Layer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor  # [vocab, hidden]
    rope_cos: torch.Tensor  # [MAX_POSITION, D / 2]
    rope_sin: torch.Tensor


def build_model(spec: ModelSpec, num_layers: int, device) -> Model:
    h, d = spec.hidden, spec.head_dim
    layers = [Layer(attn_norm=norm_weight(h, device),
                    qkv=linear_weight((spec.heads + 2 * spec.kv_heads) * d, h, device),
                    o=linear_weight(h, spec.heads * d, device),
                    mlp_norm=norm_weight(h, device),
                    gate_up=linear_weight(2 * spec.inter, h, device),
                    down=linear_weight(h, spec.inter, device))
              for _ in range(num_layers)]
    inv_freq = ROPE_THETA ** -(torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(MAX_POSITION, device=device, dtype=torch.float32), inv_freq)
    return Model(spec, layers, norm_weight(h, device), linear_weight(spec.vocab, h, device),
                 angles.cos().to(DTYPE), angles.sin().to(DTYPE))


@dataclass
class StepInputs:
    """Static buffers of one step: a CUDA graph replays on these addresses."""
    comp: Composition
    hidden: torch.Tensor  # [T, hidden], the embedded tokens
    positions: torch.Tensor  # [T]
    last_index: torch.Tensor  # [num_seqs], the token whose logits are sampled
    kv_cache: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, each [B, KV, ctx, D]; may be shared


def kv_buffer_count(per_layer_bytes: int, layers: int, device) -> int:
    """How many distinct per-layer KV caches to allocate: all of them if they fit.

    A 4k-context decode of 256 sequences needs more KV cache than the GPU holds (8B: 137 GiB),
    so layers then share buffers round-robin. Each decode reads its whole cache once per layer,
    so a shared buffer is as cold as a private one as long as the caches read between two uses
    of it exceed the L2 cache; the count is kept at least that large.
    """
    if per_layer_bytes == 0:
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    fits = int(free * KV_MEMORY_SHARE // per_layer_bytes)
    needed_apart = -(-L2_SAFE_BYTES // per_layer_bytes) + 1
    if fits < min(layers, needed_apart):
        raise RuntimeError(f"KV cache of {per_layer_bytes / GiB:.1f} GiB a layer: only {fits} fit")
    return min(layers, fits)


def build_inputs(model: Model, comp: Composition, device, plain: bool = False) -> StepInputs:
    """plain: the caches hold the past (context - 1) tokens, to which the step appends its own."""
    spec, p, b = model.spec, comp.prefill_tokens, comp.decode_seqs
    positions = torch.cat([torch.arange(p), torch.full((b,), comp.context_len - 1)])
    last = ([p - 1] if p else []) + list(range(p, p + b))
    cache_shape = (b, spec.kv_heads, comp.context_len - plain, spec.head_dim)
    buffers = kv_buffer_count(comp.kv_bytes(spec, 1), len(model.layers), device)
    distinct = [(rand(cache_shape, 1.0, device), rand(cache_shape, 1.0, device))
                for _ in range(buffers)]
    kv_cache = [distinct[i % buffers] for i in range(len(model.layers))] if b else []
    return StepInputs(comp, rand((comp.total_tokens, spec.hidden), 1.0, device),
                      positions.to(device), torch.tensor(last, device=device), kv_cache)


def rotary_neox(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, D]; cos/sin [T, 1, D/2]; rotates the two halves of each head."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def sdpa(q, k, v, causal: bool) -> torch.Tensor:
    # Pinned to FlashAttention: it is what serving engines run, it takes grouped
    # KV heads natively (torch >= 2.5), and it avoids cuDNN, which torch's
    # default order prefers on Hopper (the emulator charges cuDNN's attention
    # as FlashAttention anyway: emulator/vgpu/cudnn.c).
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)


def as_one_sequence(t: torch.Tensor) -> torch.Tensor:
    """[P, heads, D] tokens -> [1, heads, P, D], the layout SDPA takes (a view, no copy)."""
    return t.transpose(0, 1).unsqueeze(0)


def attention(q, k, v, inputs: StepInputs, layer_index: int) -> torch.Tensor:
    """q [T, H, D], k/v [T, KV, D] -> [T, H D]; prefill and decodes attend separately."""
    p = inputs.comp.prefill_tokens
    parts = []
    if p:
        out = sdpa(as_one_sequence(q[:p]), as_one_sequence(k[:p]), as_one_sequence(v[:p]),
                   causal=True)
        parts.append(out[0].transpose(0, 1))
    if inputs.comp.decode_seqs:
        k_cache, v_cache = inputs.kv_cache[layer_index]
        k_cache[:, :, -1] = k[p:]  # the new token's K/V, as the engine writes it before attending
        v_cache[:, :, -1] = v[p:]
        parts.append(sdpa(q[p:].unsqueeze(2), k_cache, v_cache, causal=False)[:, :, 0])
    return torch.cat(parts).flatten(1)


def decoder_layer(x, layer: Layer, spec: ModelSpec, cos, sin, inputs: StepInputs, index: int):
    t, d = x.shape[0], spec.head_dim
    qkv = F.linear(F.rms_norm(x, (spec.hidden,), layer.attn_norm, RMS_EPS), layer.qkv)
    # q and k rotate together: one set of elementwise kernels for both.
    qk = rotary_neox(qkv[:, :(spec.heads + spec.kv_heads) * d].view(t, -1, d), cos, sin)
    q, k = qk[:, :spec.heads], qk[:, spec.heads:]
    v = qkv[:, (spec.heads + spec.kv_heads) * d:].view(t, spec.kv_heads, d)
    x = x + F.linear(attention(q, k, v, inputs, index), layer.o)
    gate, up = F.linear(F.rms_norm(x, (spec.hidden,), layer.mlp_norm, RMS_EPS),
                        layer.gate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, layer.down)


def is_plain(model_name: str) -> bool:
    return "_plain" in model_name


def plain_sdpa_backends(model_name: str) -> list:
    """SDPA backends a plain model may use: all (PyTorch's own choice) unless its name pins one."""
    pinned = PLAIN_BACKENDS.get(model_name.rsplit("_", 1)[-1])
    return [pinned] if pinned else list(SDPBackend.__members__.values())


def plain_rms_norm(x, weight):
    """RMSNorm as model code writes it (in fp32, several elementwise kernels), not F.rms_norm."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + RMS_EPS)
    return weight * h.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def plain_decoder_layer(x, layer: Layer, spec: ModelSpec, cos, sin, inputs: StepInputs, index: int):
    """x [B, S, hidden]: a decoder layer as plain PyTorch model code writes it.

    Sequences stay in a batch dimension; the KV cache grows by torch.cat; grouped K/V heads are
    repeated to the query heads (repeat_interleave, a gather over the whole cache); SDPA runs
    with PyTorch's default backend choice. This is the memory-bound work (copies and gathers over
    gigabytes) that serving engines avoid, which the emulator must charge by the bytes it moves.
    """
    b, s, d = x.shape[0], x.shape[1], spec.head_dim
    h = plain_rms_norm(x, layer.attn_norm)
    qkv = F.linear(h, layer.qkv)
    q, k, v = qkv.split([spec.heads * d, spec.kv_heads * d, spec.kv_heads * d], dim=-1)
    q = q.view(b, s, spec.heads, d).transpose(1, 2)
    k = k.view(b, s, spec.kv_heads, d).transpose(1, 2)
    v = v.view(b, s, spec.kv_heads, d).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    if inputs.kv_cache:
        k_past, v_past = inputs.kv_cache[index]
        k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
    groups = spec.heads // spec.kv_heads
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=s > 1)
    x = x + F.linear(out.transpose(1, 2).reshape(b, s, spec.heads * d), layer.o)
    h = plain_rms_norm(x, layer.mlp_norm)
    gate, up = F.linear(h, layer.gate_up).chunk(2, dim=-1)
    return x + F.linear(F.silu(gate) * up, layer.down)


def plain_forward_step(model: Model, inputs: StepInputs) -> torch.Tensor:
    """One step of a plain program: a prefill of one prompt, or one decode of a batch."""
    comp, spec = inputs.comp, model.spec
    b, s = (1, comp.prefill_tokens) if comp.prefill_tokens else (comp.decode_seqs, 1)
    x = inputs.hidden.view(b, s, spec.hidden)
    cos = model.rope_cos.index_select(0, inputs.positions[:s])
    sin = model.rope_sin.index_select(0, inputs.positions[:s])
    cos, sin = torch.cat((cos, cos), dim=-1)[None, None], torch.cat((sin, sin), dim=-1)[None, None]
    for index, layer in enumerate(model.layers):
        x = plain_decoder_layer(x, layer, spec, cos, sin, inputs, index)
    return F.linear(plain_rms_norm(x[:, -1], model.final_norm), model.lm_head)


def forward_step(model: Model, inputs: StepInputs) -> torch.Tensor:
    """One engine step; returns logits [num_seqs, vocab] of the sampled tokens."""
    cos = model.rope_cos.index_select(0, inputs.positions).unsqueeze(1)
    sin = model.rope_sin.index_select(0, inputs.positions).unsqueeze(1)
    x = inputs.hidden
    for index, layer in enumerate(model.layers):
        x = decoder_layer(x, layer, model.spec, cos, sin, inputs, index)
    last = F.rms_norm(x.index_select(0, inputs.last_index), (model.spec.hidden,),
                      model.final_norm, RMS_EPS)
    return F.linear(last, model.lm_head)

# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------


def event_times_ms(fn, repeats: int) -> list[float]:
    """Device time of each call, from a pair of CUDA events around it."""
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
             for _ in range(repeats)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in pairs]


def capture(step) -> torch.cuda.CUDAGraph:
    """Warm the step up on a side stream (as torch requires before capture), then capture it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_STEPS):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def time_step(step) -> dict:
    graph = capture(step)
    event_times_ms(graph.replay, WARMUP_REPLAYS)
    replays = event_times_ms(graph.replay, TIMED_REPLAYS)
    del graph  # releases its private memory pool before the eager runs
    step()  # the warm-up ran on a side stream; the allocator caches blocks per stream
    eager = event_times_ms(step, EAGER_STEPS)
    deciles = statistics.quantiles(replays, n=10, method="inclusive")
    return {"graph_ms": statistics.median(replays), "graph_p10_ms": deciles[0],
            "graph_p90_ms": deciles[-1], "eager_ms": statistics.median(eager)}

# ----------------------------------------------------------------------------
# Kernel profile
# ----------------------------------------------------------------------------


def trace_events(step) -> list[dict]:
    """Chrome-trace events of one eager step; kernels there carry grid and block."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
        step()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            return json.load(f)["traceEvents"]


def enclosing_ops(events: list[dict]) -> dict:
    """Launch correlation id -> the innermost aten op around that launch on its thread.

    Ops on one thread nest, so a sweep in time order with a stack of open
    ops finds it; the launch (runtime or driver call) shares the kernel's
    correlation id.
    """
    ops = [e for e in events if e.get("cat") == "cpu_op" and e["name"].startswith("aten::")]
    launches = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")
                and "correlation" in e.get("args", {})]
    # At equal start times, ops open before launches and outer ops before inner ones.
    timeline = sorted([(e["ts"], 0, -e["dur"], i, e) for i, e in enumerate(ops)]
                      + [(e["ts"], 1, 0, i, e) for i, e in enumerate(launches)],
                      key=lambda item: item[:4])
    open_ops, found = defaultdict(list), {}
    for ts, is_launch, _, _, event in timeline:
        stack = open_ops[event["tid"]]
        while stack and stack[-1]["ts"] + stack[-1]["dur"] < ts:
            stack.pop()
        if is_launch:
            found[event["args"]["correlation"]] = stack[-1] if stack else None
        else:
            stack.append(event)
    return found


def kernel_rows(model_name: str, comp: Composition, events: list[dict]) -> list[dict]:
    ops = enclosing_ops(events)
    rows = []
    for e in sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"]):
        args = e.get("args", {})
        grid, block = args.get("grid", [None] * 3), args.get("block", [None] * 3)
        op = ops.get(args.get("correlation"))
        rows.append({"model": model_name, "composition": comp.name, "kernel_name": e["name"],
                     "grid_x": grid[0], "grid_y": grid[1], "grid_z": grid[2],
                     "block_x": block[0], "block_y": block[1], "block_z": block[2],
                     "duration_us": e.get("dur"),
                     "op_name": op["name"] if op else "",
                     "op_input_shapes": json.dumps(op["args"].get("Input Dims"),
                                                   separators=(",", ":")) if op else ""})
    return rows


def profiler_sees_kernels(device) -> bool:
    """Whether torch.profiler records GPU kernels here (it needs CUPTI, which the emulator lacks)."""
    x = torch.randn(256, 256, device=device, dtype=DTYPE)
    return any(e.get("cat") == "kernel" for e in trace_events(lambda: x @ x))

# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


class Output:
    """forward_pass.csv, kernels.csv and forward_pass_meta.json, written as results arrive."""

    def __init__(self, out_dir: str, meta: dict):
        os.makedirs(out_dir, exist_ok=True)
        self.dir, self.meta, self.rows = out_dir, meta, []
        self._csv_file = open(os.path.join(out_dir, "forward_pass.csv"), "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, CSV_COLUMNS)
        self._csv.writeheader()
        self._kernels_file = self._kernels = None

    def add_row(self, row: dict):
        self.rows.append(row)
        self._csv.writerow(row)
        self._csv_file.flush()

    def add_kernels(self, rows: list[dict]):
        if self._kernels is None:
            self._kernels_file = open(os.path.join(self.dir, "kernels.csv"), "w", newline="")
            self._kernels = csv.DictWriter(self._kernels_file, KERNEL_COLUMNS)
            self._kernels.writeheader()
        self._kernels.writerows(rows)
        self._kernels_file.flush()

    def error(self, where: str, exc: BaseException):
        message = f"{type(exc).__name__}: {exc}"
        print(f"  ERROR {where}: {message}", flush=True)
        traceback.print_exc()
        self.meta["errors"][where] = message[:2000]
        self.write_meta()

    def write_meta(self):
        path = os.path.join(self.dir, "forward_pass_meta.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.meta, f, indent=1, default=str)
        os.replace(path + ".tmp", path)

    def close(self):
        self._csv_file.close()
        if self._kernels_file:
            self._kernels_file.close()
        self.write_meta()


def measure(out: Output, model_name: str, model: Model, comp: Composition, profile: bool, device):
    plain = is_plain(model_name)
    inputs = build_inputs(model, comp, device, plain)
    step = functools.partial(plain_forward_step if plain else forward_step, model, inputs)
    if plain:
        forward = step

        def step():
            with sdpa_kernel(plain_sdpa_backends(model_name)):
                return forward()
    timing = time_step(step)
    kernels = ""
    if profile:
        rows = kernel_rows(model_name, comp, trace_events(step))
        out.add_kernels(rows)
        kernels = len(rows)
    out.add_row({"model": model_name, "composition": comp.name, "num_seqs": comp.num_seqs,
                 "num_prefill_tokens": comp.prefill_tokens, "num_decode_seqs": comp.decode_seqs,
                 "context_len": comp.context_len, "total_tokens": comp.total_tokens,
                 "layers": len(model.layers), **{k: round(v, 4) for k, v in timing.items()},
                 "kernels_per_step": kernels, "device_name": out.meta["gpu_name"],
                 "torch_version": torch.__version__})
    print(f"  {comp.name:<28} graph {timing['graph_ms']:9.3f} ms  eager {timing['eager_ms']:9.3f} ms"
          f"  kernels {kernels}", flush=True)


def run_model(out: Output, name: str, comps: list[Composition], args, device):
    spec = MODELS[name]
    if is_plain(name):
        comps = [c for c in PLAIN_COMPOSITIONS if args.wanted(c)]
    layers = min(args.layers or spec.layers, spec.layers)
    largest_kv = max(c.kv_bytes(spec, layers) for c in comps)
    print(f"{name}: {layers} layers, weights {spec.weight_bytes(layers) / GiB:.1f} GiB, "
          f"largest KV cache {largest_kv / GiB:.1f} GiB", flush=True)
    model = None
    try:
        model = build_model(spec, layers, device)
        for comp in comps:
            try:
                measure(out, name, model, comp, args.kernel_profile, device)
            except Exception as e:  # noqa: BLE001 - the next composition still runs
                out.error(f"{name}/{comp.name}", e)
            finally:
                gc.collect()
                torch.cuda.empty_cache()
    except Exception as e:  # noqa: BLE001 - the next model still runs
        out.error(name, e)
    finally:
        del model
        gc.collect()
        torch.cuda.empty_cache()


def describe(args) -> dict:
    with open(__file__, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {"gpu_name": torch.cuda.get_device_name(0),
            "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
            "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "python": sys.version.split()[0],
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": [sys.executable] + sys.argv, "script_sha256": sha,
            "attention": "sdpa, FlashAttention backend, enable_gqa=True; *_plain models: SDPA's "
                         "default backend choice over repeat_interleave'd K/V",
            "timing": {"warmup_steps": WARMUP_STEPS, "warmup_replays": WARMUP_REPLAYS,
                       "timed_replays": TIMED_REPLAYS, "eager_steps": EAGER_STEPS},
            "kernel_profile": "off" if not args.kernel_profile else "on",
            "errors": {}}


def print_table(rows: list[dict]):
    print("\n=== forward_pass (ms per step) ===")
    print(f"{'model':<16}{'composition':<28}{'tokens':>7}{'graph':>10}{'p10':>10}{'p90':>10}"
          f"{'eager':>10}{'kernels':>9}")
    for r in rows:
        print(f"{r['model']:<16}{r['composition']:<28}{r['total_tokens']:>7}{r['graph_ms']:>10.3f}"
              f"{r['graph_p10_ms']:>10.3f}{r['graph_p90_ms']:>10.3f}{r['eager_ms']:>10.3f}"
              f"{r['kernels_per_step']!s:>9}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the CSVs and meta JSON")
    parser.add_argument("--models", help=f"comma-separated, from {','.join(MODELS)} (default: every "
                                         f"engine-style one, {','.join(ENGINE_MODELS)}; "
                                         f"--quick: {','.join(QUICK_MODELS)})")
    parser.add_argument("--layers", type=int, help="cap on decoder layers (default: the model's own)")
    parser.add_argument("--kernel-profile", action="store_true",
                        help="also write every kernel of each step to kernels.csv (needs CUPTI)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {','.join(QUICK_COMPOSITIONS)} (and, unless --models, "
                             f"{','.join(QUICK_MODELS)})")
    parser.add_argument("--compositions", help="comma-separated step names (e.g. decode_b32_ctx4096): "
                                               "only those")
    args = parser.parse_args(argv)
    chosen = set(args.compositions.split(",")) if args.compositions else set(QUICK_COMPOSITIONS) if args.quick \
        else None
    args.wanted = lambda comp: chosen is None or comp.name in chosen
    names = args.models.split(",") if args.models else QUICK_MODELS if args.quick else ENGINE_MODELS
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    args.models = names
    return args


@torch.inference_mode()
def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    out = Output(args.out, describe(args))
    if args.kernel_profile and not profiler_sees_kernels(device):
        print("--kernel-profile skipped: torch.profiler recorded no GPU kernels (no CUPTI; "
              "expected under the revati-tune emulator). kernels.csv is not written.", flush=True)
        args.kernel_profile = False
        out.meta["kernel_profile"] = "skipped: profiler recorded no GPU kernels (no CUPTI)"
    comps = [c for c in COMPOSITIONS if args.wanted(c)]
    started = time.monotonic()
    for name in args.models:
        run_model(out, name, comps, args, device)
        out.write_meta()
    out.meta["elapsed_s"] = round(time.monotonic() - started, 1)
    out.close()
    print_table(out.rows)
    if out.meta["errors"]:
        print(f"{len(out.meta['errors'])} errors; see forward_pass_meta.json")
    return 1 if out.meta["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
