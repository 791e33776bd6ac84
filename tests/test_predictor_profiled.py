"""The profiled predictor inside the vGPU library (emulator/vgpu/predict/predictor_profiled.c): launches
are charged what the SKU's model file says, which is what was measured on the real GPU."""
from __future__ import annotations

import pandas as pd
import pytest

from emulator.hardware import load_sku

from emulator.predictor import modelfile, models, native, tables
from vgpu_fixtures import cuda_programs, libdir, run_on_vgpu  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def h200_model() -> str:
    return str(modelfile.ensure_model_file("h200"))


def _measured_gemm(m: int, n: int, k: int) -> float:
    gemm = pd.read_csv(tables.DATA_DIR / "h200" / "gemm.csv")
    row = gemm[(gemm.m == m) & (gemm.n == n) & (gemm.k == k) & (gemm.dtype == "bf16") & (gemm.split == "fit")]
    assert len(row) == 1, (m, n, k)
    return float(row.seconds.iloc[0])


@pytest.fixture(scope="module")
def gemm_launches(cuda_programs, libdir):
    return cuda_programs("gemm_launches", [f"-L{libdir}", "-l:libcudart.so.13"])


def test_gemms_and_copies_are_charged_their_measured_time(gemm_launches, h200_model):
    program = gemm_launches
    shapes = [(4096, 128, 4096), (6144, 1, 4096), (4096, 2048, 14336)]
    proc, trace = run_on_vgpu([program.binary, *(f"{m}:{n}:{k}" for m, n, k in shapes)], sku="h200",
                              env={"REVATI_PREDICTOR": f"profiled:{h200_model}"}, check=True)
    gemms = [row for row in trace if row["kind"] == "gemm"]
    assert [(r["m"], r["n"], r["k"]) for r in gemms] == shapes
    for row, (m, n, k) in zip(gemms, shapes):
        assert row["seconds"] == pytest.approx(_measured_gemm(m, n, k), rel=1e-3)
    # (The trace has nanoseconds: 1e-3 relative.) Off the measured grid (n=3000 between 2048 and 4096; an unmeasured shape): between its
    # neighbours, and scaled by work from the nearest measured shape.
    proc, trace = run_on_vgpu([program.binary, "4096:3000:4096", "4096:3000:4000"], sku="h200",
                              env={"REVATI_PREDICTOR": f"profiled:{h200_model}"}, check=True)
    between, unmeasured = (r["seconds"] for r in trace if r["kind"] == "gemm")
    assert _measured_gemm(4096, 2048, 4096) < between < _measured_gemm(4096, 4096, 4096)
    # The nearest measured shape is chosen as the Python side of the predictor chooses it.
    fitted = models.GemmTable.fit(pd.read_csv(tables.DATA_DIR / "h200" / "gemm.csv"))
    key = models.GemmKey("bf16", 1, 0, 4096, 4000, 1)
    assert fitted.nearest(key) != key
    assert unmeasured == pytest.approx(fitted.predict(key, 3000), rel=1e-3)
    (copy,) = [r for r in trace if r["kind"] == "copy"]
    measured = pd.read_csv(tables.DATA_DIR / "h200" / "copy.csv")
    pinned = measured[(measured.direction == "H2D") & (measured.pinned == 1) & (measured.bytes == 1 << 20)]
    assert copy["seconds"] == pytest.approx(float(pinned.seconds.iloc[0]), rel=0.15)


def test_the_default_environment_uses_the_skus_measured_model(h200_model, tmp_path, monkeypatch):
    from emulator.vgpu_environment import vgpu_environment
    monkeypatch.delenv("REVATI_PREDICTOR", raising=False)
    assert vgpu_environment(1, "h200", workdir=tmp_path)["REVATI_PREDICTOR"] == f"profiled:{h200_model}"
    assert vgpu_environment(1, "h100", workdir=tmp_path)["REVATI_PREDICTOR"].endswith("/h100.model")
    # A caller's choice stands.
    monkeypatch.setenv("REVATI_PREDICTOR", "fixed:/some/rules")
    assert vgpu_environment(1, "h200", workdir=tmp_path)["REVATI_PREDICTOR"] == "fixed:/some/rules"


def test_an_unprofiled_sku_gets_the_measured_one_carried_by_its_datasheet():
    a100 = modelfile.ensure_model_file("a100").read_text()
    header = a100.splitlines()[0]
    assert "NOT measured on a100" in header
    source = next(sku for sku in tables.measured_skus() if f"from {sku}'s measurements" in header)
    line = next(x for x in a100.splitlines() if x.startswith("gemm bf16 1 0 4096 4096 1 "))
    source_line = next(x for x in modelfile.ensure_model_file(source).read_text().splitlines()
                       if x.startswith("gemm bf16 1 0 4096 4096 1 "))
    # One token: reading the weights, bound by memory, so in the ratio of the two HBM bandwidths.
    t_a100, t_source = float(line.split()[9]), float(source_line.split()[9])
    ratio = load_sku(source).hbm_bandwidth_gbps / load_sku("a100").hbm_bandwidth_gbps
    assert t_a100 / t_source == pytest.approx(ratio, rel=0.01)


def test_attention_interpolates_between_measured_batches(h200_model):
    attention = pd.read_csv(tables.DATA_DIR / "h200" / "attention.csv")
    fit = attention[(attention.split == "fit") & (attention.backend == "vllm_triton_unified") &
                    (attention.phase == "decode") & (attention.num_heads == 32) & (attention.num_kv_heads == 8)]
    measured = {(r.num_seqs, r.context_len): r.seconds for r in fit.itertuples()}
    predict = lambda seqs, ctx: native.attention_seconds(h200_model, "vllm_triton_unified", seqs, 1, ctx, 32, 8, 128)
    for (seqs, ctx), seconds in list(measured.items())[:20]:
        assert predict(seqs, ctx) == pytest.approx(seconds, rel=1e-3)
    low, high = sorted((predict(64, 1024), predict(64, 2048)))
    assert low < predict(64, 1500) < high
    assert native.attention_seconds(h200_model, "vllm_triton_unified", 512, 1, 1024, 32, 8, 128) == pytest.approx(
        2 * measured[256, 1024], rel=1e-3)      # past the largest measured batch: in proportion
