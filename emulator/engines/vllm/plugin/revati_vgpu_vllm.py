"""revati-tune's vLLM general plugin: tells the vGPU library the batch each attention kernel works on.

FlashAttention 3, vllm_flash_attn's FlashAttention 2 and vLLM's Triton attention read every
sequence's query and context length from device memory, so their launches alone do not say how
much work they do. vLLM's attention metadata builders know that batch on the host before the
step's kernels launch (or its CUDA graph replays): this wraps their build() to hand it to the vGPU
library (revati_attention_batch, emulator/vgpu/predict/attention_batch.c), which charges those kernels
for it.

vLLM loads it through its extension point (entry-point group `vllm.general_plugins`, in every vLLM
process, tensor-parallel workers included) from the static dist-info beside this file; the vLLM
adapter puts this folder on PYTHONPATH, so nothing is installed in vLLM's environment and vLLM's
sources are untouched. Outside emulation (no vGPU library loaded) it does nothing.
"""
from __future__ import annotations

import ctypes
import functools

# The builders of the backends whose kernels the vGPU library charges from the published batch.
BUILDERS = ("FlashAttentionMetadataBuilder", "TritonAttentionMetadataBuilder")


def register() -> None:
    try:
        publish = ctypes.CDLL(None).revati_attention_batch
    except AttributeError:
        return                  # not on virtual GPUs
    publish.restype = None
    publish.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 4
    from vllm.v1.attention.backend import AttentionMetadataBuilder
    if getattr(AttentionMetadataBuilder, "_revati_hooked", False):
        return
    AttentionMetadataBuilder._revati_hooked = True

    def wrap(cls: type) -> None:
        if cls.__name__ in BUILDERS and "build" in vars(cls):
            cls.build = _publishing(cls.build, publish)

    # The backends' modules are imported after plugins load, so builders are mostly wrapped as
    # their classes are defined; any defined already are wrapped now.
    def init_subclass(cls, **kwargs):
        super(AttentionMetadataBuilder, cls).__init_subclass__(**kwargs)
        wrap(cls)

    AttentionMetadataBuilder.__init_subclass__ = classmethod(init_subclass)
    pending = list(AttentionMetadataBuilder.__subclasses__())
    while pending:
        cls = pending.pop()
        wrap(cls)
        pending += cls.__subclasses__()


def _publishing(build, publish):
    @functools.wraps(build)
    def publishing_build(self, common_prefix_len, common_attn_metadata, *args, **kwargs):
        m = common_attn_metadata
        # Host copies vLLM keeps anyway: cumulative query tokens and each sequence's length (an
        # upper bound only for asynchronous speculative decoding, which may reject drafts).
        seq_lens = m.seq_lens_cpu_upper_bound
        if seq_lens is not None:
            starts = m.query_start_loc_cpu.int().contiguous()
            seq_lens = seq_lens.int().contiguous()
            num_seqs = min(m.num_reqs, len(starts) - 1, len(seq_lens))
            publish(num_seqs, starts.data_ptr(), seq_lens.data_ptr(), self.num_heads_q, self.num_heads_kv,
                    self.headdim, self.kv_cache_spec.dtype.itemsize)
        return build(self, common_prefix_len, common_attn_metadata, *args, **kwargs)

    return publishing_build
