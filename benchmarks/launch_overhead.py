#!/usr/bin/env python3
"""Launch overhead of the vGPU library: host nanoseconds per intercepted kernel launch.

Builds benchmarks/launch_overhead.cu with nvcc and runs it on one virtual H100 under the fixed
predictor with tracing off (the configuration trials run in). In the same run it times N calls
each of a plain non-inlined C function with cudaLaunchKernel's arguments (the floor), of
cudaLaunchKernel, of <<<>>> and of the driver's cuLaunchKernel, in interleaved batches, and
reports the median (and minimum) ns per call over the batches and the ratio to the plain call.
Target: an intercepted launch costs at most 100 ns (median).

    python3 benchmarks/launch_overhead.py [--calls 1000000] [--batches 20] [--check]

--real runs the same program on the machine's real GPU instead (no vGPU library; built with the
static CUDA runtime), for comparison with what a real launch costs.
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

SOURCE = Path(__file__).resolve().parent / "launch_overhead.cu"
NVCC = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
TARGET_NS = 100.0
METHODS = [  # (key printed by the program, label, intercepted?)
    ("plain", "plain C call (floor)", False),
    ("runtime", "cudaLaunchKernel", True),
    ("chevron", "<<<>>> launch", True),
    ("driver", "cuLaunchKernel", True),
]


def build(workdir: Path, cudart: str) -> tuple[Path, Path]:
    """Compile the benchmark; returns (binary, cubin)."""
    keep = workdir / "keep"
    keep.mkdir(parents=True, exist_ok=True)
    binary = workdir / "launch_overhead"
    cmd = [str(NVCC), "-cudart", cudart, "-arch=sm_90", "-O3", "-Xcompiler", "-O2", "-keep", "-keep-dir",
           str(keep), str(SOURCE), "-o", str(binary), "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"nvcc failed:\n{proc.stderr[-4000:]}")
    return binary, keep / "launch_overhead.sm_90.cubin"


def run(binary: Path, cubin: Path, calls: int, batches: int, real: bool, workdir: Path) -> str:
    if real:
        env = dict(os.environ)
    else:
        from emulator.vgpu_environment import vgpu_environment
        env = vgpu_environment(1, "h100", workdir=workdir)
        rules = workdir / "predictor.rules"
        rules.write_text("kernel _Z12bench_kernelPfi 0.00001\n")
        env["REVATI_PREDICTOR"] = f"fixed:{rules}"
        for key in ("REVATI_VGPU_TRACE", "REVATI_VGPU_STATS", "REVATI_VGPU_LOG"):
            env.pop(key, None)
    proc = subprocess.run([str(binary), str(cubin), str(calls), str(batches)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the benchmark failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def summarise(stdout: str) -> dict[str, list[float]]:
    per_batch: dict[str, list[float]] = {key: [] for key, _, _ in METHODS}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "batch":
            per_batch[parts[1]].append(float(parts[2]))
    return per_batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls per method (default 1e6)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per method (default 20)")
    parser.add_argument("--real", action="store_true", help="run on the real GPU, without the vGPU library")
    parser.add_argument("--check", action="store_true", help=f"exit 1 if a launch's median exceeds {TARGET_NS:.0f} ns")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="revati-launch-overhead-") as tmp:
        workdir = Path(tmp)
        binary, cubin = build(workdir, "static" if args.real else "shared")
        per_batch = summarise(run(binary, cubin, args.calls, args.batches, args.real, workdir))

    where = "real GPU" if args.real else "vGPU library, 1 x H100, fixed predictor, no trace"
    calls = args.calls // args.batches * args.batches
    print(f"launch overhead ({where}): {calls} calls per method, {args.batches} interleaved batches")
    print(f"{'method':<22} {'median ns':>10} {'min ns':>8} {'vs plain':>9}")
    floor = statistics.median(per_batch["plain"])
    worst = 0.0
    for key, label, intercepted in METHODS:
        median = statistics.median(per_batch[key])
        if intercepted:
            worst = max(worst, median)
        print(f"{label:<22} {median:>10.1f} {min(per_batch[key]):>8.1f} {median / floor:>8.1f}x")
    ok = worst <= TARGET_NS
    if not args.real:
        print(f"target: median per intercepted launch <= {TARGET_NS:.0f} ns: "
              f"{'met' if ok else 'MISSED'} (slowest path {worst:.1f} ns)")
    return 1 if args.check and not ok and not args.real else 0


if __name__ == "__main__":
    sys.exit(main())
