"""The Pareto front of a study: feasible trials that no other feasible trial beats on both good
requests per dollar (higher is better) and dollars per hour (fewer is better). Within one GPU type
these are goodput per GPU and GPUs scaled by the price, so the front is the per-GPU one; across
types, the price decides between a faster and a cheaper GPU."""
from __future__ import annotations

import pandas as pd


def pareto_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the rows on the front. Needs columns feasible, dollars_per_hour, goodput_per_dollar.
    Trials equal on both objectives are all on the front: neither dominates the other."""
    candidates = frame[frame["feasible"].astype(bool)
                       & frame["dollars_per_hour"].notna() & frame["goodput_per_dollar"].notna()]
    cost = candidates["dollars_per_hour"].astype(float)
    goodput = candidates["goodput_per_dollar"].astype(float)
    on_front = pd.Series(False, index=frame.index)
    for index in candidates.index:
        no_worse = (cost <= cost[index]) & (goodput >= goodput[index])
        better = (cost < cost[index]) | (goodput > goodput[index])
        on_front[index] = not (no_worse & better).any()
    return on_front


def pick(frame: pd.DataFrame) -> pd.Series | None:
    """The configuration to deploy: of those holding the SLO, the most good requests per dollar,
    then the cheapest per hour; None when none held it."""
    held = frame[frame["feasible"].astype(bool)]
    if held.empty:
        return None
    return held.sort_values(["goodput_per_dollar", "dollars_per_hour", "number"],
                            ascending=[False, True, True]).iloc[0]


def front(frame: pd.DataFrame) -> pd.DataFrame:
    """The front's rows, cheapest first."""
    return frame[frame["pareto"]].sort_values(["dollars_per_hour", "goodput_per_dollar"], ascending=[True, False])


def best_by_gpus(frame: pd.DataFrame) -> pd.Series:
    """gpus -> best goodput per GPU on the front (what capacity planning reads off it)."""
    rows = front(frame)
    return rows.groupby("gpus")["goodput_per_gpu"].max().rename_axis("gpus")


def hypervolume(frame: pd.DataFrame, reference_gpus: float) -> float:
    """The area the front dominates in (GPUs, goodput per GPU), bounded by zero goodput and
    `reference_gpus` GPUs (above any configuration's count). One number for how good a front is:
    it grows with every configuration that serves more per GPU, or the same with fewer GPUs."""
    rows = front(frame)
    area, best = 0.0, 0.0
    for gpus, goodput in sorted(zip(rows["gpus"].astype(float), rows["goodput_per_gpu"].astype(float))):
        if goodput > best:          # fewest GPUs first: a point adds the strip it raises
            area += (goodput - best) * (reference_gpus - gpus)
            best = goodput
    return area
