"""`write_report`: a study as one self-contained HTML file, plus trials.csv and trials.parquet,
and for each recommended configuration its engine command and Kubernetes manifest (deploy/,
reports/manifests.py).

The HTML inlines plotly.js once (no CDN: it opens offline and can be mailed). The Pareto plot is
drawn on load; each trial's drill-down figures are embedded as JSON and drawn when its section
is opened, so a study of hundreds of trials still opens fast. Everything else is templates/
report.html.j2 (jinja2, for its autoescaping: failure reasons and commands are arbitrary text).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import jinja2
import optuna
import pandas as pd
import plotly.io as pio

from reports import figures
from reports.exports import write_trials
from reports.loading import load_study, trials_frame
from reports.manifests import write_deploy_files
from reports.pareto import front, pick
from reports.plan import plan_html

TEMPLATES = Path(__file__).parent / "templates"
LATENCIES = ("ttft", "tpot", "itl", "e2el")
THROUGHPUTS = {"request_throughput": "req/s", "output_throughput": "output tok/s",
               "total_token_throughput": "total tok/s"}
NOT_RUN = ("failed", "timeout", "infeasible", "pruned")


def write_report(study: optuna.Study | str | Path, out_dir: str | Path, study_name: str | None = None,
                 plan: Iterable[Mapping] | None = None, prices: Mapping[str, float] | None = None) -> Path:
    """Write out_dir/report.html, trials.csv, trials.parquet and deploy/; returns the HTML's path. `study`
    is a Study, a storage URL, a study file or an out dir; `plan` adds capacity planning's rows
    (see reports.plan); `prices` (SKU -> USD per GPU-hour) re-prices the study."""
    study = load_study(study, study_name)
    out_dir = Path(out_dir)
    trials = trials_frame(study, dict(prices or {}))
    per_dollar = trials["sku"].nunique() > 1
    write_trials(trials, out_dir)
    recommended = front(trials)
    deploy_files = write_deploy_files(recommended, out_dir, study.study_name)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    html = environment.get_template("report.html.j2").render(
        title=f"revati-tune: {study.study_name}",
        header=header(study, trials),
        pareto_plot=pio.to_html(figures.pareto_figure(trials, per_dollar), full_html=False, include_plotlyjs=True,
                                div_id="pareto", config={"displaylogo": False}),
        plan=plan_html(plan) if plan is not None else None,
        pareto_table=pareto_table(trials),
        engines_table=compared_table(trials, "engine"),
        skus_table=compared_table(trials, "sku"),
        layouts_table=compared_table(trials, "layout"),
        recommended=[{**_trial_view(row), "files": deploy_files.get(int(row["number"]), {})}
                     for _, row in recommended.iterrows()],
        runs=[_run_view(row) for _, row in trials[trials["outcome"] == "ok"].iterrows()],
        not_run=[_trial_view(row) for _, row in trials[trials["outcome"] != "ok"].iterrows()],
    )
    path = out_dir / "report.html"
    path.write_text(html)
    return path


def header(study: optuna.Study, trials: pd.DataFrame) -> dict[str, str]:
    """What was searched, under which SLOs, and how the trials ended."""
    config = study.user_attrs.get("config") or {}
    outcomes = trials["outcome"].value_counts()
    ran = int(outcomes.get("ok", 0))
    feasible = int(trials["feasible"].sum())
    counts = (f"{len(trials)} trials: {ran} ran ({feasible} held the SLO, {ran - feasible} missed it), "
              f"{int(outcomes.get('failed', 0)) + int(outcomes.get('timeout', 0))} failed or timed out, "
              f"{int(outcomes.get('infeasible', 0))} infeasible, {int(outcomes.get('pruned', 0))} pruned (stopped "
              "once the SLO target was out of reach)")
    others = len(trials) - ran - sum(int(outcomes.get(o, 0)) for o in NOT_RUN)
    if others:
        counts += f", {others} not finished"
    model = describe(config.get("model")) + (f" ({config['hf_id']})" if config.get("hf_id") else "")
    searched = (config.get("search") or {}).get("engines") or []
    engine = f"{', '.join(searched)} (the engine is a knob)" if len(searched) > 1 else describe(config.get("engine"))
    priced = trials.drop_duplicates("sku").dropna(subset=["sku"])
    hardware = ", ".join(f"{sku.upper()} at ${price:.2f} per GPU-hour" for sku, price
                         in zip(priced["sku"], priced["price_per_gpu_hour"]))
    if len(priced) > 1:
        hardware += " (the GPU type is a knob)"
    best = pick(trials)
    chosen = "none: no trial held the SLO" if best is None else (
        f"trial {best['number']}: {best['gpus']} x {str(best['sku']).upper()} ({best['engine']}), "
        f"{best['goodput_per_dollar']:.0f} good requests per dollar at ${best['dollars_per_hour']:.2f} an hour, "
        f"{_number(best['goodput_per_gpu'])} good req/s per GPU")
    return {"model": model, "hardware": hardware or describe(config.get("hardware")),
            "engine": engine, "workload": describe(config.get("workload")),
            "SLOs": slo_text(study.user_attrs.get("slo") or config.get("slo") or {}), "trials": counts,
            "pick": chosen}


def describe(value) -> str:
    """A config entry in a line: a named thing by its name (and Hugging Face id), anything else
    as its non-null fields."""
    if isinstance(value, Mapping):
        if "name" in value:
            return value["name"] + (f" ({value['hf_id']})" if value.get("hf_id") else "")
        return ", ".join(f"{key} {describe(item)}" for key, item in value.items() if item is not None)
    return "" if value is None else str(value)


def slo_text(slo: Mapping) -> str:
    limits = [f"{name.upper()} ≤ {slo[f'{name}_ms']:g} ms" for name in ("ttft", "tpot", "e2el")
              if slo.get(f"{name}_ms") is not None]
    text = ", ".join(limits) or "none"
    if slo.get("attainment") is not None:
        text += f"; at least {slo['attainment']:.0%} of requests good"
    return text


def pareto_table(trials: pd.DataFrame) -> str:
    """The front's configurations: latency percentiles (ms), throughputs and attainment."""
    rows = front(trials)
    table = pd.DataFrame({"trial": rows["number"], "engine": rows["engine"], "GPU": rows["sku"].str.upper(),
                          "GPUs": rows["gpus"], "layout": rows["layout"], "goodput/GPU": rows["goodput_per_gpu"].map("{:.3g}".format),
                          "$/hour": rows["dollars_per_hour"].map("{:.2f}".format),
                          "good req/$": rows["goodput_per_dollar"].map("{:.0f}".format),
                          "SLO attainment": rows["slo_attainment"].map(_percent)})
    for metric in LATENCIES:
        columns = [f"median_{metric}_ms", f"p90_{metric}_ms", f"p99_{metric}_ms"]
        table[f"{metric.upper()} p50 / p90 / p99 (ms)"] = (
            rows[columns].apply(lambda r: " / ".join(map(_number, r)), axis=1) if set(columns) <= set(rows) else "")
    for column, label in THROUGHPUTS.items():
        table[label] = rows[column].map(_number) if column in rows else ""
    table["knobs"] = rows["knobs"].map(lambda k: ", ".join(f"{n}={v}" for n, v in json.loads(k).items()))
    return table.to_html(index=False, border=0, classes="pareto", table_id="pareto-table", escape=True)


