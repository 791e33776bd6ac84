#!/usr/bin/env python3
"""Search efficiency: how much of the best front the study's sampler finds with a fraction of
the evaluations, on a space small enough to evaluate every configuration.

1. The grid: the study runs with `search.sampler=grid`, every configuration of its space a real
   emulated deployment (`revati-tune search`; a rerun of this script resumes it and reruns
   nothing it has).
2. Replays: for each sampler (the study's TPE, and random as the baseline) and each seed, a fresh
   Optuna study with that sampler, configured exactly as `revati-tune search` configures it
   (autotune/study.py), gets `--share` of the grid's size in trials. Each configuration it
   proposes is scored with the grid's measured result for it: the emulated runs are
   deterministic up to CPU-time noise, so that is what a second deployment would return, and a
   real search reuses results the same way when a configuration is proposed again.
3. Per sampler: the hypervolume of each replay's feasible front as a share of the grid's
   (reports/pareto.py: zero goodput and search.max_gpus + 1 GPUs bound it), over seeds, and the
   distinct configurations each replay evaluated.

    python3 benchmarks/search_efficiency.py [--study benchmarks/search_efficiency.yaml] [--seeds 20] [--share 0.4]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autotune import config as study_config, study as studies  # noqa: E402
from autotune.search import search  # noqa: E402
from autotune.trial import TrialResult  # noqa: E402
from reports.loading import trials_frame  # noqa: E402
from reports.pareto import hypervolume  # noqa: E402


def front_hypervolume(study: optuna.Study, reference_gpus: float) -> float:
    return hypervolume(trials_frame(study), reference_gpus)


def measured(grid: optuna.Study, trial: optuna.Trial) -> TrialResult:
    """The grid's result for the trial's configuration (a failed grid run stays failed)."""
    result = studies.result_of_same_configuration(grid, trial)
    if result is not None:
        return result
    failed = next(t for t in grid.get_trials(deepcopy=False) if t.params == trial.params)
    return TrialResult("failed", failed.user_attrs.get("gpus", 0), failed.user_attrs.get("reason", ""))


def replay(config: study_config.StudyConfig, grid: optuna.Study, sampler: str, seed: int,
           budget: int) -> tuple[optuna.Study, int]:
    """A study of `budget` trials with this sampler, scored from the grid; and how many distinct
    configurations it evaluated."""
    cfg = dataclasses.replace(config, search={**config.search, "sampler": sampler, "seed": seed, "trials": budget})
    study = optuna.create_study(directions=studies.DIRECTIONS, sampler=studies.sampler(cfg))
    study.set_user_attr("slo", {"attainment": config.attainment})
    space = config.space()
    evaluated = set()
    for _ in range(budget):
        trial = study.ask()
        space.suggest(trial)
        result = studies.result_of_same_configuration(study, trial)
        if result is None:
            evaluated.add(tuple(sorted(trial.params.items())))
            result = measured(grid, trial)
        studies.record(study, trial, result, config.attainment)
    return study, len(evaluated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(REPO / "benchmarks" / "search_efficiency.yaml"))
    parser.add_argument("--seeds", type=int, default=20, help="replays per sampler")
    parser.add_argument("--share", type=float, default=0.4, help="trials per replay, as a share of the grid")
    parser.add_argument("--samplers", default="tpe,random", help="samplers to replay (search.sampler values)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the study (out=DIR, ...)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    config = study_config.load(args.study, [*args.overrides, "search.sampler=grid"])
    started = time.monotonic()
    search(config)
    grid_wall = time.monotonic() - started
    grid = optuna.load_study(study_name=config.study_name, storage=config.storage)
    size = config.search["trials"]
    reference_gpus = config.search["max_gpus"] + 1
    frame = trials_frame(grid)
    best = hypervolume(frame, reference_gpus)
    outcomes = list(frame["outcome"])
    print(f"grid: {size} configurations ({', '.join(f'{outcomes.count(o)} {o}' for o in sorted(set(outcomes)))}), "
          f"{int(frame['feasible'].sum())} within the SLOs, hypervolume {best:.4g}, "
          f"{grid_wall:.0f} s wall this time (study in {config.out})")
    if best <= 0:
        print("no configuration of the grid meets the SLOs: nothing to measure the samplers against")
        return 1

    budget = math.floor(args.share * size)
    print(f"replays: {budget} trials each ({budget / size:.0%} of the grid), {args.seeds} seeds per sampler")
    print(f"{'sampler':8} {'median HV share':>16} {'min':>6} {'seeds >= 95%':>13} {'configurations evaluated':>25}")
    for sampler in args.samplers.split(","):
        shares, evaluations = [], []
        for seed in range(args.seeds):
            study, evaluated = replay(config, grid, sampler, seed, budget)
            shares.append(front_hypervolume(study, reference_gpus) / best)
            evaluations.append(evaluated)
        reached = sum(share >= 0.95 for share in shares)
        print(f"{sampler:8} {statistics.median(shares):>15.1%} {min(shares):>6.1%} {reached:>6}/{args.seeds:<6} "
              f"{statistics.median(evaluations):>10.0f} median, {max(evaluations)} max ({max(evaluations) / size:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
