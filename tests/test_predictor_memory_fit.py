"""The fits behind the memory_curve and efficient_attention records (models.py), on tables made
from a known law: what each fit recovers, and what the C predictor charges from the model file."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from emulator.hardware import load_sku
from emulator.predictor import modelfile, models, native, tables


def memory_table(rate=3e12, latency=4e-6):
    rows = []
    for op, dtype, moved in (("add", "bf16", 3), ("copy", "fp32", 2), ("cat_kv", "bf16", 2),
                             ("index_select", "bf16", 2)):
        for i, exponent in enumerate(range(16, 32)):
            nbytes = (1 << exponent) // (moved * 2) * moved * 2     # a few bytes short, as the profiler's
            rows.append((op, dtype, nbytes, latency + nbytes / rate, "holdout" if i % 2 else "fit"))
    return pd.DataFrame(rows, columns=["op", "dtype", "bytes", "seconds", "split"])


def test_memory_curves_are_one_per_class_and_follow_the_measured_rate():
    curves = models.fit_memory_curves(memory_table())
    # copy_ of a contiguous tensor is a D2D memcpy, no kernel (no curve); index_select of at most 16
    # rows runs ATen's small-index kernel.
    assert set(curves) == {"elementwise", "cat", "gather", "gather_small"}
    assert curves["gather_small"].bytes.max() <= 2 * 16 * 4096 * 2 < curves["gather"].bytes.min()
    for cls, curve in curves.items():
        assert (np.diff(curve.bytes) > 0).all()
        sizes = {"gather_small": (1 << 17,), "gather": (3 << 24, 1 << 31)}.get(cls, (1 << 17, 3 << 24, 1 << 31))
        for nbytes in sizes:                                # off the fitting sizes, and past them
            assert curve.predict(nbytes) == pytest.approx(4e-6 + nbytes / 3e12, rel=0.03)
        assert curve.predict(1 << 10) == pytest.approx(curve.seconds[0])     # below: the floor


def test_memory_rows_take_the_class_of_the_kernel_they_ran():
    assert models.memory_class("add", "bf16", 1 << 20) == "elementwise"
    assert models.memory_class("index_select", "bf16", 2 * 16 * 4096 * 2) == "gather_small"
    assert models.memory_class("index_select", "bf16", 2 * 17 * 4096 * 2) == "gather"
    assert models.memory_class("transpose_copy", "bf16", 1 << 20) == "elementwise_strided"


def test_an_unknown_memory_op_is_refused_by_name():
    table = memory_table()
    table.loc[0, "op"] = "scatter_add"
    with pytest.raises(ValueError, match="memory.csv column op: unknown \\['scatter_add'\\]"):
        models.fit_memory_curves(table)


# A memory-efficient kernel of known law: 3 CTAs an SM, a lone CTA 2.5 SM key-block times a block,
# a masked block 1.5 blocks, a causal CTA 1 block more.
EFFICIENT_LAW = models.EfficientAttentionCTAs(128, 132, 3, 2.5, 0.5, 1.0, np.array([3e-6, 1e-6, 2.5e-9, 4e-13]))


def efficient_table(law=EFFICIENT_LAW, head_dim=128):
    """The law's times at head_dim; at 64, a key block (64 keys of 64) costs a quarter of one at 128."""
    if head_dim != law.head_dim:
        law = dataclasses.replace(law, coefficients=law.coefficients * np.array([1, 0.25, 0.25, 1]))
    shapes = ([("packed", 1, q, kv, 1, 0) for q in (4, 64, 1024) for kv in (1024, 16384, 65536)]
              + [("decode", b, 1, kv, 0, 0) for b in (1, 8, 32, 128) for kv in (512, 8192)]
              + [("prefill", 1, s, s, 0, 1) for s in (128, 2048, 8192)])
    rows = [(kind, batch, heads, head_dim, q, kv, mask, causal, 0.0, "holdout" if i % 2 else "fit")
            for i, (heads, (kind, batch, q, kv, mask, causal)) in
            enumerate((h, shape) for h in (8, 32) for shape in shapes)]
    frame = pd.DataFrame(rows, columns=["kind", "batch", "heads", "head_dim", "q_len", "kv_len", "mask",
                                        "causal", "seconds", "split"])
    frame["seconds"] = dataclasses.replace(law, head_dim=head_dim).predict(frame)
    return frame


