#!/usr/bin/env python3
"""Tensor-parallel scaling of decode: Llama-3.1-70B at TP4 and TP8 on virtual H100s against NVIDIA
AIConfigurator 0.12 (issue 20, "What must be shown", item 3).

For each (TP, batch) one fixed-batch deployment of the real vLLM engine (emulator.deployment, what
`revati-tune run` runs): `batch` requests arriving at once (rate inf), prompts of 1024 tokens,
192 output tokens (the load generator asks with ignore_eos), max_num_seqs = batch,
max_num_batched_tokens 8192 (the flagship study's), max_model_len 2048, CUDA graphs on (vLLM's
default). From each run:

  - decode TPOT (mean, median) from the run's summary, as `vllm bench serve` defines it: over
    the whole request, so at batch > 8 it includes the steps that also prefill later requests
    (chunked prefill, 8192 tokens a step);
  - steady decode step: the median inter-token gap after the last request's first token, when
    every request of the batch decodes and nothing prefills (what AIConfigurator's static-batch
    TPOT is);
  - where the time of those steady decode steps went, per step and TP rank: with the trace on
    (REVATI_VGPU_TRACE, the default; --no-trace for the headline numbers), each rank's launches
    inside the window by family (GEMM, attention, vLLM's custom all-reduce kernel, NCCL
    collectives, whose charge includes the wait for the slowest rank, other kernels) and the
    GPU's idle time (the step minus its busy time: host work). The trace costs host time that
    is charged to the ranks (one write per launch): traced runs are stored apart
    ("emulated_traced") and their TPOTs are not the results. Untraced runs also try the stats
    files (REVATI_VGPU_STATS, RUN/vgpu/stats-PID.csv), copied whenever a flush changes them,
    between two flushes inside the window (written when a thread goes idle, at most every 0.5 wall
    seconds);
  - the charge of one decode all-reduce against the predictor's own figure for its bytes
    (batch x 8192 x 2; emulator/predictor/native.py collective_seconds, custom_all_reduce: the
    published table, data/published/collectives_h100.csv) and against AIConfigurator's measured
    all-reduce table (the same source; the charge adds the wait for the slowest rank).

AIConfigurator: `aiconfigurator cli estimate --model-path meta-llama/Meta-Llama-3.1-70B --system
h100_sxm --backend vllm --isl 1024 --osl 192 --tp TP --bs BATCH --estimate-mode {agg,static}
--detail time`, run from --aic (a venv with `pip install 'aiconfigurator==0.12.*'`; it runs
offline, the model's config ships in its wheel: see docs/notes/tp_scaling.md).

    nice -n 10 python3 benchmarks/tp_scaling.py --no-emulate                  # AIConfigurator, all shapes (seconds)
    nice -n 10 python3 benchmarks/tp_scaling.py --no-aic --no-trace --tp 4 --tp 8 --batch 8 --batch 64
    nice -n 10 python3 benchmarks/tp_scaling.py --no-aic --tp 8 --batch 64    # traced: the per-step breakdown
    python3 benchmarks/tp_scaling.py --table-only      # rebuild the tables from the saved results

A 70B run takes 1.5-15 minutes of wall time on a 2-core host, most of it start-up (torch.compile
and Triton JIT per rank; less once vLLM's caches hold the shape). --keep DIR copies each run's
folder (logs, summary, requests, stats copies).

Results are merged into benchmarks/results/tp_scaling.json (keyed by TP and batch, so partial
runs add up) and the tables are written to docs/notes/tp_scaling.md, above the hand-written
findings kept in benchmarks/results/tp_scaling_notes.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"      # tp_scaling.json: every number, merged over runs
NOTE = REPO / "docs" / "notes" / "tp_scaling.md"   # the tables (docs/notes holds the benchmarks' tables)
MODEL, SKU = "llama3_70b", "h100"
HIDDEN, LAYERS = 8192, 80
ISL, OSL = 1024, 192
AIC_MODEL = "meta-llama/Meta-Llama-3.1-70B"


# ---- the emulated side ---------------------------------------------------------------------------

class StatsWatcher:
    """Copies the run's vGPU stats files whenever one changes, with the virtual time of the copy."""

    def __init__(self, vgpu: Path):
        self.vgpu = vgpu
        self.seen: dict[str, float] = {}
        self.snapshots: list[dict] = []     # {"virtual_s", "wall_s", "files": {name: csv text}}
        self.ready_virtual_s: float | None = None
        self.ready_wall_s: float | None = None
        self.started = time.monotonic()

    def __call__(self, virtual_s: float, serving: bool) -> None:
        wall = time.monotonic() - self.started
        if serving and self.ready_virtual_s is None:
            self.ready_virtual_s, self.ready_wall_s = virtual_s, wall
        if not serving or not self.vgpu.is_dir():
            return
        changed = False
        for path in self.vgpu.glob("stats-*.csv"):
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if self.seen.get(path.name) != mtime:
                self.seen[path.name] = mtime
                changed = True
        if changed:
            files = {}
            for path in self.vgpu.glob("stats-*.csv"):
                try:
                    files[path.name] = path.read_text()
                except FileNotFoundError:
                    pass
            self.snapshots.append({"virtual_s": virtual_s, "wall_s": wall, "files": files})


