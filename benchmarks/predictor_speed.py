#!/usr/bin/env python3
"""What prediction adds to a launch: host nanoseconds per GEMM, kernel and copy launch under the
profiled predictor minus the same under the fixed one (a table lookup), measured side by side.

Builds benchmarks/predictor_speed.cu and runs it on one virtual H200 ROUNDS times with each
predictor in alternation (this machine is noisy; alternation spreads the noise over both), then
reports per family the median ns per call of each and the difference. Target: at most 1000 ns
(1 microsecond) added per launch, median.

    python3 benchmarks/predictor_speed.py [--calls 200000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emulator.predictor.modelfile import model_path  # noqa: E402
from emulator.vgpu.build import build_library  # noqa: E402
from emulator.vgpu_environment import vgpu_environment  # noqa: E402

NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
TARGET_NS = 1000.0
FAMILIES = ("gemm", "kernel", "copy")


def build(workdir: Path) -> Path:
    binary = workdir / "predictor_speed"
    libdir = build_library()
    subprocess.run([str(NVCC), "-cudart", "shared", "-arch=sm_90", "-O2", str(REPO / "benchmarks" / "predictor_speed.cu"),
                    "-o", str(binary), f"-L{libdir}", "-l:libcudart.so.13"], check=True)
    return binary


def run(binary: Path, predictor: str, calls: int, workdir: Path) -> dict[str, list[float]]:
    env = vgpu_environment(1, "h200", workdir=workdir)
    env["REVATI_PREDICTOR"] = predictor
    for key in ("REVATI_VGPU_TRACE", "REVATI_VGPU_STATS", "REVATI_VGPU_LOG"):
        env.pop(key, None)
    out = subprocess.run([str(binary), str(calls), "10"], env=env, capture_output=True, text=True, check=True).stdout
    per_batch: dict[str, list[float]] = {family: [] for family in FAMILIES}
    for line in out.splitlines():
        _, family, ns = line.split()
        per_batch[family].append(float(ns))
    return per_batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per family per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each predictor, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="revati-predictor-speed-") as tmp:
        workdir = Path(tmp)
        binary = build(workdir)
        (workdir / "rules").write_text("")
        predictors = {"profiled": f"profiled:{model_path('h200')}", "fixed": f"fixed:{workdir / 'rules'}"}
        samples: dict[str, dict[str, list[float]]] = {name: {f: [] for f in FAMILIES} for name in predictors}
        for _ in range(args.rounds):
            for name, spec in predictors.items():
                for family, values in run(binary, spec, args.calls, workdir).items():
                    samples[name][family] += values
    print(f"predictor cost per launch (vGPU library, 1 x H200, {args.rounds} alternating runs of each predictor)")
    print(f"{'family':<8} {'profiled ns':>12} {'fixed ns':>10} {'added ns':>10}")
    worst = 0.0
    for family in FAMILIES:
        profiled, fixed = (statistics.median(samples[name][family]) for name in ("profiled", "fixed"))
        worst = max(worst, profiled - fixed)
        print(f"{family:<8} {profiled:>12.1f} {fixed:>10.1f} {profiled - fixed:>10.1f}")
    print(f"target: at most {TARGET_NS:.0f} ns added per launch (median): {'met' if worst <= TARGET_NS else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
