"""torch's SDPA on cuDNN meeting new shapes on a virtual H100: the host time of each call (the
wall time of the Python call, which under the library includes host work it charges). Prints one
JSON object {call: milliseconds} for tests/test_vgpu_cudnn.py."""
import json
import time

import torch
import torch.nn.functional as F


def call_ms(batch, seqlen_q, seqlen_k, causal):
    q = torch.randn(batch, 16, seqlen_q, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, 16, seqlen_k, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    torch.cuda.synchronize()
    started = time.perf_counter()
    F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return (time.perf_counter() - started) * 1e3


out = {
    "decode_first": call_ms(8, 1, 512, False),        # the first decode graph of the process
    "decode_cached": call_ms(8, 1, 512, False),       # the same shape: torch's cache
    "decode_new_shape": call_ms(8, 1, 640, False),    # a new shape of a known signature
    "prefill_first": call_ms(1, 256, 256, True),      # another signature: a first build
    "prefill_new_shape": call_ms(1, 384, 384, True),
}
print(json.dumps(out))