def _frame(text: str):
    import io

    import pandas as pd

    from emulator.predictor.attribution import family
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
    frame["family"] = [family(k, n) for k, n in zip(frame["kind"], frame["name"])]
    return frame


def _diff(later: str, earlier: str | None):
    """Per (kind, name): count and seconds in `later` minus those in `earlier`."""
    a = _frame(later).set_index(["kind", "name", "family"])[["count", "seconds"]]
    if earlier is None:
        return a.reset_index()
    b = _frame(earlier).set_index(["kind", "name", "family"])[["count", "seconds"]]
    return a.sub(b, fill_value=0).reset_index()


def steady_window(records: list[dict], ready_virtual_s: float) -> tuple[float, float]:
    """(start, end) in the Timekeeper's virtual seconds of the steps in which every request of the
    batch decodes: after the last first token, before the first request finishes."""
    start = max(r["first_token_s"] for r in records)
    end = min(r["finish_s"] for r in records)
    return ready_virtual_s + start, ready_virtual_s + end


def steady_itl_ms(records: list[dict]) -> tuple[float, float, int]:
    """(median, mean) inter-token gap in ms, and the number of decode steps, in the steady window."""
    import numpy as np
    start = max(r["first_token_s"] for r in records)
    end = min(r["finish_s"] for r in records)
    gaps = []
    for r in records:
        times = [t for t in r["chunk_times"] if start <= t <= end]
        gaps += [b - a for a, b in zip(times, times[1:])]
    steps = max(len([t for t in r["chunk_times"] if start <= t <= end]) for r in records) - 1
    return float(np.median(gaps) * 1e3), float(np.mean(gaps) * 1e3), steps


def flushes(snapshots: list[dict]) -> dict[str, list[tuple[float, str]]]:
    """Per stats file, (virtual time, content) at each of its flushes: a copy whose content differs
    from the file's previous copy was flushed within one poll (0.1 wall s) before it."""
    seen: dict[str, list[tuple[float, str]]] = {}
    for snap in snapshots:
        for name, text in snap["files"].items():
            history = seen.setdefault(name, [])
            if not history or history[-1][1] != text:
                history.append((snap["virtual_s"], text))
    return seen


def analyse(snapshots: list[dict], ready_virtual_s: float, out: Path) -> dict:
    """The steady decode window (from the token times) and, per TP rank, what its stats file
    gained between its first flush inside the window and its last one: GPU time by family per
    decode step (steps = the flushes' virtual interval over the mean steady inter-token gap)."""
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()
               if line.startswith('{"request_id"')]
    lo, hi = steady_window(records, ready_virtual_s)
    median_itl, mean_itl, window_steps = steady_itl_ms(records)
    result: dict = {"steady_window_virtual_s": [lo, hi], "steady_steps": window_steps,
                    "steady_itl_median_ms": median_itl, "steady_itl_mean_ms": mean_itl,
                    "stats_copies": len(snapshots)}
    per_rank = []
    for name, history in sorted(flushes(snapshots).items()):
        inside = [(t, text) for t, text in history if lo <= t <= hi]
        if len(inside) < 2:
            continue
        (t0, first), (t1, last) = inside[0], inside[-1]
        diff = _diff(last, first)
        diff["family"] = [trace_family(k, n) for k, n in zip(diff["kind"], diff["name"])]
        if not ((diff["kind"] == "collective") | (diff["family"] == "allreduce_kernel")).any():
            continue                    # not a TP rank (API server, engine core)
        steps = (t1 - t0) / (mean_itl / 1e3)
        fam = diff.groupby("family")[["count", "seconds"]].sum()
        ar = diff[diff["family"] == "allreduce_kernel"]
        per_rank.append({"file": name, "window_s": [t0, t1], "steps": steps,
                         "allreduce_kernel": {"count": float(ar["count"].sum()), "seconds": float(ar["seconds"].sum())},
                         "collectives": {n: {"count": float(c), "seconds": float(sec)} for n, c, sec in
                                         diff[diff["kind"] == "collective"][["name", "count", "seconds"]].values},
                         "families": {k: {"count": float(v["count"]), "seconds": float(v["seconds"])}
                                      for k, v in fam.iterrows()}})
    if per_rank:
        result["stats_window"] = per_rank
    return result


