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
