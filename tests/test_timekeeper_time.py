"""Virtual time inside emulated processes (emulator/vgpu/time/interpose_time.c).

Under a Timekeeper every clock a process reads is the deployment's virtual clock, and every sleep
or finite timeout is a time jump: C programs, plain Python, asyncio (and uvloop) and ZeroMQ across
processes. Virtual durations are asserted to a few milliseconds (the CPU time a thread spends is
charged to it); wall times only loosely, for a loaded 2-core host.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from emulator.vgpu_environment import vgpu_environment
from timekeeper_fixtures import json_line, live_deployment as deployment

PROGRAMS = Path(__file__).parent / "timekeeper_programs"
VIRTUAL_ABS = 0.005     # seconds: CPU time charged around a measured wait
WALL_LIMIT = 10.0       # seconds: every test here sleeps tens of virtual seconds


# ---- 0. the interposers can bind at all ------------------------------------------------------------------

INTERPOSED = ("clock_gettime", "gettimeofday", "time", "nanosleep", "clock_nanosleep", "usleep", "sleep",
              "poll", "ppoll", "select", "pselect", "epoll_wait", "epoll_pwait", "epoll_pwait2",
              "pthread_cond_timedwait", "pthread_cond_clockwait", "sem_timedwait", "sem_clockwait")


def test_interposers_are_unversioned():
    """Callers ask for clock_gettime@GLIBC_2.17 and the like. The dynamic linker lets a preloaded
    definition satisfy that only if it is unversioned (Base); in a named version node
    (REVATI_VGPU) it is silently skipped and the host's clock is used."""
    from emulator.vgpu.build import LIBRARY, build_library
    table = subprocess.run(["objdump", "-T", str(build_library() / LIBRARY)], capture_output=True,
                           text=True, check=True).stdout
    versions = {}
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[3] == ".text" and fields[-1] in INTERPOSED:
            versions[fields[-1]] = fields[-2]
    assert set(versions) == set(INTERPOSED), sorted(set(INTERPOSED) - set(versions))
    assert all(v == "Base" for v in versions.values()), (
        f"the library defines libc's time functions in version nodes, so they never interpose: "
        f"{versions}; emulator/vgpu/build.py must leave interpose_*.c's symbols unversioned")


# ---- 1. C: clocks, sleeps, descriptor timeouts, condition variables, semaphores --------------------

