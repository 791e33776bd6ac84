"""The Timekeeper across processes: collectives, deadlocks, dead processes (issue 3, items 3-4)."""
import sys
from pathlib import Path

import pytest

from timekeeper_fixtures import run_deployment
from vgpu_fixtures import compile_program, libdir  # noqa: F401 (fixture)

PROGRAMS = Path(__file__).parent / "timekeeper_programs"


@pytest.fixture(scope="module")
def allreduce_skew(tmp_path_factory, libdir):
    return compile_program(PROGRAMS / "allreduce_skew.cu", tmp_path_factory.mktemp("skew"),
                           [f"-L{libdir}", "-l:libnccl.so.2"]).binary


def test_allreduce_completes_at_last_arrival_plus_its_length(allreduce_skew):
    ranks = 4
    run = run_deployment([[allreduce_skew, r, ranks] for r in range(ranks)], gpus=ranks,
                         predictor_rules="kernel * 1.0\ncollective ncclAllReduce 0.5\n")
    assert run.failure is None, run.failure
    for p in run.processes:
        assert p.returncode == 0, p.stderr
    rows = [r for r in run.trace if r["kind"] == "collective"]
    assert sorted(r["device"] for r in rows) == list(range(ranks))
    arrivals = {r["device"]: r["start"] for r in rows}
    completions = {r["device"]: r["start"] + r["seconds"] for r in rows}
    # Rank r arrives after r + 1 one-second kernels (plus the little CPU time it spent starting).
    for rank in range(1, ranks):
        assert arrivals[rank] - arrivals[rank - 1] == pytest.approx(1.0, abs=0.05)
    # Every rank completes at the last arrival plus the all-reduce's predicted 0.5 s.
    expected = max(arrivals.values()) + 0.5
    for rank in range(ranks):
        assert completions[rank] == pytest.approx(expected, abs=1e-6)
    assert run.wall_s < 20


DEADLOCK = """
import os, time
time.sleep(0)                      # becomes an actor
r, w = os.pipe()
os.read(r, 1)                      # nobody will ever write: blocked with nothing to wait for
"""


def test_deadlock_is_reported_with_every_thread(tmp_path):
    run = run_deployment([[sys.executable, "-c", DEADLOCK]], deadlock_after_s=1.0, timeout=60)
    assert run.failure is not None and "deadlock" in run.failure
    assert "python" in run.failure and "thread" in run.failure
    assert run.wall_s < 15


CRASH = """
import os, signal, sys, time
if sys.argv[1] == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_dead_rank_is_reported_and_the_waiting_rank_fails_clearly(allreduce_skew):
    # Rank 1 of 2 dies before the all-reduce: rank 0 waits in it forever, which is a deadlock
    # whose report names the collective and the ranks that arrived.
    run = run_deployment([[allreduce_skew, 0, 2], [sys.executable, "-c", CRASH, "crash"]], gpus=2,
                         predictor_rules="kernel * 1.0\n", deadlock_after_s=1.0, timeout=60)
    assert run.failure is not None and "deadlock" in run.failure
    assert "ncclAllReduce" in run.failure and "ranks [0] of 2 have arrived" in run.failure
    assert any("exited without unregistering" in line for line in run.log)
    assert run.wall_s < 15