ALLREDUCE_KERNEL = re.compile(r"cross_device_reduce|custom_ar|allreduce", re.IGNORECASE)


def trace_family(kind: str, name: str) -> str:
    """attribution.family, with vLLM's custom all-reduce kernels (cross_device_reduce_1stage /
    2stage: what vLLM runs for TP all-reduces up to 8 MiB inside CUDA graphs) named apart from
    NCCL's collectives. Since 2026-12-07 the vGPU library charges them as collectives (kind
    collective, the ranks meeting at each); before, as ordinary kernels (kind kernel)."""
    from emulator.predictor.attribution import family
    if kind in ("kernel", "collective") and ALLREDUCE_KERNEL.search(name) and "nccl" not in name.lower():
        return "allreduce_kernel"
    return family(kind, name)


def read_trace(path: Path, lo: float, hi: float) -> dict:
    """Launches in the trace (REVATI_VGPU_TRACE: kind,name,device,start,seconds,grid,block,
    shared_mem,m,n,k,batch,bytes,nranks; names are not quoted, so the fixed fields are taken from
    the right) that start in [lo, hi] virtual seconds: per device, per family, count and seconds;
    and per device the all-reduces (custom kernels and NCCL) with their bytes where known."""
    import collections
    per = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    allreduce = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0.0]))
    names = collections.defaultdict(lambda: [0, 0.0])
    first = last = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("kind,name"):
                continue
            head, _, rest = line.partition(",")
            fields = rest.rstrip("\n").rsplit(",", 12)
            if len(fields) != 13:
                continue
            name, device, start, seconds = fields[0], fields[1], fields[2], fields[3]
            try:
                t, sec = float(start), float(seconds)
            except ValueError:
                continue
            if not lo <= t <= hi:
                continue
            first = t if first is None or t < first else first
            last = t + sec if last is None or t + sec > last else last
            fam = trace_family(head, name)
            cell = per[device][fam]
            cell[0] += 1
            cell[1] += sec
            if fam == "allreduce_kernel" or (head == "collective" and "AllReduce" in name):
                key = f"{name[:80]} bytes={fields[11]}"
                a = allreduce[device][key]
                a[0] += 1
                a[1] += sec
                n = names[key]
                n[0] += 1
                n[1] += sec
    return {"first_s": first, "last_s": last,
            "per_device": {d: {k: {"count": v[0], "seconds": v[1]} for k, v in fams.items()} for d, fams in per.items()},
            "allreduce_per_device": {d: {k: {"count": v[0], "seconds": v[1]} for k, v in a.items()}
                                     for d, a in allreduce.items()},
            "allreduce_kinds": {k: {"count": v[0], "mean_us": v[1] / v[0] * 1e6} for k, v in names.items()}}


def trace_breakdown(trace: Path, records: list[dict], ready_virtual_s: float, itl_ms: float) -> dict:
    """Where the steady decode steps' time went on each rank: the launches of the trace inside
    the steady window (after the last first token, before the first finish; a tenth of it
    trimmed at each end, since the load's start is known in the Timekeeper's time only to within
    one poll of the run driver), per step."""
    lo, hi = steady_window(records, ready_virtual_s)
    margin = (hi - lo) / 10
    lo, hi = lo + margin, hi - margin
    found = read_trace(trace, lo, hi)
    steps = (hi - lo) / (itl_ms / 1e3)
    found.update({"window_s": [lo, hi], "steps": steps})
    return found


