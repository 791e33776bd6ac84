"""`revati-tune validate SCENARIO`: fidelity of the emulation, measured against a real GPU end to end.

On a machine with a real NVIDIA GPU, each scenario is served by the reference engine (Hugging Face
transformers' continuous batching, emulator/engines/transformers/) with the same load generator
(emulator/loadgen.py) and metrics (emulator/metrics.py) as `revati-tune run`, on two sides:

    real      the engine on the real GPU, in real time, --real-repeats times (default 3), each with a
              fresh server: one run cannot tell the emulation's error from the GPU's run-to-run noise
    emulated  the same engine on one virtual GPU of the same SKU, once (it is deterministic up to host
              noise): the vGPU library preloaded (the real driver is never loaded, so the real GPU is
              hidden), every launch charged by the predictor, server and load generator in virtual
              time under one Timekeeper

and prints, per metric (TTFT, TPOT, ITL, E2EL at mean/p50/p90; request and output throughput), the
median of the real repeats, their spread (min and max), the emulated value, whether it lies inside
the spread, and the relative error (emulated - real median) / real median, with every run's wall
time. The table (`scenario, metric, stat, real, real_min, real_max, emulated, rel_error`; `real` is
the median) goes to TABLE.csv and TABLE.md; OUT/runs.json keeps every repeat's metrics.

Scenarios (GROUPS below) come in groups: a model (conf/model/), a batch limit (transformers'
max_requests_per_batch) and a traffic shape (TRAFFIC), served at several loads. Names are
MODEL-bLIMIT[-TRAFFIC]-LOAD:

    llama3_2_1b-b16, -b64, llama3_8b-b16, -b64   prompts 128-512 tokens, loads overloaded, near, light
    llama3_2_3b-b128       the same prompts, twice the requests (so that the limit binds); overloaded, near
    llama3_8b-b64-prefix   prompts of 1280-1536 tokens in 4 groups, each sharing its first 1024 tokens,
                           with transformers' prefix caching (block sharing) on; overloaded, near
    llama3_8b-b16-long     prompts of 2048-4096 tokens; overloaded, near

Outputs are 32-96 tokens everywhere. `overloaded` sends every request at once; its real request
throughput (the median over the repeats) is the engine's capacity C for the group, and `near`
(Poisson at 0.85 C) and `light` (Poisson at 0.3 C) are offered relative to it, so the load levels
mean the same on any GPU. Selecting a near or light scenario runs its group's overloaded one first,
unless --capacity gives C. Selecting: a scenario name, a prefix of whole name parts (llama3_8b;
llama3_8b-b64, which takes the llama3_8b-b64-prefix group too; llama3_8b-b64-prefix) or `all`.

    revati-tune validate all --table docs/fidelity/h200 --out runs/validate
    python -m autotune.validate all ...        (the same, without the rest of the CLI's dependencies)

On a machine without a GPU it says so and exits with status 2, unless --real-from gives the real
side as measured earlier (a runs.json): then only the emulation runs, here, each scenario with the
workload its real runs served, which shows whether the emulating host changes the answer.

    revati-tune validate llama3_2_1b --sku h200 --real-from docs/fidelity/h200_runs.json --out runs/cross-host

--real-only serves the real side alone and writes OUT/runs.json, so that GPU time goes to the
repeats and the emulation runs later, on any host, with --real-from (repeatable: the files of
several GPU sessions merge). Compare like with like: the emulating host's engine should have the
real side's torch and transformers versions (REVATI_TRANSFORMERS_PYTHON names its interpreter).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from emulator.deployment import RunConfig, plain_environment, serve, stop_like_ctrl_c
from emulator.hardware import load_sku
from emulator.host_cpu import cpu_model, figure_of_samples

NO_GPU_STATUS = 2
STOPPED_STATUS = 130        # as a shell reports a command ended by Ctrl-C
REAL_REPEATS = 3

LOAD_FRACTIONS = {"overloaded": None, "near": 0.85, "light": 0.3}
LOAD_ORDER = tuple(LOAD_FRACTIONS)
# Requests per load and output lengths (tokens), the same for every traffic shape.
NUM_REQUESTS = {"overloaded": 96, "near": 96, "light": 32}
OUTPUT_LEN = {"kind": "uniform", "low": 32, "high": 96}
# Batch-token budget per step (transformers' max_batch_tokens), fixed so that both sides get the
# same engine whatever memory each reports. The KV cache is transformers' default (90% of free
# memory), far more than these workloads need on either side.
MAX_BATCH_TOKENS = 8192


@dataclass(frozen=True)
class Traffic:
    """What a group's requests look like (when they come is the load's business)."""
    prompt_len: dict                      # a loadgen length distribution, in tokens
    shared_prefix: dict | None = None     # loadgen's shared_prefix section
    prefix_caching: bool | None = None    # transformers' allow_block_sharing; None leaves its default


# Keys are the TRAFFIC part of a scenario's name; the default traffic has none, so that the first
# twelve scenarios keep their names.
TRAFFIC = {
    # Short enough that a scenario takes seconds on one GPU.
    "": Traffic({"kind": "uniform", "low": 128, "high": 512}),
    # transformers matches cached prefixes by whole KV pages (256 tokens by default): a 1024-token
    # prefix is four pages that every request after its group's first can reuse. Block sharing is
    # transformers' default too; it is asked for here so the scenario means it on any version.
    "prefix": Traffic({"kind": "uniform", "low": 1280, "high": 1536},
                      shared_prefix={"groups": 4, "prefix_len": 1024}, prefix_caching=True),
    # Prefill-heavy: one to four prompts fill a step's MAX_BATCH_TOKENS.
    "long": Traffic({"kind": "uniform", "low": 2048, "high": 4096}),
}


@dataclass(frozen=True)
class Group:
    """Scenarios that share a model, a batch limit and a traffic shape; their loads are relative
    to the capacity measured by the group's overloaded scenario."""
    model: str                            # a folder of conf/model/
    batch_limit: int
    traffic: str = ""                     # a key of TRAFFIC
    loads: tuple[str, ...] = LOAD_ORDER
    request_scale: int = 1                # each load sends NUM_REQUESTS times this

    @property
    def name(self) -> str:
        return "-".join(filter(None, (self.model, f"b{self.batch_limit}", self.traffic)))


