"""The Ray runner against a real two-node Ray cluster on this host: a smoke study of two trials
(real emulated vLLM deployments) lands in the Optuna study as the local runner records it, and
a rerun resumes without running anything.

The cluster's nodes are `ray start --block` processes, each leading a session of its own: the
teardown ends exactly those sessions (`ray stop --force` would end every Ray on this shared
machine, other people's included) and checks nothing of them is left.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import ray

from autotune import config as study_config
from autotune import study as studies
from autotune.search import search
from emulator.process_groups import group_alive

REPO = Path(__file__).resolve().parent.parent
ATTRS = ("knobs", "gpus", "engine", "run_dir", "command", "deploy_command", "outcome", "reason",
         "goodput_per_gpu", "slo_attainment")

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """The processes of a session (field 6 of /proc/PID/stat)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def _start_node(args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    # Without token authentication, whatever ~/.ray/auth_token holds: a head finding a token there
    # turns it on, a node joining it does not (and fails), and a driver connecting sends a token
    # only with RAY_AUTH_MODE=token set before Ray reads its config. A loopback cluster of a test.
    with open(log, "w") as out:
        node = subprocess.Popen(["ray", "start", *args, "--num-cpus", "2", "--node-ip-address", "127.0.0.1",
                                 "--disable-usage-stats", "--block"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    deadline = time.monotonic() + 120
    while "--block" not in log.read_text():       # printed once the node's processes are up
        assert node.poll() is None, f"ray start failed:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"ray start did not come up:\n{log.read_text()}"
        time.sleep(0.5)
    return node


@pytest.fixture
def ray_cluster():
    # A short folder of our own: Ray's socket paths must stay under the Unix limit.
    temp = Path(tempfile.mkdtemp(prefix="rt-ray-", dir="/tmp"))
    port = _free_port()
    nodes = []
    try:
        nodes.append(_start_node(["--head", "--port", str(port), "--include-dashboard", "false",
                                  "--temp-dir", str(temp / "head")], temp / "head.log", temp))
        nodes.append(_start_node(["--address", f"127.0.0.1:{port}", "--temp-dir", str(temp / "worker")],
                                 temp / "worker.log", temp))
        yield f"127.0.0.1:{port}"
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)    # `ray start --block` ends its node's processes
        deadline = time.monotonic() + 30
        while any(_session(node.pid) for node in nodes) and time.monotonic() < deadline:
            time.sleep(0.5)
        for node in nodes:
            for pid in _session(node.pid):
                os.kill(pid, signal.SIGKILL)
            node.wait()
        left = {node.pid: _session(node.pid) for node in nodes}
        shutil.rmtree(temp, ignore_errors=True)
        assert not any(left.values()), f"Ray processes left behind: {left}"


def test_ray_runner_smoke_study(ray_cluster, tmp_path):
    ray.init(address=ray_cluster, log_to_driver=False, logging_level="WARNING")
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and ray.cluster_resources()["CPU"] == 4
    finally:
        ray.shutdown()
    # TP1 in eager mode: what is tested is the runner, and a TP2 trial compiling with CUDA graphs
    # on made this one of the slowest tests of the suite.
    overrides = ["search.runner=ray", f"search.ray_address={ray_cluster}", "search.trials=2",
                 "search.parallel=1", "search.space.tensor_parallel_size=[1]", "engine.enforce_eager=true",
                 f"out={tmp_path}"]
    config = study_config.load(REPO / "conf/smoke.yaml", overrides)

    started = time.monotonic()
    report = search(config)
    print(f"two trials through Ray in {time.monotonic() - started:.0f} s")
    assert report.is_file()

    study = optuna.load_study(study_name=config.study_name, storage=config.storage)
    trials = study.get_trials()
    assert len(trials) == 2
    for trial in trials:
        assert set(ATTRS) <= set(trial.user_attrs), trial.user_attrs
        outcome = trial.user_attrs["outcome"]
        assert outcome in studies.COUNTED, (outcome, trial.user_attrs["reason"])
        assert trial.user_attrs["run_dir"] == str(tmp_path.resolve() / "trials" / f"{trial.number:04d}")
        assert trial.constraints["slo_attainment"] == pytest.approx(
            config.attainment - trial.user_attrs["slo_attainment"])
        expected = optuna.trial.TrialState.COMPLETE if outcome in ("ok", "infeasible") else optuna.trial.TrialState.FAIL
        assert trial.state == expected
        # The deployment's processes are gone.
        processes = Path(trial.user_attrs["run_dir"]) / "processes.json"
        if processes.is_file():
            assert not any(group_alive(pid) for pid in json.loads(processes.read_text()).values())
    ok = [t for t in trials if t.user_attrs["outcome"] == "ok"]
    assert ok, [(t.user_attrs["outcome"], t.user_attrs["reason"]) for t in trials]
    for trial in ok:
        assert trial.user_attrs["metrics"]["completed"] > 0
        assert trial.values == [trial.user_attrs["goodput_per_gpu"], trial.user_attrs["gpus"]]
        assert (Path(trial.user_attrs["run_dir"]) / "summary.json").is_file()
    assert any((tmp_path / "ray").iterdir())        # Ray Tune's folder stays under out

    # The same command again: the budget is spent, nothing new runs.
    search(config)
    assert len(optuna.load_study(study_name=config.study_name, storage=config.storage).get_trials()) == 2
    assert not ray.is_initialized()


def test_ctrl_c_stops_the_ray_search(tmp_path):
    """Ctrl-C to `revati-tune search` with a Ray it started itself: the running trial's deployment
    is stopped, the trial recorded as interrupted and queued again, and nothing is left running,
    not even a Ray token file in the home folder."""
    token_file = Path.home() / ".ray" / "auth_token"
    had_token = token_file.exists()
    driver = subprocess.Popen([sys.executable, "-m", "autotune.cli", "search", "conf/smoke.yaml", "search.runner=ray",
                               "search.trials=1", f"out={tmp_path}"], cwd=REPO, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")})
    processes = tmp_path / "trials" / "0000" / "processes.json"
    try:
        deadline = time.monotonic() + 300
        while not processes.is_file():             # the deployment is up
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
            time.sleep(1)
        time.sleep(5)
        os.killpg(driver.pid, signal.SIGINT)        # as the terminal sends Ctrl-C to its foreground group
        output = driver.communicate(timeout=240)[0]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 130, output
    assert "run the same command to resume" in output

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path}/study.db")
    interrupted, queued = study.get_trials()
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert interrupted.user_attrs["outcome"] == "interrupted"
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.system_attrs["fixed_params"] == interrupted.params
    assert studies.budget_used(study) == 0
    assert not any(group_alive(pid) for pid in json.loads(processes.read_text()).values())
    deadline = time.monotonic() + 30                # Ray's own processes (the driver's session)
    while _session(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _session(driver.pid)
    assert token_file.exists() == had_token
