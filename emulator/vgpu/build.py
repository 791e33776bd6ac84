"""Build the vGPU library: one shared object with the sonames engines look for.

The library is plain C with no Python in it: it is LD_PRELOADed into every process of an
emulated deployment, many of which are not Python, so it cannot be a CPython extension and is
compiled here with the system C compiler.

Layout of a build, under $REVATI_HOME/vgpu/<source hash>/:
    libcudart.so.13       the library itself (soname libcudart.so.13, so a DT_NEEDED on the real
                          cudart resolves to it and the real one never loads)
    libcuda.so.1, libcuda.so, libnvidia-ml.so.1, libnccl.so.2, libcudart.so, libcute_dsl_runtime.so
                          links to it: the driver, NVML, NCCL and the CuTe DSL runtime it stands in for
    bin/nvidia-smi        the nvidia-smi stand-in
Builds are keyed by a hash of the sources and flags and published by an atomic rename, so
concurrent trials share one build and never see a half-written one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from emulator.paths import revati_home

SOURCE_DIR = Path(__file__).resolve().parent
LIBRARY = "libcudart.so.13"
ALIASES = ("libcudart.so", "libcuda.so.1", "libcuda.so", "libnvidia-ml.so.1", "libnccl.so.2",
           "libcute_dsl_runtime.so")
TOOLS: dict[str, str] = {"nvidia-smi": "tools/nvidia_smi.c"}
CFLAGS = ["-O2", "-g", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Werror=implicit-function-declaration", "-std=gnu11"]

# Status code a stub returns, per family: each family's own "not supported".
STUB_ERRORS = {
    "cudart": 801,      # cudaErrorNotSupported
    "cudart_reg": 801,
    "driver": 801,      # CUDA_ERROR_NOT_SUPPORTED
    "cublas": 15,       # CUBLAS_STATUS_NOT_SUPPORTED
    "cublasLt": 15,
    "nccl": 5,          # ncclInvalidUsage
    "cute_dsl": 10,     # CuteDSLRT_Error_UnsupportedOnPlatform
    "cudnn": 3000,      # CUDNN_STATUS_NOT_SUPPORTED
}


class BuildError(RuntimeError):
    pass


def cuda_include_dir() -> Path:
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for root in filter(None, candidates):
        include = Path(root) / "include"
        if (include / "cuda.h").exists() and (include / "cuda_runtime_api.h").exists():
            return include
    raise BuildError("CUDA headers (cuda.h, cuda_runtime_api.h) not found: install the CUDA toolkit "
                     "(it provides the headers; no GPU or driver is needed) or set CUDA_HOME")


# The library's sources by concern, lowest first (tests/test_vgpu_layers.py checks that no file
# calls into a folder above its own, and that no files call each other in a circle).
FOLDERS = ("base", "predict", "time", "gpu", "api")


def library_sources() -> list[Path]:
    return [path for folder in FOLDERS for path in sorted((SOURCE_DIR / folder).glob("*.c"))]


def _source_hash(include: Path) -> str:
    h = hashlib.sha256()
    for path in [*library_sources(), *sorted(SOURCE_DIR.glob("**/*.h")), SOURCE_DIR / "surface.txt",
                 SOURCE_DIR / "protocol.py",
                 *(SOURCE_DIR / rel for rel in TOOLS.values()), Path(__file__)]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(" ".join(CFLAGS + [str(include)]).encode())
    return h.hexdigest()[:16]


def library_dir() -> Path:
    return revati_home() / "vgpu" / _source_hash(cuda_include_dir())


def library_status() -> tuple[bool, Path]:
    """Whether the library for the current sources is built, and where it is (or will be)."""
    libdir = library_dir()
    return (libdir / LIBRARY).exists(), libdir


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _defined_symbols(objects: list[Path], cwd: Path) -> set[str]:
    out = _run(["nm", "--defined-only", "-g", *map(str, objects)], cwd)
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) == 3}


# Libraries importing this library's symbols ask for them by version (cudaMalloc@libcudart.so.13,
# cublasGemmEx@libcublas.so.13, cudnnCreate@libcudnn.so.9), so each symbol is defined under the
# version its real library uses.
VERSION_NODES = (("cublasLt", "libcublasLt.so.13"), ("cublas", "libcublas.so.13"), ("cudnn", "libcudnn.so.9"),
                 ("cuda", "libcudart.so.13"), ("__cuda", "libcudart.so.13"))
OTHER_NODE = "REVATI_VGPU"   # driver, NCCL, NVML: their real libraries are not versioned


# The libc functions interpose_*.c replace are asked for as clock_gettime@GLIBC_2.17 and the like:
# only an unversioned (base) definition satisfies such a reference, so those symbols are left out
# of every node. No "local: *" either: -fvisibility=hidden already keeps everything else local.
def _write_version_script(path: Path, exported: set[str], unversioned: set[str]) -> None:
    nodes: dict[str, list[str]] = {}
    for name in sorted(exported - unversioned):
        node = next((v for prefix, v in VERSION_NODES if name.startswith(prefix)), OTHER_NODE)
        nodes.setdefault(node, []).append(name)
    path.write_text("".join(f"{node} {{\n  global:\n" + "".join(f"    {n};\n" for n in names) + "};\n"
                            for node, names in nodes.items()))


def _write_stubs(path: Path, defined: set[str]) -> int:
    """One self-naming stub per surface entry point that no source defines."""
    lines = ['#include "vgpu.h"',
             "#define STUB(name, error) VGPU_EXPORT int name(void) { return vgpu_unimplemented(#name, error); }"]
    count = 0
    for line in (SOURCE_DIR / "surface.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        family, name = line.split()
        if name not in defined:
            lines.append(f"STUB({name}, {STUB_ERRORS[family]})")
            count += 1
    path.write_text("\n".join(lines) + "\n")
    return count


def build_library(force: bool = False, echo=lambda message: None) -> Path:
    """Build (if needed) and return the folder holding the library and its aliases."""
    include = cuda_include_dir()
    libdir = library_dir()
    if (libdir / LIBRARY).exists() and not force:
        return libdir
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise BuildError("no C compiler found: install gcc (apt-get install gcc) or set CC")
    libdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=libdir.parent))
    try:
        echo(f"building the vGPU library in {libdir}")
        from emulator.vgpu.protocol import c_header
        (staging / "tk_protocol.h").write_text(c_header())
        flags = [*CFLAGS, f"-I{include}", f"-I{SOURCE_DIR}", f"-I{staging}"]
        objects = []
        for source in library_sources():
            obj = staging / (source.stem + ".o")
            _run([cc, *flags, "-c", str(source), "-o", str(obj)], staging)
            objects.append(obj)
        stubs = staging / "unimplemented.c"
        count = _write_stubs(stubs, _defined_symbols(objects, staging))
        _run([cc, *flags, "-c", str(stubs), "-o", str(staging / "unimplemented.o")], staging)
        objects.append(staging / "unimplemented.o")
        echo(f"  {len(objects) - 1} sources, {count} entry points stubbed")
        version_script = staging / "versions.map"
        interposers = [obj for obj in objects if obj.name.startswith("interpose_")]
        _write_version_script(version_script, _defined_symbols(objects, staging),
                              _defined_symbols(interposers, staging) if interposers else set())
        _run([cc, "-shared", f"-Wl,-soname,{LIBRARY}", f"-Wl,--version-script={version_script}",
              "-o", str(staging / LIBRARY), *map(str, objects), "-lpthread", "-ldl", "-lm"], staging)
        for alias in ALIASES:
            (staging / alias).symlink_to(LIBRARY)
        (staging / "bin").mkdir()
        for tool, source in TOOLS.items():
            _run([cc, *flags, str(SOURCE_DIR / source), "-o", str(staging / "bin" / tool),
                  f"-L{staging}", "-l:" + LIBRARY, "-Wl,-rpath,$ORIGIN/.."], staging)
        for obj in staging.glob("*.o"):
            obj.unlink()
        if force and libdir.exists():
            shutil.rmtree(libdir)
        try:
            staging.rename(libdir)
        except OSError:             # another process published the same build first
            if not (libdir / LIBRARY).exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
        return libdir
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
