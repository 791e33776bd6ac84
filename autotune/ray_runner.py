"""The Ray runner (search.runner=ray): the study's trials as Ray Tune trials, placed by Ray on the
nodes of a cluster, one emulated deployment per CORES_PER_DEPLOYMENT cores.

Ray Tune drives; the search is Optuna's all the same: `_StudySearch` is Ray's OptunaSearch on the
study's own storage, name and sampler, so both runners fill the same study and a study started
with one resumes with the other. The searcher runs in this driver process and is the only writer
of the study: trainables only serve (autotune/trial.py) and report the TrialResult back, which the
searcher records exactly like the local runner (autotune.study.record). Ray Tune's own experiment
state under <out>/ray is a by-product, never restored: the Optuna storage is the checkpoint.

Ctrl-C (or SIGTERM): no new trials are suggested, running trials are stopped like Ctrl-C stops a
run (their deployments end), recorded as interrupted and queued again, then the search raises
KeyboardInterrupt. Ray Tune's own Ctrl-C handler is switched off for this: it would kill the trial
actors after five seconds instead. A second Ctrl-C gives up waiting; a trial process whose Ray
worker dies stops its deployment itself (REVATI_DIE_WITH_PARENT, autotune/cli.py).

A cluster of several hosts needs, on every node: the same checkout of this repository at the same
path, installed with its dependencies, and `revati-tune setup vllm` (the engine environment).
Workers find the code through PYTHONPATH (set for this job below), so no working_dir or
py_modules upload is needed. A cluster with token authentication (Ray's default for a new one)
also needs RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) in the
environment of `revati-tune search`. Each trial writes its files to <out>/trials/NNNN on the node
that runs it: make `out` a shared filesystem mounted at the same path everywhere (NFS) for the
report's per-trial drill-down; objectives and attributes come back through Ray either way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import signal
import threading
import time
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autotune import study as studies
from autotune import trial as trials
from autotune.config import StudyConfig
from autotune.local_runner import CORES_PER_DEPLOYMENT, parallel_slots
from autotune.progress import StudyProgress, best_so_far, describe
from emulator import paths

# How often a trial looks whether the driver asked it to stop.
STOP_POLL_S = 1.0


def run_trials(config: StudyConfig, study: optuna.Study) -> None:
    left = config.search["trials"] - studies.budget_used(study)
    if left <= 0:
        return
    # Trials run in other processes, on other nodes, in Ray Tune's trial folders: absolute paths.
    config = dataclasses.replace(config, source=config.source.resolve(), out=config.out.resolve())
    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():        # else the caller's Ray, left as it is
            stack.enter_context(_ray(config.search["ray_address"]))
        _tune(config, study, left)


@contextlib.contextmanager
def _ray(address: str | None):
    # PYTHONPATH: trial workers import this repository (the trainable is pickled by reference),
    # and so does the `revati-tune run` process each trial starts from inside Ray's trial folder.
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join((str(paths.REPO), "${PYTHONPATH}"))}}
    quiet = dict(log_to_driver=False, logging_level="WARNING", runtime_env=runtime_env)
    auth = {}
    if not address and not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        # A new local Ray turns token authentication on and, lacking a token, writes one to
        # ~/.ray/auth_token, which later `ray start`s on this host pick up (a head does, a node
        # joining it does not, and fails). A token of this search's own in the environment that
        # Ray's processes inherit leaves no such file; RAY_AUTH_MODE, which Ray sets, is put back.
        auth = {"RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_AUTH_MODE": None}
    with _environ(**auth):
        if address:
            ray.init(address=address, **quiet)
        else:
            # "local": always a new Ray of our own, never one found running on this host.
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
        try:
            yield
        finally:
            ray.shutdown()


def _tune(config: StudyConfig, study: optuna.Study, left: int) -> None:
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: object) -> None:
        stop.set()              # the searcher suggests no more; _ForwardStop tells the trials
        for sig in previous:    # a second one is not waited on
            signal.signal(sig, signal.default_int_handler)

    flag = _StopFlag.remote()
    searcher = _StudySearch(config, study, stop)
    trainable = tune.with_resources(tune.with_parameters(_serve, config=config, flag=flag),
                                    {"cpu": CORES_PER_DEPLOYMENT})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=left,
                                    max_concurrent_trials=min(left, _slots(config))),
        run_config=tune.RunConfig(name=f"search-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=str(config.out / "ray"), verbose=0,
                                  callbacks=[_ForwardStop(stop, flag), _RecordErrors(searcher)]))
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        # Our Ctrl-C handling instead of Tune's; Tune's older output, which verbose=0 silences
        # (the newer one prints its experiment table at any verbosity). The study's progress
        # is shown as the local runner shows it.
        with _environ(TUNE_DISABLE_SIGINT_HANDLER="1", RAY_AIR_NEW_OUTPUT="0"), \
                StudyProgress(config.search["trials"], config.search["trials"] - left) as progress:
            searcher.progress = progress
            tuner.fit()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _environ(**values: str | None):
    """Environment variables set for a while (None: only restored afterwards)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if value is not None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _slots(config: StudyConfig) -> int:
    """Deployments at once: search.parallel, or with auto what this host takes (a Ray started
    here) or the cluster's cores (a cluster joined); Ray places them by cores either way."""
    if config.search["parallel"] != "auto" or not config.search["ray_address"]:
        return parallel_slots(config)
    return max(1, int(ray.cluster_resources().get("CPU", 0)) // CORES_PER_DEPLOYMENT)


def _serve(params: dict, config: StudyConfig, flag: ray.actor.ActorHandle) -> None:
    """The Ray trainable: one trial's deployment, on whichever node Ray placed it."""
    if params.get("same"):      # a configuration run before: its result, no second deployment
        result = trials.TrialResult(**json.loads(params["same"]))
    else:
        stop, done = threading.Event(), threading.Event()
        threading.Thread(target=_watch, args=(flag, stop, done), daemon=True).start()
        try:
            result = trials.evaluate(config, params["args"], Path(params["run_dir"]), stop)
        finally:
            done.set()
    # Numbers for Ray Tune (and OptunaSearch's metrics); the whole result for the study's record.
    tune.report({"goodput_per_gpu": result.goodput_per_gpu, "gpus": result.gpus, "outcome": result.outcome,
                 "trial_result": json.dumps(dataclasses.asdict(result))})


def _watch(flag: ray.actor.ActorHandle, stop: threading.Event, done: threading.Event) -> None:
    """Set `stop` once the driver asks (evaluate then stops the deployment) or is gone."""
    while not done.wait(STOP_POLL_S):
        try:
            stopped = ray.get(flag.is_set.remote(), timeout=30)
        except (ray.exceptions.RayError, TimeoutError):
            stopped = True
        if stopped:
            stop.set()
            return


@ray.remote(num_cpus=0)
class _StopFlag:
    """Ctrl-C in the driver, as trials on any node can see it."""

    def __init__(self) -> None:
        self.stopped = False

    def set(self) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped


class _ForwardStop(tune.Callback):
    """Raises the stop flag from Ray Tune's loop (not from the signal handler, which may interrupt
    a Ray call of that loop)."""

    def __init__(self, stop: threading.Event, flag: ray.actor.ActorHandle) -> None:
        self.stop, self.flag, self.sent = stop, flag, False

    def __getstate__(self) -> dict:
        return _picklable(self)

    def on_step_begin(self, iteration: int, trials: list, **info: object) -> None:
        if self.stop.is_set() and not self.sent:
            self.flag.set.remote()
            self.sent = True


class _StudySearch(OptunaSearch):
    """OptunaSearch on the study, recording each trial as the local runner does."""

    def __init__(self, config: StudyConfig, study: optuna.Study, stop: threading.Event) -> None:
        space = config.space()
        super().__init__(space=space.suggest, metric=studies.OBJECTIVES, mode=["max", "min"],
                         sampler=study.sampler, study_name=config.study_name,
                         storage=optuna.storages.get_storage(config.storage))
        self.config, self.stop, self.progress = config, stop, None
        self.args: dict[str, dict] = {}
        self.errored: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        if self.stop.is_set():
            return Searcher.FINISHED
        args = super().suggest(trial_id)
        trial = self._ot_trials[trial_id]
        self.args[trial_id] = args
        # As the local runner: a configuration proposed again takes the earlier result (it still
        # passes through Ray as a trial, which keeps Ray Tune's count of trials the budget's).
        same = studies.result_of_same_configuration(self._ot_study, trial)
        if same is not None:
            return {"args": args, "same": json.dumps(dataclasses.asdict(same))}
        run_dir = self.config.out / "trials" / f"{trial.number:04d}"
        # Before it runs, as the local runner does: recover_interrupted finds its leftovers.
        trial.set_user_attr("run_dir", str(run_dir))
        return {"args": args, "run_dir": str(run_dir)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        # Replaces OptunaSearch's tell: record() sets the attributes and the constraint, then tells
        # (failures and timeouts as FAIL), and a trial is told only once. A trainable that raised
        # or whose worker died is recorded by _RecordErrors, which Ray Tune calls next with the error.
        if error:
            self.errored.add(trial_id)
        elif result and "trial_result" in result:
            self._record(trial_id, trials.TrialResult(**json.loads(result["trial_result"])))
        else:                   # stopped before it ran
            self._record(trial_id, self._lost(trial_id, "the Ray trial ended without a result"))

    def record_error(self, trial_id: str, error_file: str | None) -> None:
        if trial_id in self.errored:
            self._record(trial_id, self._lost(trial_id, _ray_error(error_file)))

    def _record(self, trial_id: str, outcome: trials.TrialResult) -> None:
        if trial_id in self._completed_trials:
            return
        trial = self._ot_trials[trial_id]
        study = self._ot_study
        studies.record(study, trial, outcome, self.config.attainment, self.config.per_dollar)
        if outcome.outcome == "interrupted":
            studies.requeue(study, trial.params)
        self._completed_trials.add(trial_id)
        if self.progress is not None:
            self.progress.finished(trial.number, outcome.outcome, describe(outcome), best_so_far(study),
                                   counted=outcome.outcome != "interrupted")

    def _lost(self, trial_id: str, reason: str) -> trials.TrialResult:
        args = dict(self.args[trial_id])
        engine = args.pop("engine", self.config.engine)
        run_dir = self._ot_trials[trial_id].user_attrs.get("run_dir", "")
        gpus = self.config.run_config(args, engine).knobs.gpus
        return trials.TrialResult("failed", gpus, f"{reason} (logs in {run_dir})",
                                  user_attrs={"knobs": {**self.config.engines[engine].args, **args}, "gpus": gpus,
                                              "engine": engine, "run_dir": run_dir})

    def __getstate__(self) -> dict:
        return _picklable(self)

    def save(self, checkpoint_path: str) -> None:
        """Nothing: the Optuna storage is the search's state (and OptunaSearch.save's pickle of
        the space would fail on its knobs' conditions, which are lambdas)."""


class _RecordErrors(tune.Callback):
    """Records a trial whose trainable raised or whose Ray worker died, with Ray Tune's error."""

    def __init__(self, searcher: _StudySearch) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration: int, trials: list, trial, **info: object) -> None:
        self.searcher.record_error(trial.trial_id, trial.error_file)


def _ray_error(error_file: str | None) -> str:
    """What Ray Tune wrote of a failed trainable (the trial's error.txt) in a line: a lost worker
    (killed, the OOM killer, its node gone) or an exception the trainable raised.

    Such a trial is recorded failed, not retried (Tune's max_failures stays 0): its deployment,
    told by the worker's death, is still stopping in the same run folder, and a worker killed by
    the OOM killer is the configuration's own doing as often as a lost node is not."""
    try:
        text = Path(error_file).read_text(errors="replace") if error_file else ""
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    if not lines:
        return "the Ray trial failed, and Ray Tune wrote no error"
    if any("actor died" in line for line in lines):
        detail = next((line for line in lines if "Worker exit detail:" in line), "")
        return "the Ray worker running the trial died" + (
            f" ({detail.split('Worker exit detail:', 1)[1].split('.')[0].strip()})" if detail else "")
    return f"the Ray trial failed: {lines[-1][:300]}"


def _picklable(obj: object) -> dict:
    """Ray Tune pickles its search algorithm and callbacks with the experiment, for a
    Tuner.restore this runner never does (the study's storage is the state): without what only
    this driver's run uses, a stop event and the progress display, which do not pickle."""
    return {**obj.__dict__, "stop": None, "progress": None}
