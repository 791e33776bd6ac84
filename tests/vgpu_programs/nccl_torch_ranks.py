"""One rank of a torch.distributed job on the NCCL backend, run under the vGPU library.

Started once per rank with RANK, WORLD_SIZE and STORE_FILE set; rank r uses device r. The ranks
meet in a file store, which no rank hosts: with a TCP store hosted by rank 0, a rank 0 done first
ends the store under the others (seen on a loaded host: rank 1 exited 1, "Broken pipe"). Kernels are no-ops, so results are not checked, only that every collective completes and
returns tensors of the right shape; tests/test_vgpu_nccl.py checks the trace.
argv[1] picks how the default group is made:
  nccl   init_process_group("nccl"), communicators made lazily at the first collective
  split  vLLM's way: "cpu:gloo,cuda:nccl" bound to the device, then torch.distributed.split_group
         into pairs (ncclCommSplit)
"""
import os
import sys

import torch
import torch.distributed as dist

mode = sys.argv[1]
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
device = torch.device("cuda", rank)
torch.cuda.set_device(device)
store = f"file://{os.environ['STORE_FILE']}"
if mode == "nccl":
    dist.init_process_group("nccl", init_method=store, rank=rank, world_size=world)
    group = None
else:
    dist.init_process_group("cpu:gloo,cuda:nccl", init_method=store, rank=rank, world_size=world, device_id=device)
    group = dist.split_group(split_ranks=[[r, r + 1] for r in range(0, world, 2)])
size = dist.get_world_size(group)

x = torch.ones(1024, device=device)
dist.all_reduce(x, group=group)
gathered = torch.empty(size * 1024, device=device)
dist.all_gather_into_tensor(gathered, x, group=group)
parts = [torch.empty(1024, device=device) for _ in range(size)]
dist.all_gather(parts, x, group=group)
dist.broadcast(x, src=dist.get_global_rank(group, 0) if group else 0, group=group)
out = torch.empty(1024 // size, device=device)
dist.reduce_scatter_tensor(out, x, group=group)
torch.cuda.synchronize()
assert x.shape == (1024,) and gathered.shape == (size * 1024,) and out.shape == (1024 // size,)
assert [p.shape for p in parts] == [(1024,)] * size
dist.destroy_process_group()
print(f"rank {rank} ok")
