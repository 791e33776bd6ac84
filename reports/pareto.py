"""The Pareto front of a study: feasible trials that no other feasible trial beats on both goodput
per GPU (higher is better) and GPUs (fewer is better)."""
from __future__ import annotations

import pandas as pd


def pareto_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the rows on the front. Needs columns feasible, gpus, goodput_per_gpu. Trials
    equal on both objectives are all on the front: neither dominates the other."""
    candidates = frame[frame["feasible"].astype(bool)
                       & frame["gpus"].notna() & frame["goodput_per_gpu"].notna()]
    gpus = candidates["gpus"].astype(float)
    goodput = candidates["goodput_per_gpu"].astype(float)
    on_front = pd.Series(False, index=frame.index)
    for index in candidates.index:
        no_worse = (gpus <= gpus[index]) & (goodput >= goodput[index])
        better = (gpus < gpus[index]) | (goodput > goodput[index])
        on_front[index] = not (no_worse & better).any()
    return on_front


def front(frame: pd.DataFrame) -> pd.DataFrame:
    """The front's rows, fewest GPUs first."""
    return frame[frame["pareto"]].sort_values(["gpus", "goodput_per_gpu"], ascending=[True, False])


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
