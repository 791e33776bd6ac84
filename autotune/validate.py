"""`revati-tune validate SCENARIO`: fidelity of the emulation, measured against a real GPU end to end.

On a machine with a real NVIDIA GPU, each scenario is served twice by the reference engine
(Hugging Face transformers' continuous batching, emulator/engines/hf_transformers.py) with the same
load generator (emulator/loadgen.py) and metrics (emulator/metrics.py) as `revati-tune run`:

    real      the engine on the real GPU, in real time
    emulated  the same engine on one virtual GPU of the same SKU: the vGPU library preloaded (the
              real driver is never loaded, so the real GPU is hidden), every launch charged by the
              predictor, server and load generator in virtual time under one Timekeeper

and prints, per metric (TTFT, TPOT, ITL, E2EL at mean/p50/p90; request and output throughput),
real vs emulated and the relative error (emulated - real) / real, with the wall time of both runs.
The table (`scenario, metric, stat, real, emulated, rel_error`) goes to TABLE.csv and TABLE.md.

Scenarios (SCENARIOS below): a ~1B and a ~8B Llama (conf/model/llama3_2_1b, llama3_8b), two batch
limits (transformers' max_requests_per_batch 16 and 64), three loads. `overloaded` sends every
request at once; its real request throughput is the engine's capacity C for that model and limit,
and `near` (Poisson at 0.85 C) and `light` (Poisson at 0.3 C) are offered relative to it, so the
load levels mean the same on any GPU. Selecting a near or light scenario runs its overloaded one
first. Names: MODEL-bLIMIT-LOAD, e.g. llama3_2_1b-b16-light; a prefix (llama3_2_1b, llama3_8b-b64)
or `all` selects several.

    revati-tune validate all --table docs/fidelity/h200 --out runs/validate
    python -m autotune.validate all ...        (the same, without the rest of the CLI's dependencies)

On a machine without a GPU it says so and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "conf" / "model"
NO_GPU_STATUS = 2

LOAD_FRACTIONS = {"overloaded": None, "near": 0.85, "light": 0.3}
LOAD_ORDER = ("overloaded", "near", "light")
MODEL_NAMES = ("llama3_2_1b", "llama3_8b")
BATCH_LIMITS = (16, 64)
# Prompt and output lengths (tokens): short enough that a scenario takes seconds on one GPU.
PROMPT_LEN = {"kind": "uniform", "low": 128, "high": 512}
OUTPUT_LEN = {"kind": "uniform", "low": 32, "high": 96}
NUM_REQUESTS = {"overloaded": 96, "near": 96, "light": 32}
# Batch-token budget per step (transformers' max_batch_tokens), fixed so that both sides get the
# same engine whatever memory each reports. The KV cache is transformers' default (90% of free
# memory), far more than these workloads need on either side.
MAX_BATCH_TOKENS = 8192

# (metric key stem, our name) and (stat prefix, stat name)
LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL"))
STATS = (("mean", "mean"), ("median", "p50"), ("p90", "p90"))
THROUGHPUTS = (("request_throughput", "req/s"), ("output_throughput", "tok/s"))
TOLERANCE = {"mean": 0.05, "p50": 0.05, "p90": 0.10, "value": 0.05}


class NoGpu(RuntimeError):
    """No real GPU here: validate compares one against its emulation."""


@dataclass(frozen=True)
class Scenario:
    model: str
    batch_limit: int
    load: str

    @property
    def name(self) -> str:
        return f"{self.model}-b{self.batch_limit}-{self.load}"

    @property
    def group(self) -> tuple[str, int]:
        return self.model, self.batch_limit

    def workload(self, capacity_rps: float | None) -> dict:
        fraction = LOAD_FRACTIONS[self.load]
        if fraction is None:
            arrival = {"process": "poisson", "rate": "inf"}
        else:
            if not capacity_rps:
                raise ValueError(f"{self.name}: the rate is a fraction of the capacity measured by the overloaded "
                                 f"scenario, which did not run")
            arrival = {"process": "poisson", "rate": round(fraction * capacity_rps, 4)}
        return {"num_requests": NUM_REQUESTS[self.load], "seed": 0, "arrival": arrival,
                "prompt_len": PROMPT_LEN, "output_len": OUTPUT_LEN, "ready_timeout_s": 900.0}

    def knobs(self):
        from emulator.engines.adapter import ServingKnobs
        return ServingKnobs(max_num_seqs=self.batch_limit, max_num_batched_tokens=MAX_BATCH_TOKENS)


SCENARIOS = {s.name: s for s in (Scenario(m, b, load) for m in MODEL_NAMES for b in BATCH_LIMITS for load in LOAD_ORDER)}


def select(names: list[str], known_capacity: dict | None = None) -> list[Scenario]:
    """The scenarios named (exact names, prefixes or `all`), with the overloaded scenario of each
    group first (the others' rates derive from it) unless its capacity is known, in table order."""
    chosen = set()
    for name in names:
        matches = [s for key, s in SCENARIOS.items() if name == "all" or key == name or key.startswith(name + "-")]
        if not matches:
            raise ValueError(f"unknown scenario {name!r}; known: all, {', '.join(MODEL_NAMES)}, "
                             f"MODEL-bLIMIT, or one of {', '.join(SCENARIOS)}")
        chosen.update(matches)
    chosen.update(Scenario(s.model, s.batch_limit, "overloaded") for s in list(chosen)
                  if s.group not in (known_capacity or {}))
    return [s for s in SCENARIOS.values() if s in chosen]


# ----------------------------------------------------------------------------------------------
# The real GPU
# ----------------------------------------------------------------------------------------------

def _plain_env() -> dict[str, str]:
    """This process's environment without anything that would put a child on virtual GPUs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVATI_VGPU") and k not in
           ("LD_PRELOAD", "REVATI_PREDICTOR", "REVATI_TK_ADDRESS", "VLLM_NCCL_SO_PATH", "TRITON_LIBCUDA_PATH")}
    return env


def real_gpu(python: Path) -> dict:
    """Facts of the real GPU (nvidia-smi and torch in the engine's Python), or NoGpu saying why not."""
    env = _plain_env()
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
                  "cpu": _cpu_model(), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                  "host": socket.gethostname(), "kernel": platform.release()})
    return facts


