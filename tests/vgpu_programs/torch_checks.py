"""Run under `revati-tune exec` semantics (vGPU env) with the fixed predictor charging every kernel
1 ms and every GEMM 2 ms; prints one JSON object of observations for tests/test_vgpu_torch.py."""
import json

import torch

out = {"available": torch.cuda.is_available(), "count": torch.cuda.device_count()}
p = torch.cuda.get_device_properties(0)
out["props"] = {"name": p.name, "total_memory": p.total_memory, "major": p.major, "minor": p.minor,
                "sms": p.multi_processor_count}

# Small tensors are host-backed: a round trip through the device is exact.
data = torch.arange(1000, dtype=torch.float32) * 0.5
out["roundtrip_exact"] = bool(torch.equal(data.cuda().cpu(), data))
ints = torch.randint(0, 1 << 30, (257,), dtype=torch.int64)
out["roundtrip_int64_exact"] = bool(torch.equal(ints.to("cuda:1").cpu(), ints))


def elapsed_ms(work):
    """Event time around `work`, recorded behind a busy stream so it measures device time only."""
    torch.cuda.synchronize()
    warm = torch.empty(16, device="cuda")
    warm.mul_(2)                      # keeps the stream busy while the start event is recorded
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


x = torch.empty(64, device="cuda")
out["three_kernels_ms"] = elapsed_ms(lambda: [x.mul_(2) for _ in range(3)])

a16 = torch.randn(64, 128, device="cuda", dtype=torch.float16)
b16 = torch.randn(128, 32, device="cuda", dtype=torch.float16)
abf = a16.to(torch.bfloat16)
bbf = b16.to(torch.bfloat16)
out["matmul_shapes"] = [list((a16 @ b16).shape), list((abf @ bbf).shape)]
out["matmul_fp16_ms"] = elapsed_ms(lambda: a16 @ b16)
out["matmul_bf16_ms"] = elapsed_ms(lambda: abf @ bbf)

# CUDA graphs: capture three kernels, replay, and time the replay.
static = torch.empty(64, device="cuda")
graph = torch.cuda.CUDAGraph()
side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side):
    static.mul_(2)                    # warm-up outside the capture, as torch recommends
torch.cuda.current_stream().wait_stream(side)
with torch.cuda.graph(graph):
    for _ in range(3):
        static.mul_(2)
out["graph_replay_ms"] = elapsed_ms(graph.replay)

# Memory accounting: what the device reports is exactly what torch holds plus the context.
torch.cuda.synchronize()
torch.cuda.empty_cache()
before = torch.cuda.memory_allocated()
big = torch.empty(1 << 20, dtype=torch.float32, device="cuda")       # 4 MiB
out["allocated_delta"] = torch.cuda.memory_allocated() - before
free, total = torch.cuda.mem_get_info()
out["mem_total"] = total
out["mem_in_use"] = total - free
out["torch_reserved"] = torch.cuda.memory_reserved()
print(json.dumps(out))
