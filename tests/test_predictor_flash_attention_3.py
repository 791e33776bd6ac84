"""FlashAttention 3 is modelled (models.FlashAttention3): calibrated to the FA3 paper's published H100
figures (emulator/predictor/data/published/), and charged by the vGPU library for the batch vLLM
publishes (emulator/vgpu/predict/attention_batch.c, predictor_profiled.c) as the Python model computes it."""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path

import cffi
import numpy as np
import pytest

from emulator.hardware import load_sku
from emulator.predictor import modelfile, models, native, tables
from emulator.vgpu.build import LIBRARY, build_library

# Llama-3.1-8B's attention on one GPU.
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


@lru_cache(maxsize=None)
def _library():
    ffi = cffi.FFI()
    ffi.cdef("double revati_predict_published_flash_attention_3(void);")
    return ffi.dlopen(str(build_library() / LIBRARY))


def fa3_charged(model: Path | str, groups: list[tuple[int, int, int]], heads: int = HEADS, kv_heads: int = KV_HEADS,
                head_dim: int = HEAD_DIM) -> tuple[float, float]:
    """(what an FA3 forward kernel is charged, what vLLM's Triton attention is) for a batch of
    (query_len, context_len, count) groups, published as the vLLM plugin publishes it."""
    triton = native.published_attention_seconds(Path(model), groups, heads, kv_heads, head_dim)
    return _library().revati_predict_published_flash_attention_3(), triton


@pytest.fixture(scope="module")
def h100():
    return models.fit(tables.load("h100"), load_sku("h100"))


