"""All trials as trials.csv (for spreadsheets) and trials.parquet (for pandas/DuckDB)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def write_trials(trials: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = out_dir / "trials.csv", out_dir / "trials.parquet"
    trials.to_csv(csv_path, index=False)
    _parquet_ready(trials).to_parquet(parquet_path, index=False)
    return csv_path, parquet_path


def _parquet_ready(trials: pd.DataFrame) -> pd.DataFrame:
    """A Parquet column holds one type: a column mixing them (a knob that is 16 in one trial and
    "auto" in another) is written as text."""
    frame = trials.copy()
    for column in frame.columns[frame.dtypes == object]:
        kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and pd.isna(v))}
        if len(kinds) > 1 and kinds != {int, float}:
            frame[column] = frame[column].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v))
                                              else str(v))
    return frame