@pytest.fixture(scope="module")
def time_checks(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("no C compiler (cc/gcc) found")
    binary = tmp_path_factory.mktemp("time-checks") / "time_checks"
    proc = subprocess.run([cc, "-O2", "-Wall", "-pthread", str(PROGRAMS / "time_checks.c"), "-o", str(binary)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return binary


def parse_checks(stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.strip()}


def test_c_program_clocks_sleeps_and_timeouts_are_virtual(tmp_path, time_checks):
    with deployment(tmp_path) as d:
        d.start([time_checks])
        [(_, out, _)], wall = d.finish()
        jumps = d.timekeeper.jumps
    checks = parse_checks(out)
    assert "done" in checks, out

    def expect(name, rc, seconds, err="-"):
        got_rc, got_err, elapsed = checks[name][0], checks[name][1], float(checks[name][2])
        assert (int(got_rc), got_err) == (rc, err), f"{name}: {checks[name]}"
        assert elapsed == pytest.approx(seconds, abs=VIRTUAL_ABS), f"{name}: {checks[name]}"

    # nanosleep(2 s): every clock but the CPU clock moved by exactly the slept virtual time.
    assert checks["nanosleep"][:2] == ["0", "-"] and float(checks["nanosleep"][2]) == pytest.approx(2, abs=VIRTUAL_ABS)
    assert checks["nanosleep"][3:] == ["rem", "0.000000000"]
    clocks = dict(zip(checks["clocks"][::2], map(float, checks["clocks"][1::2])))
    for name in ("realtime", "boottime", "raw", "coarse", "tai", "gettimeofday"):
        assert clocks[name] == pytest.approx(2, abs=VIRTUAL_ABS), (name, clocks)
    assert clocks["time"] in (1, 2, 3)
    assert clocks["cpu"] < 0.05          # CPU time is the host's: a sleep costs none
    # Virtual wall time is the host's at the deployment's start plus virtual time: a little ahead.
    assert 0 <= float(checks["realtime_vs_host"][0]) < 60

    expect("clock_nanosleep_abs_monotonic", 0, 1.5)
    assert float(checks["abs_overshoot"][0]) == pytest.approx(0, abs=VIRTUAL_ABS)
    expect("clock_nanosleep_abs_realtime", 0, 0.75)
    expect("clock_nanosleep_abs_past", 0, 0)
    expect("clock_nanosleep_rel", 0, 0.25)
    assert checks["clock_nanosleep_invalid"][:2] == ["22", "-"]     # the error number, not -1
    assert checks["nanosleep_invalid"][:2] == ["-1", "EINVAL"]      # -1 and errno
    expect("nanosleep_zero", 0, 0)
    expect("usleep", 0, 0.25)
    expect("sleep", 0, 1)

    expect("poll_timeout", 0, 3)
    expect("poll_zero", 0, 0)
    expect("poll_no_fds", 0, 0.4)
    expect("ppoll_timeout", 0, 0.6)
    expect("select_timeout", 0, 1.5)
    assert checks["select_cleared"] == ["0", "left", "0.000000"]
    expect("pselect_timeout", 0, 0.6)
    expect("epoll_wait_timeout", 0, 2)
    expect("epoll_pwait_timeout", 0, 0.7)
    expect("epoll_pwait2_timeout", 0, 0.3)
    # Data that a second thread writes after its own virtual sleep ends the wait then, not at
    # the 10 s deadline; the caller sees its descriptor only.
    expect("poll_data", 1, 1.0)
    assert checks["poll_data_revents"] == ["1"]                     # POLLIN
    expect("epoll_data", 1, 0.5)
    expect("select_data", 1, 0.25)
    assert checks["select_data_set"] == ["1"]

    expect("cond_timedwait_monotonic", 110, 1.0)                    # ETIMEDOUT
    assert checks["cond_mutex_held"] == ["1"]
    expect("cond_timedwait_realtime", 110, 1.25)
    expect("cond_clockwait", 110, 0.5)
    expect("cond_timedwait_past", 110, 0)
    expect("cond_signalled", 0, 0.5)

    expect("sem_timedwait", -1, 1.0, "ETIMEDOUT")
    assert checks["sem_value_after_timeout"] == ["0"]               # the Timekeeper's post is not left behind
    expect("sem_clockwait", -1, 0.5, "ETIMEDOUT")
    assert checks["sem_available"][:1] == ["0"] and float(checks["sem_available"][2]) < VIRTUAL_ABS
    assert checks["sem_posted"][0] == "0" and float(checks["sem_posted"][2]) == pytest.approx(0.5, abs=VIRTUAL_ABS)
    assert checks["sem_value_after_post"] == ["0"]

    # A signal ends a virtual sleep as it ends a real one.
    expect("nanosleep_signal", -1, 1.0, "EINTR")
    assert float(checks["nanosleep_signal_rem"][0]) == pytest.approx(9, abs=VIRTUAL_ABS)

    assert jumps > 0
    print(f"C checks: ~{sum(float(v[2]) for k, v in checks.items() if len(v) == 3 and k != 'clocks'):.1f} "
          f"virtual s in {wall:.3f} s wall, {jumps} jumps")
    assert wall < WALL_LIMIT


# ---- 2. Python: time, threading, queue, select ---------------------------------------------------

def test_python_time_sleep_and_timeouts_are_virtual(tmp_path):
    with deployment(tmp_path) as d:
        d.start(["python3", PROGRAMS / "python_time.py"])
        [(_, out, _)], wall = d.finish()
        jumps = d.timekeeper.jumps
    r = json_line(out)
    for key in ("sleep_monotonic", "sleep_time", "sleep_perf_counter", "sleep_realtime"):
        assert r[key] == pytest.approx(30, abs=VIRTUAL_ABS), (key, r)
    assert r["sleep_thread_time"] < 0.05
    assert r["event_result"] is False and r["event_waited"] == pytest.approx(5, abs=VIRTUAL_ABS)
    assert r["queue_raised"] and r["queue_waited"] == pytest.approx(2, abs=VIRTUAL_ABS)
    assert r["select_ready"] == 0 and r["select_waited"] == pytest.approx(1.5, abs=VIRTUAL_ABS)
    assert r["lock_acquired"] and r["lock_waited"] == pytest.approx(0.5, abs=VIRTUAL_ABS)
    assert r["contended_acquired"] is False and r["contended_waited"] == pytest.approx(1, abs=VIRTUAL_ABS)
    assert not r["untimed_acquired_while_held"] and r["untimed_acquired_after_release"]
    assert jumps > 0
    print(f"python: 40.6 virtual s in {wall:.3f} s wall, {jumps} jumps")
    assert wall < WALL_LIMIT


def test_without_a_timekeeper_time_is_the_hosts(tmp_path):
    """No Timekeeper: every interposed function is the real one."""
    env = vgpu_environment(1, "h100", workdir=tmp_path)
    env.pop("REVATI_TIMEKEEPER", None)
    env.pop("REVATI_TIMEKEEPER_CLOCK", None)
    code = ("import time, select, os, threading, json\n"
            "w0, m0 = time.time(), time.monotonic()\n"
            "time.sleep(0.2); r, w = os.pipe(); select.select([r], [], [], 0.1); threading.Event().wait(0.1)\n"
            "print(json.dumps({'wall': time.time() - w0, 'mono': time.monotonic() - m0}))\n")
    start = time.monotonic()
    proc = subprocess.run(["python3", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    r = json_line(proc.stdout)
    assert 0.4 <= r["mono"] <= elapsed and r["wall"] == pytest.approx(r["mono"], abs=0.05)


# ---- 3. asyncio (and uvloop) across two processes ----------------------------------------------------

def _asyncio_pair(tmp_path: Path, python, loop_args: list[str]) -> None:
    with deployment(tmp_path) as d:
        server = d.start([python, PROGRAMS / "asyncio_pair.py", "server", *loop_args])
        port = d.first_line(server)
        d.start([python, PROGRAMS / "asyncio_pair.py", "client", port, *loop_args])
        [(_, server_out, _), (_, client_out, _)], wall = d.finish()
        jumps = d.timekeeper.jumps
    s, c = json_line(server_out), json_line(client_out)
    if loop_args:
        assert c["loop"].startswith("uvloop"), c
    assert c["slept"] == pytest.approx(30, abs=VIRTUAL_ABS), c
    assert c["loop_slept"] == pytest.approx(30, abs=0.01), c      # uvloop's loop.time() has ms steps
    # One clock: the server read its monotonic just after the client sent its own.
    assert s["client_sent"] == c["sent"] and c["server"] == s["received"]
    assert 0 <= s["received"] - c["sent"] < 0.01, (s, c)
    assert jumps > 0
    print(f"asyncio {loop_args or ['asyncio']}: 30 virtual s in {wall:.3f} s wall, {jumps} jumps, "
          f"server - client = {(s['received'] - c['sent']) * 1e3:.3f} ms")
    assert wall < WALL_LIMIT


def test_asyncio_processes_share_one_virtual_clock(tmp_path):
    _asyncio_pair(tmp_path, "python3", [])


def _vllm_python() -> Path:
    from emulator.engines.envs import env_python
    python = env_python("vllm")
    if not python.exists():
        pytest.skip(f"the vllm env is not set up ({python})")
    return python


def test_uvloop_processes_share_one_virtual_clock(tmp_path):
    python = _vllm_python()
    if subprocess.run([python, "-c", "import uvloop"], capture_output=True).returncode != 0:
        pytest.skip("uvloop is not installed in the vllm env")
    _asyncio_pair(tmp_path, python, ["uvloop"])


# ---- 4. ZeroMQ across two processes ----------------------------------------------------------------------

def test_zmq_poll_timeout_is_virtual_across_processes(tmp_path):
    python = _vllm_python()
    if subprocess.run([python, "-c", "import zmq"], capture_output=True).returncode != 0:
        pytest.skip("pyzmq is not installed in the vllm env")
    with deployment(tmp_path) as d:
        rep = d.start([python, PROGRAMS / "zmq_pair.py", "rep"])
        port = d.first_line(rep)
        d.start([python, PROGRAMS / "zmq_pair.py", "req", port])
        [(_, rep_out, _), _], wall = d.finish()
        jumps = d.timekeeper.jumps
    r = json_line(rep_out)
    # The REP side's 5 s poll ends when the request sent after the REQ side's 3 s sleep arrives.
    assert r["ready"] and r["waited"] == pytest.approx(3, abs=VIRTUAL_ABS), r
    assert 0 <= r["woke"] - r["sent"] < 0.01, r
    assert jumps > 0
    print(f"zmq: poll woke after {r['waited']:.6f} virtual s, {wall:.3f} s wall, {jumps} jumps")
    assert wall < WALL_LIMIT
