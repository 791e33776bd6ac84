"""The environment that runs a process on virtual GPUs.

`vgpu_environment` returns the variables to start any process with (an engine, a test program,
`nvidia-smi`) so that it sees N devices of a SKU: the vGPU library preloaded and standing in for
libcuda/NVML/NCCL, the device spec it reads, and the predictor measured for the SKU (unless the
caller's environment names one in REVATI_PREDICTOR).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from emulator.engines import envs
from emulator.hardware import MAX_DEVICES, load_sku


def vgpu_environment(gpus: int, sku: str, engine: str | None = None, workdir: Path | None = None,
                     base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables for a process on `gpus` virtual devices of `sku`, optionally inside `engine`'s env.

    `workdir` receives the device spec (vgpu.spec); by default a fresh temporary folder that the
    caller owns and must keep until the process ends. `base_env` defaults to os.environ.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_DEVICES:
        raise ValueError(f"gpus must be an integer from 1 to {MAX_DEVICES}, got {gpus!r}")
    model = load_sku(sku)
    if engine is not None and not envs.is_ready(engine):
        raise envs.EngineEnvError(f"the {engine} env at {envs.env_path(engine)} is not ready: "
                                  f"run `revati-tune setup {engine}`")
    # Imported here: the build module compiles the C library, which callers that only load
    # SKUs or manage engine envs never need.
    from emulator.vgpu.build import build_library
    libdir = Path(build_library())

    workdir = Path(tempfile.mkdtemp(prefix="revati-vgpu-")) if workdir is None else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = model.write_spec(workdir / "vgpu.spec", gpus)

    env = dict(os.environ if base_env is None else base_env)
    env["LD_PRELOAD"] = _prepend(str(libdir / "libcudart.so.13"), env.get("LD_PRELOAD"))
    env["LD_LIBRARY_PATH"] = _prepend(str(libdir), env.get("LD_LIBRARY_PATH"))
    env["REVATI_VGPU_SPEC"] = str(spec)
    if "REVATI_PREDICTOR" not in env:
        # Durations measured on the SKU (or carried to it from a measured one of its kind).
        from emulator.predictor.modelfile import ensure_model_file
        env["REVATI_PREDICTOR"] = f"profiled:{ensure_model_file(sku)}"
    path = [str(libdir / "bin")]
    if engine is not None:
        path.append(str(envs.env_path(engine) / "bin"))
        env["VIRTUAL_ENV"] = str(envs.env_path(engine))
    env["PATH"] = _prepend(":".join(path), env.get("PATH", os.defpath))
    # Engines open these by path with ctypes/dlopen rather than through the loader.
    env["VLLM_NCCL_SO_PATH"] = env["SGLANG_NCCL_SO_PATH"] = str(libdir / "libnccl.so.2")
    env["TRITON_LIBCUDA_PATH"] = str(libdir)
    env["CUTE_DSL_LIBS"] = str(libdir / "libcute_dsl_runtime.so")
    # Every virtual device is the process's to use; a real GPU selection must not hide them.
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # NVLink SHARP (multicast) needs fabric support the vGPU library does not model.
    env["NCCL_NVLS_ENABLE"] = "0"
    return env


def _prepend(first: str, rest: str | None) -> str:
    return f"{first}:{rest}" if rest else first
