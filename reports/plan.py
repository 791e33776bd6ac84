"""Capacity planning's answer, "the cheapest deployment that holds the SLO at rates r1..rn" (with
one GPU type, the fewest GPUs), as a table.

Each row is a mapping: rate (requests per second), gpus (that deployment's, or None when no
configuration tried holds the SLO), knobs (its engine arguments; "config" is accepted too),
slo_attainment, goodput_per_gpu, and where known sku and dollars_per_hour.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from reports.loading import canonical_knobs

NONE_HOLDS = "none holds the SLO"


def plan_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    records = []
    for row in rows:
        knobs = row.get("knobs", row.get("config"))
        records.append({
            "rate": row["rate"],
            "gpus": row.get("gpus"),
            "slo_attainment": row.get("slo_attainment"),
            "goodput_per_gpu": row.get("goodput_per_gpu"),
            "sku": row.get("sku"),
            "dollars_per_hour": row.get("dollars_per_hour"),
            "configuration": canonical_knobs(knobs) if knobs else "",
        })
    return pd.DataFrame(records, columns=["rate", "gpus", "slo_attainment", "goodput_per_gpu", "sku", "dollars_per_hour",
                                          "configuration"]).sort_values("rate", ignore_index=True)


def display_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """The plan with numbers formatted for people; a rate no configuration holds says so."""
    plan = plan_frame(rows)
    held = plan["gpus"].notna()
    return pd.DataFrame({
        "rate (req/s)": plan["rate"].map(lambda r: f"{r:g}"),
        "GPUs": [f"{int(g)}" if h else NONE_HOLDS for g, h in zip(plan["gpus"], held)],
        "SLO attainment": [f"{a:.1%}" if h and pd.notna(a) else "" for a, h in zip(plan["slo_attainment"], held)],
        "goodput/GPU": [f"{g:.3g}" if h and pd.notna(g) else "" for g, h in zip(plan["goodput_per_gpu"], held)],
        "GPU type": [s.upper() if h and isinstance(s, str) else "" for s, h in zip(plan["sku"], held)],
        "$/hour": [f"{d:.2f}" if h and pd.notna(d) else "" for d, h in zip(plan["dollars_per_hour"], held)],
        "configuration": plan["configuration"].where(held, ""),
    })


def plan_table(rows: Iterable[Mapping]) -> str:
    """Plain text, one line per rate."""
    return display_frame(rows).to_string(index=False) + "\n"


def plan_html(rows: Iterable[Mapping]) -> str:
    return display_frame(rows).to_html(index=False, classes="plan", border=0, escape=True)
