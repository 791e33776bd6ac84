"""What the terminal shows: a run's progress in virtual time and its summary table, a study's
trials done, best so far and time left."""
from __future__ import annotations

import math

import optuna

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autotune.study import OBJECTIVES_PER_DOLLAR
from autotune.trial import TrialResult
from emulator.deployment import RunSummary


class RunProgress:
    """A bar over the workload's arrival span in virtual seconds, from the moment load starts."""

    def __init__(self, workload: dict) -> None:
        rate = (workload.get("arrival") or {}).get("rate")
        finite = isinstance(rate, (int, float)) and math.isfinite(rate)
        self.span_s = workload["num_requests"] / rate if finite else None
        self.serving_from: float | None = None
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[virtual]:.1f} virtual s"), TimeElapsedColumn(),
                            console=Console(stderr=True))
        self.task = self.bar.add_task("starting the deployment", total=self.span_s, virtual=0.0)

    def __enter__(self) -> RunProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, virtual_s: float, serving: bool) -> None:
        if serving and self.serving_from is None:
            self.serving_from = virtual_s
        if self.serving_from is None:
            self.bar.update(self.task, virtual=virtual_s)
            return
        elapsed = virtual_s - self.serving_from
        done = self.span_s is not None and elapsed >= self.span_s
        self.bar.update(self.task, description="draining the last requests" if done else "serving",
                        completed=min(elapsed, self.span_s) if self.span_s else elapsed, virtual=virtual_s)


def summary_table(summary: RunSummary) -> Table:
    m = summary.metrics
    table = Table(title=f"{summary.config['model']} on {summary.config['sku']} "
                        f"({m['completed']} requests served, {m['failed']} failed)")
    table.add_column("metric")
    for stat in ("mean", "median", "p90", "p99"):
        table.add_column(stat, justify="right")
    for metric in ("ttft", "tpot", "itl", "e2el"):
        table.add_row(f"{metric.upper()} (ms)", *(f"{m[f'{stat}_{metric}_ms']:.2f}" for stat in ("mean", "median", "p90", "p99")))
    rows = [("request throughput (req/s)", m["request_throughput"]), ("output throughput (tok/s)", m["output_throughput"]),
            ("goodput (req/s)", m.get("request_goodput")), ("SLO attainment", m["slo_attainment"]),
            ("virtual seconds", summary.virtual_seconds), ("wall seconds", summary.wall_seconds)]
    for name, value in rows:
        if value is not None:
            table.add_row(name, f"{value:.3f}", "", "", "")
    return table


class StudyProgress:
    """Trials done out of the budget, the best feasible configuration so far, and an ETA."""

    def __init__(self, total: int, done: int) -> None:
        self.bar = Progress(TextColumn("trials"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=Console(stderr=True))
        self.task = self.bar.add_task("trials", total=total, completed=done, best="no feasible trial yet")

    def __enter__(self) -> StudyProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def finished(self, number: int, outcome: str, summary: str, best: str | None, counted: bool = True) -> None:
        self.bar.console.print(f"trial {number}: {outcome}: {summary}")
        self.bar.update(self.task, advance=1 if counted else 0, best=f"best {best}" if best else "no feasible trial yet")


# The engine arguments a trial's line names (vLLM's, then SGLang's): parallelism and batch limits.
SHOWN_KNOBS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "max_num_seqs",
               "max_num_batched_tokens", "tp_size", "pp_size", "dp_size", "max_running_requests",
               "chunked_prefill_size")
# ... and, for a disaggregated layout, its instances (vLLM's layout knobs).
LAYOUT_KNOBS = ("prefill_instances", "prefill_tensor_parallel_size", "decode_instances")


def describe(result: TrialResult) -> str:
    """One line on how a trial ended."""
    args = result.user_attrs.get("knobs", {})
    shown = SHOWN_KNOBS + (LAYOUT_KNOBS if args.get("prefill_instances") else ())
    knobs = f"{result.user_attrs.get('engine')}: " + ", ".join(
        f"{k}={v}" for k, v in args.items() if v is not None and k in shown)
    if "same_as_trial" in result.user_attrs:
        knobs += f" (as trial {result.user_attrs['same_as_trial']}, not run again)"
    if result.outcome != "ok":
        return f"{knobs}: {result.reason}"
    return (f"{knobs}: {result.goodput_per_gpu:.3f} good req/s per GPU on {result.gpus} "
            f"{str(result.user_attrs.get('sku', '')).upper()} GPU(s), SLO attainment {result.slo_attainment:.0%}")


def best_so_far(study: optuna.Study) -> str | None:
    """The feasible trial with the most goodput per GPU (per dollar in a study over GPU types), in words."""
    attainment = study.user_attrs["slo"]["attainment"]
    ok = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
          if t.user_attrs.get("outcome") == "ok" and t.user_attrs.get("slo_attainment", 0) >= attainment]
    if not ok:
        return None
    if study.metric_names == OBJECTIVES_PER_DOLLAR:
        best = max(ok, key=lambda t: t.values[0])
        return (f"{best.values[0]:.0f} good requests per $ (trial {best.number}, {best.user_attrs['gpus']} "
                f"{best.user_attrs['sku'].upper()} GPUs)")
    best = max(ok, key=lambda t: t.user_attrs["goodput_per_gpu"])
    return f"{best.user_attrs['goodput_per_gpu']:.3f} req/s/GPU (trial {best.number}, {best.user_attrs['gpus']} GPUs)"

