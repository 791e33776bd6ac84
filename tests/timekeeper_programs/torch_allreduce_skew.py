"""One rank of a torch.distributed all-reduce whose ranks arrive at different virtual times: rank
r first sleeps r virtual seconds. Prints when it arrived and when the all-reduce was done on its
GPU (time.monotonic(), one JSON line).
usage: torch_allreduce_skew.py RANK WORLD PORT"""
import json
import sys
import time

import torch
import torch.distributed as dist

rank, world, port = (int(a) for a in sys.argv[1:4])
device = torch.device("cuda", rank)
torch.cuda.set_device(device)
dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                        device_id=device)
x = torch.ones(1 << 20, device=device)
dist.barrier()                  # every rank is past its start-up
torch.cuda.synchronize()
time.sleep(rank)
arrived = time.monotonic()
dist.all_reduce(x)
torch.cuda.synchronize()
done = time.monotonic()
dist.destroy_process_group()
print(json.dumps({"rank": rank, "arrived": arrived, "done": done}))
