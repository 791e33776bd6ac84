"""Virtual time of memory-bound torch ops and memory-efficient attention: one JSON line of ms."""
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def elapsed_ms(fn):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()  # warm: allocations, handles
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def efficient(queries, keys):
    q = torch.empty(1, 32, queries, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.empty(1, 32, keys, 64, device="cuda", dtype=torch.bfloat16)
    mask = torch.empty(1, 1, queries, keys, device="cuda", dtype=torch.bfloat16)

    def run():
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
            F.scaled_dot_product_attention(q, k, k, attn_mask=mask)
    return run


def main():
    mib = 1 << 20
    small = torch.empty(8, 8, mib // 16, 128, device="cuda", dtype=torch.bfloat16)     # 64 MiB
    large = torch.empty(8, 8, mib // 4, 128, device="cuda", dtype=torch.bfloat16)      # 256 MiB
    token = torch.empty(8, 8, 1, 128, device="cuda", dtype=torch.bfloat16)
    rows = torch.empty(1 << 16, 4096, device="cuda", dtype=torch.bfloat16)              # 512 MiB
    index = torch.arange(0, 1 << 16, 2, device="cuda")
    print(json.dumps({
        "cat_64mib": elapsed_ms(lambda: torch.cat([small, token], dim=2)),
        "cat_256mib": elapsed_ms(lambda: torch.cat([large, token], dim=2)),
        "transpose_256mib": elapsed_ms(lambda: large.transpose(1, 2).contiguous()),
        "repeat_interleave_256mib": elapsed_ms(lambda: large.repeat_interleave(4, dim=1)),
        "index_select_256mib": elapsed_ms(lambda: rows.index_select(0, index)),
        "efficient_64q_7200k": elapsed_ms(efficient(64, 7200)),
        "efficient_64q_28800k": elapsed_ms(efficient(64, 28800)),
    }))


if __name__ == "__main__":
    main()
