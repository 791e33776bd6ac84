"""The variables vgpu_environment composes, with a stand-in for the library build (the real
build is emulator/vgpu/build.py's and is tested with it)."""
import shutil
from pathlib import Path

import pytest

from emulator.engines import envs
from emulator.vgpu import build
from emulator.vgpu_environment import vgpu_environment


@pytest.fixture
def libdir(monkeypatch, tmp_path):
    libdir = tmp_path / "lib"
    monkeypatch.setattr(build, "build_library", lambda: libdir)
    return libdir


BASE = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": "/opt/other.so", "CUDA_VISIBLE_DEVICES": "0",
        "HOME": "/root"}


def test_environment(libdir, tmp_path):
    env = vgpu_environment(4, "h100_sxm_80gb", workdir=tmp_path / "run", base_env=BASE)
    assert env["LD_PRELOAD"] == f"{libdir}/libcudart.so.13:/opt/other.so"
    assert env["LD_LIBRARY_PATH"] == str(libdir)
    assert env["PATH"] == f"{libdir}/bin:/usr/bin:/bin"
    assert env["VLLM_NCCL_SO_PATH"] == env["SGLANG_NCCL_SO_PATH"] == f"{libdir}/libnccl.so.2"
    assert env["TRITON_LIBCUDA_PATH"] == str(libdir)
    assert env["CUTE_DSL_LIBS"] == f"{libdir}/libcute_dsl_runtime.so"
    assert env["NCCL_NVLS_ENABLE"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in env and "VIRTUAL_ENV" not in env
    assert env["HOME"] == "/root"
    spec = (tmp_path / "run" / "vgpu.spec").read_text().splitlines()
    assert env["REVATI_VGPU_SPEC"] == str(tmp_path / "run" / "vgpu.spec")
    assert "count=4" in spec and "name=NVIDIA H100 80GB HBM3" in spec
    assert BASE["CUDA_VISIBLE_DEVICES"] == "0"  # the caller's mapping is left alone


def test_default_workdir_is_fresh(libdir):
    specs = [Path(vgpu_environment(1, "h100", base_env=BASE)["REVATI_VGPU_SPEC"]) for _ in "ab"]
    for spec in specs:
        shutil.rmtree(spec.parent)  # the caller owns the folder
    assert specs[0].parent != specs[1].parent


def test_engine_env(libdir, tmp_path, monkeypatch):
    monkeypatch.setenv("REVATI_HOME", str(tmp_path / "home"))
    with pytest.raises(envs.EngineEnvError, match="run `revati-tune setup vllm`"):
        vgpu_environment(2, "h100", engine="vllm", workdir=tmp_path, base_env=BASE)
    monkeypatch.setattr(envs, "is_ready", lambda engine: True)
    env = vgpu_environment(2, "h100", engine="vllm", workdir=tmp_path, base_env=BASE)
    venv = tmp_path / "home" / "envs" / "vllm"
    assert env["PATH"] == f"{libdir}/bin:{venv}/bin:/usr/bin:/bin"
    assert env["VIRTUAL_ENV"] == str(venv)


@pytest.mark.parametrize("gpus", [0, 17, True])
def test_bad_gpu_count(libdir, gpus):
    with pytest.raises(ValueError, match="gpus must be an integer from 1 to 16"):
        vgpu_environment(gpus, "h100", base_env=BASE)
