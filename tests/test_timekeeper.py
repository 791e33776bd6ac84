"""The Timekeeper across processes: a batching GPU worker and its client, collectives, deadlocks,
dead processes."""
import os
import shutil
import socket
import statistics
import sys
from pathlib import Path

import pytest

from timekeeper_fixtures import json_line, live_deployment, run_deployment
from vgpu_fixtures import compile_program, libdir  # noqa: F401 (fixture)

PROGRAMS = Path(__file__).parent / "timekeeper_programs"


@pytest.fixture(scope="module")
def batch_worker(tmp_path_factory, libdir):
    return compile_program(PROGRAMS / "batch_worker.cu", tmp_path_factory.mktemp("worker")).binary


def test_requests_over_tcp_follow_the_hand_computed_timeline(tmp_path, batch_worker):
    """A worker runs one 0.1 s batch step at a time for every active request; a client sends
    requests at fixed virtual times. B and D arrive in the middle of a step and join the next."""
    schedule = {"A": (0.0, 3), "B": (0.05, 2), "D": (0.25, 1), "C": (0.45, 1)}
    with live_deployment(tmp_path, predictor_rules="kernel * 0.1\n") as d:
        worker = d.start([batch_worker])
        port = d.first_line(worker)
        d.start([sys.executable, PROGRAMS / "batch_client.py", port,
                 *(f"{name}:{at}:{steps}" for name, (at, steps) in schedule.items())])
        [_, (_, client_out, _)], wall = d.finish()
    got = json_line(client_out)
    #            sent  read by worker  step start  finish
    expected = {"A": (0.00, 0.00, 0.00, 0.30),     # steps [0, .1] [.1, .2] [.2, .3]
                "B": (0.05, 0.10, 0.10, 0.30),     # arrives during step 1: steps 2 and 3
                "D": (0.25, 0.30, 0.30, 0.40),     # arrives during step 3: step 4 alone
                "C": (0.45, 0.45, 0.45, 0.55)}     # arrives idle: starts at once
    for name, (sent, arrival, start, finish) in expected.items():
        r = got[name]
        assert (r["sent"], r["arrival"], r["start"], r["finish"], r["received"]) == pytest.approx(
            (sent, arrival, start, finish, finish), abs=1e-3), (name, r)
    assert wall < 20


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


def test_torch_all_reduce_completes_at_last_arrival_plus_its_length():
    """torch.distributed on the NCCL backend in 4 processes: rank r sleeps r virtual seconds before
    the all-reduce; every rank's GPU finishes it at the last arrival plus its predicted 0.5 s."""
    from emulator.engines.envs import env_python, is_ready
    if not is_ready("vllm"):
        pytest.fail("the vllm engine env is not set up: run `revati-tune setup vllm`")
    ranks, port = 4, _free_port()
    run = run_deployment([[env_python("vllm"), PROGRAMS / "torch_allreduce_skew.py", r, ranks, port]
                          for r in range(ranks)], gpus=ranks, timeout=240,
                         predictor_rules="collective ncclAllReduce 0.5\n")
    assert run.failure is None, run.failure
    for p in run.processes:
        assert p.returncode == 0, p.stderr[-3000:]
    results = sorted((json_line(p.stdout) for p in run.processes), key=lambda r: r["rank"])
    for earlier, later in zip(results, results[1:]):
        assert later["arrived"] - earlier["arrived"] == pytest.approx(1.0, abs=0.01)
    last = results[-1]["arrived"]
    for r in results:
        assert r["done"] == pytest.approx(last + 0.5, abs=0.005), results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_spin_waits_cost_no_virtual_time_and_hold_off_no_jumps(tmp_path):
    """Three readers spin (sched_yield) on a shared-memory queue while its writer sleeps or
    computes, as vLLM's TP workers spin on their queue. Charged their spinning, readers on two
    cores would see each write late by their share of the host, and keep the deployment busy
    through every sleep. Here readers see writes when they were made, the writer sees every
    reader's 5 ms of work, and the sleeps are jumps. A reader that finds a write without waiting
    (descheduled past it in wall time) keeps its own, earlier time: shared memory carries no
    time (a limit README states), so sightings are asserted by their median and latest."""
    readers, rounds = 3, 10
    queue = tmp_path / "queue"
    queue.write_bytes(bytes(8 * (1 + readers)))
    program = PROGRAMS / "spin_queue.py"
    run = run_deployment([[sys.executable, program, "writer", queue, readers, rounds],
                          *[[sys.executable, program, "reader", queue, i, rounds] for i in range(readers)]],
                         timeout=120)
    assert run.failure is None, run.failure
    writer, *seen = [json_line(p.stdout) for p in run.processes]
    late = [reader["seen"][r] - written for reader in seen for r, written in enumerate(writer["written"])]
    took = [taken - written for taken, written in zip(writer["taken"], writer["written"])]
    print(f"spin queue: readers saw writes {statistics.median(late) * 1e3:.3f} ms late (median), "
          f"{max(late) * 1e3:.3f} ms at most; the writer saw them taken after {statistics.median(took) * 1e3:.2f} ms "
          f"(median); {run.jumps} jumps, {run.wall_s:.2f} s wall")
    assert 0 <= statistics.median(late) < 0.001 and max(late) < 0.002, late
    assert statistics.median(took) == pytest.approx(0.005, abs=0.0015), took
    assert run.jumps >= rounds // 2


