"""The decoder forward_pass.py times: Llama-3 in plain PyTorch, bf16, random weights.

Two ways of writing the same layers: forward_step runs one engine step (tokens of all sequences
flattened, FlashAttention through SDPA, a preallocated KV cache), plain_forward_step one step of a
plain PyTorch program (a batch dimension, a KV cache grown by torch.cat, grouped K/V repeated,
SDPA's default backend choice). forward_pass.py's docstring says what a step holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from emulator.profiler.shapes import ModelShape

DTYPE = torch.bfloat16
RMS_EPS = 1e-5
ROPE_THETA = 500000.0  # Llama 3
MAX_POSITION = 4096  # covers every composition forward_pass.py measures
L2_SAFE_BYTES = 256 << 20  # KV read between two reuses of one cache buffer: well above any L2
KV_MEMORY_SHARE = 0.85  # of the memory free after the weights, for the KV caches
GiB = 1 << 30
# A *_plain_<backend> model pins SDPA to that backend (plain_sdpa_backends).
PLAIN_BACKENDS = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}


def weight_bytes(spec: ModelShape, layers: int) -> int:
    qkv = (spec.heads + 2 * spec.kv_heads) * spec.head_dim * spec.hidden
    o = spec.hidden * spec.heads * spec.head_dim
    mlp = 3 * spec.inter * spec.hidden
    per_layer = qkv + o + mlp + 2 * spec.hidden
    return (layers * per_layer + spec.vocab * spec.hidden + spec.hidden) * DTYPE.itemsize


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

    def kv_bytes(self, spec: ModelShape, layers: int) -> int:
        per_layer = 2 * self.decode_seqs * spec.kv_heads * self.context_len * spec.head_dim
        return layers * per_layer * DTYPE.itemsize


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
    spec: ModelShape
    layers: list[Layer]
    final_norm: torch.Tensor
    lm_head: torch.Tensor  # [vocab, hidden]
    rope_cos: torch.Tensor  # [MAX_POSITION, D / 2]
    rope_sin: torch.Tensor


def build_model(spec: ModelShape, num_layers: int, device) -> Model:
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
    # as FlashAttention anyway: emulator/vgpu/api/cudnn.c).
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


def decoder_layer(x, layer: Layer, spec: ModelShape, cos, sin, inputs: StepInputs, index: int):
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


def plain_decoder_layer(x, layer: Layer, spec: ModelShape, cos, sin, inputs: StepInputs, index: int):
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
