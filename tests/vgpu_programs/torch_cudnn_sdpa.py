"""torch's scaled_dot_product_attention with its default backends (bf16, a decoder's prefill and
decode shapes) on a virtual H100, and a cuDNN handle used directly. Prints one JSON object of
observations for tests/test_vgpu_cudnn.py; which launches were charged, and for how long, the test
reads from the trace."""
import ctypes
import json

import torch
import torch.nn.functional as F

out = {"cudnn_available": torch.backends.cudnn.is_available(), "cudnn_version": torch.backends.cudnn.version(),
       "compiled_version": list(torch._C._cudnn.getCompileVersion()),
       "cudnn_sdp_enabled": torch.backends.cuda.cudnn_sdp_enabled()}

# A handle through the process's cudnn* symbols (the preloaded library's, as torch's are).
lib = ctypes.CDLL(None)
handle, side, got = ctypes.c_void_p(), torch.cuda.Stream(), ctypes.c_void_p()
statuses = [lib.cudnnCreate(ctypes.byref(handle)), lib.cudnnSetStream(handle, ctypes.c_void_p(side.cuda_stream)),
            lib.cudnnGetStream(handle, ctypes.byref(got)), lib.cudnnDestroy(handle)]
out["handle"] = {"statuses": statuses, "stream_kept": got.value == side.cuda_stream}


busy_a, busy_b = torch.empty(64, 64, device="cuda"), torch.empty(64, 64, device="cuda")


def elapsed_ms(work, stream=None, measured=None):
    """Event time on `measured` (default: `stream`) around `work` run on `stream`, both streams kept
    busy by a GEMM while the start event is recorded, so that it measures device time only (the
    test charges GEMMs 10 ms)."""
    stream = stream or torch.cuda.current_stream()
    measured = measured or stream
    torch.cuda.synchronize()
    for s in {stream, measured}:
        with torch.cuda.stream(s):
            busy_a @ busy_b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(measured)
    with torch.cuda.stream(stream):
        work()
    end.record(measured)
    end.synchronize()
    return start.elapsed_time(end)


def attention(batch, heads, kv_heads, seqlen_q, seqlen_k, head_dim, causal):
    q = torch.randn(batch, heads, seqlen_q, head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, kv_heads, seqlen_k, head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(batch, kv_heads, seqlen_k, head_dim, device="cuda", dtype=torch.bfloat16)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=heads != kv_heads)


CASES = {   # batch, heads, kv heads, query rows, keys, head dim, causal
    "prefill_512": (1, 16, 16, 512, 512, 128, True),
    "prefill_2048": (1, 16, 16, 2048, 2048, 128, True),
    "decode_512": (8, 16, 16, 1, 512, 128, False),
    "decode_2048": (8, 16, 16, 1, 2048, 128, False),
}
out["shapes"], out["ms"] = {}, {}
for name, shape in CASES.items():
    run = attention(*shape)
    out["shapes"][name] = list(run().shape)     # the first call builds (and runs) the cuDNN graph
    out["ms"][name] = elapsed_ms(run)

# Grouped K/V heads (a decode of Llama-3-8B's heads), and a call on a side stream: the charge goes
# to the stream torch binds the cuDNN handle to, not to the default one.
out["shapes"]["decode_gqa"] = list(attention(4, 32, 8, 1, 1024, 128, False)().shape)
run = attention(*CASES["decode_512"])
out["ms"]["side_stream"] = elapsed_ms(run, side)
out["ms"]["default_while_side_runs"] = elapsed_ms(run, side, torch.cuda.current_stream())
print(json.dumps(out), flush=True)
