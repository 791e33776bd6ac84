#!/usr/bin/env python3
"""The CUDA runtime/cuBLAS entry points the installed torch imports that emulator/vgpu/surface.txt
lacks (surface.txt was scanned from torch 2.14; the GPU machines run torch 2.11, whose
libtorch_cuda.so imports cudaGraphDebugDotPrint@libcudart.so.13, so it cannot even load under the
library). With --apply, appends them to surface.txt, so the build stubs them (a stub fails loudly,
naming itself, if it is ever called).

    python3 docs/fidelity/missing_cuda_symbols.py [--apply]
"""
import glob
import os
import re
import subprocess
import sys

import torch

SURFACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "emulator", "vgpu", "surface.txt")
VERSIONS = {"libcudart.so.13": None, "libcublas.so.13": "cublas", "libcublasLt.so.13": "cublasLt"}


def family(name: str, version: str) -> str:
    if version == "libcudart.so.13":
        return "cudart_reg" if name.startswith("__cuda") else "cudart"
    return "cublasLt" if name.startswith("cublasLt") else "cublas"


def imported() -> set[tuple[str, str]]:
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "*.so*"))
    wanted = set()
    for lib in libs:
        out = subprocess.run(["nm", "-D", "--undefined-only", lib], capture_output=True, text=True).stdout
        for match in re.finditer(r"\bU (\w+)@(libcudart\.so\.13|libcublas\.so\.13|libcublasLt\.so\.13)", out):
            wanted.add((family(match.group(1), match.group(2)), match.group(1)))
    return wanted


def main() -> int:
    listed = {line.split()[1] for line in open(SURFACE) if line.strip() and not line.startswith("#")}
    missing = sorted((f, n) for f, n in imported() if n not in listed)
    for f, n in missing:
        print(f"{f} {n}")
    if "--apply" in sys.argv and missing:
        with open(SURFACE, "a") as out:
            out.write(f"# imported by torch {torch.__version__} and absent from the scan above\n")
            out.writelines(f"{f} {n}\n" for f, n in missing)
    print(f"{len(missing)} entry points of torch {torch.__version__} missing from surface.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