def emulate(tp: int, batch: int, keep: Path | None, with_trace: bool) -> dict:
    from emulator.engines.adapter import ServingKnobs
    from emulator.deployment import RunConfig, serve
    workload = {"num_requests": batch, "seed": 0, "arrival": {"process": "poisson", "rate": "inf"},
                "prompt_len": {"kind": "fixed", "value": ISL}, "output_len": {"kind": "fixed", "value": OSL}}
    knobs = ServingKnobs(tensor_parallel=tp, max_num_seqs=batch, max_num_batched_tokens=8192, max_model_len=2048)
    config = RunConfig(model=MODEL, sku=SKU, knobs=knobs, workload=workload, timeout_s=3600)
    work = Path(tempfile.mkdtemp(prefix=f"revati-tp-scaling-tp{tp}-b{batch}-"))
    out = work / "run"
    watcher = StatsWatcher(out / "vgpu")
    trace = work / "trace.csv"
    if with_trace:
        os.environ["REVATI_VGPU_TRACE"] = str(trace)
    started = time.monotonic()
    try:
        summary = serve(config, out, progress=watcher)
    finally:
        os.environ.pop("REVATI_VGPU_TRACE", None)
    wall = time.monotonic() - started
    m = summary.metrics
    row = {"tp": tp, "batch": batch, "wall_s": wall, "startup_wall_s": summary.startup_wall_seconds,
           "serving_wall_s": summary.serving_wall_seconds, "virtual_s": summary.virtual_seconds,
           "mean_tpot_ms": m["mean_tpot_ms"], "median_tpot_ms": m["median_tpot_ms"],
           "mean_ttft_ms": m["mean_ttft_ms"], "median_itl_ms": m["median_itl_ms"],
           "completed": m.get("completed"), "cpu_scale": summary.config["cpu_scale"],
           "server_command": summary.config["server_command"]}
    raw = {"ready_virtual_s": watcher.ready_virtual_s, "ready_wall_s": watcher.ready_wall_s,
           "snapshots": watcher.snapshots}
    (out / "stats_snapshots.json").write_text(json.dumps(raw))
    try:
        row.update(analyse(watcher.snapshots, watcher.ready_virtual_s, out))
    except Exception as error:     # keep the run's numbers; the raw copies are in the run folder
        row["analysis_error"] = repr(error)
    row["traced"] = with_trace
    if with_trace:
        try:
            records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()
                       if line.startswith('{"request_id"')]
            row["trace"] = trace_breakdown(trace, records, watcher.ready_virtual_s, row["steady_itl_mean_ms"])
            row["trace_bytes"] = trace.stat().st_size
        except Exception as error:
            row["trace_error"] = repr(error)
    if keep is not None:
        dest = keep / f"tp{tp}_b{batch}"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(out, dest, ignore=shutil.ignore_patterns("*.so", "lib*"))
        row["run_folder"] = str(dest)
    shutil.rmtree(work, ignore_errors=True)
    return row


# ---- AIConfigurator ------------------------------------------------------------------------------

