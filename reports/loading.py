"""A study's trials as one pandas DataFrame, one row per trial.

A study is named by an Optuna storage URL (`sqlite:///runs/x/study.db`), a study file
(`runs/x/study.db`), an out dir holding `study.db`, or given as an `optuna.Study`. The columns:

    number, state, outcome, reason, gpus, engine, sku, layout (aggregated or disaggregated),
    goodput_per_gpu, slo_attainment, feasible, pareto, price_per_gpu_hour, dollars_per_hour,
    goodput_per_dollar (good requests per dollar), knobs (the knobs as canonical JSON: what trials
    are matched by), one column per knob (vLLM's names), one column per metric (vllm bench serve's
    names), run_dir, deploy_command, deploy_roles (a disaggregated layout's instances as JSON, else
    empty), command

Prices are the study's (search.price_per_gpu_hour, else the SKU's default), or those given: a
report can be re-priced without running anything again, since prices do not change what ran.

A trial is feasible when it ran (outcome ok) and its SLO attainment reaches the study's target;
the rule is applied here from user_attrs rather than read from Optuna's constraint values, so a
report does not depend on how the study stored them.
"""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from emulator.hardware import goodput_per_dollar, load_sku
from reports.pareto import pareto_mask

STUDY_FILE = "study.db"
FIRST_COLUMNS = ["number", "state", "outcome", "reason", "gpus", "engine", "sku", "layout", "goodput_per_gpu", "slo_attainment",
                 "feasible", "pareto", "price_per_gpu_hour", "dollars_per_hour", "goodput_per_dollar", "knobs"]
LAST_COLUMNS = ["run_dir", "deploy_command", "deploy_roles", "command"]


def load_study(source: str | Path | optuna.Study, study_name: str | None = None) -> optuna.Study:
    """The study behind `source`; `study_name` is needed only when the storage holds several."""
    if isinstance(source, optuna.Study):
        return source
    storage = storage_url(source)
    names = optuna.get_all_study_names(storage)
    if study_name is None:
        if len(names) != 1:
            raise ValueError(f"{source} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                             f"name one with --study-name")
        study_name = names[0]
    elif study_name not in names:
        raise ValueError(f"{source} has no study {study_name!r}; it has: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage)


def storage_url(source: str | Path) -> str:
    text = str(source)
    if "://" in text:
        return text
    path = Path(source)
    if path.is_dir():
        path = path / STUDY_FILE
    if not path.is_file():
        raise ValueError(f"{source}: neither a storage URL, nor a study file, nor a folder with {STUDY_FILE}")
    return f"sqlite:///{path.resolve()}"


def slo_target(study: optuna.Study) -> float | None:
    """The share of requests that must be good for a configuration to be acceptable."""
    return (study.user_attrs.get("slo") or {}).get("attainment")


def canonical_knobs(knobs: dict | None) -> str:
    """Knobs as sorted JSON without the null ones: null means the engine's default, the same as
    leaving the knob out, so two studies that spell the default differently still match."""
    return json.dumps({k: v for k, v in (knobs or {}).items() if v is not None}, sort_keys=True)


def study_prices(study: optuna.Study, prices: dict[str, float] | None = None) -> dict[str, float]:
    """SKU -> USD per GPU-hour: `prices` over the study's own (a study from before prices were
    recorded is priced at its SKU's default)."""
    config = study.user_attrs.get("config") or {}
    own = dict(config.get("prices") or {})
    if not own and config.get("hardware"):
        own[config["hardware"]] = load_sku(config["hardware"]).price_per_gpu_hour
    return {**own, **(prices or {})}


def trials_frame(study: optuna.Study, prices: dict[str, float] | None = None) -> pd.DataFrame:
    target = slo_target(study)
    rows = [_row(trial, target) for trial in study.get_trials(deepcopy=False)]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*FIRST_COLUMNS, *LAST_COLUMNS]).astype({"feasible": bool, "pareto": bool})
    # Nullable integers: a trial that never said how many GPUs it had must not turn 2 into 2.0.
    frame["gpus"] = frame["gpus"].astype("Int64")
    config = study.user_attrs.get("config") or {}
    frame["sku"] = frame["sku"].fillna(config.get("hardware"))
    priced = study_prices(study, prices)
    unknown = sorted(set(frame["sku"].dropna()) - set(priced))
    if unknown:
        raise ValueError(f"no price for {unknown[0]}: give one (--price {unknown[0]}=USD)")
    frame["price_per_gpu_hour"] = frame["sku"].map(priced).astype(float)
    frame["dollars_per_hour"] = frame["gpus"].astype(float) * frame["price_per_gpu_hour"]
    frame["goodput_per_dollar"] = goodput_per_dollar(frame["goodput_per_gpu"].astype(float), frame["price_per_gpu_hour"])
    frame["pareto"] = pareto_mask(frame)
    middle = [c for c in frame.columns if c not in FIRST_COLUMNS and c not in LAST_COLUMNS]
    return frame[[*FIRST_COLUMNS, *middle, *LAST_COLUMNS]].sort_values("number", ignore_index=True)


def _row(trial: optuna.trial.FrozenTrial, target: float | None) -> dict:
    attrs = trial.user_attrs
    # A trial still running (or one that crashed before saying) has no outcome of its own.
    outcome = attrs.get("outcome") or trial.state.name.lower()
    attainment = attrs.get("slo_attainment")
    feasible = outcome == "ok" and (target is None or (attainment is not None and attainment >= target))
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "outcome": outcome,
        "reason": attrs.get("reason"),
        "gpus": attrs.get("gpus"),
        "engine": attrs.get("engine"),
        "sku": attrs.get("sku"),
        "layout": attrs.get("layout", "aggregated"),        # studies from before layouts were aggregated
        "goodput_per_gpu": attrs.get("goodput_per_gpu"),
        "slo_attainment": attainment,
        "feasible": feasible,
        "knobs": canonical_knobs(attrs.get("knobs")),
    }
    row.update(attrs.get("knobs") or {})
    # The metrics' own slo_attainment is the same number; the trial's top-level value wins.
    row.update({k: v for k, v in (attrs.get("metrics") or {}).items() if k not in row})
    row.update({k: attrs.get(k) for k in LAST_COLUMNS})
    return row

