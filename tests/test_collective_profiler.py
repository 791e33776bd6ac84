"""The collective profiler (emulator/profiler/profile_collectives.py) and the collective
model refitted from its table, end to end on the CPU.

The profiler runs under torchrun with --backend gloo, 2 processes and a tiny size sweep (the vllm
engine env's python, which has torch). Gloo on a shared CPU is noisy and its times are nothing like
NCCL's: these tests check the plumbing (table, metadata, fit, model file, the C predictor's reading
of it, the accuracy rows), not accuracy; the bound on held-out error is loose for that reason. A
gloo table is never data: tables.py refuses it.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emulator.engines.envs import env_python, is_ready
from emulator.hardware import load_sku
from emulator.predictor import accuracy, modelfile, models, native, tables

PROFILER = Path(__file__).resolve().parents[1] / "emulator/profiler/profile_collectives.py"
COLUMNS = ["op", "ranks", "bytes", "dtype", "backend", "seconds", "p10", "p90", "bus_gbps", "repeats",
           "split"]
REPEATS = 30   # medians of 30: gloo on a shared 2-core host stalls some repeats


@pytest.fixture(scope="module")
def gloo_run(tmp_path_factory) -> Path:
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    torchrun = env_python("vllm").parent / "torchrun"
    out = tmp_path_factory.mktemp("collectives")
    env = dict(os.environ, OMP_NUM_THREADS="1", NCCL_NVLS_ENABLE="1")  # the script must override it
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", str(PROFILER), "--backend", "gloo",
         "--out", str(out), "--min-bytes", "4096", "--max-bytes", "262144", "--repeats", str(REPEATS),
         "--warmup", "3", "--pool-mib", "1"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def table(gloo_run) -> pd.DataFrame:
    return tables.load_collectives(gloo_run / "collectives.csv", allow_gloo=True)


def test_the_table_and_its_metadata(gloo_run, table):
    assert sorted(p.name for p in gloo_run.iterdir()) == ["collectives.csv", "collectives.log",
                                                          "meta_collectives.json"]
    assert list(pd.read_csv(gloo_run / "collectives.csv").columns) == COLUMNS
    assert set(table["op"]) == {"all_reduce", "all_gather", "reduce_scatter", "send_recv"}
    assert set(table["ranks"]) == {2} and set(table["backend"]) == {"gloo"} and set(table["dtype"]) == {"bf16"}
    assert (table["repeats"] == REPEATS).all()
    assert ((table["p10"] <= table["seconds"]) & (table["seconds"] <= table["p90"])).all()
    assert table["bytes"].between(4096, 262144).all() and (table["bytes"] % 4 == 0).all()
    for _, group in table.groupby("op"):
        # the same sizes for every op: the log sweep, the model sizes (2 x hidden x tokens)
        assert group["bytes"].is_monotonic_increasing
        assert set(group["split"]) == {"fit", "holdout"}
        assert {2 * 4096 * 3, 2 * 8192 * 3} <= set(group[group["split"] == "holdout"]["bytes"])
        assert {2 * 4096 * 1, 2 * 8192 * 16} <= set(group[group["split"] == "fit"]["bytes"])
    meta = json.loads((gloo_run / "meta_collectives.json").read_text())
    assert meta["backend"] == "gloo" and meta["gpu_name"] == "cpu (gloo)" and meta["torch"]
    (run,) = meta["runs"]
    assert run["world_size"] == 2 and run["ranks"] == [2] and run["repeats"] == REPEATS
    assert "--backend" in run["command"] and str(PROFILER) in run["command"]
    assert "--nproc-per-node" in run["launcher_command"]
    assert {k: run["environment"][k] for k in ("NCCL_NVLS_ENABLE", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                                                "NVSHMEM_DISABLE_NVLS")} == {
        "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
    assert sum(run["rows"].values()) == len(table)


def test_a_gloo_table_is_never_data(gloo_run):
    with pytest.raises(ValueError, match="backend must be nccl"):
        tables.load_collectives(gloo_run / "collectives.csv")


def test_merging_replaces_rows_of_the_same_key(gloo_run, tmp_path):
    script = [str(env_python("vllm")), str(PROFILER)]
    for _ in range(2):  # merging the same run twice leaves one copy of its rows and of its run
        subprocess.run(script + ["--merge", str(gloo_run), "--out", str(tmp_path)], check=True,
                       capture_output=True)
    assert (tmp_path / "collectives.csv").read_text() == (gloo_run / "collectives.csv").read_text()
    assert len(json.loads((tmp_path / "meta_collectives.json").read_text())["runs"]) == 1


@pytest.fixture(scope="module")
def refitted(table):
    """The committed H200 models with the collectives fitted on the gloo table, and its model file."""
    sku = load_sku("h200")
    curves, lines = models.fit_collectives(table, sku)
    fitted = dataclasses.replace(models.fit(tables.load("h200"), sku), collectives=lines,
                                 collective_curves=curves, collectives_origin="measured (collectives.csv)")
    return fitted


def test_the_fit_reproduces_the_table(table, refitted):
    assert set(refitted.collective_curves) == {(op, 2) for op in tables.COLLECTIVE_OPS_MEASURED}
    fit = table[table["split"] == "fit"]
    for r in fit.itertuples():  # each fit row is a point of its curve: exactly itself
        assert refitted.collective_seconds(r.op, r.bytes, r.ranks) == pytest.approx(r.seconds, rel=1e-9)
    held = table[table["split"] == "holdout"]
    predicted = np.array([refitted.collective_seconds(r.op, r.bytes, r.ranks) for r in held.itertuples()])
    errors = np.abs(predicted / held["seconds"].to_numpy() - 1)
    # Loose on purpose: gloo on a shared 2-core CPU, REPEATS repeats; this checks the plumbing (a wrong
    # unit or curve is off on most points). Not every point: one held-out size came out 12x its
    # prediction in a CI run, the host stalling that size's repeats.
    assert np.median(errors) < 0.5 and np.percentile(errors, 75) < 2, errors
    assert all(refitted.collectives[op].measured for op in tables.COLLECTIVE_OPS_MEASURED)
    assert not refitted.collectives["broadcast"].measured


def test_the_c_predictor_charges_what_the_fit_says(table, refitted, tmp_path):
    text = modelfile.render(refitted)
    assert "collective_curve all_reduce 2 " in text and "MODELLED over NVLink, neither measured nor published: broadcast" in text
    model_file = tmp_path / "h200.model"
    model_file.write_text(text)
    for r in table.itertuples():
        for nranks in (2, 4):  # 4: no curve, the op's fitted line (send_recv: its 2-rank curve)
            assert native.collective_seconds(model_file, r.op, r.bytes, nranks) == pytest.approx(
                refitted.collective_seconds(r.op, r.bytes, nranks), rel=1e-6)
    assert native.collective_seconds(model_file, "all_gather", 1 << 20, 4) == pytest.approx(
        refitted.collectives["all_gather"].predict(1 << 20, 4), rel=1e-6)
    assert native.collective_seconds(model_file, "send_recv", 8192, 8) == pytest.approx(
        refitted.collective_curves["send_recv", 2].predict(8192), rel=1e-6)
    rows = accuracy._collectives(table, refitted, model_file)
    frame = pd.DataFrame(rows, columns=accuracy.COLUMNS)
    measured = frame[frame["family"] == "collective"]
    assert set(measured["group"]) == {"all_gather x2", "all_reduce x2", "reduce_scatter x2", "send_recv x2",
                                      "broadcast"}
    assert (measured[measured["group"] != "broadcast"]["count"] > 0).all()
    assert measured[measured["group"] == "broadcast"]["count"].item() == 0
    assert set(frame[frame["family"] == "collective line"]["group"]) == set(tables.COLLECTIVE_OPS_MEASURED)


def test_a_sku_with_collectives_csv_is_fitted_from_it(gloo_run, tmp_path, monkeypatch):
    """The path the H200 table will take (tables.load -> fit -> model file -> accuracy), on a copy
    of the committed H200 directory given the gloo rows relabelled nccl in a temporary directory
    (never committed: this checks loading and hashing, not numbers)."""
    source = tables.DATA_DIR / "h200"
    copy = tmp_path / "data" / "h200"
    copy.mkdir(parents=True)
    for entry in source.iterdir():
        (copy / entry.name).symlink_to(entry)
    before = tables.sha256("h200")
    frame = pd.read_csv(gloo_run / "collectives.csv").assign(backend="nccl")
    frame.to_csv(copy / "collectives.csv", index=False)
    (copy / "meta_collectives.json").write_text((gloo_run / "meta_collectives.json").read_text())
    monkeypatch.setattr(tables, "DATA_DIR", tmp_path / "data")
    monkeypatch.setenv("REVATI_HOME", str(tmp_path / "home"))
    measured = tables.load("h200")
    assert measured.sha256 != before and len(measured.collectives) == len(frame)
    text = modelfile.ensure_model_file("h200").read_text()
    assert text.count("\ncollective_curve ") == 4 and f"# tables_sha256 {measured.sha256}" in text
    table = accuracy.accuracy_table("h200")
    collective = table[table["family"] == "collective"]
    assert (collective[collective["group"].str.endswith("x2")]["count"] > 0).all()
    assert collective["target"].str.startswith("<=10%").sum() == 4
    assert "Collectives: `collectives.csv`, measured on cpu (gloo)" in accuracy.render_markdown(table, measured)
