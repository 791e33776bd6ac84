"""vLLM's pynccl on the vGPU library's NCCL, found through VLLM_NCCL_SO_PATH as vLLM finds it.

argv[1]:
  single  one process, world size 1: NCCLLibrary by hand (PyNcclCommunicator stands aside on one
          rank). A one-rank all_reduce is the identity, so an out-of-place one must deliver its
          input exactly (the tensors are small, so host-backed: the values are real).
  ranks   one rank of a group (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set; rank r uses
          device r): PyNcclCommunicator over a gloo group, which broadcasts the unique id, then
          vLLM's collectives and point-to-point. Kernels are no-ops: only shapes are checked.
"""
import ctypes
import os
import sys

import torch
import torch.distributed as dist

from vllm.distributed.device_communicators.pynccl_wrapper import (NCCLLibrary, buffer_type, cudaStream_t,
                                                                  ncclDataTypeEnum, ncclRedOpTypeEnum)
from vllm.utils.nccl import find_nccl_library


def single():
    path = find_nccl_library()
    assert path == os.environ["VLLM_NCCL_SO_PATH"], path
    lib = NCCLLibrary(path)
    assert lib.ncclGetRawVersion() == 23007 and lib.ncclGetVersion() == "2.30.7"
    first, second = lib.ncclGetUniqueId(), lib.ncclGetUniqueId()
    assert bytes(first.internal) != bytes(second.internal), "unique ids must differ"
    torch.cuda.set_device(0)
    comm = lib.ncclCommInitRank(1, first, 0)
    x = torch.arange(16, dtype=torch.float32).to("cuda")
    y = torch.zeros_like(x)
    stream = cudaStream_t(torch.cuda.current_stream().cuda_stream)
    lib.ncclAllReduce(buffer_type(x.data_ptr()), buffer_type(y.data_ptr()), x.numel(),
                      ncclDataTypeEnum.from_torch(x.dtype), ncclRedOpTypeEnum.from_torch(dist.ReduceOp.SUM),
                      comm, stream)
    assert torch.equal(y.cpu(), torch.arange(16, dtype=torch.float32)), y.cpu()
    assert lib.ncclGetErrorString(5).startswith("invalid usage")
    try:
        lib.ncclAllReduce(buffer_type(x.data_ptr()), buffer_type(y.data_ptr()), 1, 99, 0, comm, stream)
    except RuntimeError as e:
        assert "invalid argument" in str(e) and "datatype 99" in str(e), e
    else:
        raise AssertionError("a bad datatype must fail")
    window = lib.ncclCommWindowRegister(comm, buffer_type(x.data_ptr()), 64, 0)
    lib.ncclCommWindowDeregister(comm, window)
    lib.ncclCommSuspend(comm, 1)
    lib.ncclCommResume(comm)
    lib.ncclCommDestroy(comm)


def ranks():
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    comm = PyNcclCommunicator(dist.group.WORLD, device)
    assert comm.available and not comm.disabled
    x = torch.ones(1024, device=device)
    assert comm.all_reduce(x).shape == x.shape
    gathered = torch.empty(world * 1024, device=device)
    comm.all_gather(gathered, x)
    out = torch.empty(1024 // world, device=device)
    comm.reduce_scatter(out, x)
    comm.broadcast(x, src=0)
    peer = rank ^ 1
    comm.batch_isend_irecv([dist.P2POp(dist.isend, x, group_peer=peer),
                            dist.P2POp(dist.irecv, torch.empty_like(x), group_peer=peer)])
    torch.cuda.synchronize()
    comm.destroy()
    dist.destroy_process_group()


if __name__ == "__main__":
    {"single": single, "ranks": ranks}[sys.argv[1]]()
    print("ok")
