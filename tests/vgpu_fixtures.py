"""Shared helpers for tests that run programs on virtual GPUs.

A plain module (not a conftest): import what you need,

    from vgpu_fixtures import libdir, cuda_programs, run_on_vgpu

`libdir` and `cuda_programs` are session-scoped pytest fixtures (importing them into a test module
registers them there). `run_on_vgpu` starts one process on N virtual devices with the fixed
predictor and returns its CompletedProcess and the launches it was charged (REVATI_VGPU_TRACE).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pytest

PROGRAMS = Path(__file__).resolve().parent / "vgpu_programs"
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
# How the fast tier builds its CUDA programs: the runtime as a shared library (so the vGPU library
# stands in for it), Hopper code.
NVCC_FLAGS = ["-cudart", "shared", "-arch=sm_90"]

# The trace's columns (emulator/vgpu/time/stats.c) and how to read each.
_INT_COLUMNS = ("device", "shared_mem", "m", "n", "k", "batch", "bytes", "nranks")
_FLOAT_COLUMNS = ("start", "seconds")
_DIM_COLUMNS = ("grid", "block")


@pytest.fixture(scope="session")
def libdir() -> Path:
    """The built vGPU library folder (libcudart.so.13 and its aliases)."""
    from emulator.vgpu.build import BuildError, build_library
    try:
        return Path(build_library())
    except BuildError as error:
        pytest.fail(f"the vGPU library does not build:\n{error}")


@dataclass(frozen=True)
class CudaProgram:
    binary: Path
    cubin: Path | None      # the program's device code for sm_90, kept from the nvcc run


class CudaPrograms:
    """Compiles tests/vgpu_programs/<name>.cu once per test session, on first use."""

    def __init__(self, root: Path):
        self.root = root
        self._built: dict[str, CudaProgram] = {}

    def __call__(self, name: str, extra_flags: Sequence[str] = ()) -> CudaProgram:
        key = " ".join([name, *extra_flags])
        if key not in self._built:
            self._built[key] = compile_program(PROGRAMS / f"{name}.cu",
                                               self.root / f"{name}-{len(self._built)}", extra_flags)
        return self._built[key]


def compile_program(source: Path, outdir: Path, extra_flags: Sequence[str] = ()) -> CudaProgram:
    """One nvcc run: the program, with its intermediates (the cubin among them) kept."""
    if not NVCC.exists():
        pytest.fail(f"nvcc not found at {NVCC}: install the CUDA toolkit or set CUDA_HOME")
    keep = outdir / "keep"
    keep.mkdir(parents=True, exist_ok=True)
    binary = outdir / source.stem
    cmd = [str(NVCC), *NVCC_FLAGS, "-keep", "-keep-dir", str(keep), str(source), "-o", str(binary),
           *extra_flags]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr[-4000:]}")
    cubins = sorted(p for p in keep.glob(f"{source.stem}.sm_*.cubin"))
    return CudaProgram(binary, cubins[0] if cubins else None)


@pytest.fixture(scope="session")
def cuda_programs(tmp_path_factory) -> CudaPrograms:
    """`cuda_programs("runtime_checks")` -> CudaProgram, compiled once per session."""
    return CudaPrograms(tmp_path_factory.mktemp("vgpu-programs"))


def vgpu_env(gpus: int = 1, sku: str = "h100", workdir: Path | None = None,
             base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process on `gpus` virtual devices of `sku` (spec in `workdir`)."""
    from emulator.vgpu_environment import vgpu_environment
    return vgpu_environment(gpus, sku, workdir=workdir, base_env=base_env)


def parse_trace(path: Path) -> list[dict]:
    """Rows of a REVATI_VGPU_TRACE file, typed: ints, floats, and (x, y, z) for grid/block."""
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["kind"] == "kind":       # a second process appending writes its own header
                continue
            for col in _INT_COLUMNS:
                row[col] = int(row[col])
            for col in _FLOAT_COLUMNS:
                row[col] = float(row[col])
            for col in _DIM_COLUMNS:
                row[col] = tuple(int(v) for v in row[col].split("x"))
            rows.append(row)
    return rows


def run_on_vgpu(cmd: Sequence[str], gpus: int = 1, sku: str = "h100", predictor_rules: str | None = None,
                trace: bool = True, env: Mapping[str, str] | None = None, timeout: float = 120,
                check: bool = False) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run `cmd` on virtual GPUs; returns (CompletedProcess with text output, trace rows).

    `predictor_rules` is the fixed predictor's file content ("<kind> <name|*> <seconds>" lines);
    without it the fixed predictor's defaults apply. `env` entries override the vGPU environment
    (a value of None removes the variable). `check` asserts a zero exit status, showing stderr.
    """
    workdir = Path(tempfile.mkdtemp(prefix="revati-vgpu-test-"))
    try:
        run_env = vgpu_env(gpus, sku, workdir=workdir)
        rules = workdir / "predictor.rules"
        rules.write_text(predictor_rules or "")
        run_env["REVATI_PREDICTOR"] = f"fixed:{rules}"
        trace_path = workdir / "trace.csv"
        run_env.pop("REVATI_VGPU_TRACE", None)
        run_env.pop("REVATI_VGPU_STATS", None)
        if trace:
            run_env["REVATI_VGPU_TRACE"] = str(trace_path)
        for key, value in (env or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        proc = subprocess.run([str(c) for c in cmd], env=run_env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert proc.returncode == 0, (f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}"
                                          f"\nstderr:\n{proc.stderr[-3000:]}")
        return proc, parse_trace(trace_path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_keys(stdout: str) -> dict[str, str]:
    """`key value` lines (the value is the rest of the line) into a dict; other lines are skipped."""
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key and value:
            out[key] = value
    return out