def test_efficient_attention_recovers_the_resident_ctas_and_its_coefficients():
    fitted = models.fit_efficient_attention(efficient_table(), sm_count=132)
    assert set(fitted) == {128}
    law, got = EFFICIENT_LAW, fitted[128]
    assert (got.resident, got.latency, got.mask_weight, got.causal_extra) == (law.resident, law.latency,
                                                                               law.mask_weight, law.causal_extra)
    assert got.coefficients == pytest.approx(law.coefficients, rel=1e-3)


def test_efficient_attention_ctas_follow_the_kernels_grid():
    # Non-causal: one run of every CTA, each over all keys in 128-key blocks (head_dim 128).
    assert models.efficient_ctas(2, 8, 100, 1000, 128, False) == [(8, 2 * 8 * 2)]
    # Causal prefill of 256 tokens: 4 query blocks of 64, reading 1, 1, 2, 2 key blocks, per head.
    assert models.efficient_ctas(1, 2, 256, 256, 128, True) == [(1, 2), (2, 2)] * 2
    # Head size 64: 64-key blocks.
    assert models.efficient_ctas(1, 1, 128, 128, 64, True) == [(1, 1), (2, 1)]


def test_few_decodes_are_bound_by_one_ctas_latency_not_by_waves():
    """32 CTAs, one an SM, each wait on their loads: a CTA's blocks at the lone latency; 8 times the
    CTAs (2 an SM) still below it; past it, the SMs' throughput."""
    law = EFFICIENT_LAW
    frame = pd.DataFrame([dict(batch=b, heads=32, head_dim=128, q_len=1, kv_len=8192, mask=0, causal=0)
                          for b in (1, 8, 128)])
    c0, c1, c2, _ = law.coefficients
    blocks = 8192 // 128
    one, eight, many = law.predict(frame)
    assert one == pytest.approx(c0 + c1 * blocks * law.latency + c2 * blocks * 32)
    assert eight == pytest.approx(c0 + c1 * blocks * law.latency + c2 * blocks * 256)
    assert many > 10 * one


def test_the_c_predictor_charges_what_the_fits_say(tmp_path):
    fitted_memory = models.fit_memory_curves(memory_table())
    efficient = models.fit_efficient_attention(efficient_table(), sm_count=132)[128]
    measured = tables.load("h100")
    fitted = dataclasses.replace(models.fit(measured, load_sku("h100")), memory=fitted_memory,
                                 efficient_attention={128: efficient})
    path = tmp_path / "h100.model"
    path.write_text(modelfile.render(fitted))
    assert native.memory_seconds(path, "gather", 3 << 24) == pytest.approx(
        fitted_memory["gather"].predict(3 << 24), rel=1e-6)
    frame = efficient_table().iloc[[3, 12, 18, 30, 39]]      # packed, decode, causal prefill, decode, prefill
    assert list(frame["kind"]) == ["packed", "decode", "prefill", "decode", "prefill"]
    for r, expected in zip(frame.itertuples(), efficient.predict(frame)):
        charged = native.efficient_attention_seconds(path, r.batch, r.heads, r.q_len, r.kv_len, r.head_dim,
                                                     bool(r.mask), bool(r.causal), -(-r.q_len // 64))
        assert charged == pytest.approx(expected, rel=1e-6)


def test_a_head_size_between_two_measured_ones_is_charged_between_their_times(tmp_path):
    table = pd.concat([efficient_table(), efficient_table(head_dim=64)])
    fitted_models = models.fit_efficient_attention(table, sm_count=132)
    fitted = dataclasses.replace(models.fit(tables.load("h100"), load_sku("h100")), efficient_attention=fitted_models)
    path = tmp_path / "h100.model"
    path.write_text(modelfile.render(fitted))

    def charged(head_dim):
        return native.efficient_attention_seconds(path, 8, 32, 1, 8192, head_dim, False, False, 1)
    assert charged(96) == pytest.approx((charged(64) + charged(128)) / 2, rel=1e-9)
    assert charged(64) < charged(96) < charged(128)
    # Past the measured sizes: the nearest's model at this size.
    beyond = pd.DataFrame([dict(batch=8, heads=32, head_dim=256, q_len=1, kv_len=8192, mask=0, causal=0)])
    assert charged(256) == pytest.approx(fitted_models[128].predict(beyond)[0], rel=1e-6)
