"""The vGPU library's own predictor, called from Python.

Accuracy is measured on what the emulator charges, so held-out rows are predicted by the same C
code that predicts launches (emulator/vgpu/predict/predictor_profiled.c), not by a Python copy of it.
The library holds one model at a time; asking about another model file loads that one.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def _library():
    import cffi
    from emulator.vgpu.build import LIBRARY, build_library
    ffi = cffi.FFI()
    ffi.cdef("void revati_predictor_load(const char *model_path);"
             "double revati_predict_attention(const char *backend, double seqs, double query_len,"
             " double context_len, double heads, double kv_heads, double head_dim);"
             "double revati_predict_collective(const char *op, double whole_bytes, double nranks);"
             "double revati_predict_memory(const char *cls, double bytes);"
             "double revati_predict_d2d_copy(double bytes);"
             "void revati_attention_batch(int num_seqs, const int32_t *query_start_loc, const int32_t *seq_lens,"
             " int heads, int kv_heads, int head_dim, int kv_element_bytes);"
             "double revati_predict_published_attention(void);"
             "double revati_predict_efficient_attention(double batch, double heads, double queries,"
             " double keys, double head_dim, double mask, double causal, double query_blocks);"
             "double revati_predict_cudnn_attention(double batch, double heads, double kv_heads, double queries,"
             " double keys, double head_dim, double causal, double masked);")
    return ffi.dlopen(str(build_library() / LIBRARY))


_loaded: list[tuple[Path, float]] = []      # the model file the library holds, and its mtime


def _load(model: Path):
    lib = _library()
    state = (model, model.stat().st_mtime)
    if _loaded != [state]:
        lib.revati_predictor_load(str(model).encode())
        _loaded[:] = [state]
    return lib


def attention_seconds(model: Path, backend: str, seqs: int, query_len: int, context_len: int, heads: int,
                      kv_heads: int, head_dim: int) -> float:
    """What the emulator charges one attention launch over `seqs` like sequences."""
    seconds = _load(Path(model)).revati_predict_attention(backend.encode(), seqs, query_len, context_len, heads,
                                                          kv_heads, head_dim)
    if seconds < 0:
        raise ValueError(f"the vGPU library has no attention backend {backend!r}")
    return seconds


def collective_seconds(model: Path, op: str, nbytes: float, nranks: int) -> float:
    """What the emulator charges one collective of the model file's `op` over `nbytes` (the whole
    buffer, collectives.csv's convention) in a communicator of `nranks`."""
    seconds = _load(Path(model)).revati_predict_collective(op.encode(), nbytes, nranks)
    if seconds < 0:
        raise ValueError(f"the vGPU library has no collective {op!r}")
    return seconds


def memory_seconds(model: Path, cls: str, nbytes: float) -> float:
    """What the emulator charges a memory-bound kernel of class `cls` (models.MEMORY_CLASSES)
    moving `nbytes`, read plus written."""
    seconds = _load(Path(model)).revati_predict_memory(cls.encode(), nbytes)
    if seconds < 0:
        raise ValueError(f"the vGPU library has no memory class {cls!r}")
    return seconds


def d2d_copy_seconds(model: Path, nbytes: float) -> float:
    """What the emulator charges a device-to-device memcpy of `nbytes` (copied, not read plus written)."""
    return _load(Path(model)).revati_predict_d2d_copy(nbytes)


def efficient_attention_seconds(model: Path, batch: int, heads: int, queries: int, keys: int, head_dim: int,
                                mask: bool, causal: bool, query_blocks: int) -> float:
    """What the emulator charges one launch of PyTorch's memory-efficient attention kernel."""
    return _load(Path(model)).revati_predict_efficient_attention(batch, heads, queries, keys, head_dim, mask,
                                                                  causal, query_blocks)


def cudnn_attention_seconds(model: Path, batch: int, heads: int, queries: int, keys: int, head_dim: int,
                            causal: bool, masked: bool) -> float:
    """What the emulator charges one cuDNN SDPA forward launch (cudnn.c's, K/V at the query heads)."""
    return _load(Path(model)).revati_predict_cudnn_attention(batch, heads, heads, queries, keys, head_dim, causal,
                                                              masked)


def published_attention_seconds(model: Path, groups: list[tuple[int, int, int]], heads: int, kv_heads: int,
                                head_dim: int) -> float:
    """What the emulator charges vLLM's attention for a batch of (query_len, context_len, count)
    groups, published as the vLLM plugin publishes a step's batch (bf16 KV cache)."""
    lib = _load(Path(model))
    import cffi
    ffi = cffi.FFI()
    lengths = [(q, ctx) for q, ctx, count in groups for _ in range(count)]
    starts = [0]
    for q, _ in lengths:
        starts.append(starts[-1] + q)
    lib.revati_attention_batch(len(lengths), ffi.new("int32_t[]", starts), ffi.new("int32_t[]", [c for _, c in lengths]),
                               heads, kv_heads, head_dim, 2)
    seconds = lib.revati_predict_published_attention()
    if seconds < 0:
        raise ValueError("the model file has no vllm_triton_unified attention")
    return seconds
