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
    assert set(curves) == {"elementwise", "cat", "gather"}
    for curve in curves.values():
        assert (np.diff(curve.bytes) > 0).all()
        for nbytes in (1 << 17, 3 << 24, 1 << 31):       # off the fitting sizes, and past them
            assert curve.predict(nbytes) == pytest.approx(4e-6 + nbytes / 3e12, rel=0.03)
        assert curve.predict(1 << 10) == pytest.approx(curve.seconds[0])     # below: the floor


def test_an_unknown_memory_op_is_refused_by_name():
    table = memory_table()
    table.loc[0, "op"] = "scatter_add"
    with pytest.raises(ValueError, match="memory.csv column op: unknown \\['scatter_add'\\]"):
        models.fit_memory_curves(table)


def efficient_table(slots=198, c=(3e-6, 1e-6, 2.5e-12, 8e-13, 4e-13)):
    shapes = ([("packed", 1, q, kv, 1, 0) for q in (4, 64, 1024) for kv in (1024, 16384, 65536)]
              + [("decode", b, 1, kv, 0, 0) for b in (1, 8, 32, 128) for kv in (512, 8192)]
              + [("prefill", 1, s, s, 0, 1) for s in (128, 2048, 8192)])
    rows = [(kind, batch, heads, 128, q, kv, mask, causal, 0.0, "holdout" if i % 2 else "fit")
            for i, (heads, (kind, batch, q, kv, mask, causal)) in
            enumerate((h, shape) for h in (8, 32) for shape in shapes)]
    frame = pd.DataFrame(rows, columns=["kind", "batch", "heads", "head_dim", "q_len", "kv_len", "mask",
                                        "causal", "seconds", "split"])
    frame["seconds"] = models.efficient_attention_work(frame, slots) @ np.array(c)
    return frame


def test_efficient_attention_recovers_the_resident_ctas_and_its_coefficients():
    fitted = models.fit_efficient_attention(efficient_table(), sm_count=132)
    assert set(fitted) == {128}
    assert fitted[128].slots == 198
    assert fitted[128].coefficients == pytest.approx([3e-6, 1e-6, 2.5e-12, 8e-13, 4e-13], rel=1e-3)


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
    frame = efficient_table().iloc[[3, 12, 18, 30]]      # packed, decode, causal prefill, decode
    assert list(frame["kind"]) == ["packed", "decode", "prefill", "decode"]
    for r, expected in zip(frame.itertuples(), efficient.predict(frame)):
        charged = native.efficient_attention_seconds(path, r.batch, r.heads, r.q_len, r.kv_len, r.head_dim,
                                                     bool(r.mask), bool(r.causal), -(-r.q_len // 64))
        assert charged == pytest.approx(expected, rel=1e-6)


def test_a_head_size_between_two_measured_ones_is_charged_between_their_times(tmp_path):
    table = pd.concat([efficient_table(), efficient_table().assign(head_dim=64)])
    table["seconds"] = np.concatenate([models.efficient_attention_work(g, 198) @ np.array([3e-6, 1e-6, 2.5e-12, 8e-13, 4e-13])
                                       for _, g in table.groupby("head_dim", sort=False)])
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
