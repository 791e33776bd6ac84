"""Eager plain-PyTorch decoder steps, real or emulated (issues 18 and 19: programs that are not an
engine, on model shapes that no table was fitted to).

    python3 -m docs.fidelity.plain_decoder --out DIR
    revati-tune exec --gpus 1 --sku h100 -- python3 -m docs.fidelity.plain_decoder --out DIR

A Llama-style decoder written the way a researcher writes one: nn.Linear projections, RMSNorm and
rotary embeddings in plain torch ops, a KV cache grown with torch.cat every step, GQA by
repeat_interleave, torch's default SDPA backend; no CUDA graphs, no compile. Prefill then decode,
each step timed host-side with torch.cuda.synchronize around it (as a user times it). The shapes
are deliberately off the usual grid (hidden sizes not powers of two, odd head counts).
Writes DIR/plain_decoder.json: per (shape, phase, batch) the median step in ms.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# name: (layers, hidden, heads, kv_heads, intermediate, vocab)
SHAPES = {
    "d3072_h24_kv6": (12, 3072, 24, 6, 8960, 50000),
    "d2560_h20_kv4": (16, 2560, 20, 4, 6912, 65000),
    "d5120_h40_kv8": (6, 5120, 40, 8, 13824, 32000),
}


class Layer(nn.Module):
    def __init__(self, hidden, heads, kv_heads, intermediate):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.kv = nn.Linear(hidden, 2 * kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(hidden, hidden, bias=False)
        self.gate_up = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down = nn.Linear(intermediate, hidden, bias=False)
        self.norm1 = nn.Parameter(torch.ones(hidden))
        self.norm2 = nn.Parameter(torch.ones(hidden))

    @staticmethod
    def rms(x, weight):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + 1e-5)).to(x.dtype) * weight

    @staticmethod
    def rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, x, cache, cos, sin):
        b, t, _ = x.shape
        h = self.rms(x, self.norm1)
        q = self.q(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(h).view(b, t, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
        if cache is not None:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        groups = self.heads // self.kv_heads
        attn = F.scaled_dot_product_attention(q, k.repeat_interleave(groups, dim=1),
                                              v.repeat_interleave(groups, dim=1), is_causal=cache is None)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, -1))
        gate, up = self.gate_up(self.rms(x, self.norm2)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), (k, v)


class Decoder(nn.Module):
    def __init__(self, layers, hidden, heads, kv_heads, intermediate, vocab):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(Layer(hidden, heads, kv_heads, intermediate) for _ in range(layers))
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.head_dim = hidden // heads

    def forward(self, tokens, caches, position):
        t = tokens.shape[1]
        inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, device=tokens.device).float() / self.head_dim))
        angles = torch.outer(torch.arange(position, position + t, device=tokens.device).float(), inv)
        cos, sin = torch.cat((angles, angles), -1).cos().to(torch.bfloat16), torch.cat((angles, angles), -1).sin().to(torch.bfloat16)
        x = self.embed(tokens)
        new = []
        for layer, cache in zip(self.layers, caches):
            x, kv = layer(x, cache, cos, sin)
            new.append(kv)
        return self.head(x[:, -1]).argmax(-1, keepdim=True), new


def timed(fn):
    torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, 1e3 * (time.perf_counter() - started)


@torch.no_grad()
def measure(shape, batch, prompt, decode_steps):
    layers, hidden, heads, kv_heads, intermediate, vocab = SHAPES[shape]
    with torch.device("cuda"):
        model = Decoder(layers, hidden, heads, kv_heads, intermediate, vocab).to(torch.bfloat16).eval()
        tokens = torch.randint(0, vocab, (batch, prompt))
    rows = []
    for repeat in range(3):     # the first repeat warms up (allocator, cuBLAS heuristics, cuDNN graphs)
        (token, caches), prefill_ms = timed(lambda: model(tokens, [None] * layers, 0))
        decode_ms = []
        for step in range(decode_steps):
            (token, caches), ms = timed(lambda: model(token, caches, prompt + step))
            decode_ms.append(ms)
        if repeat:
            rows.append((prefill_ms, statistics.median(decode_ms[1:])))
    del model, caches
    torch.cuda.empty_cache()
    return {"shape": shape, "batch": batch, "prompt": prompt, "decode_steps": decode_steps,
            "prefill_ms": statistics.median(r[0] for r in rows), "decode_ms": statistics.median(r[1] for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for shape in SHAPES:
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(shape, batch, args.prompt, args.decode_steps)
            print(json.dumps(row), flush=True)
            results.append(row)
    facts = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    (args.out / "plain_decoder.json").write_text(json.dumps({"facts": facts, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
