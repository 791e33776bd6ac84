"""revati-tune's SGLang general plugin: tells the vGPU library the batch each attention kernel works on.

SGLang's Hopper attention (FlashAttention 3 from sgl-kernel) reads every sequence's query and
context length from device memory, so its launches alone do not say how much work they do. Each
forward pass's ForwardBatch carries that batch on the host (seq_lens_cpu, extend_seq_lens_cpu)
before the pass's kernels launch or its CUDA graph replays: a hook before ModelRunner.forward hands
it to the vGPU library (revati_attention_batch, emulator/vgpu/predict/attention_batch.c), which charges
those kernels for it, as revati-tune's vLLM plugin does for vLLM.

SGLang loads it through its extension point (entry-point group `sglang.srt.plugins`, in every
scheduler process, tensor-parallel ranks included) from the static dist-info beside this file;
the SGLang adapter puts this folder on PYTHONPATH, so nothing is installed in SGLang's environment
and its sources are untouched. Outside emulation (no vGPU library loaded) it does nothing.

It also makes every rank sample the same, valid token. Each tensor-parallel rank of SGLang runs its
own scheduler on the ids its sampler returns, trusting them to agree (on a GPU they do: same logits,
same seeds). Under emulation the sampling kernels are no-ops and the ids are whatever the buffer
held, which differs between ranks and may lie outside the vocabulary, which SGLang treats as a
finished request: ranks then batch different requests, replay different CUDA graphs, and their
collectives never meet (seen: Llama-3.1-70B TP4 hung after 4 requests). So the sampler's output is
overwritten with token 0 by a host-to-device copy, which the vGPU library carries out for real.
Output lengths are set by the load generator (max_tokens with ignore_eos), so which token it is
does not matter.
"""
from __future__ import annotations

import ctypes
import itertools

FORWARD = "sglang.srt.model_executor.model_runner.ModelRunner.forward"
SAMPLE = "sglang.srt.layers.sampler.Sampler.forward"


def register() -> None:
    try:
        publish = ctypes.CDLL(None).revati_attention_batch
    except AttributeError:
        return                  # not on virtual GPUs
    publish.restype = None
    publish.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 4
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    def before_forward(model_runner, forward_batch, *args, **kwargs):
        _publish(publish, model_runner, forward_batch)

    HookRegistry.register(FORWARD, before_forward, HookType.BEFORE)
    HookRegistry.register(SAMPLE, _same_token_on_every_rank, HookType.AFTER)


def _same_token_on_every_rank(next_token_ids, *args, **kwargs):
    import torch
    zeros = torch.zeros(next_token_ids.shape, dtype=next_token_ids.dtype, pin_memory=True)
    # Asynchronous: a blocking copy would synchronise the host with the GPU here, where SGLang's
    # overlapped scheduling does not.
    next_token_ids.copy_(zeros, non_blocking=True)
    return next_token_ids


def _publish(publish, model_runner, batch) -> None:
    backend = model_runner.attn_backend
    heads = getattr(backend, "num_attention_heads", None)     # FlashAttentionBackend's, per TP rank
    seq_lens = batch.seq_lens_cpu
    if heads is None or seq_lens is None:
        return
    mode = batch.forward_mode
    if mode.is_decode():
        query_lens = [1] * len(seq_lens)
    elif mode.is_extend() and batch.extend_seq_lens_cpu is not None:
        query_lens = batch.extend_seq_lens_cpu
    else:                   # idle, speculative verification: no batch this emulation models
        query_lens = []
    n = min(len(query_lens), len(seq_lens))
    starts = (ctypes.c_int32 * (n + 1))(0, *itertools.accumulate(query_lens[:n]))
    lens = (ctypes.c_int32 * max(n, 1))(*(int(x) for x in seq_lens[:n].tolist()))
    publish(n, ctypes.addressof(starts), ctypes.addressof(lens), heads, backend.num_kv_heads, backend.head_dim,
            model_runner.kv_cache_dtype.itemsize)
