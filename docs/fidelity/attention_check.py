#!/usr/bin/env python3
"""Time, on the real GPU, the attention transformers' paged|sdpa runs in the validate scenarios:
one packed SDPA call over all sequences of a step (query [1, 32, Q, 64] against the gathered,
repeat_kv'd keys [1, 32, KV, 64] with an additive [1, 1, Q, KV] mask), which PyTorch serves with
its memory-efficient kernel (fmha_cutlassF_*), and the repeat_kv copy before it. The emulator
charges those launches by name and launch geometry only (the geometry does not grow with KV).

    python3 docs/fidelity/attention_check.py --out attention.csv
"""
import argparse
import csv

import torch
import torch.nn.functional as F

# (what, query tokens Q, key tokens KV): decode steps of 1..64 sequences of ~450 tokens, and prefill.
CASES = [("decode 1 seq", 1, 450), ("decode 4 seqs", 4, 4 * 450), ("decode 16 seqs", 16, 16 * 450),
         ("decode 64 seqs", 64, 64 * 450), ("prefill 1 x 320", 320, 320), ("prefill 8 x 320", 2560, 2560),
         ("mixed 16 seqs + 1 prefill", 16 + 320, 16 * 450 + 320)]


def timed(fn, reps=50):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps * 1e3   # microseconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.backends.cuda.enable_cudnn_sdp(False)   # as the transformers server does (emulator/engines/transformers/server.py)
    heads, kv_heads, dim = 32, 8, 64              # Llama-3.2-1B
    rows = []
    for what, q_len, kv_len in CASES:
        q = torch.randn(1, heads, q_len, dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, kv_len, dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        mask = torch.zeros(1, 1, q_len, kv_len, device="cuda", dtype=torch.bfloat16)
        kr = k[:, :, None].expand(1, kv_heads, heads // kv_heads, kv_len, dim).reshape(1, heads, kv_len, dim).contiguous()
        vr = kr.clone()
        attention_us = timed(lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask))
        repeat_us = timed(lambda: k[:, :, None].expand(1, kv_heads, heads // kv_heads, kv_len, dim)
                          .reshape(1, heads, kv_len, dim).contiguous())
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)
            torch.cuda.synchronize()
        kernels = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
        rows.append({"case": what, "q_tokens": q_len, "kv_tokens": kv_len, "sdpa_us": round(attention_us, 2),
                     "repeat_kv_copy_us": round(repeat_us, 2), "kernels": " | ".join(k[:80] for k in kernels)})
        print(rows[-1], flush=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
