"""The local runner: several emulated deployments at once on this host, each trial asked of the
study, evaluated (autotune/trial.py) and told back by one worker thread.

Threads, not processes: a worker only waits on its trial's `revati-tune run` process. Ctrl-C
(or SIGTERM) sets a stop flag; every running trial is stopped like Ctrl-C stops a run (its
deployment ends), recorded as interrupted and queued again, and the study stays resumable.
"""
from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import optuna

from autotune import study as studies
from autotune import trial as trials
from autotune.config import StudyConfig
from autotune.progress import StudyProgress, best_so_far, describe

# What one emulated deployment of a search needs: the engine's processes are busy on CPU
# (vLLM's scheduler, API server and workers) and each holds a few GiB of Python and torch.
CORES_PER_DEPLOYMENT = 2
GIB_PER_DEPLOYMENT = 6


def parallel_slots(config: StudyConfig) -> int:
    wanted = config.search["parallel"]
    if wanted != "auto":
        return wanted
    cores = len(os.sched_getaffinity(0))
    available_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return max(1, min(cores // CORES_PER_DEPLOYMENT, int(available_gib // GIB_PER_DEPLOYMENT), config.search["trials"]))


def run_trials(config: StudyConfig, study: optuna.Study) -> None:
    space = config.space()
    budget = config.search["trials"]
    lock = threading.Lock()
    stop = threading.Event()
    claimed = [studies.budget_used(study)]

    def claim() -> bool:
        with lock:
            if stop.is_set() or claimed[0] >= budget:
                return False
            claimed[0] += 1
            return True

    def worker() -> None:
        while claim():
            with lock:
                trial = study.ask()
            args = space.suggest(trial)
            result = studies.result_of_same_configuration(study, trial)
            if result is None:
                run_dir = (config.out / "trials" / f"{trial.number:04d}").resolve()
                trial.set_user_attr("run_dir", str(run_dir))
                result = trials.evaluate(config, args, run_dir, stop)
            with lock:
                studies.record(study, trial, result, config.attainment, config.per_dollar)
                if result.outcome == "interrupted":
                    studies.requeue(study, trial.params)
                    claimed[0] -= 1
            progress.finished(trial.number, result.outcome, describe(result), best_so_far(study),
                              counted=result.outcome != "interrupted")

    slots = parallel_slots(config)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with StudyProgress(budget, claimed[0]) as progress, ThreadPoolExecutor(slots) as pool:
            futures = [pool.submit(worker) for _ in range(slots)]
            try:
                while wait(futures, timeout=0.5).not_done:
                    pass
            except KeyboardInterrupt:
                stop.set()          # workers stop their trials (trial._wait sees the flag) and return
                wait(futures)
                raise
            for future in futures:
                future.result()
    finally:
        signal.signal(signal.SIGTERM, previous)
