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


def test_the_host_is_sampled_on_another_core_while_a_server_runs(engine_python, tmp_path):
    import subprocess
    import time
    from emulator import paths
    samples = tmp_path / "host_cpu.txt"
    started = time.time()
    sampler = subprocess.Popen([str(engine_python), "-m", "emulator.host_cpu", "--sample", str(samples),
                                "--every", "0.05"], cwd=paths.REPO, env={"PYTHONPATH": str(paths.REPO)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not samples.is_file() or len(samples.read_text().splitlines()) < 6):
            time.sleep(0.1)
    finally:
        sampler.terminate()
        sampler.wait()
    lines = samples.read_text().splitlines()
    figure = host_cpu.during(samples, started, time.time())
    assert figure["rounds"] == len(lines) >= 6 and figure["while_serving"]
    assert 0.001 < figure["spread"][0] <= figure["seconds"] <= figure["spread"][1] < 5
    # Only the rounds inside the window count: the server's start-up is not its serving.
    first, second = (float(line.split()[0]) for line in lines[:2])
    assert host_cpu.during(samples, first, (first + second) / 2)["rounds"] == 1
    assert host_cpu.during(samples, started - 10, started - 5) is None
    assert host_cpu.during(tmp_path / "absent.txt", started, time.time()) is None