def compared_table(trials: pd.DataFrame, column: str) -> str | None:
    """With trials of several engines (column "engine"), GPU types ("sku") or layouts ("layout"): per one, how its
    trials ended and its best configuration that held the SLO (most good requests per dollar, then
    the cheapest per hour: within one GPU type, the most per GPU, then the fewest GPUs); where none
    held it, why, with the latencies of the trial that came closest (a pruned trial's are those of
    the requests finished before it was stopped)."""
    if trials[column].nunique() < 2:
        return None
    rows = []
    for value, group in trials.groupby(column, sort=False):
        held = group[group["feasible"]].sort_values(["goodput_per_dollar", "dollars_per_hour"], ascending=[False, True])
        best = held.iloc[0] if len(held) else None
        closest = best if best is not None else _closest(group)
        rows.append({column: value, "trials": len(group), "ran": int((group["outcome"] == "ok").sum()),
                     "held the SLO": len(held),
                     "best goodput/GPU": "" if best is None else f"{_number(best['goodput_per_gpu'])} (trial {best['number']})",
                     "its GPUs": "" if best is None else f"{int(best['gpus'])}" + (
                         f" x {str(best['sku']).upper()}" if column == "engine" and trials["sku"].nunique() > 1 else ""),
                     "its good req/$": "" if best is None else f"{best['goodput_per_dollar']:.0f}",
                     "its TTFT / TPOT p50 (ms)": "" if closest is None else
                     f"{_number(closest.get('median_ttft_ms'))} / {_number(closest.get('median_tpot_ms'))}",
                     "fewest GPUs holding the SLO": "" if best is None else int(held["gpus"].min()),
                     "why none held it": "" if best is not None or closest is None else
                     f"trial {closest['number']} ({int(closest['gpus'])} GPUs): {closest['outcome']}: {closest['reason'] or ''}"})
    return pd.DataFrame(rows).to_html(index=False, border=0, classes="pareto", table_id=f"{column}s-table",
                                      escape=True)


