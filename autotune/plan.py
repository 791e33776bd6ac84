"""Capacity planning: the cheapest deployment that holds the SLO at each of several request rates
(with one GPU type, the fewest GPUs).

Each rate is a study of its own (`<study name>-rate<r>` in the same storage, trials under
`<out>/rate<r>/`), searched with the study's budget, so a rerun resumes every rate where it
stopped and a later `revati-tune compare` can diff one rate's study between two nights. The
answer at a rate is the feasible configuration (SLO attainment met) that costs least an hour
(GPUs x their type's price: within one type, the fewest GPUs), the most goodput per dollar
breaking ties; the report of the last rate carries the whole table.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from autotune import config as study_config
from autotune.search import search
from autotune.study import open_study


def plan(study_file: Path, overrides: list[str], rates: list[float]) -> str:
    from reports.plan import plan_table
    from reports.report import write_report
    base = study_config.load(study_file, overrides)
    rows = []
    for rate in rates:
        tag = f"rate{rate:g}"
        config = study_config.load(study_file, [*overrides, f"workload.rate={rate}",
                                                f"search.study_name={base.study_name}-{tag}",
                                                f"search.storage={base.storage}", f"out={base.out / tag}"])
        search(config)
        rows.append({"rate": rate, **cheapest(open_study(config), config.attainment)})
    write_report(open_study(config), base.out, plan=rows)
    return plan_table(rows)


def cheapest(study: optuna.Study, attainment: float) -> dict:
    held = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.user_attrs.get("outcome") == "ok" and t.user_attrs.get("slo_attainment", 0.0) >= attainment]
    if not held:
        return {"gpus": None}

    def price(t: optuna.trial.FrozenTrial) -> float:     # studies from before prices: per GPU
        return t.user_attrs.get("price_per_gpu_hour", 1.0)
    best = min(held, key=lambda t: (t.user_attrs["gpus"] * price(t), -t.user_attrs["goodput_per_gpu"] / price(t)))
    return {**{key: best.user_attrs[key] for key in ("gpus", "knobs", "slo_attainment", "goodput_per_gpu")},
            "sku": best.user_attrs.get("sku"),
            "dollars_per_hour": best.user_attrs["gpus"] * best.user_attrs["price_per_gpu_hour"]
            if "price_per_gpu_hour" in best.user_attrs else None}