# The groups beyond the first four run overloaded and one Poisson load only: each real run takes
# about 30 s on an H100, model load included, and runs --real-repeats times.
FEWER_LOADS = ("overloaded", "near")
GROUPS = (
    *(Group(model, limit) for model in ("llama3_2_1b", "llama3_8b") for limit in (16, 64)),
    Group("llama3_2_3b", 128, loads=FEWER_LOADS, request_scale=2),
    Group("llama3_8b", 64, "prefix", loads=FEWER_LOADS),
    Group("llama3_8b", 16, "long", loads=FEWER_LOADS),
)
MODEL_NAMES = tuple(dict.fromkeys(group.model for group in GROUPS))

# (metric key stem, our name) and (stat prefix, stat name)
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL"))
STATS = (("mean", "mean"), ("median", "p50"), ("p90", "p90"))
THROUGHPUTS = (("request_throughput", "req/s"), ("output_throughput", "tok/s"))
# (metrics.compute key, metric, stat) of each row of a scenario, in table order
METRIC_ROWS = (*((f"{prefix}_{key}_ms", f"{metric} (ms)", stat) for key, metric in LATENCIES for prefix, stat in STATS),
               *((key, f"{key} ({unit})", "value") for key, unit in THROUGHPUTS))
TOLERANCE = {"mean": 0.05, "p50": 0.05, "p90": 0.10, "value": 0.05}


class NoGpu(RuntimeError):
    """No real GPU here: validate compares one against its emulation."""


@dataclass(frozen=True)
class Scenario:
    group: Group
    load: str

    @property
    def name(self) -> str:
        return f"{self.group.name}-{self.load}"

    def workload(self, capacity_rps: float | None) -> dict:
        fraction = LOAD_FRACTIONS[self.load]
        if fraction is None:
            arrival = {"process": "poisson", "rate": "inf"}
        else:
            if not capacity_rps:
                raise ValueError(f"{self.name}: the rate is a fraction of the capacity measured by the overloaded "
                                 f"scenario, which did not run")
            arrival = {"process": "poisson", "rate": round(fraction * capacity_rps, 4)}
        traffic = TRAFFIC[self.group.traffic]
        spec = {"num_requests": NUM_REQUESTS[self.load] * self.group.request_scale, "seed": 0, "arrival": arrival,
                "prompt_len": traffic.prompt_len, "output_len": OUTPUT_LEN, "ready_timeout_s": 900.0}
        if traffic.shared_prefix:
            spec["shared_prefix"] = traffic.shared_prefix
        return spec

    def knobs(self):
        from emulator.engines.adapter import ServingKnobs
        return ServingKnobs(max_num_seqs=self.group.batch_limit, max_num_batched_tokens=MAX_BATCH_TOKENS,
                            prefix_caching=TRAFFIC[self.group.traffic].prefix_caching)


