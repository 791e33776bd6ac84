"""The revati-tune CLI: argument errors, doctor, and exec's process handling.

exec's tests replace the vGPU environment by the plain one: they check how the command is run
(exit status, signals, leftovers), not the virtual GPUs.
"""
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from autotune import cli


def error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("gpus", ["0", "17", "two", "-1"])
def test_bad_gpu_count(gpus, capsys):
    err = error_of(["exec", "--gpus", gpus, "--sku", "h100", "--", "true"], capsys)
    assert f"argument --gpus: must be an integer from 1 to 16, got '{gpus}'" in err


@pytest.mark.parametrize("option,value,bound", [
    ("--timeout", "0", "> 0"), ("--timeout", "-5", "> 0"), ("--cpu-scale", "0", "> 0"),
    ("--cpu-scale", "nan", "> 0"), ("--deadlock-after", "-1", ">= 0"), ("--deadlock-after", "soon", ">= 0"),
])
def test_bad_exec_numbers(option, value, bound, capsys):
    err = error_of(["exec", "--gpus", "1", "--sku", "h100", option, value, "--", "true"], capsys)
    assert f"argument {option}: must be a number {bound}, got '{value}'" in err


def test_bad_sku(capsys):
    err = error_of(["exec", "--gpus", "2", "--sku", "b300", "--", "true"], capsys)
    assert "argument --sku: unknown SKU 'b300': known SKUs are a100, h100, h200" in err


def test_exec_needs_a_command(capsys):
    err = error_of(["exec", "--gpus", "2", "--sku", "h100"], capsys)
    assert "revati-tune exec: error: a command is needed after `--`" in err


def test_unknown_engine(capsys):
    err = error_of(["setup", "tgi"], capsys)
    assert "invalid choice: 'tgi'" in err


def doctor_output(capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line, whatever the terminal
    code = cli.main(["doctor"])
    return code, capsys.readouterr().out


def test_doctor_runs(capsys, monkeypatch):
    code, out = doctor_output(capsys, monkeypatch)
    for name in ("python", "C compiler (cc)", "nvcc", "CUDA headers", "vGPU library", "vllm env"):
        assert name in out
    required_missing = [c for c in cli.doctor_checks() if c.required and not c.ok]
    assert code == (1 if required_missing else 0)


def test_doctor_names_the_fixes(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "cuda"))
    monkeypatch.setenv("REVATI_HOME", str(tmp_path / "home"))
    code, out = doctor_output(capsys, monkeypatch)
    assert code == 1
    assert "apt-get install gcc" in out
    assert f"install CUDA toolkit 13 at {tmp_path / 'cuda'}" in out
    assert "revati-tune setup vllm" in out
    assert "required piece(s) missing: C compiler (cc), nvcc, CUDA headers" in out


def test_doctor_only_warns_about_engine_envs(capsys, monkeypatch, tmp_path):
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "include").mkdir()
    (cuda / "bin" / "nvcc").write_text("")
    (cuda / "include" / "cuda.h").write_text("")
    monkeypatch.setattr(cli.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cli, "_library_check",
                        lambda: cli.Check("vGPU library", True, "/built", "revati-tune build"))
    monkeypatch.setenv("CUDA_HOME", str(cuda))
    monkeypatch.setenv("REVATI_HOME", str(tmp_path / "home"))
    code, out = doctor_output(capsys, monkeypatch)
    assert code == 0
    assert "warn" in out and "revati-tune setup vllm" in out


@pytest.fixture
def plain_exec(monkeypatch, tmp_path):
    """exec with the caller's environment instead of virtual GPUs; returns a scratch folder."""
    monkeypatch.setattr(cli, "vgpu_environment",
                        lambda gpus, sku, engine, workdir: dict(os.environ))
    return tmp_path


def exec_python(code: str) -> int:
    return cli.main(["exec", "--gpus", "1", "--sku", "h100", "--", sys.executable, "-c", code])


