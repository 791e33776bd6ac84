#!/usr/bin/env python3
"""Merge the run folders of several `revati-tune validate` commands (each device call ran some of
the scenarios) into one table, through autotune/validate.py's own compare() and write_table().

    python3 docs/fidelity/collect.py --table docs/fidelity/h200 --facts RUNS.json \
        --command "..." RUN_DIR...        (a scenario found in several RUN_DIRs: the last one wins)

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
    parser.add_argument("--real-repeat", type=Path, help="a run folder of an earlier command: its real runs are "
                        "compared with the real runs of the same scenarios here (TABLE_real_repeat.csv)")
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
        sides = {side: json.loads((found[name] / side / "summary.json").read_text()) for side in ("real", "emulated")}
        scenario_rows = validate.compare(name, sides["real"]["metrics"], sides["emulated"]["metrics"])
        rows += scenario_rows
        rate = json.loads((found[name] / "real" / "workload.json").read_text())["arrival"]["rate"]
        runs.append({"scenario": name, "rate": rate, **sides, "misses": len(validate.misses(scenario_rows))})
        emu = sides["emulated"]
        launches, seconds = fmha(str(found[name] / "emulated" / "vgpu" / "stats-*.csv"))
        gpu = {f["family"]: f["seconds"] for f in emu.get("gpu_time_by_family", [])}
        diagnostics.append({
            "scenario": name, "emulated_gpu_seconds": round(sum(gpu.values()), 3),
            "emulated_virtual_seconds": round(emu["virtual_seconds"], 2),
            "real_duration_s": round(sides["real"]["metrics"]["duration"], 2),
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
    if args.real_repeat:
        repeat = []
        for name in validate.SCENARIOS:
            earlier = args.real_repeat / name / "real" / "summary.json"
            if name in found and earlier.is_file():
                first = json.loads(earlier.read_text())["metrics"]
                second = json.loads((found[name] / "real" / "summary.json").read_text())["metrics"]
                # rel_error here: (this real run - the earlier real run) / the earlier one
                repeat += validate.compare(name, first, second)
        with open(f"{args.table}_real_repeat.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["scenario", "metric", "stat", "real", "emulated", "rel_error"])
            writer.writeheader()
            for r in repeat:
                writer.writerow({**r, "rel_error": f"{r['rel_error']:.4f}"})
        lines = ["", "## Repeatability of the real side", "",
                 f"The same scenario on the real GPU in two device calls (columns: earlier real run, later real run, "
                 f"relative difference; from {args.table.name}_real_repeat.csv):", "",
                 "| scenario | metric | stat | real (earlier) | real (later) | difference |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['scenario']} | {r['metric']} | {r['stat']} | {r['real']:.4g} | {r['emulated']:.4g} | "
                  f"{r['rel_error']:+.1%} |" for r in repeat]
        with open(args.table.with_suffix(".md"), "a") as f:
            f.write("\n".join(lines) + "\n")
    if args.notes:
        with open(args.table.with_suffix(".md"), "a") as f:
            f.write("\n" + args.notes.read_text())
    print(f"{len(rows)} rows from {len(found)} scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
