#!/usr/bin/env python3
"""Merge the run folders of several `revati-tune validate` commands (each device call ran some of
the scenarios) into one table, through autotune/validate.py's own compare() and write_table().

    python3 docs/fidelity/collect.py --table docs/fidelity/h200 --facts RUNS.json \
        --command "..." RUN_DIR...        (a scenario found in several RUN_DIRs: the last one wins)

A scenario's folder holds its real repeats (real-1, real-2, ...) and its emulated run; a folder of
an older command, from before validate repeated the real side, has one run in real/.

Also writes TABLE_runs.json (every run's summary) and TABLE_diagnostics.csv: per scenario and side, where the emulated GPU time went (the
memory-efficient attention kernel apart) and the virtual/serving times, for explaining misses.
"""
import argparse
import csv
import glob
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from autotune import validate  # noqa: E402


def fmha(stats_glob: str) -> tuple[int, float]:
    launches, seconds = 0, 0.0
    for path in glob.glob(stats_glob):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row["name"].startswith("fmha_cutlass"):
                    launches += int(row["count"])
                    seconds += float(row["seconds"])
    return launches, seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--facts", required=True, help="a runs.json of one of the commands (device facts)")
    parser.add_argument("--command", action="append", required=True)
    parser.add_argument("--notes", type=Path, help="markdown appended to TABLE.md (the analysis of the misses)")
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    found = {}
    for folder in args.dirs:
        for name in validate.SCENARIOS:
            if (Path(folder) / name / "emulated" / "summary.json").is_file():
                found[name] = Path(folder) / name
    rows, runs, diagnostics = [], [], []
    for name, scenario in validate.SCENARIOS.items():
        if name not in found:
            runs.append({"scenario": name, "error": "not run"})
            continue
        real_dirs = sorted(found[name].glob("real-*"), key=lambda d: int(d.name.split("-")[1])) or [found[name] / "real"]
        reals = [json.loads((d / "summary.json").read_text()) for d in real_dirs]
        emu = json.loads((found[name] / "emulated" / "summary.json").read_text())
        scenario_rows = validate.compare(name, [r["metrics"] for r in reals], emu["metrics"])
        rows += scenario_rows
        rate = json.loads((real_dirs[0] / "workload.json").read_text())["arrival"]["rate"]
        runs.append({"scenario": name, "rate": rate, "real": reals, "emulated": emu,
                     "misses": len(validate.misses(scenario_rows))})
        launches, seconds = fmha(str(found[name] / "emulated" / "vgpu" / "stats-*.csv"))
        gpu = {f["family"]: f["seconds"] for f in emu.get("gpu_time_by_family", [])}
        diagnostics.append({
            "scenario": name, "emulated_gpu_seconds": round(sum(gpu.values()), 3),
            "emulated_virtual_seconds": round(emu["virtual_seconds"], 2),
            "real_duration_s": round(sorted(r["metrics"]["duration"] for r in reals)[len(reals) // 2], 2),
            "emulated_duration_s": round(emu["metrics"]["duration"], 2),
            **{f"gpu_{k}_s": round(v, 3) for k, v in sorted(gpu.items())},
            "fmha_launches": launches, "fmha_charged_us_per_launch": round(seconds / launches * 1e6, 2) if launches else "",
        })
    facts = json.loads(Path(args.facts).read_text())["facts"]
    # Every run's summary (metrics, wall and virtual times, where the emulated GPU time went).
    Path(f"{args.table}_runs.json").write_text(json.dumps(
        {"facts": facts, "commands": args.command, "runs": [r for r in runs if "error" not in r]}, indent=1, default=float))
    validate.write_table(rows, runs, facts, " ; ".join(args.command), args.table)
    keys = sorted({k for d in diagnostics for k in d}, key=lambda k: (k != "scenario", k))
    with open(f"{args.table}_diagnostics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(diagnostics)
    if args.notes:
        with open(args.table.with_suffix(".md"), "a") as f:
            f.write("\n" + args.notes.read_text())
    print(f"{len(rows)} rows from {len(found)} scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
