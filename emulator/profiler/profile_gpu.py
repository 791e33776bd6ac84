#!/usr/bin/env python3
"""Measure the kernel-time tables that revati-tune's predictor reads, on one GPU.

    python3 emulator/profiler/profile_gpu.py --out $OUT/profile
        [--families gemm,attention,elementwise,copy] [--quick] [--dry-run]

Writes gemm.csv, attention.csv, elementwise.csv, copy.csv and meta.json under
--out; README.md beside this file gives their columns.  Every row is written
as soon as it is measured, so a run cut short still leaves its rows.

How a row is timed: inputs are random (never
zeros) and are rotated over enough copies that one pass reads more than the
60 MB L2; a CUDA graph of back-to-back launches is replayed several times with
an event between replays, and the per-launch time of each replay is one
sample.  That is the time the GPU spends per launch, which is what the
emulator charges, without the host's launch gaps.  --dry-run runs every
family on the CPU with tiny sizes (Triton in its interpreter) to exercise the
code; its timings mean nothing.

This file is the command line and the run's bookkeeping (ceilings, budgets, meta.json, the
summary). The families are families/*.py, the shared timing machinery harness.py, the sizes of
every run grids.py, and the models' shapes come from conf/model/ (shapes.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback

# The dry run executes Triton kernels in Triton's CPU interpreter, which is
# chosen when a kernel is defined: set it before anything imports triton.
if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Run as a file (python3 emulator/profiler/profile_gpu.py, no install): import this checkout's
# emulator package.
if __package__ in (None, ""):
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import torch  # noqa: E402

from emulator.profiler import grids, harness, shapes  # noqa: E402
from emulator.profiler.families import attention, copies, elementwise, gemm  # noqa: E402
from emulator.profiler.grids import DRY, FULL, QUICK  # noqa: E402
from emulator.profiler.harness import FamilyReport, FatalDeviceError, Policy, Run, Table, _try  # noqa: E402

# Each family's rows and columns (families/*.py), in the order a run measures them.
FAMILY_MODULES = {"gemm": gemm, "attention": attention, "elementwise": elementwise, "copy": copies}
FAMILIES = tuple(FAMILY_MODULES)
# Wall-clock cap per family; rows not reached by then are skipped and counted.
FAMILY_BUDGET_S = {"gemm": 150, "attention": 240, "elementwise": 60, "copy": 40}

# ----------------------------------------------------------------------------
# Ceilings
# ----------------------------------------------------------------------------


def measure_ceilings(run: Run) -> dict:
    """D2D copy bandwidth and dense bf16 GEMM rate, the two roofline ceilings."""
    many = Policy(target_s=5e-3, budget_s=100e-3, min_reps=10, max_reps=20)
    size = run.grid.ceiling_gemm
    src = run.pool.take(torch.bfloat16, (run.grid.ceiling_copy_bytes // 2,))
    dst = torch.empty_like(src)
    copy_t = run.bench.run([functools.partial(dst.copy_, src)], graph=False, policy=many)
    a = run.pool.take(torch.bfloat16, (size, size))
    b = run.pool.take(torch.bfloat16, (size, size))
    out = torch.empty((size, size), dtype=torch.bfloat16, device=run.device)
    gemm_t = run.bench.run([functools.partial(torch.mm, a, b, out=out)], policy=many)
    return {
        "d2d_copy_bytes": 2 * src.nbytes,
        "d2d_bytes_per_s": 2 * src.nbytes / copy_t.seconds,
        "gemm_bf16_mnk": size,
        "gemm_bf16_flop_per_s": 2 * size ** 3 / gemm_t.seconds,
    }


# ----------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------


def nvidia_smi(query):
    try:
        result = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=15)
        return result.stdout.strip() or result.stderr.strip()
    except Exception as e:  # noqa: BLE001 - optional information
        return f"unavailable: {type(e).__name__}"


CLOCK_QUERY = "pstate,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw,power.limit"


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def describe_machine(run: Run) -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "hostname": socket.gethostname(),
        "command": [sys.executable] + sys.argv,
        "mode": "dry-run" if run.args.dry_run else "quick" if run.args.quick else "full",
        "script_sha256": _sha256(__file__),
        # The rest of the code that ran, and the shapes it read from conf/model/.
        "modules_sha256": {os.path.relpath(m.__file__, os.path.dirname(os.path.abspath(__file__))): _sha256(m.__file__)
                           for m in (harness, grids, shapes, gemm, attention, elementwise, copies)},
        "model_shapes": {name: dataclasses.asdict(shape) for name, shape in run.grid.models.items()},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "triton": _try(lambda: __import__("triton").__version__),
        "blas_library": _try(lambda: str(torch.backends.cuda.preferred_blas_library())),
    }
    if run.cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=torch.cuda.get_device_name(0), sm_count=props.multi_processor_count,
                    memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    l2_cache_bytes=getattr(props, "L2_cache_size", None),
                    driver_version=nvidia_smi("driver_version"),
                    clocks_before=nvidia_smi(CLOCK_QUERY), clocks_query=CLOCK_QUERY)
    return info


def run_family(run: Run, name: str):
    family = FAMILY_MODULES[name]
    report = run.reports[name] = FamilyReport()
    start = time.monotonic()
    deadline = min(start + FAMILY_BUDGET_S[name], run.deadline)
    table = run.tables[name] = Table(os.path.join(run.args.out, f"{name}.csv"), family.COLUMNS)
    run.log(f"[{name}] start (budget {deadline - start:.0f} s)")
    try:
        run.measure(name, table, family.cases(run), deadline)
    except FatalDeviceError as e:
        run.fatal = str(e)
        report.notes.append(f"fatal: {e}")
        run.log(f"[{name}] FATAL, remaining families skipped: {e}")
    except Exception as e:  # noqa: BLE001 - the next family still runs
        report.notes.append(f"family aborted: {type(e).__name__}: {str(e)[:300]}")
        run.log(f"[{name}] ABORTED: {type(e).__name__}: {e}")
        run.log_file.write(traceback.format_exc())
    finally:
        table.close()
        run.ew_state = None
        _try(run.pool.release)  # may raise when the CUDA context is broken
        report.wall_s = time.monotonic() - start
        if run.bench.graph_fallbacks:
            report.notes.append(f"{run.bench.graph_fallbacks} rows timed eagerly: "
                                f"{run.bench.last_capture_error}")
            run.bench.graph_fallbacks = 0
        run.log(f"[{name}] done: {report.rows} rows ({report.fit} fit, {report.holdout} holdout), "
                f"{report.errors} errors, {report.skipped} skipped, {report.wall_s:.1f} s")
        write_meta(run)


def write_meta(run: Run):
    run.meta["families"] = {name: dataclasses.asdict(r) for name, r in run.reports.items()}
    run.meta["elapsed_s"] = time.monotonic() - run.started
    path = os.path.join(run.args.out, "meta.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(run.meta, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


def _headlines(run: Run) -> list[str]:
    """A few derived numbers to eyeball: achieved rates against the ceilings."""
    lines = []
    gemm = [r for r in getattr(run.tables.get("gemm"), "rows", []) if r["dtype"] == "bf16"]
    if gemm:
        best = max(gemm, key=lambda r: 2 * r["m"] * r["n"] * r["k"] / r["seconds"])
        rate = 2 * best["m"] * best["n"] * best["k"] / best["seconds"]
        lines.append(f"gemm bf16 best {rate / 1e12:.0f} TFLOP/s at m={best['m']} n={best['n']} k={best['k']}")
        decode = [r for r in gemm if r["n"] == 1]
        if decode:
            bw = max(2 * r["m"] * r["k"] / r["seconds"] for r in decode)
            lines.append(f"gemm bf16 T=1 best weight-read {bw / 1e9:.0f} GB/s")
    for r in getattr(run.tables.get("attention"), "rows", []):
        first_heads = run.grid.head_configs[0]
        if r["phase"] == "decode" and r["num_seqs"] == max(run.grid.decode_seqs) and \
                r["context_len"] == max(run.grid.decode_ctx) and \
                (r["num_heads"], r["num_kv_heads"], r["head_dim"]) == first_heads:
            kv = r["num_kv_tokens"] * r["num_kv_heads"] * r["head_dim"] * 2 * run.grid.attention_dtype.itemsize
            lines.append(f"attention {r['backend']} decode {r['num_seqs']}x{r['context_len']}: "
                         f"{r['seconds'] * 1e6:.0f} us, KV read {kv / r['seconds'] / 1e9:.0f} GB/s")
    for r in getattr(run.tables.get("copy"), "rows", []):
        if r["bytes"] == max(run.grid.copy_sizes):
            lines.append(f"copy {r['direction']} pinned={r['pinned']} {r['bytes']} B: "
                         f"{r['bytes'] / r['seconds'] / 1e9:.1f} GB/s")
    return lines


def print_summary(run: Run):
    print("\n=== summary ===")
    print(f"{'family':<12}{'rows':>6}{'fit':>6}{'hold':>6}{'err':>5}{'skip':>6}{'wall_s':>8}")
    for name, r in run.reports.items():
        print(f"{name:<12}{r.rows:>6}{r.fit:>6}{r.holdout:>6}{r.errors:>5}{r.skipped:>6}{r.wall_s:>8.1f}")
    ceilings = run.meta.get("ceilings", {})
    if "d2d_bytes_per_s" in ceilings:
        print(f"ceilings: D2D {ceilings['d2d_bytes_per_s'] / 1e12:.2f} TB/s (read+write), "
              f"bf16 GEMM {ceilings['gemm_bf16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    for line in _headlines(run):
        print(line)
    for name, value in run.meta.get("checks", {}).items():
        print(f"check {name}: {value:.3g}" if isinstance(value, float) else f"check {name}: {value}")
    for name, r in run.reports.items():
        for note in r.notes + r.error_samples[:2]:
            print(f"{name}: {note[:300]}")
    print(f"total {time.monotonic() - run.started:.1f} s; files in {run.args.out}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="reduced grid for a smoke run")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, timings meaningless")
    parser.add_argument("--max-seconds", type=float, default=420,
                        help="stop starting rows after this long (default 420)")
    args = parser.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families: {sorted(unknown)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no CUDA device; use --dry-run to exercise the script on the CPU")
    grid = DRY if args.dry_run else QUICK if args.quick else FULL
    torch.manual_seed(0)
    run = Run(args, grid)
    run.meta.update(describe_machine(run), checks={})
    run.log(f"profile_gpu: {run.meta['mode']} on {run.meta.get('gpu_name', 'cpu')}, "
            f"torch {torch.__version__}, triton {run.meta['triton']}, families {args.families}")
    write_meta(run)
    try:
        run.meta["ceilings"] = measure_ceilings(run)
        c = run.meta["ceilings"]
        run.log(f"ceilings: D2D {c['d2d_bytes_per_s'] / 1e12:.2f} TB/s (read+write); "
                f"bf16 {c['gemm_bf16_mnk']}^3 GEMM {c['gemm_bf16_flop_per_s'] / 1e12:.0f} TFLOP/s")
    except Exception as e:  # noqa: BLE001
        run.meta["ceilings"] = {"error": f"{type(e).__name__}: {e}"}
        run.log(f"ceilings failed: {type(e).__name__}: {e}")
    _try(run.pool.release)
    for name in args.families:
        if run.fatal:
            run.reports[name] = FamilyReport(notes=["not run: CUDA context broken earlier"])
            continue
        run_family(run, name)
    if run.cuda:
        run.meta["clocks_after"] = nvidia_smi(CLOCK_QUERY)
    write_meta(run)
    print_summary(run)


if __name__ == "__main__":
    main()