def _closest(group: pd.DataFrame) -> pd.Series | None:
    """Of trials none of which held the SLO, the one that came closest: ran or was pruned, the
    highest attainment, then the most requests finished."""
    tried = group[group["outcome"].isin(["ok", "pruned"])]
    if not len(tried):
        return group.iloc[0] if len(group) else None
    order = tried.assign(_done=tried.get("completed", 0)).sort_values(["slo_attainment", "_done"], ascending=False)
    return order.iloc[0]


def _number(value) -> str:
    """Three significant digits, but whole numbers from 100 up (2054 tok/s, not 2.05e+03)."""
    if pd.isna(value):
        return ""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _percent(value) -> str:
    return "" if pd.isna(value) else f"{value:.1%}"


def _trial_view(row: pd.Series) -> dict:
    return {"number": int(row["number"]), "engine": row["engine"] if isinstance(row["engine"], str) else "", "gpus": "" if pd.isna(row["gpus"]) else int(row["gpus"]),
            "outcome": row["outcome"], "reason": row["reason"] or "",
            "goodput_per_gpu": _number(row["goodput_per_gpu"]), "slo_attainment": _percent(row["slo_attainment"]),
            "sku": str(row["sku"]).upper() if isinstance(row["sku"], str) else "",
            "goodput_per_dollar": "" if pd.isna(row["goodput_per_dollar"]) else f"{row['goodput_per_dollar']:.0f}",
            "feasible": bool(row["feasible"]), "pareto": bool(row["pareto"]),
            "knobs": json.loads(row["knobs"]), "deploy_command": row["deploy_command"] or "",
            "command": row["command"] or "", "run_dir": row["run_dir"] or ""}


def _run_view(row: pd.Series) -> dict:
    """A trial that ran, with its drill-down figures as plotly JSON (or why there are none)."""
    view = _trial_view(row)
    run_dir = Path(view["run_dir"]) if view["run_dir"] else None
    requests_path = run_dir / "requests.parquet" if run_dir else None
    summary_path = run_dir / "summary.json" if run_dir else None
    view.update(figures=[], missing=[], virtual_seconds=None, wall_seconds=None)
    if requests_path and requests_path.is_file():
        requests = pd.read_parquet(requests_path)
        view["figures"] += [figures.latency_cdf_figure(requests).to_json(),
                            figures.load_figure(requests).to_json()]
    else:
        view["missing"].append(f"{requests_path or 'requests.parquet'} (no latency CDFs, throughput or queue)")
    if summary_path and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        view["figures"].append(figures.gpu_time_figure(summary.get("gpu_time_by_family") or []).to_json())
        view["virtual_seconds"] = summary.get("virtual_seconds")
        view["wall_seconds"] = summary.get("wall_seconds")
    else:
        view["missing"].append(f"{summary_path or 'summary.json'} (no GPU time by family)")
    return view