@pytest.fixture(scope="module")
def h100_model(h100, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fa3") / "h100.model"
    path.write_text(modelfile.render(h100))
    return path


# ---- the calibration ---------------------------------------------------------------------------

def test_the_published_figures_are_the_papers_setup():
    published = models.fa3_published()
    assert len(published) == 36
    assert (published["batch"] * published["seqlen"] == 16384).all()
    assert (published["heads"] * published["head_dim"] == 2048).all()
    # Causal launches do half the FLOPs: 616 TFLOPs/s at head size 128 and 16k tokens.
    row = published[(published.head_dim == 128) & (published.causal == 1) & (published.seqlen == 16384)]
    assert row["seconds"].item() == pytest.approx(2 * 16384**2 * 128 * 16 / 616e12)


def test_the_fit_reproduces_the_published_figures_within_its_residual(h100):
    fa3 = h100.flash_attention_3
    assert fa3.calibrated_on == "h100" and fa3.sms == 132 and fa3.launch_s == h100.kernels.default.a
    published = models.fa3_published()
    errors = np.abs(models.fa3_benchmark_predictions(fa3, published) / published["seconds"].to_numpy() - 1)
    assert np.median(errors) < 0.03 and np.percentile(errors, 90) < 0.06 and errors.max() < 0.10
    # Physical: no head size's blocks run above the SM's bf16 peak (4 FLOPs an MMA element), and
    # every cost is positive.
    per_sm_peak = load_sku("h100").peak_tflops["bf16"] * 1e12 / 132
    assert all(4 / (m + fa3.causal_s) < per_sm_peak and 4 / m < per_sm_peak for m in fa3.mma_s)
    assert min(fa3.qo_s, fa3.causal_s, fa3.masked_s) > 0


def test_a_fit_without_a_sequence_length_predicts_it():
    published = models.fa3_published()
    held = published[published.seqlen == 4096]
    fa3 = models.fit_flash_attention_3(published.drop(held.index), load_sku("h100"), 2e-6)
    errors = np.abs(models.fa3_benchmark_predictions(fa3, held) / held["seconds"].to_numpy() - 1)
    assert len(errors) == 6 and errors.max() < 0.10


# ---- FA3's CTAs as vLLM launches it ------------------------------------------------------------

def test_a_long_decode_is_split_across_the_sms():
    # One decode over 8192 keys, 8 KV heads: 8 query blocks (4 packed query heads each) fill 8 of
    # 132 SMs; the heuristic allows 15 splits, the batch's blocks per SM (ceil(64 * 1.1 * 8 / 132)
    # = 5) make it 13: 12 splits of 5 of the 64 blocks of 128 keys and one of 4, the diagonal.
    tile, blocks = models.fa3_ctas([(1, 8192, 1)], HEADS, KV_HEADS, HEAD_DIM, 132)
    assert tile == (128, 128) and len(blocks) == 8 * 13
    assert blocks[:13, 0].tolist() == [5] * 12 + [4]
    assert blocks[:13, 1].tolist() == [0] * 12 + [1]


def test_a_prompt_runs_its_longest_query_blocks_first():
    # 2048 queries x 4 heads a KV head: 64 query blocks of 128 rows (32 queries) per KV head, no
    # splits; the last block sees all 16 key blocks, its last one masked; the first, one block.
    tile, blocks = models.fa3_ctas([(2048, 2048, 1)], HEADS, KV_HEADS, HEAD_DIM, 132)
    assert len(blocks) == 64 * 8
    assert blocks[:8].tolist() == [[16, 1]] * 8 and blocks[-8:].tolist() == [[1, 1]] * 8


# ---- the vGPU library charges what the model computes -------------------------------------------

BATCHES = [([(1, 1024, 8)], HEADS, KV_HEADS, 128), ([(1, 8192, 1)], HEADS, KV_HEADS, 128),
           ([(1, 2048, 32), (512, 2048, 1)], HEADS, KV_HEADS, 128), ([(8192, 8192, 1)], HEADS, KV_HEADS, 128),
           ([(300, 3000, 2), (1, 768, 90)], 64, 8, 128), ([(1, 5000, 3), (17, 900, 2)], 32, 32, 64),
           ([(1, 5000, 3), (700, 900, 2)], 16, 16, 256), ([(1, 70000, 1), (40, 3000, 3)], 28, 4, 96),
           ([(1, 4000, 1000)], HEADS, KV_HEADS, 128)]


@pytest.mark.parametrize("sku", ["h100", "a100"])
def test_the_c_predictor_charges_what_the_python_model_computes(sku, h100, tmp_path):
    # The A100's is carried from the H100's fit (108 SMs, a slower SM), here without memory curves
    # (bytes then go at the copy rate).
    fitted = h100 if sku == "h100" else dataclasses.replace(
        models.transfer(h100, load_sku("h100"), load_sku(sku)), memory={})
    path = tmp_path / f"{sku}.model"
    path.write_text(modelfile.render(fitted))
    for groups, heads, kv_heads, head_dim in BATCHES:
        charged, _ = fa3_charged(path, groups, heads, kv_heads, head_dim)
        assert charged == pytest.approx(fitted.flash_attention_3_seconds(groups, heads, kv_heads, head_dim),
                                        rel=1e-6), (groups, heads, kv_heads, head_dim)


def test_a_decode_moves_at_least_its_kv_cache_at_the_skus_bandwidth(h100, h100_model):
    groups = [(1, 4096, 128)]
    kv_bytes = 4096 * 128 * KV_HEADS * HEAD_DIM * 2 * 2
    qo_bytes = 128 * HEADS * HEAD_DIM * 2 * 2
    charged, _ = fa3_charged(h100_model, groups)
    assert charged >= kv_bytes / (load_sku("h100").hbm_bandwidth_gbps * 1e9)
    # Memory-bound: its bytes on the H100's measured memory curve, more than its CTAs' compute.
    assert charged == pytest.approx(native.memory_seconds(h100_model, "elementwise", kv_bytes + qo_bytes), rel=1e-9)
    fa3 = h100.flash_attention_3
    assert fa3.compute_seconds(*models.fa3_ctas(groups, HEADS, KV_HEADS, HEAD_DIM, 132), HEAD_DIM, True) < charged


def test_the_h200_carries_the_h100_calibration():
    h100, h200 = (str(modelfile.ensure_model_file(sku)) for sku in ("h100", "h200"))
    # The same SMs: a long prompt (compute-bound) costs the same. A decode moves its bytes on the
    # H200's own measured memory curve: less than on the H100's.
    prompt = [(8192, 8192, 1)]
    assert fa3_charged(h200, prompt)[0] == pytest.approx(fa3_charged(h100, prompt)[0], rel=0.01)
    decode = [(1, 4096, 128)]
    nbytes = 4096 * 128 * KV_HEADS * HEAD_DIM * 2 * 2 + 128 * HEADS * HEAD_DIM * 2 * 2
    charged = fa3_charged(h200, decode)[0]
    assert charged == pytest.approx(native.memory_seconds(Path(h200), "elementwise", nbytes), rel=1e-9)
    assert charged < fa3_charged(h100, decode)[0]


def test_a_model_file_without_the_record_charges_fa3_as_vllms_triton_attention(h100, h100_model, tmp_path):
    path = tmp_path / "without_fa3.model"
    path.write_text(modelfile.render(dataclasses.replace(h100, flash_attention_3=None)))
    assert "flash_attention_3" not in path.read_text()
    for groups, *heads in BATCHES[:4]:
        without, triton_without = fa3_charged(path, groups, *heads)
        with_fa3, triton_with = fa3_charged(h100_model, groups, *heads)
        assert without == triton_without == triton_with
        assert with_fa3 != without