def sku_of(gpu_name: str) -> str:
    for sku in ("h200", "h100", "a100"):
        if sku in gpu_name.lower():
            return sku
    raise ValueError(f"no SKU for the GPU {gpu_name!r}: pass --sku (h100, h200, a100 or a SKU yaml)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# ----------------------------------------------------------------------------------------------
# One side of a scenario
# ----------------------------------------------------------------------------------------------

def serve(adapter, model_dir: Path, knobs, workload: dict, out: Path, *, emulated: bool, sku: str,
          timeout_s: float) -> dict:
    """Serve `workload` with the engine, on the real GPU or on one virtual GPU of `sku` under a
    Timekeeper; returns the metrics with wall times (also written to out/summary.json)."""
    from emulator import metrics
    from emulator.loadgen import READY_LINE
    from emulator.process_groups import end_group

    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    spec = {**workload, "base_url": f"http://127.0.0.1:{port}", "model": str(model_dir)}
    (out / "workload.json").write_text(json.dumps(spec, indent=2))
    records_path = out / "requests.jsonl"
    python = str(adapter.python())
    env = _plain_env()
    env.update(adapter.environment())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO), env.get("PYTHONPATH"))))
    tk = None
    started = time.monotonic()
    if emulated:
        from emulator.timekeeper.server import Timekeeper
        from emulator.vgpu_environment import vgpu_environment
        tk = Timekeeper(watchdog_s=timeout_s, log=lambda line: _append(out / "timekeeper.log", line))
        tk.__enter__()
        env = vgpu_environment(knobs.gpus, sku, engine=None, workdir=out / "vgpu", base_env=env)
        env.update(tk.env())
        env["REVATI_VGPU_STATS"] = str(out / "vgpu" / "stats-%p.csv")
    failure = None
    serving_since = None
    try:
        with open(out / "server.log", "w") as server_log, open(out / "loadgen.log", "w") as loadgen_log:
            server = subprocess.Popen(adapter.server_command(model_dir, port, knobs), env=env, cwd=REPO,
                                      stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
            loadgen = subprocess.Popen([python, "-m", "emulator.loadgen", "--spec", str(out / "workload.json"),
                                        "--out", str(records_path)], env=env, cwd=REPO,
                                       stdout=loadgen_log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                deadline = started + timeout_s
                while True:
                    if serving_since is None and READY_LINE in (out / "loadgen.log").read_text(errors="replace"):
                        serving_since = time.monotonic()
                    if tk is not None and tk.failure:
                        failure = tk.failure.splitlines()[0]
                        break
                    code = loadgen.poll()
                    if code is not None:
                        failure = None if code == 0 else f"the load generator exited with status {code}"
                        break
                    if server.poll() is not None:
                        failure = f"the server exited with status {server.returncode} before the workload ended"
                        break
                    if time.monotonic() > deadline:
                        failure = f"not done after {timeout_s:.0f} s of wall time"
                        break
                    time.sleep(0.1)
                ended = time.monotonic()
            finally:
                if server.poll() is None:
                    server.terminate()
                    try:
                        server.wait(20)
                    except subprocess.TimeoutExpired:
                        pass
                for process in (loadgen, server):
                    end_group(process.pid)
                    process.wait()
        virtual_s = tk.clock.now_ns / 1e9 if tk is not None else None
    finally:
        if tk is not None:
            tk.__exit__(None, None, None)
    if failure:
        raise RuntimeError(f"{'emulated' if emulated else 'real'} run failed: {failure}; server log tail:\n"
                           + _tail(out / "server.log") + "\nloadgen log tail:\n" + _tail(out / "loadgen.log"))
    records = [json.loads(line) for line in records_path.read_text().splitlines() if line.startswith('{"request_id"')]
    summary = {"metrics": metrics.compute(records), "wall_seconds": ended - started,
               "startup_wall_seconds": (serving_since or ended) - started,
               "serving_wall_seconds": ended - (serving_since or ended), "virtual_seconds": virtual_s,
               "server_command": adapter.server_command(model_dir, port, knobs), "workload": workload}
    if emulated:
        from emulator.predictor.attribution import by_family, read_stats
        stats = list((out / "vgpu").glob("stats-*.csv"))
        summary["gpu_time_by_family"] = by_family(read_stats(stats)).to_dict("records") if stats else []
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------

def rel_error(real: float, emulated: float) -> float:
    if real == 0:
        return 0.0 if emulated == 0 else math.inf
    return (emulated - real) / real


def compare(scenario: str, real: dict, emulated: dict) -> list[dict]:
    """Rows of the fidelity table for one scenario, from two metrics dicts (metrics.compute's)."""
    rows = []
    for key, metric in LATENCIES:
        for prefix, stat in STATS:
            name = f"{prefix}_{key}_ms"
            rows.append({"scenario": scenario, "metric": f"{metric} (ms)", "stat": stat, "real": real[name],
                         "emulated": emulated[name], "rel_error": rel_error(real[name], emulated[name])})
    for key, unit in THROUGHPUTS:
        rows.append({"scenario": scenario, "metric": f"{key} ({unit})", "stat": "value", "real": real[key],
                     "emulated": emulated[key], "rel_error": rel_error(real[key], emulated[key])})
    return rows


def misses(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not abs(r["rel_error"]) <= TOLERANCE[r["stat"]]]


def write_table(rows: list[dict], runs: list[dict], facts: dict, command: str, prefix: Path) -> None:
    """prefix.csv (the rows) and prefix.md (the rows, wall times and device facts)."""
    import csv
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scenario", "metric", "stat", "real", "emulated", "rel_error"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "real": f"{r['real']:.6g}", "emulated": f"{r['emulated']:.6g}",
                             "rel_error": f"{r['rel_error']:.4f}"})
    lines = [f"# Fidelity: {facts.get('nvidia_smi_name', '?')}, real against emulated", "",
             f"Command: `{command}`", "",
             "Device: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
             f"rel_error = (emulated - real) / real. Tolerance: {TOLERANCE['mean']:.0%} for mean and p50 and "
             f"throughput, {TOLERANCE['p90']:.0%} for p90; misses are marked **MISS**.", "",
             "## Runs", "", "| scenario | offered rate (req/s) | real wall (s) | emulated wall (s) | emulated/real wall "
             "| real serving wall (s) | emulated serving wall (s) | emulated virtual (s) | misses |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        if "error" in run:
            lines.append(f"| {run['scenario']} | {run.get('rate', '')} | failed: {run['error'].splitlines()[0][:200]} "
                         "| | | | | | |")
            continue
        real, emu = run["real"], run["emulated"]
        lines.append(f"| {run['scenario']} | {run['rate']} | {real['wall_seconds']:.1f} | {emu['wall_seconds']:.1f} | "
                     f"{emu['wall_seconds'] / real['wall_seconds']:.2f} | {real['serving_wall_seconds']:.1f} | "
                     f"{emu['serving_wall_seconds']:.1f} | {emu['virtual_seconds']:.1f} | {run['misses']} |")
    lines += ["", "## Metrics", "", "| scenario | metric | stat | real | emulated | rel_error |", "|---|---|---|---|---|---|"]
    for r in rows:
        flag = "" if abs(r["rel_error"]) <= TOLERANCE[r["stat"]] else " **MISS**"
        lines.append(f"| {r['scenario']} | {r['metric']} | {r['stat']} | {r['real']:.4g} | {r['emulated']:.4g} | "
                     f"{r['rel_error']:+.1%}{flag} |")
    prefix.with_suffix(".md").write_text("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenarios", nargs="+", metavar="SCENARIO",
                        help=f"all, a model ({', '.join(MODEL_NAMES)}), MODEL-bLIMIT, or a scenario name")
    parser.add_argument("--table", type=Path, default=None,
                        help="write the table to TABLE.csv and TABLE.md (default: OUT/fidelity)")
    parser.add_argument("--out", type=Path, default=Path("runs/validate"), help="run folders (logs, records)")
    parser.add_argument("--sku", help="the SKU to emulate (default: the real GPU's)")
    parser.add_argument("--timeout", type=float, default=420.0, help="wall seconds per run")
    parser.add_argument("--capacity", action="append", default=[], metavar="MODEL-bLIMIT=RPS",
                        help="the capacity (real request throughput of the overloaded scenario) measured "
                             "earlier, instead of running the overloaded scenario again")
    parser.add_argument("--budget", type=float, default=None,
                        help="wall seconds for the whole command: no scenario starts after it")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("validate", help="fidelity: a scenario on the real GPU and on its emulation, "
                                                    "metric by metric (needs a machine with an NVIDIA GPU)")
    add_arguments(parser)
    parser.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    from emulator.engines.hf_transformers import TransformersAdapter

    started = time.monotonic()
    capacity = {}
    for item in args.capacity:
        group, _, rps = item.partition("=")
        model, _, limit = group.rpartition("-b")
        if (model, int(limit or 0)) not in {s.group for s in SCENARIOS.values()} or not rps:
            raise ValueError(f"--capacity {item!r}: expected MODEL-bLIMIT=RPS, e.g. llama3_2_1b-b64=15.4")
        capacity[(model, int(limit))] = float(rps)
    scenarios = select(args.scenarios, capacity)
    adapter = TransformersAdapter()
    try:
        facts = real_gpu(adapter.python())
    except NoGpu as why:
        print(f"revati-tune validate: no real GPU on this machine: {why}. validate compares a real GPU with its "
              f"emulation, so it runs only where an NVIDIA GPU is; `revati-tune run` emulates without one.",
              file=sys.stderr)
        return NO_GPU_STATUS
    sku = args.sku or sku_of(facts["nvidia_smi_name"])
    facts["emulated_sku"] = sku
    print("device: " + json.dumps(facts), flush=True)
    command = "revati-tune validate " + " ".join(args.scenarios) + (f" --sku {args.sku}" if args.sku else "")
    table = args.table or args.out / "fidelity"
    command += "".join(f" --capacity {c}" for c in args.capacity)
    rows, runs = [], []
    for scenario in scenarios:
        if args.budget is not None and time.monotonic() - started > args.budget:
            runs.append({"scenario": scenario.name, "error": f"not run: the {args.budget:.0f} s budget was spent"})
            print(f"{scenario.name}: not run (budget)", flush=True)
            continue
        record = {"scenario": scenario.name}
        try:
            workload = scenario.workload(capacity.get(scenario.group))
            record["rate"] = workload["arrival"]["rate"]
            sides = {}
            for side in ("real", "emulated"):
                t = time.monotonic()
                sides[side] = serve(adapter, MODELS / scenario.model, scenario.knobs(), workload,
                                    args.out / scenario.name / side, emulated=side == "emulated", sku=sku,
                                    timeout_s=args.timeout)
                print(f"{scenario.name}: {side} done in {time.monotonic() - t:.1f} s", flush=True)
            if scenario.load == "overloaded":
                capacity[scenario.group] = sides["real"]["metrics"]["request_throughput"]
            scenario_rows = compare(scenario.name, sides["real"]["metrics"], sides["emulated"]["metrics"])
            rows += scenario_rows
            record.update(sides)
            record["misses"] = len(misses(scenario_rows))
            _print_rows(scenario_rows, sides)
        except Exception as error:   # a failed scenario is a row of the report, not the end of the run
            record["error"] = f"{type(error).__name__}: {error}"
            print(f"{scenario.name}: FAILED {record['error']}", flush=True)
        runs.append(record)
        if "error" in record and not rows:
            # Nothing has worked yet: the next scenarios would fail the same way; stop here.
            runs += [{"scenario": s.name, "error": "not run: the first scenario failed"}
                     for s in scenarios[scenarios.index(scenario) + 1:]]
            write_table(rows, runs, facts, command, table)
            break
        write_table(rows, runs, facts, command, table)
        (args.out / "runs.json").parent.mkdir(parents=True, exist_ok=True)
        (args.out / "runs.json").write_text(json.dumps({"facts": facts, "command": command, "rows": rows, "runs": runs}, indent=1, default=float))
    print(f"table: {table.with_suffix('.csv')} and {table.with_suffix('.md')}")
    return 0 if rows and all("error" not in r for r in runs) else 1


def _print_rows(rows: list[dict], sides: dict) -> None:
    real, emu = sides["real"], sides["emulated"]
    print(f"  wall: real {real['wall_seconds']:.1f} s (serving {real['serving_wall_seconds']:.1f}), emulated "
          f"{emu['wall_seconds']:.1f} s (serving {emu['serving_wall_seconds']:.1f}, virtual {emu['virtual_seconds']:.1f})")
    for r in rows:
        flag = "" if abs(r["rel_error"]) <= TOLERANCE[r["stat"]] else "  MISS"
        print(f"  {r['metric']:<30} {r['stat']:<5} real {r['real']:>10.4g}  emulated {r['emulated']:>10.4g}  "
              f"{r['rel_error']:+7.1%}{flag}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join("    " + line[:300] for line in text[-lines:])


def _append(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.validate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except (ValueError, RuntimeError) as error:
        print(f"revati-tune validate: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
