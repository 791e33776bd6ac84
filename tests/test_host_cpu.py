"""The host-CPU calibration (emulator/host_cpu.py): the workload measured in an engine's Python, its
cache, and the scale a SKU's server figure gives."""
import json

import pytest

from emulator import host_cpu
from emulator.engines.envs import env_python, is_ready


@pytest.fixture(scope="module")
def engine_python():
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    return env_python("vllm")


def test_the_workload_is_measured_in_the_engine_python_and_cached(engine_python, tmp_path, monkeypatch):
    figure = host_cpu.this_host(engine_python, tmp_path)
    assert 0.001 < figure["seconds"] < 5 and figure["spread"][0] <= figure["seconds"] <= figure["spread"][1]
    assert figure["workload_version"] == host_cpu.WORKLOAD_VERSION and figure["torch"]
    # Cached: a second call runs nothing.
    monkeypatch.setattr(host_cpu.subprocess, "run", lambda *a, **k: pytest.fail("measured again"))
    assert host_cpu.this_host(engine_python, tmp_path) == figure


def test_the_scale_is_the_servers_seconds_over_this_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr(host_cpu, "DATA_DIR", tmp_path)
    monkeypatch.setattr(host_cpu, "this_host", lambda python, cache: {"seconds": 0.040, "cpu": "AMD EPYC"})
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "host_cpu.json").write_text(json.dumps(
        {"seconds": 0.030, "cpu": "Intel Xeon", "workload_version": host_cpu.WORKLOAD_VERSION}))
    calibration = host_cpu.calibrate("h100", "python3")
    assert calibration.cpu_scale == pytest.approx(0.75)
    assert "x0.750" in calibration.note and "30.0 ms on h100's server (Intel Xeon)" in calibration.note
    # A SKU never measured is charged 1:1 and says so.
    uncalibrated = host_cpu.calibrate("h200", "python3")
    assert uncalibrated.cpu_scale == 1.0 and "not calibrated for h200" in uncalibrated.note
    # A figure of another workload version is refused, naming the fix.
    (tmp_path / "h100" / "host_cpu.json").write_text(json.dumps({"seconds": 0.03, "workload_version": 0}))
    with pytest.raises(ValueError, match="measure it again with `python -m emulator.host_cpu --out"):
        host_cpu.calibrate("h100", "python3")


def test_a_real_runs_own_figure_overrides_the_skus(tmp_path, monkeypatch):
    """validate charges an emulation the host as its real runs measured it, not the SKU's figure."""
    monkeypatch.setattr(host_cpu, "DATA_DIR", tmp_path)
    monkeypatch.setattr(host_cpu, "this_host", lambda python, cache: {"seconds": 0.040, "cpu": "AMD EPYC"})
    calibration = host_cpu.calibrate("h200", "python3", {"seconds": 0.050, "cpu": "Intel Xeon"})
    assert calibration.cpu_scale == pytest.approx(1.25) and calibration.host_work_scale == 1.0
    assert "50.0 ms on h200's server (Intel Xeon, measured with the real runs)" in calibration.note
    # The server's host work (graph builds, launches) was measured at the committed figure's speed:
    # a real run on a slower host charges it slower by as much.
    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / "host_cpu.json").write_text(json.dumps(
        {"seconds": 0.040, "cpu": "Intel Xeon", "workload_version": host_cpu.WORKLOAD_VERSION}))
    calibration = host_cpu.calibrate("h200", "python3", {"seconds": 0.050, "cpu": "Intel Xeon"})
    assert calibration.host_work_scale == pytest.approx(1.25) and "host work (cuDNN graph builds, launches) charged x1.250" in calibration.note
    assert host_cpu.calibrate("h200", "python3").host_work_scale == 1.0


def test_the_serving_thread_samples_the_host_between_steps_no_more_often_than_asked(engine_python, tmp_path):
    """ServingThreadSampler as the transformers server drives it: tick() before every step."""
    import subprocess
    from emulator import paths
    samples = tmp_path / "host_cpu.txt"
    script = (f"import time\nfrom pathlib import Path\nfrom emulator.host_cpu import ServingThreadSampler\n"
              f"sampler = ServingThreadSampler(Path({str(samples)!r}), every_s=0.2)\n"
              f"ticks, end = 0, time.monotonic() + 2.0\n"
              f"while time.monotonic() < end:\n    sampler.tick(); ticks += 1; time.sleep(0.01)\n"
              f"print(ticks)")
    run = subprocess.run([str(engine_python), "-c", script], cwd=paths.REPO, env={"PYTHONPATH": str(paths.REPO)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    figure = host_cpu.figure_of_samples(samples)
    # ~2 s of steps 10 ms apart: a round (tens of ms) every 0.2 s at most, none at the first step.
    assert int(run.stdout) > 20 and 2 <= figure["rounds"] <= 10
    assert 0.001 < figure["spread"][0] <= figure["seconds"] <= figure["spread"][1] < 5
    assert figure["in_serving_thread"] and figure["workload_version"] == host_cpu.WORKLOAD_VERSION
    # Between samples the "steps" were 10 ms sleeps: almost no CPU; every step but the first counted.
    assert 0 <= figure["step_cpu_s"] < 0.005 and figure["rounds"] * 10 <= figure["steps"] < int(run.stdout)
    assert host_cpu.figure_of_samples(tmp_path / "absent.txt") is None