SCENARIOS = {s.name: s for s in (Scenario(group, load) for group in GROUPS for load in group.loads)}


def select(names: list[str], known_capacity: dict[str, float] | None = None) -> list[Scenario]:
    """The scenarios named (exact names, prefixes or `all`), with the overloaded scenario of each
    group first (the others' rates derive from it) unless its capacity is known (by group name),
    in table order."""
    chosen = set()
    for name in names:
        matches = [s for key, s in SCENARIOS.items() if name == "all" or key == name or key.startswith(name + "-")]
        if not matches:
            raise ValueError(f"unknown scenario {name!r}; known: all, a model ({', '.join(MODEL_NAMES)}), "
                             f"a group ({', '.join(g.name for g in GROUPS)}), or one of {', '.join(SCENARIOS)}")
        chosen.update(matches)
    chosen.update(Scenario(s.group, "overloaded") for s in list(chosen) if s.group.name not in (known_capacity or {}))
    return [s for s in SCENARIOS.values() if s in chosen]


def parse_capacity(items: list[str]) -> dict[str, float]:
    """--capacity GROUP=RPS items as {group name: requests per second}."""
    groups = [g.name for g in GROUPS]
    capacity = {}
    for item in items:
        group, _, rps = item.partition("=")
        try:
            value = float(rps)
        except ValueError:
            value = math.nan
        if group not in groups or not value > 0:
            raise ValueError(f"--capacity {item!r}: expected GROUP=RPS with RPS > 0 and GROUP one of "
                             f"{', '.join(groups)}; e.g. llama3_2_1b-b64=15.4")
        capacity[group] = value
    return capacity


# ----------------------------------------------------------------------------------------------
# The real GPU
# ----------------------------------------------------------------------------------------------

