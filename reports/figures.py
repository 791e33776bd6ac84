"""The report's plotly figures: the study's Pareto front and one run's drill-down."""
from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from reports import timeline
from reports.pareto import front

# Fixed colours, so that a screenshot test can look for the front's markers in the pixels.
PARETO_COLOR = "#d62728"
FEASIBLE_COLOR = "#1f77b4"
MISSED_SLO_COLOR = "#ff7f0e"
FAILED_COLOR = "#7f7f7f"
LATENCY_TITLES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2el": "E2EL"}


def _hover(row: pd.Series) -> str:
    """A trial's hover text. Plotly renders it as HTML (<br>, <b>, <a href>...), so every string from
    the study (engine, knob values, failure reason) is escaped to show as written."""
    knobs = json.loads(row["knobs"])
    lines = [f"trial {row['number']}: {row['outcome']}",
             f"{html.escape(str(row.get('engine')))}, {row['gpus']} x {html.escape(str(row.get('sku')).upper())}"]
    if pd.notna(row.get("goodput_per_gpu")):
        lines.append(f"goodput/GPU {row['goodput_per_gpu']:.3g} req/s, {row['goodput_per_dollar']:.0f} good req/$ "
                     f"at ${row['dollars_per_hour']:.2f}/h")
    if pd.notna(row.get("slo_attainment")):
        lines.append(f"SLO attainment {row['slo_attainment']:.1%}")
    if isinstance(row.get("reason"), str):
        lines.append(html.escape(row["reason"][:120]))
    lines += [html.escape(f"{name} = {value}") for name, value in knobs.items()]
    return "<br>".join(lines)


def pareto_figure(trials: pd.DataFrame, per_dollar: bool = False) -> go.Figure:
    """GPUs against goodput per GPU (per_dollar, a study over GPU types: dollars per hour against
    good requests per dollar): the front joined by a line, other feasible trials, trials that ran
    but missed the SLO, and trials that did not run (drawn at zero goodput)."""
    x, y = ("dollars_per_hour", "goodput_per_dollar") if per_dollar else ("gpus", "goodput_per_gpu")
    ran = trials["outcome"] == "ok"
    groups = [
        ("Pareto front", front(trials), PARETO_COLOR, "circle", "lines+markers", 13),
        ("feasible", trials[trials["feasible"] & ~trials["pareto"]], FEASIBLE_COLOR, "circle", "markers", 10),
        ("missed SLO", trials[ran & ~trials["feasible"]], MISSED_SLO_COLOR, "diamond-open", "markers", 10),
        ("failed / refused", trials[~ran & trials["gpus"].notna()], FAILED_COLOR, "x", "markers", 9),
    ]
    figure = go.Figure()
    # Drawn last to first, so that the front lies on top of a dominated trial next to it (a
    # near-copy of a front configuration would hide its marker); the legend keeps the list's order.
    for rank, (name, rows, color, symbol, mode, size) in reversed(list(enumerate(groups))):
        figure.add_trace(go.Scatter(
            x=rows[x], y=rows[y].fillna(0.0) if len(rows) else [], name=name, mode=mode,
            legendrank=rank, marker={"color": color, "symbol": symbol, "size": size}, line={"color": color}, cliponaxis=False,
            hovertext=[_hover(row) for _, row in rows.iterrows()], hoverinfo="text"))
    axes = ({"title": "Good requests per dollar against dollars per hour (up and left is better)",
             "xaxis": {"title": "dollars per hour (all GPUs)", "rangemode": "tozero"},
             "yaxis": {"title": "good requests per dollar", "rangemode": "tozero"}} if per_dollar else
            {"title": "Goodput per GPU against GPUs (up and left is better)", "xaxis": {"title": "GPUs", "dtick": 1},
             "yaxis": {"title": "goodput per GPU (good req/s)", "rangemode": "tozero"}})
    figure.update_layout(**axes, height=480,
                         legend={"orientation": "h", "y": -0.15}, margin={"t": 50})
    return figure


def latency_cdf_figure(requests: pd.DataFrame) -> go.Figure:
    cdfs = timeline.latency_cdfs(requests)
    figure = make_subplots(rows=2, cols=2, subplot_titles=[f"{LATENCY_TITLES[m]} CDF" for m in cdfs])
    for i, (metric, cdf) in enumerate(cdfs.items()):
        figure.add_trace(go.Scatter(x=cdf["ms"], y=cdf["share"], name=LATENCY_TITLES[metric], mode="lines"),
                         row=i // 2 + 1, col=i % 2 + 1)
        figure.update_xaxes(title_text="ms", tickformat="~g", row=i // 2 + 1, col=i % 2 + 1)
    figure.update_yaxes(range=[0, 1.02], tickformat=".0%")
    figure.update_layout(height=520, showlegend=False, margin={"t": 40})
    return figure


def load_figure(requests: pd.DataFrame) -> go.Figure:
    """Throughput and the client-side queue over virtual time, on one time axis."""
    rate = timeline.throughput_over_time(requests)
    queue = timeline.queue_over_time(requests)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                           specs=[[{"secondary_y": True}], [{}]],
                           subplot_titles=["throughput", "requests waiting (before first token) and running"])
    figure.add_trace(go.Scatter(x=rate["time_s"], y=rate["output_tokens_per_s"], name="output tokens/s"), row=1, col=1)
    figure.add_trace(go.Scatter(x=rate["time_s"], y=rate["requests_per_s"], name="finished requests/s"),
                     row=1, col=1, secondary_y=True)
    for column in ("waiting", "running"):
        figure.add_trace(go.Scatter(x=queue["time_s"], y=queue[column], name=column, line={"shape": "hv"}),
                         row=2, col=1)
    figure.update_xaxes(title_text="virtual time (s)", row=2, col=1)
    figure.update_yaxes(title_text="tokens/s", row=1, col=1, secondary_y=False)
    figure.update_yaxes(title_text="req/s", row=1, col=1, secondary_y=True, showgrid=False)
    figure.update_yaxes(title_text="requests", row=2, col=1)
    figure.update_layout(height=560, margin={"t": 40})
    return figure


def gpu_time_figure(gpu_time_by_family: list[dict]) -> go.Figure:
    """Where the virtual GPU time went, by kernel family (summary.json's gpu_time_by_family)."""
    table = pd.DataFrame(gpu_time_by_family, columns=["family", "launches", "seconds", "share"])
    table = table.sort_values("seconds")
    figure = go.Figure(go.Bar(x=table["seconds"], y=table["family"], orientation="h",
                              text=[f"{s:.1%}" for s in table["share"]], textposition="auto",
                              hovertext=[f"{n} launches" for n in table["launches"]]))
    figure.update_layout(title="GPU time by kernel family", xaxis={"title": "GPU seconds (all GPUs)"},
                         height=120 + 28 * len(table), margin={"t": 40})
    return figure