def test_waits_ended_by_messages_in_flight_cost_no_jumps():
    """Two threads ping-pong through queues with 10 s timeouts: every wait is cancelled, and a
    thread often sleeps on its next wait before the Timekeeper has read the message that
    registered it, so the deployment looks idle with a message in flight thousands of times.
    The Timekeeper gave such a message up as lost (meant for a process killed while sending)
    when its timer had been started by an earlier, long over, message in flight, jumped 10 s,
    and then counted the message twice when it came, blind to one message in flight for the
    rest of the run: hundreds of 10 s jumps for 3000 rounds."""
    run = run_deployment([[sys.executable, PROGRAMS / "queue_pingpong.py", 3000]], timeout=120)
    assert run.failure is None, run.failure
    out = json_line(run.processes[0].stdout)
    print(f"queue ping-pong: {out['rounds']} rounds in {run.virtual_s:.3f} virtual s, {run.jumps} jumps, "
          f"{run.wall_s:.2f} s wall")
    assert out["took"] < 1.0 and run.virtual_s < 1.0, (out, run.virtual_s, run.jumps)
    assert not [line for line in run.log if "never arrived" in line], run.log


@pytest.mark.parametrize("thread_name", ["gloo_tcp_loop", "worker"])
def test_housekeeping_polls_are_stretched(thread_name):
    """A thread polling every 10 ms beside 5 s of sleep. Named as torch's gloo loop, its polls are
    housekeeping and time out after 1 virtual second, so they cost a few jumps; any other thread's
    timeouts are kept, 100 jumps a second."""
    run = run_deployment([[sys.executable, PROGRAMS / "housekeeping_poll.py", thread_name, 5]], timeout=120)
    assert run.failure is None, run.failure
    out = json_line(run.processes[0].stdout)
    print(f"{thread_name}: {out['polls']} polls timed out, {run.jumps} jumps, {run.wall_s:.2f} s wall")
    assert out["slept"] == pytest.approx(5.0, abs=0.05)
    if thread_name == "gloo_tcp_loop":
        assert 4 <= out["polls"] <= 7 and run.jumps <= 14, (out, run.jumps)
    else:
        assert out["polls"] >= 450 and run.jumps >= 450, (out, run.jumps)


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


def _cpu_scenario(tmp_path: Path, cpus: str | None, requests: int = 10) -> list[float]:
    pin = ["taskset", "-c", cpus] if cpus else []
    with live_deployment(tmp_path) as d:
        server = d.start([*pin, sys.executable, PROGRAMS / "cpu_scenario.py", "server", 2, requests])
        port = d.first_line(server)
        for index in range(2):
            d.start([*pin, sys.executable, PROGRAMS / "cpu_scenario.py", "client", port, index, requests])
        [_, *clients], wall = d.finish()
    return [t for _, out, _ in clients for t in json_line(out)["finishes"]]


@pytest.mark.skipif(os.cpu_count() < 2 or not shutil.which("taskset"), reason="needs 2 cores and taskset")
def test_cpu_work_gives_the_same_timeline_on_one_core_two_cores_and_twice(tmp_path):
    """The server and two clients do real CPU work (charged as CPU time, not wall time) and meet
    over TCP. Their virtual timeline is the same when run twice, all on one core, or on two.

    What a study reads of such a run (median latency, when the last answer came) is compared.
    Each placement runs three times and the fastest run counts: on a virtual machine the host
    sometimes runs this one's cores at half speed for seconds (seen: 4.2 ms of CPU work taking
    7.8 ms of CPU time for a dozen requests in a row), which CPU time cannot tell from more work."""
    due = _due_times(10)
    fastest = {}                    # placement -> (summary, latencies) of its fastest run
    for attempt in range(3):        # rounds over the placements, so that a slow spell hits them all
        for placement, cpus in (("free", None), ("one core", "0"), ("two cores", "0,1")):
            finishes = _cpu_scenario(tmp_path / f"{cpus}-{attempt}", cpus)
            latencies = [t - d for t, d in zip(finishes, due)]
            summary = (statistics.median(latencies), max(finishes))
            print(f"{placement:>10} run {attempt + 1}: median latency {summary[0] * 1e3:.3f} ms, mean "
                  f"{statistics.mean(latencies) * 1e3:.3f} ms, last answer at {summary[1]:.4f} s")
            fastest[placement] = min(fastest.get(placement, (summary, latencies)), (summary, latencies))
    for placement, (summary, latencies) in fastest.items():
        # Each request takes the server some 8 ms of CPU and a 30 ms step, after the client's own
        # CPU time: every request ends some 36-45 ms after it was due, never before 30 ms.
        assert all(0.030 < latency < 0.060 for latency in latencies), (placement, latencies)
        # 5%: on a 2-core host "free" and "two cores" are the same placement, and their fastest
        # runs were seen 2.7% apart (CI, 2026-12-06: 38.86 vs 39.96 ms median), CPU time's own
        # noise on ~9 ms of work a request. A leak of the host into virtual time as large as the
        # one measured on vLLM (+14% mean TTFT on one core) still fails here.
        assert summary == pytest.approx(fastest["free"][0], rel=0.05), placement


def _due_times(requests: int) -> list[float]:
    """When cpu_scenario.py's clients send, client by client (its schedule)."""
    return [0.08 * i + 0.04 * index for index in range(2) for i in range(requests)]


def test_an_error_inside_the_timekeeper_fails_the_deployment_with_its_traceback(monkeypatch):
    """A Timekeeper whose loop raises would leave its deployment waiting for jumps forever: it
    fails instead, naming the error, so the run ends with a reason."""
    from emulator.timekeeper.server import Timekeeper

    def broken(self, now):
        raise RuntimeError("the clock page is gone")

    monkeypatch.setattr(Timekeeper, "_advance_if_idle", broken)
    failures = []
    with Timekeeper(on_failure=failures.append, log=lambda line: None) as timekeeper:
        timekeeper._thread.join(timeout=10)
    assert len(failures) == 1 and "internal error" in failures[0] and "the clock page is gone" in failures[0]
