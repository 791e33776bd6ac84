"""The Optuna study behind a search: objectives, constraint, sampler, and what each trial records.

Objectives: good requests per second per GPU (maximise: `request_goodput` of the run, which
counts requests meeting every SLO, divided by the deployment's GPUs) and GPUs (minimise: the
cost). A study over several GPU types (search.skus) cannot weigh an H200 against an H100 by count:
its objectives are good requests per dollar and dollars per hour, at search.price_per_gpu_hour;
with one type these order configurations exactly as the per-GPU pair does. Constraint: SLO attainment >= slo.attainment, as the trial's Optuna constraint, so the
Pareto front holds only configurations a user could deploy.

Sampler: multi-objective TPE (multivariate, grouped for conditional knobs, with the constraint).
Trials here cost minutes each and budgets are tens of trials; NSGA-II needs generations of about
fifty trials before selection does anything, while TPE models the space from its first ten or
so and handles knobs that exist only under others (group=True). nsga2 and random can be chosen,
and grid runs every configuration of a small space once, each queued as a trial
(benchmarks/search_efficiency.py measures TPE against it).

Storage is SQLite under the study's out folder by default: a rerun of the same command resumes,
and optuna-dashboard opens it. A trial interrupted by a stopped or killed driver is recorded as
failed with outcome "interrupted", does not count against the budget, and its configuration is
queued to run again.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError

from autotune.config import ConfigError, StudyConfig
from autotune.trial import TrialResult, end_leftovers

DIRECTIONS = ["maximize", "minimize"]
OBJECTIVES = ["goodput_per_gpu", "gpus"]
OBJECTIVES_PER_DOLLAR = ["goodput_per_dollar", "dollars_per_hour"]
COUNTED = ("ok", "infeasible", "pruned", "failed", "timeout")      # outcomes that use up the budget


def open_study(config: StudyConfig) -> optuna.Study:
    try:
        config.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"out: cannot create {config.out} ({error.strerror}); give a folder you can write") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=config.storage, study_name=config.study_name, directions=DIRECTIONS,
                                    sampler=sampler(config), load_if_exists=True)
    except (SQLAlchemyError, ImportError, OSError) as error:     # a bad URL, a missing driver, no such folder
        raise ConfigError(f"search.storage: cannot open {config.storage} ({str(error).strip().splitlines()[0]}); "
                          f"give an Optuna storage URL that opens, e.g. sqlite:///studies/NAME/study.db, or null "
                          f"for <out>/study.db") from None
    earlier = study.user_attrs.get("config", {})
    if earlier.get("model") not in (None, config.model):
        raise ValueError(f"search.study_name: the study {config.study_name!r} in {config.storage} is of model "
                         f"{study.user_attrs['config']['model']}, not {config.model}; pick another study_name or out")
    objectives = OBJECTIVES_PER_DOLLAR if config.per_dollar else OBJECTIVES
    if study.trials and (study.metric_names or OBJECTIVES) != objectives:
        raise ConfigError(f"search.skus: the study {config.study_name!r} in {config.storage} scored its trials by "
                          f"{' and '.join(study.metric_names or OBJECTIVES)}, this configuration by "
                          f"{' and '.join(objectives)}; pick another study_name or out")
    if config.per_dollar and earlier.get("prices") not in (None, config.prices):
        raise ConfigError(f"search.price_per_gpu_hour: the study {config.study_name!r} scored its trials at "
                          f"{earlier['prices']} USD per GPU-hour, not {config.prices}; keep its prices (re-price "
                          f"its report with `revati-tune report --price SKU=USD`) or pick another study_name")
    study.set_user_attr("config", config.as_dict())
    study.set_user_attr("slo", {f"{k}_ms": config.slos_ms.get(k) for k in ("ttft", "tpot", "e2el")}
                        | {"attainment": config.attainment})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objectives)
    if config.search["sampler"] == "grid":
        # Queued, not Optuna's GridSampler: that one calls Study.stop, which ask-and-tell refuses.
        # A configuration already tried (by an earlier run of this study) is not queued again.
        for params in config.space().configurations():
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    seed, name = config.search["seed"], config.search["sampler"]
    if name in ("random", "grid"):          # grid: every trial is queued, nothing is sampled
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    startup = min(10, max(2, config.search["trials"] // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)     # group=True
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=startup)


def budget_used(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") in COUNTED)


def result_of_same_configuration(study: optuna.Study, trial: optuna.Trial) -> TrialResult | None:
    """What an earlier trial with the very same parameters gave: a sampler proposing a
    configuration again (likely in small discrete spaces) gets its result without a second
    deployment. Emulated runs are deterministic up to CPU-time noise; a run again would mostly
    measure that noise."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for earlier in study.get_trials(deepcopy=False, states=done):
        attrs = earlier.user_attrs
        if earlier.params == trial.params and attrs.get("outcome") in ("ok", "infeasible", "pruned"):
            copied = {k: v for k, v in attrs.items() if k not in ("outcome", "reason", "goodput_per_gpu", "slo_attainment")}
            return TrialResult(attrs["outcome"], attrs["gpus"], attrs.get("reason", ""), attrs["goodput_per_gpu"],
                               attrs["slo_attainment"], {**copied, "same_as_trial": earlier.number})
    return None


def record(study: optuna.Study, trial: optuna.Trial, result: TrialResult, attainment: float,
           per_dollar: bool = False) -> None:
    """Store what the trial did, then tell Optuna: ok and infeasible trials complete with their
    objectives (an infeasible configuration serves nothing: zero goodput, constraint violated);
    pruned ones (autotune/pruning.py: the SLO target became out of reach) are PRUNED; failures and
    timeouts fail, so that a broken run never reads as a measured configuration."""
    # <= 0 is feasible: the share of requests missing the SLOs beyond what the target allows.
    trial.set_constraint("slo_attainment", attainment - result.slo_attainment)
    for key, value in result.user_attrs.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("outcome", result.outcome)
    trial.set_user_attr("reason", result.reason)
    trial.set_user_attr("goodput_per_gpu", result.goodput_per_gpu)
    trial.set_user_attr("slo_attainment", result.slo_attainment)
    if result.outcome in ("ok", "infeasible"):
        study.tell(trial, list(result.values(per_dollar)))
    elif result.outcome == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def recover_interrupted(study: optuna.Study) -> int:
    """Trials still RUNNING belong to a driver that was killed: end what is left of their
    deployments, fail them as interrupted and queue their configurations again."""
    recovered = 0
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_dir = frozen.user_attrs.get("run_dir")
        if run_dir:
            end_leftovers(Path(run_dir))
        trial = optuna.Trial(study, frozen._trial_id)
        trial.set_user_attr("outcome", "interrupted")
        trial.set_user_attr("reason", "the study driver stopped while it ran")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        requeue(study, frozen.params)
        recovered += 1
    return recovered


def requeue(study: optuna.Study, params: dict) -> None:
    """Queue an interrupted configuration to run again, once. Not enqueue_trial's skip_if_exists:
    that skips any trial with these parameters, the interrupted one included, so never queues."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if not any(t.system_attrs.get("fixed_params") == params for t in waiting):
        study.enqueue_trial(params)
