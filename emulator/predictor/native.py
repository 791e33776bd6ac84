"""The vGPU library's own predictor, called from Python.

Accuracy is measured on what the emulator charges, so held-out rows are predicted by the same C
code that predicts launches (emulator/vgpu/predictor_profiled.c), not by a Python copy of it.
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
             "double revati_predict_collective(const char *op, double whole_bytes, double nranks);")
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