def real_gpu(python: Path) -> dict:
    """Facts of the real GPU (nvidia-smi and torch in the engine's Python), or NoGpu saying why not."""
    env = plain_environment()
    smi = shutil.which("nvidia-smi", path=":".join(p for p in env.get("PATH", "").split(":") if "revati" not in p))
    if smi is None:
        raise NoGpu("no nvidia-smi on PATH, so no NVIDIA driver")
    query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
                            "--format=csv,noheader"], env=env, capture_output=True, text=True, timeout=60)
    if query.returncode != 0 or not query.stdout.strip():
        raise NoGpu(f"nvidia-smi found no GPU ({(query.stderr or query.stdout).strip()[:300]})")
    code = ("import json, torch, transformers; ok = torch.cuda.is_available(); print(json.dumps({'cuda': ok, "
            "'torch': torch.__version__, 'transformers': transformers.__version__, 'cuda_runtime': torch.version.cuda, "
            "'name': torch.cuda.get_device_name(0) if ok else None}))")
    probe = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        raise NoGpu(f"{python} could not import torch and transformers: {probe.stderr.strip()[-300:]}")
    facts = json.loads(probe.stdout.strip().splitlines()[-1])
    if not facts["cuda"]:
        raise NoGpu(f"torch {facts['torch']} in {python} sees no CUDA device")
    name, driver, memory, sm_clock, mem_clock = [x.strip() for x in query.stdout.strip().splitlines()[0].split(",")]
    facts.update({"nvidia_smi_name": name, "driver": driver, "memory_total": memory, "max_sm_clock": sm_clock,
                  "max_mem_clock": mem_clock, "gpus": len(query.stdout.strip().splitlines()),
                  "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                  "host": socket.gethostname(), "kernel": platform.release()})
    return facts


def engine_versions(python: Path) -> dict:
    """torch and transformers versions in the engine's interpreter (the emulating side's)."""
    code = "import json, torch, transformers; print(json.dumps([torch.__version__, transformers.__version__]))"
    probe = subprocess.run([str(python), "-c", code], env=plain_environment(), capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        raise RuntimeError(f"{python} could not import torch and transformers: {probe.stderr.strip()[-300:]}")
    torch_version, transformers_version = json.loads(probe.stdout.strip().splitlines()[-1])
    return {"emulating_torch": torch_version, "emulating_transformers": transformers_version}


def sku_of(gpu_name: str) -> str:
    for sku in ("h200", "h100", "a100"):
        if sku in gpu_name.lower():
            return sku
    raise ValueError(f"no SKU for the GPU {gpu_name!r}: pass --sku (h100, h200, a100 or a SKU yaml)")


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------

def rel_error(real: float, emulated: float) -> float:
    if real == 0:
        return 0.0 if emulated == 0 else math.inf
    return (emulated - real) / real


def compare(scenario: str, reals: list[dict], emulated: dict) -> list[dict]:
    """Rows of the fidelity table for one scenario, from the metrics dicts (metrics.compute's) of
    the real repeats and of the emulated run: the real median is `real`, their spread `real_min`
    and `real_max`."""
    rows = []
    for key, metric, stat in METRIC_ROWS:
        values = [real[key] for real in reals]
        median = statistics.median(values)
        rows.append({"scenario": scenario, "metric": metric, "stat": stat, "real": median, "real_min": min(values),
                     "real_max": max(values), "emulated": emulated[key], "rel_error": rel_error(median, emulated[key])})
    return rows


def in_spread(row: dict) -> bool:
    """Whether the emulated value lies among the real repeats' (inside their [min, max])."""
    return row["real_min"] <= row["emulated"] <= row["real_max"]


def within(row: dict) -> bool:
    """Within tolerance: the stat's tolerance around the real median, or the real repeats' own
    spread where that reaches further (a real side that varies by 20% between repeats cannot show
    an emulation 5% wrong)."""
    return abs(row["rel_error"]) <= TOLERANCE[row["stat"]] or in_spread(row)


def misses(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not within(r)]


def write_table(rows: list[dict], runs: list[dict], facts: dict, command: str, prefix: Path) -> None:
    """prefix.csv (the rows) and prefix.md (the rows, wall times and device facts). A run's `real`
    is the list of its repeats' summaries."""
    import csv
    prefix.parent.mkdir(parents=True, exist_ok=True)
    values = ("real", "real_min", "real_max", "emulated")
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scenario", "metric", "stat", *values, "rel_error"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, **{k: f"{r[k]:.6g}" for k in values}, "rel_error": f"{r['rel_error']:.4f}"})
    lines = [f"# Fidelity: {facts.get('nvidia_smi_name', '?')}, real against emulated", "",
             f"Command: `{command}`", "",
             "Device: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
             ("The real side is the runs recorded in --real-from, measured earlier on the device above; the emulated "
              f"side ran once on this command's host ({facts['emulating_host_cpu']}, {facts['emulating_host_cores']} "
              "cores). " if "emulating_host_cpu" in facts else
              "Each scenario ran several times on the real GPU (the repeats' wall times are under Runs) and once "
              "emulated. ") + "real = the median of the real repeats; real spread = their min-max; in spread: whether the "
             "emulated value lies inside it. rel_error = (emulated - real) / real. Tolerance: "
             f"{TOLERANCE['mean']:.0%} for mean and p50 and throughput, {TOLERANCE['p90']:.0%} for p90, or the real "
             "spread where that reaches further; misses are marked **MISS**.", "",
             f"Within tolerance: {len(rows) - len(misses(rows))} of {len(rows)} cells.", "",
             "## Runs", "", "| scenario | offered rate (req/s) | real walls (s) | emulated wall (s) | emulated/real wall "
             "(median) | real serving walls (s) | emulated serving wall (s) | emulated virtual (s) | misses |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if "error" in run:
            lines.append(f"| {run['scenario']} | {run.get('rate', '')} | failed: {run['error'].splitlines()[0][:200]} "
                         "| | | | | | |")
            continue
        reals, emu = run["real"], run["emulated"]
        real_wall = statistics.median(real["wall_seconds"] for real in reals)
        lines.append(f"| {run['scenario']} | {run['rate']} | {_walls(reals, 'wall_seconds')} | "
                     f"{emu['wall_seconds']:.1f} | {emu['wall_seconds'] / real_wall:.2f} | "
                     f"{_walls(reals, 'serving_wall_seconds')} | {emu['serving_wall_seconds']:.1f} | "
                     f"{emu['virtual_seconds']:.1f} | {run['misses']} |")
    lines += ["", "## Metrics", "", "| scenario | metric | stat | real | real spread | emulated | in spread | rel_error |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = "" if within(r) else " **MISS**"
        lines.append(f"| {r['scenario']} | {r['metric']} | {r['stat']} | {r['real']:.4g} | "
                     f"{r['real_min']:.4g}-{r['real_max']:.4g} | {r['emulated']:.4g} | "
                     f"{'yes' if in_spread(r) else 'no'} | {r['rel_error']:+.1%}{flag} |")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _walls(summaries: list[dict], key: str) -> str:
    """One wall time per run, in run order: "31.2, 30.8, 31.0"."""
    return ", ".join(f"{summary[key]:.1f}" for summary in summaries)


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                        help=f"all, a model ({', '.join(MODEL_NAMES)}), a group (MODEL-bLIMIT[-TRAFFIC]) or a "
                             f"scenario name")
    parser.add_argument("--table", type=Path, default=None,
                        help="write the table to TABLE.csv and TABLE.md (default: OUT/fidelity)")
    parser.add_argument("--out", type=Path, default=Path("runs/validate"), help="run folders (logs, records)")
    parser.add_argument("--sku", type=_sku, help="the SKU to emulate (default: the real GPU's)")
    parser.add_argument("--real-repeats", type=_repeats, default=REAL_REPEATS, metavar="N",
                        help=f"real runs per scenario (default {REAL_REPEATS}): the table gives their median and "
                             f"spread; the emulated side runs once")
    parser.add_argument("--timeout", type=_seconds, default=420.0, help="wall seconds per run")
    parser.add_argument("--capacity", action="append", default=[], metavar="GROUP=RPS",
                        help="the capacity (median real request throughput of the group's overloaded scenario) "
                             "measured earlier, instead of running the overloaded scenario again")
    parser.add_argument("--budget", type=_seconds, default=None,
                        help="wall seconds for the whole command: no scenario starts that would end after it, "
                             "by the longest scenario so far (a device call's time limit kills what runs past it)")
    parser.add_argument("--cudnn-attention", choices=("on", "off"), default="on",
                        help="SDPA's cuDNN backend on both sides (on: torch's own choice); off as the tables "
                             "measured before 2026-12-06 ran, to compare with them (--real-from)")
    sides = parser.add_mutually_exclusive_group()
    sides.add_argument("--real-from", type=Path, action="append", default=[], metavar="RUNS_JSON",
                       help="the real side as measured earlier (a runs.json of validate, or collect.py's "
                            "TABLE_runs.json, e.g. docs/fidelity/h200_runs.json; repeat it to merge several, the "
                            "last file with a scenario wins): only the emulation runs, here, with each scenario's "
                            "recorded workload; needs no GPU")
    sides.add_argument("--real-only", action="store_true",
                       help="serve the real side only and write OUT/runs.json, for --real-from to emulate on "
                            "another host (GPU time goes to the repeats, none to the emulation)")


def _repeats(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of real runs per scenario, at least 1 "
                                         f"(default {REAL_REPEATS}); got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of wall seconds > 0, got {text!r}")
    return value


def _sku(text: str) -> str:
    try:
        load_sku(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="fidelity: a scenario on the real GPU and on its emulation, "
                                                    "metric by metric (needs a machine with an NVIDIA GPU)")
    add_arguments(parser)
    parser.set_defaults(run=run_command)


def recorded_real_side(paths: list[Path]) -> tuple[dict, dict[str, list[dict]]]:
    """(the real GPU's facts, scenario -> its real runs' summaries) of one or more runs.json files
    of the same GPU (a later file's scenario replaces an earlier one's); an older file has one real
    run per scenario, and a scenario that failed before all its repeats ran is left out."""
    facts, runs = None, {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
            for run in data["runs"]:
                if "real" in run and "error" not in run:
                    reals = run["real"] if isinstance(run["real"], list) else [run["real"]]
                    runs[run["scenario"]] = [_with_config(real) for real in reals]
            gpu = data["facts"]["nvidia_smi_name"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"--real-from {path}: not a runs.json of validate ({type(error).__name__}: {error})") from error
        if facts is not None and gpu != facts["nvidia_smi_name"]:
            raise ValueError(f"--real-from {path}: measured on {gpu}, the files before it on {facts['nvidia_smi_name']}; "
                             f"merge only runs of one GPU type")
        facts = facts or data["facts"]
    return facts, runs


def _with_config(summary: dict) -> dict:
    """A recorded run's summary as RunSummary holds it: files written before 2026-12-07 keep the
    workload and the server command at the top."""
    if "config" in summary:
        return summary
    moved = {key: summary[key] for key in ("workload", "server_command") if key in summary}
    return {**{k: v for k, v in summary.items() if k not in moved}, "config": moved}


def run_command(args: argparse.Namespace) -> int:
    """validate, stopped by Ctrl-C or SIGTERM (a device call's time limit) like a run is: the server
    and load generator of the run under way are ended, the scenarios done so far are in runs.json."""
    stop_like_ctrl_c()
    try:
        return _validate(args)
    except KeyboardInterrupt:
        print(f"revati-tune validate: stopped; the scenarios that finished are in {args.out / 'runs.json'}",
              file=sys.stderr)
        return STOPPED_STATUS


def _validate(args: argparse.Namespace) -> int:
    from emulator.engines.transformers.adapter import TransformersAdapter

    started = time.monotonic()
    capacity = parse_capacity(args.capacity)
    adapter = TransformersAdapter()
    recorded = None
    if args.real_from:
        facts, recorded = recorded_real_side(args.real_from)
        # Every workload is in the file: no overloaded scenario has to run first.
        scenarios = select(args.scenarios, {group.name: 0.0 for group in GROUPS})
        facts = {**facts, "emulating_host_cpu": cpu_model(), "emulating_host_cores": os.cpu_count(),
                 **engine_versions(adapter.python())}
        for package in ("torch", "transformers"):
            if facts.get(package) != facts[f"emulating_{package}"]:
                print(f"revati-tune validate: warning: the real side ran {package} {facts.get(package)}, the emulation "
                      f"runs {facts[f'emulating_{package}']} ({adapter.python()}): the engine's own code differs "
                      f"between the sides; REVATI_TRANSFORMERS_PYTHON can name an interpreter with the real side's "
                      f"versions", file=sys.stderr)
        sku = args.sku or facts.get("emulated_sku") or sku_of(facts["nvidia_smi_name"])
    else:
        scenarios = select(args.scenarios, capacity)
        try:
            facts = real_gpu(adapter.python())
        except NoGpu as why:
            print(f"revati-tune validate: no real GPU on this machine: {why}. validate compares a real GPU with its "
                  f"emulation, so it runs only where an NVIDIA GPU is (or give --real-from, a real side measured "
                  f"earlier); `revati-tune run` emulates without one.", file=sys.stderr)
            return NO_GPU_STATUS
        sku = args.sku or sku_of(facts["nvidia_smi_name"])
    facts["emulated_sku"] = sku
    print("device: " + json.dumps(facts), flush=True)
    command = ("revati-tune validate " + " ".join(args.scenarios) + (f" --sku {args.sku}" if args.sku else "")
               + ("".join(f" --real-from {path}" for path in args.real_from) if args.real_from
                  else f" --real-repeats {args.real_repeats}" + (" --real-only" if args.real_only else ""))
               + "".join(f" --capacity {c}" for c in args.capacity))
    command += f" --cudnn-attention {args.cudnn_attention}"
    server_args = ("--cudnn-attention", args.cudnn_attention)
    table = args.table or args.out / "fidelity"
    rows, runs = [], []
    longest = 0.0       # wall seconds of the longest scenario so far
    for scenario in scenarios:
        if args.budget is not None and time.monotonic() - started + longest > args.budget:
            runs.append({"scenario": scenario.name, "error": f"not run: the {args.budget:.0f} s budget would be "
                                                           f"spent before it ended (the longest scenario so far "
                                                           f"took {longest:.0f} s)"})
            print(f"{scenario.name}: not run (budget)", flush=True)
            continue
        scenario_started = time.monotonic()
        record = {"scenario": scenario.name}
        try:
            if recorded is not None:
                scenario_rows = emulate_against(adapter, scenario, recorded, args.out / scenario.name, record,
                                                sku=sku, timeout_s=args.timeout, server_args=server_args)
            else:
                workload = scenario.workload(capacity.get(scenario.group.name))
                record["rate"] = workload["arrival"]["rate"]
                serve_real(adapter, scenario, workload, args.out / scenario.name, record, repeats=args.real_repeats,
                           sku=sku, timeout_s=args.timeout, server_args=server_args)
                scenario_rows = [] if args.real_only else emulate(
                    adapter, scenario, workload, args.out / scenario.name, record, sku=sku, timeout_s=args.timeout,
                    server_args=server_args)
            if scenario.load == "overloaded":
                capacity[scenario.group.name] = statistics.median(
                    real["metrics"]["request_throughput"] for real in record["real"])
                print(f"{scenario.group.name}: capacity {capacity[scenario.group.name]:.4g} req/s "
                      f"(--capacity {scenario.group.name}={capacity[scenario.group.name]:.4g})", flush=True)
            if not args.real_only:
                rows += scenario_rows
                record["misses"] = len(misses(scenario_rows))
                _print_rows(scenario_rows, record)
        except Exception as error:   # a failed scenario is a row of the report, not the end of the run
            record["error"] = f"{type(error).__name__}: {error}"
            print(f"{scenario.name}: FAILED {record['error']}", flush=True)
        runs.append(record)
        longest = max(longest, time.monotonic() - scenario_started)
        if "error" in record and not any("error" not in r for r in runs):
            # Nothing has worked yet: the next scenarios would fail the same way; stop here.
            runs += [{"scenario": s.name, "error": "not run: the first scenario failed"}
                     for s in scenarios[scenarios.index(scenario) + 1:]]
            break
        _write_runs(args.out / "runs.json", facts, command, rows, runs)
        if not args.real_only:
            write_table(rows, runs, facts, command, table)
    _write_runs(args.out / "runs.json", facts, command, rows, runs)
    if args.real_only:
        print(f"real side: {args.out / 'runs.json'} (emulate it anywhere: --real-from {args.out / 'runs.json'})")
    else:
        write_table(rows, runs, facts, command, table)
        print(f"table: {table.with_suffix('.csv')} and {table.with_suffix('.md')}")
    return 0 if (rows or args.real_only) and all("error" not in r for r in runs) else 1


def _write_runs(path: Path, facts: dict, command: str, rows: list[dict], runs: list[dict]) -> None:
    """Every run's summary so far, rewritten after each scenario so that a killed command keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"facts": facts, "command": command, "rows": rows, "runs": runs}, indent=1, default=float))


def run_config(adapter, scenario: Scenario, workload: dict, *, sku: str, timeout_s: float,
               server_args: tuple[str, ...] = (), server_host_cpu: dict | None = None) -> RunConfig:
    """The deployment that serves `workload` for the scenario, either side."""
    return RunConfig(model=scenario.group.model, sku=sku, knobs=scenario.knobs(), workload=workload,
                     engine=adapter.name, timeout_s=timeout_s, server_args=server_args,
                     server_host_cpu=server_host_cpu)


def serve_real(adapter, scenario: Scenario, workload: dict, out: Path, record: dict, *, repeats: int, sku: str,
               timeout_s: float, server_args: tuple[str, ...] = ()) -> None:
    """Serve the scenario `repeats` times on the real GPU (out/real-1, ...). Each summary goes into
    record["real"] as soon as it exists, so a failed scenario still shows what ran; any failed run
    fails the scenario with its reason. The host's CPU speed is measured before each run (the
    summary's host_cpu) and in the server's generation thread while it serves
    (host_cpu_in_serving_thread): a server's host speed moves between device calls, and the
    emulation of these runs is charged the host as it was."""
    from emulator.host_cpu import measure_in
    record["real"] = []
    for repeat in range(1, repeats + 1):
        host_cpu = measure_in(adapter.python())
        summary = _serve_sampled(adapter, scenario, workload, out / f"real-{repeat}", emulated=False, sku=sku,
                                 timeout_s=timeout_s, server_args=server_args)
        summary.host_cpu = host_cpu
        record["real"].append(summary.to_dict())
        print(f"{scenario.name}: real {repeat}/{repeats} done in {summary.wall_seconds:.1f} s", flush=True)


def _serve_sampled(adapter, scenario: Scenario, workload: dict, out: Path, *, emulated: bool, sku: str,
                   timeout_s: float, server_args: tuple[str, ...], server_host_cpu: dict | None = None):
    """serve() with the server sampling its host's speed between steps (the same on both sides, so
    that the real and the emulated server carry the same delay), the figure in the summary."""
    samples = out.parent / f"{out.name}-host_cpu.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    samples.unlink(missing_ok=True)
    config = run_config(adapter, scenario, workload, sku=sku, timeout_s=timeout_s,
                        server_args=(*server_args, "--sample-host", str(samples.resolve())),
                        server_host_cpu=server_host_cpu)
    summary = serve(config, out, emulated=emulated)
    summary.host_cpu_in_serving_thread = figure_of_samples(samples)
    return summary


def emulate(adapter, scenario: Scenario, workload: dict, out: Path, record: dict, *, sku: str, timeout_s: float,
            server_args: tuple[str, ...] = ()) -> list[dict]:
    """Serve the scenario once emulated (out/emulated) and return its rows against record["real"],
    charged the server host's CPU speed as the real runs found it (server_host_speed)."""
    record["emulated"] = _serve_sampled(adapter, scenario, workload, out / "emulated", emulated=True, sku=sku,
                                        timeout_s=timeout_s, server_args=server_args,
                                        server_host_cpu=server_host_speed(record["real"])).to_dict()
    print(f"{scenario.name}: emulated done in {record['emulated']['wall_seconds']:.1f} s", flush=True)
    return compare(scenario.name, [real["metrics"] for real in record["real"]], record["emulated"]["metrics"])


def server_host_speed(reals: list[dict]) -> dict | None:
    """The server host's speed to charge an emulation of these real runs: the median of the figures
    timed in their servers' generation threads while they served, where they have them; else the
    fastest of the figures measured before each run, or None.

    The benchmark before a run says little of the run: on the lent machines it is bimodal (36-42
    or 51-72 ms a round) and the serving walls after it do not follow it (71.6 and 35.6 ms before
    walls of 16.8 and 17.2 s, docs/fidelity/h100_notes.md). Taking the fastest figure, on the view
    that a disturbance only slows a benchmark, held on the H100 (2026-12-07) and failed on the H200
    (2026-12-07: emulations charged 44 ms ran 13-17% fast, one charged 51 ms matched), whose host
    stayed slow for a whole device session. A sampler in another process beside the server
    (host_cpu_while_serving, runs of 2026-12-07) is not used: its median said 53-73 ms where the
    servers ran as at ~40-50 ms (docs/fidelity/h100_notes.md)."""
    in_thread = [real["host_cpu_in_serving_thread"] for real in reals if real.get("host_cpu_in_serving_thread")]
    if in_thread:
        figure = dict(in_thread[0])
        figure["seconds"] = statistics.median(f["seconds"] for f in in_thread)
        figure["rounds"] = sum(f["rounds"] for f in in_thread)
        return figure
    before = sorted((real["host_cpu"] for real in reals if real.get("host_cpu")), key=lambda f: f["seconds"])
    return before[0] if before else None


def emulate_against(adapter, scenario: Scenario, recorded: dict[str, list[dict]], out: Path, record: dict, *,
                    sku: str, timeout_s: float, server_args: tuple[str, ...] = ()) -> list[dict]:
    """The emulated side only, with the workload the recorded real runs served, compared with them."""
    if scenario.name not in recorded:
        raise ValueError(f"no real runs of {scenario.name} in --real-from")
    record["real"] = recorded[scenario.name]
    workload = record["real"][0]["config"]["workload"]
    record["rate"] = workload["arrival"]["rate"]
    return emulate(adapter, scenario, workload, out, record, sku=sku, timeout_s=timeout_s, server_args=server_args)


def _print_rows(rows: list[dict], record: dict) -> None:
    reals, emu = record["real"], record["emulated"]
    print(f"  wall: real {_walls(reals, 'wall_seconds')} s (serving {_walls(reals, 'serving_wall_seconds')}), "
          f"emulated {emu['wall_seconds']:.1f} s (serving {emu['serving_wall_seconds']:.1f}, virtual "
          f"{emu['virtual_seconds']:.1f})")
    for r in rows:
        flag = "" if within(r) else "  MISS"
        spread = f"[{r['real_min']:.4g}-{r['real_max']:.4g}]"
        print(f"  {r['metric']:<30} {r['stat']:<5} real {r['real']:>10.4g} {spread:<23} emulated {r['emulated']:>10.4g} "
              f"{'in' if in_spread(r) else 'out':<3}  {r['rel_error']:+7.1%}{flag}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autotune.validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, RuntimeError) as error:
        print(f"revati-tune validate: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