def aiconfigurator(exe: str, tp: int, batch: int) -> dict:
    """AIConfigurator's estimate in its default mode (agg: in-flight batching, its TPOT averages the
    steps that also prefill, as the emulated summary's TPOT does) and in its static mode (one
    prefill of the whole batch, then pure decode steps: its TPOT is one decode step at `batch`,
    the emulated steady decode step), each with its per-op time breakdown (--detail time)."""
    found = {}
    for mode in ("agg", "static"):
        command = [exe, "cli", "estimate", "--model-path", AIC_MODEL, "--system", "h100_sxm", "--backend", "vllm",
                   "--isl", str(ISL), "--osl", str(OSL), "--tp", str(tp), "--bs", str(batch),
                   "--estimate-mode", mode, "--detail", "time"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        text = done.stdout
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{(text + done.stderr)[-3000:]}")
        found[mode] = {"command": " ".join(command), **parse_aic(text)}
    found["allreduce_us"] = aic_allreduce_us(exe, tp, batch * HIDDEN)
    return found


def parse_aic(text: str) -> dict:
    """The TTFT and TPOT (ms) in AIConfigurator's summary box, its version line, and the ops of its
    decode step ("Gen-Only Step" in agg mode, "Generation phase" in static mode: the whole phase,
    divided here by its steps, OSL - 1) in ms."""
    found: dict = {}
    for key in ("TTFT", "TPOT"):
        match = re.search(rf"^\s*{key}:\s+([0-9.]+) ms", text, re.MULTILINE)
        if match:
            found[f"{key.lower()}_ms"] = float(match.group(1))
    backend = re.search(r"^\s*Backend:\s+(.+)$", text, re.MULTILINE)
    found["backend"] = backend.group(1).strip() if backend else None
    ops, section, scale = {}, None, 1.0
    for line in text.splitlines():
        if line.startswith("Gen-Only Step"):
            section, scale = "gen", 1.0
            found["gen_step_total_ms"] = float(re.search(r"total = ([0-9.]+) ms", line).group(1))
        elif line.startswith("Generation phase"):
            section, scale = "gen", 1.0 / (OSL - 1)
            found["gen_step_total_ms"] = float(re.search(r"total = ([0-9.]+) ms", line).group(1)) * scale
        elif line and not line.startswith(" "):
            section = None if not line.startswith("  op") else section
        elif section == "gen":
            match = re.match(r"\s+(generation_\w+)\s+([0-9.]+) ms", line)
            if match:
                ops[match.group(1)] = float(match.group(2)) * scale
            # The table folds its smallest rows into one (for Llama: generation_ar_2, the MLP's
            # all-reduce, as large as generation_ar_1).
            match = re.match(r"\s+\.\.\. \(others, (\d+) items?\)\s+([0-9.]+) ms", line)
            if match:
                ops[f"others ({match.group(1)})"] = float(match.group(2)) * scale
    found["gen_step_ops_ms"] = ops
    return found


def aic_allreduce_us(exe: str, tp: int, elements: int) -> float | None:
    """One all-reduce of `elements` bf16 values over `tp` H100s in AIConfigurator's own measured
    table (vLLM 0.24's custom all-reduce inside CUDA graphs, comm/vllm/0.24.0/
    custom_allreduce_perf.parquet; message_size counts elements, latency is in ms), log-log
    interpolated: what its decode step charges per all-reduce."""
    python = Path(exe).parent / "python"
    code = ("import sys, numpy as np, pandas as pd, aiconfigurator_core, pathlib\n"
            "p = pathlib.Path(aiconfigurator_core.__file__).parent / 'systems/data/h100_sxm/comm/vllm/0.24.0/custom_allreduce_perf.parquet'\n"
            "d = pd.read_parquet(p).query('backend == \"vllm_graph\" and num_gpus == %d and allreduce_dtype == \"bfloat16\"').sort_values('message_size')\n"
            "print(float(np.exp(np.interp(np.log(%d), np.log(d.message_size), np.log(d.latency)))) * 1e3)\n" % (tp, elements))
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    return float(done.stdout.strip()) if done.returncode == 0 else None


# ---- the table -----------------------------------------------------------------------------------

def model_allreduce_us(tp: int, batch: int) -> float:
    """What the vGPU library charges one custom all-reduce of a decode batch (batch x hidden x 2
    bytes) before any wait: its predictor, asked directly (emulator/predictor/native.py)."""
    from emulator.predictor import modelfile, native
    return native.collective_seconds(modelfile.ensure_model_file(SKU), "custom_all_reduce", batch * HIDDEN * 2,
                                     tp) * 1e6


def _charged_allreduce_us(e: dict | None) -> float | None:
    """Mean charge of one all-reduce in the steady decode window, over all TP ranks (the trace, or
    the stats files' flushes inside the window): vLLM's custom all-reduce kernels and any NCCL
    all-reduce, each as charged (a collective's charge includes its wait for the slowest rank)."""
    if not e:
        return None
    if e.get("trace", {}).get("allreduce_kinds"):
        kinds = e["trace"]["allreduce_kinds"].values()
        count = sum(k["count"] for k in kinds)
        return sum(k["count"] * k["mean_us"] for k in kinds) / count if count else None
    if e.get("stats_window"):
        count = seconds = 0.0
        for r in e["stats_window"]:
            count += r["allreduce_kernel"]["count"]
            seconds += r["allreduce_kernel"]["seconds"]
            for name, v in r["collectives"].items():
                if "AllReduce" in name or trace_family("collective", name) == "allreduce_kernel":
                    count += v["count"]
                    seconds += v["seconds"]
        return seconds / count * 1e6 if count else None
    return None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else ""


def table(results: dict) -> str:
    emu, aic = results.get("emulated", {}), results.get("aiconfigurator", {})
    lines = ["| TP | batch | emulated TPOT mean / median (ms) | AIC TPOT, agg (ms) | emulated steady decode step (ms) "
             "| AIC decode step, static (ms) | TP8/TP4 emulated: TPOT mean; step | TP8/TP4 AIC: agg TPOT; static step "
             "| all-reduce charged in decode (µs) | vGPU predictor's collective figure (µs) | AIC's measured (µs) "
             "| charged / predictor's figure | run wall (s): start-up + serving |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({tuple(map(int, k.split(":"))) for k in list(emu) + list(aic)})
    get = lambda side, key, *path: _dig(side.get(key), path)  # noqa: E731
    for tp, batch in keys:
        k, k4 = f"{tp}:{batch}", f"4:{batch}"
        e = emu.get(k)
        cells = [str(tp), str(batch)]
        cells.append(f"{e['mean_tpot_ms']:.2f} / {e['median_tpot_ms']:.2f}" if e else "not run")
        cells.append(_num(get(aic, k, "agg", "tpot_ms")))
        cells.append(_num(get(emu, k, "steady_itl_median_ms")))
        cells.append(_num(get(aic, k, "static", "tpot_ms")))
        if tp == 8:
            cells.append("; ".join(filter(None, [_ratio(get(emu, k, "mean_tpot_ms"), get(emu, k4, "mean_tpot_ms")),
                                                 _ratio(get(emu, k, "steady_itl_median_ms"),
                                                        get(emu, k4, "steady_itl_median_ms"))])))
            cells.append("; ".join(filter(None, [_ratio(get(aic, k, "agg", "tpot_ms"), get(aic, k4, "agg", "tpot_ms")),
                                                 _ratio(get(aic, k, "static", "tpot_ms"),
                                                        get(aic, k4, "static", "tpot_ms"))])))
        else:
            cells += ["", ""]
        # The breakdown comes from the untraced run's stats where they cover the window, else
        # from the traced run of the same shape (marked t).
        t = results.get("emulated_traced", {}).get(k)
        src, mark = (e, "") if _row_devices(e or {}) else (t, " (t)")
        charged, figure = _charged_allreduce_us(src), model_allreduce_us(tp, batch)
        cells += [_num(charged, 2) + (mark if charged else ""), _num(figure, 1), _num(get(aic, k, "allreduce_us"), 1),
                  f"{charged / figure:.2f}x" if charged else ""]
        cells.append(f"{e['startup_wall_s']:.0f} + {e['serving_wall_s']:.0f}" if e else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _dig(value, path):
    for p in path:
        if not isinstance(value, dict):
            return None
        value = value.get(p)
    return value


def _num(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def aic_breakdown(results: dict) -> str:
    """AIConfigurator's decode step (static mode) by the same families, ms."""
    lines = ["| TP | batch | step | GEMM | attention | all-reduce | norms, activation, embedding |", "|---|---|---|---|---|---|---|"]
    for key in sorted(results.get("aiconfigurator", {}), key=lambda k: tuple(map(int, k.split(":")))):
        ops = results["aiconfigurator"][key]["static"].get("gen_step_ops_ms", {})
        gemm = sum(v for k, v in ops.items() if k.endswith("_gemm"))
        attention = ops.get("generation_attention", 0.0)
        ar = sum(v for k, v in ops.items() if "_ar" in k or k.startswith("others"))
        rest = sum(ops.values()) - gemm - attention - ar
        tp, batch = key.split(":")
        lines.append(f"| {tp} | {batch} | {results['aiconfigurator'][key]['static']['gen_step_total_ms']:.2f} | "
                     f"{gemm:.2f} | {attention:.2f} | {ar:.2f} | {rest:.2f} |")
    return "\n".join(lines)


STEP_FAMILIES = ("gemm", "attention", "allreduce_kernel", "collective", "norm", "activation", "rotary", "kv_cache",
                 "elementwise", "sampling", "copy", "memset", "other_kernel")


def _row_devices(e: dict) -> tuple[list[dict], list[float]] | None:
    """Per rank: family -> seconds per steady decode step, from the trace (traced runs) or from the
    stats files' flushes inside the window (untraced runs); and the ranks' all-reduces per step."""
    t = e.get("trace")
    if t and t.get("per_device"):
        steps = t["steps"]
        fams = [{k: v["seconds"] / steps for k, v in d.items()} for d in t["per_device"].values()]
        ars = [sum(v["count"] for v in a.values()) / steps for a in t["allreduce_per_device"].values()]
        return fams, ars
    w = e.get("stats_window")
    if w:
        fams = [{k: v["seconds"] / r["steps"] for k, v in r["families"].items()} for r in w]
        ars = [(r["allreduce_kernel"]["count"] + sum(v["count"] for n, v in r["collectives"].items()
                                                     if "AllReduce" in n)) / r["steps"] for r in w]
        return fams, ars
    return None


def step_breakdown(results: dict) -> str:
    """Per steady decode step, mean over the TP ranks: ms by family, the GPU's busy time, and the
    rest of the step (host work and waiting). Traced runs: the trace's launches in the window over
    its steps; untraced runs: what the stats files gained between their first and last flush
    inside the window."""
    lines = ["| run | TP | batch | steady step (ms) | " + " | ".join(STEP_FAMILIES) + " | GPU busy | GPU idle (host, waiting) "
             "| all-reduces per step and rank | ranks' busy time, min-max |",
             "|---|---|---|---|" + "---|" * (len(STEP_FAMILIES) + 4)]
    for side, label in (("emulated", "stats"), ("emulated_traced", "traced")):
        emu = results.get(side, {})
        for key in sorted(emu, key=lambda k: tuple(map(int, k.split(":")))):
            e = emu[key]
            found = _row_devices(e)
            if not found:
                continue
            fams, ars = found
            n = len(fams)
            cells = [label, str(e["tp"]), str(e["batch"]), f"{e['steady_itl_mean_ms']:.2f}"]
            for f in STEP_FAMILIES:
                cells.append(f"{sum(d.get(f, 0.0) for d in fams) / n * 1e3:.2f}")
            busy = [sum(d.values()) * 1e3 for d in fams]
            cells.append(f"{sum(busy) / n:.2f}")
            cells.append(f"{e['steady_itl_mean_ms'] - sum(busy) / n:.2f}")
            cells.append(f"{sum(ars) / n:.0f}")
            cells.append(f"{min(busy):.2f}-{max(busy):.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trace_check(results: dict) -> str:
    """The same deployment with and without REVATI_VGPU_TRACE: what the trace's own host cost does.
    The GPU's compute per step (every family but the NCCL collectives, whose charge includes
    waiting for other ranks) depends only on the launches' shapes, so it carries from the traced
    run to the untraced one; what the untraced step has beyond it is collective waits and idle
    GPU (host work) there."""
    lines = ["| TP | batch | TPOT mean, untraced / traced (ms) | steady step mean, untraced / traced (ms) "
             "| GPU compute per step, NCCL excluded (traced, ms) | untraced step minus that (ms) |",
             "|---|---|---|---|---|---|"]
    for key, t in sorted(results.get("emulated_traced", {}).items(), key=lambda kv: tuple(map(int, kv[0].split(":")))):
        u = results.get("emulated", {}).get(key)
        found = _row_devices(t)
        compute = None
        if found:
            fams = found[0]
            compute = sum(sum(v for k, v in d.items() if k != "collective") for d in fams) / len(fams) * 1e3
        if u:
            lines.append(f"| {t['tp']} | {t['batch']} | {u['mean_tpot_ms']:.2f} / {t['mean_tpot_ms']:.2f} | "
                         f"{u['steady_itl_mean_ms']:.2f} / {t['steady_itl_mean_ms']:.2f} | {_num(compute)} | "
                         f"{_num(u['steady_itl_mean_ms'] - compute if compute is not None else None)} |")
        else:
            lines.append(f"| {t['tp']} | {t['batch']} | not run / {t['mean_tpot_ms']:.2f} | "
                         f"not run / {t['steady_itl_mean_ms']:.2f} | {_num(compute)} | |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, action="append", choices=(4, 8))
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--aic", default="/root/envs/aic/bin/aiconfigurator", help="the aiconfigurator executable")
    parser.add_argument("--no-emulate", action="store_true", help="AIConfigurator only")
    parser.add_argument("--no-aic", action="store_true", help="emulation only")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from the saved results")
    parser.add_argument("--no-trace", action="store_true",
                        help="no REVATI_VGPU_TRACE (the per-step breakdown needs it; the stats files miss "
                             "launches after their last periodic flush when workers exit without atexit)")
    parser.add_argument("--keep", type=Path, default=None, help="copy each run's folder here")
    args = parser.parse_args()
    tps, batches = args.tp or [4, 8], args.batch or [8, 32, 64, 128]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "tp_scaling.json"
    results = json.loads(path.read_text()) if path.exists() else {"emulated": {}, "aiconfigurator": {}}
    mine: dict[str, set] = {"emulated": set(), "aiconfigurator": set()}

    def save() -> None:
        # Another invocation may have saved meanwhile (a partial run beside an AIConfigurator
        # one): merge into what is on disk, this invocation's entries winning.
        if path.exists():
            disk = json.loads(path.read_text())
            for side in mine:
                disk.setdefault(side, {}).update({k: v for k, v in results.get(side, {}).items() if k in mine[side]})
            results.update(disk)
        path.write_text(json.dumps(results, indent=2, default=float) + "\n")
        NOTE.write_text(markdown(results))

    if not args.table_only:
        if not args.no_aic:
            for tp in tps:
                for batch in batches:
                    found = results["aiconfigurator"][f"{tp}:{batch}"] = aiconfigurator(args.aic, tp, batch)
                    mine["aiconfigurator"].add(f"{tp}:{batch}")
                    print(f"AIC TP{tp} batch {batch}: TPOT agg {found['agg'].get('tpot_ms')} ms, static "
                          f"{found['static'].get('tpot_ms')} ms, all-reduce {found['allreduce_us']:.1f} us", flush=True)
            save()
        if not args.no_emulate:
            for batch in batches:
                for tp in tps:
                    row = emulate(tp, batch, args.keep, not args.no_trace)
                    row["allreduces_per_step"] = ALLREDUCES_PER_STEP
                    row["run_date"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
                    side = "emulated" if args.no_trace else "emulated_traced"
                    results.setdefault(side, {})[f"{tp}:{batch}"] = row
                    mine.setdefault(side, set()).add(f"{tp}:{batch}")
                    print(f"emulated TP{tp} batch {batch}: TPOT mean {row['mean_tpot_ms']:.2f} ms, median "
                          f"{row['median_tpot_ms']:.2f} ms, steady step {row['steady_itl_median_ms']:.2f} ms; wall "
                          f"{row['wall_s']:.0f} s (start-up {row['startup_wall_s']:.0f} s)", flush=True)
                    save()
    save()
    print(table(results))
    print()
    print(step_breakdown(results))
    print()
    print(trace_check(results))
    print()
    print(aic_breakdown(results))
    return 0


# Llama's decoder layer all-reduces twice (after attention's o_proj, after the MLP's down_proj);
# VocabParallelEmbedding once more. Checked against the count on a rank in the results.
ALLREDUCES_PER_STEP = 2 * LAYERS + 1


def markdown(results: dict) -> str:
    head = (REPO / "benchmarks" / "results" / "tp_scaling_notes.md")
    notes = head.read_text() if head.exists() else ""
    return (f"# Llama-3.1-70B decode: TP8 against TP4 on virtual H100s, and AIConfigurator 0.12\n\n"
            f"Made by `benchmarks/tp_scaling.py`; every number is in `benchmarks/results/tp_scaling.json`. TPOTs and "
            f"steps are from untraced runs; (t): from the traced run of the same shape (the all-reduce kernel's charge "
            f"depends only on its launch). Steady decode step: median gap between tokens while the whole batch decodes. "
            f"TP8 batch 128 did not finish (see below).\n\n"
            f"{table(results)}\n\nEmulated: per steady decode step, mean over the TP ranks (ms; collectives include the "
            f"wait for the slowest rank):\n\n{step_breakdown(results)}\n\nThe trace's own cost (same deployment, "
            f"REVATI_VGPU_TRACE off / on):\n\n{trace_check(results)}\n\nAIConfigurator's decode step (static mode, "
            f"ms; its all-reduce rows folded with the table's 'others' row):\n\n{aic_breakdown(results)}\n\n{notes}")


if __name__ == "__main__":
    sys.exit(main())