def test_exec_propagates_the_exit_status(plain_exec):
    assert exec_python("import sys; sys.exit(7)") == 7
    assert exec_python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)") == 128 + 15


def test_exec_of_a_missing_program(plain_exec, capsys):
    assert cli.main(["exec", "--gpus", "1", "--sku", "h100", "--", "/no/such/program"]) == 127
    assert "cannot run /no/such/program" in capsys.readouterr().err


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_exec_leaves_no_process_behind(plain_exec):
    pidfile = plain_exec / "grandchild.pid"
    code = ("import subprocess, sys; "
            "p = subprocess.Popen(['sleep', '60']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid))")
    assert exec_python(code) == 0
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)


def test_exec_forwards_sigint_to_the_group(plain_exec):
    # The child ignores SIGINT and exits with the signal number that ended its own child, so
    # only a SIGINT delivered to the whole group ends this quickly, with status 2.
    ready = plain_exec / "ready"
    code = ("import signal, subprocess, sys; "
            "p = subprocess.Popen(['sleep', '60']); "
            "signal.signal(signal.SIGINT, signal.SIG_IGN); "
            f"open({str(ready)!r}, 'w').write(str(p.pid)); "
            "sys.exit(-p.wait())")

    def interrupt_when_ready():
        deadline = time.monotonic() + 10
        while not (ready.exists() and ready.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt_when_ready)
    sender.start()
    started = time.monotonic()
    code = exec_python(code)
    sender.join()
    assert code == signal.SIGINT
    assert time.monotonic() - started < 10
    assert not alive(int(ready.read_text()))


def test_exec_charges_host_cpu_as_calibrated_in_the_commands_python(plain_exec, monkeypatch, capsys):
    """exec calibrates host CPU as `run` does, measured in the interpreter that runs the command;
    a command that is not Python is charged 1:1, and --cpu-scale overrides both."""
    from emulator import host_cpu
    scales, measured_in = [], []
    monkeypatch.setattr(cli, "Timekeeper", lambda cpu_scale, **kw: scales.append(cpu_scale) or _NoTimekeeper())
    monkeypatch.setattr(host_cpu, "calibrate", lambda sku, python: measured_in.append((sku, python))
                        or host_cpu.Calibration(1.25, "host CPU time charged x1.250: measured"))
    assert exec_python("pass") == 0
    assert cli.main(["exec", "--gpus", "1", "--sku", "h100", "--", "true"]) == 0
    assert cli.main(["exec", "--gpus", "1", "--sku", "h100", "--cpu-scale", "2", "--", sys.executable, "-c", ""]) == 0
    assert scales == [1.25, 1.0, 2.0]
    assert measured_in == [("h100", Path(sys.executable))]
    err = capsys.readouterr().err
    assert "x1.250: measured" in err and "charged 1:1 (not a Python command" in err


class _NoTimekeeper:
    failure = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def env(self):
        return {}


def test_exec_removes_what_the_command_left_in_shm_and_its_tmpdir(plain_exec):
    """A command that leaves a /dev/shm file it held and a file in its TMPDIR (a killed engine's
    queues and sockets): both are gone once exec returns."""
    shm = f"/dev/shm/revati-test-{os.getpid()}"
    noted = plain_exec / "tmpdir.txt"
    code = ("import mmap, os, tempfile, time\n"
            f"fd = os.open({shm!r}, os.O_CREAT | os.O_RDWR); os.ftruncate(fd, 4096)\n"
            "view = mmap.mmap(fd, 4096)\n"
            f"open({str(noted)!r}, 'w').write(tempfile.gettempdir())\n"
            "open(os.path.join(tempfile.gettempdir(), 'socket'), 'w').close()\n"
            f"time.sleep({cli.LOOK_S} * 2)\n")
    try:
        assert exec_python(code) == 0
        assert not os.path.exists(shm)
        assert not os.path.exists(noted.read_text())
    finally:
        if os.path.exists(shm):
            os.unlink(shm)
