"""Timekeeper cost: wall time per time jump, jumps per second with many actors, and the
virtual-to-wall speed of an idle-heavy deployment.

Each actor is a process that repeatedly launches a kernel and synchronises on it, so every
iteration is a wait that only a time jump can end. With one actor, wall time per iteration is the
Timekeeper's round trip (wait message, idle detection over /proc, clock raise, resume). With 16
actors whose kernels all take the same time, every jump releases all 16 at once.

    python3 benchmarks/timekeeper_jumps.py [--iterations 2000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emulator.timekeeper.server import Timekeeper  # noqa: E402
from emulator.vgpu_environment import vgpu_environment  # noqa: E402


def build(workdir: Path) -> Path:
    binary = workdir / "timekeeper_jumps"
    subprocess.run(["/usr/local/cuda/bin/nvcc", "-cudart", "shared", "-arch=sm_90",
                    str(ROOT / "benchmarks" / "timekeeper_jumps.cu"), "-o", str(binary)], check=True)
    return binary


def run(binary: Path, actors: int, iterations: int, kernel_s: float, workdir: Path) -> dict:
    rules = workdir / "rules"
    rules.write_text(f"kernel * {kernel_s}\n")
    with Timekeeper(watchdog_s=600) as tk:
        env = vgpu_environment(1, "h100", workdir=workdir)
        env.update(tk.env())
        env["REVATI_PREDICTOR"] = f"fixed:{rules}"
        start = time.monotonic()
        procs = [subprocess.Popen([str(binary), str(iterations)], env=env) for _ in range(actors)]
        codes = [p.wait() for p in procs]
        wall = time.monotonic() - start
        jumps = tk.jumps
    assert codes == [0] * actors and tk.failure is None, (codes, tk.failure)
    return {"wall": wall, "jumps": jumps, "virtual": tk.final_ns / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        binary = build(workdir)
        one = run(binary, 1, args.iterations, 1e-3, workdir)
        many = run(binary, 16, args.iterations // 4, 1e-3, workdir)
        idle = run(binary, 1, 200, 1.0, workdir)          # 200 s of virtual GPU time
    print(f"{'scenario':<40}{'jumps':>8}{'wall s':>9}{'us/jump':>10}{'jumps/s':>10}{'virtual/wall':>14}")
    for name, r in (("1 actor, 1 ms kernels", one), ("16 actors, 1 ms kernels", many),
                    ("1 actor, 1 s kernels (idle-heavy)", idle)):
        print(f"{name:<40}{r['jumps']:>8}{r['wall']:>9.3f}{r['wall'] / r['jumps'] * 1e6:>10.1f}"
              f"{r['jumps'] / r['wall']:>10.0f}{r['virtual'] / r['wall']:>14.1f}")


if __name__ == "__main__":
    main()
