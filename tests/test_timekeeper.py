"""The Timekeeper across processes: a batching GPU worker and its client, collectives, deadlocks,
dead processes."""
import os
import shutil
import socket
import statistics
import subprocess
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


@pytest.mark.parametrize("ranks", [2, 4])
def test_custom_all_reduce_kernels_meet_like_collectives(tmp_path, libdir, ranks):
    """vLLM's custom all-reduce kernel (its name and signature), eager and replayed from a CUDA
    graph, on ranks that arrive 1 s apart: charged as a collective of its 16-byte packs, and every
    rank completes each one at the last arrival plus its predicted 0.5 s."""
    program = compile_program(PROGRAMS / "custom_allreduce_skew.cu", tmp_path).binary
    handles = tmp_path / "handles"
    handles.mkdir()
    run = run_deployment([[program, r, ranks, handles] for r in range(ranks)], gpus=ranks,
                         predictor_rules="kernel * 1.0\ncollective * 0.5\n")
    assert run.failure is None, run.failure
    for p in run.processes:
        assert p.returncode == 0, p.stderr
    rows = [r for r in run.trace if r["kind"] == "collective"]
    assert len(rows) == 3 * ranks, rows
    assert all("cross_device_reduce_1stage" in r["name"] and r["bytes"] == 4096 * 16 and r["nranks"] == ranks
               for r in rows), rows
    by_rank = {rank: sorted((r for r in rows if r["device"] == rank), key=lambda r: r["start"])
               for rank in range(ranks)}
    for k in range(3):      # the eager launch, then each replay
        arrivals = [by_rank[rank][k]["start"] for rank in range(ranks)]
        assert arrivals[-1] - arrivals[0] > 0.9 * (ranks - 1), arrivals   # the skew is there to wait out
        for rank in range(ranks):
            done = by_rank[rank][k]["start"] + by_rank[rank][k]["seconds"]
            assert done == pytest.approx(max(arrivals) + 0.5, abs=1e-6), (k, rank, arrivals)


def test_a_process_killed_after_going_idle_leaves_its_gpu_time_counted(tmp_path, libdir):
    """The statistics file is written when a thread goes idle after launches, so a process killed
    without running exit handlers (vLLM's workers at shutdown) still has its launches counted."""
    program = compile_program(PROGRAMS / "killed_after_launches.cu", tmp_path).binary
    stats = tmp_path / "stats-%p.csv"
    run = run_deployment([[program]], predictor_rules="kernel * 0.001\n", env={"REVATI_VGPU_STATS": str(stats)})
    assert run.processes[0].returncode == -9
    [written] = tmp_path.glob("stats-*.csv")
    rows = [line.split(",") for line in written.read_text().splitlines()[1:]]
    assert [(kind, int(count)) for kind, _, count, _ in rows] == [("kernel", 100)], rows


def test_a_catch_up_with_the_latest_send_anywhere_is_counted_in_the_statistics(tmp_path):
    """A thread that slept on a lock the library does not see catches up with the latest send
    anywhere; the process's statistics count it (kind catch_up), though the process launched
    nothing: the measure of how much the host's scheduling decided (attribution.catch_ups)."""
    from emulator.predictor.attribution import catch_ups, read_stats
    binary = tmp_path / "lock_catch_up"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-O2", "-Wall", "-pthread", str(PROGRAMS / "lock_catch_up.c"), "-o", str(binary)], check=True)
    stats = tmp_path / "stats-%p.csv"
    run = run_deployment([[binary]], env={"REVATI_VGPU_STATS": str(stats)})
    assert run.failure is None and run.processes[0].returncode == 0, run.processes[0].stderr[-2000:]
    times = json_line(run.processes[0].stdout)
    assert times["locked"] >= times["sent"]         # the waiter's clock is past the holder's send
    counted = catch_ups(read_stats(tmp_path.glob("stats-*.csv"))).set_index("name")
    assert counted.loc["unseen_sleep", "events"] >= 1
    assert counted.loc["unseen_sleep", "seconds"] == pytest.approx(0.05, rel=0.5)


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


STOPS_ITSELF = """
import os, signal, time
time.sleep(0)                      # becomes an actor
os.kill(os.getpid(), signal.SIGSTOP)
"""


def test_a_stopped_process_fails_the_deployment_naming_it(monkeypatch):
    """A SIGSTOPped thread counts as busy (it holds its work): without this check the deployment
    would never jump again and end only at its time budget."""
    from emulator.timekeeper import server
    monkeypatch.setattr(server, "STOPPED_FAIL_S", 1.0)
    run = run_deployment([[sys.executable, "-c", STOPS_ITSELF]], timeout=60)
    assert run.failure is not None and "has been stopped for" in run.failure and "SIGSTOP" in run.failure
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


def _cpu_scenario(tmp_path: Path, cpus: str | None, transport: str, requests: int = 10) -> tuple[list[dict], list[dict]]:
    """One run of cpu_scenario.py: what the server served and what the clients sent, request by request."""
    pin = ["taskset", "-c", cpus] if cpus else []
    program = [*pin, sys.executable, PROGRAMS / "cpu_scenario.py"]
    with live_deployment(tmp_path) as d:
        server = d.start([*program, "server", "tcp" if transport == "tcp" else tmp_path / "socket", 2, requests, 20_000])
        address = d.first_line(server)
        for index in range(2):
            d.start([*program, "client", address, index, requests, 20_000])
        [(_, server_out, _), *clients], wall = d.finish()
    sent = [request for _, out, _ in clients for request in json_line(out)["sent"]]
    return json_line(server_out)["served"], sent


def _timeline_errors(served: list[dict], sent: list[dict]) -> dict[str, float]:
    """How far, at worst, each step of the run's virtual timeline is from what its CPU work and
    sleeps account for (seconds; the CPU time between the measured points is not in it)."""
    sent_by_request = {request["request"]: request for request in sent}
    errors = {"client wakes after due": 0.0, "client work": 0.0, "server waits": 0.0,
              "server step": 0.0, "answer arrives": 0.0}

    def note(step: str, error: float) -> None:
        errors[step] = max(errors[step], abs(error))

    for request in sent:
        note("client wakes after due", request["started"] - request["due"])
        note("client work", request["sent"] - request["started"] - request["cpu"])
    free_at = 0.0
    for step in served:
        request = sent_by_request[step["request"]]
        # The server reads a request as soon as both it has been sent and the server is free.
        note("server waits", step["received"] - max(request["sent"], free_at))
        note("server step", step["answered"] - step["received"] - step["cpu"] - 0.030)
        note("answer arrives", request["finished"] - step["answered"])
        free_at = step["answered"]
    return errors


@pytest.mark.skipif(os.cpu_count() < 2 or not shutil.which("taskset"), reason="needs 2 cores and taskset")
@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("cpus", [None, "0", "0,1"], ids=["free", "one core", "two cores"])
def test_virtual_time_is_cpu_time_and_sleeps_wherever_the_processes_run(tmp_path, cpus, transport):
    """The server and two clients do real CPU work and meet over TCP or Unix sockets, all on one
    core (three processes sharing it), on two, or placed freely. Between any two points of the
    run, virtual time moves by the CPU time the work took and the sleeps: no more (time spent
    waiting for the core, for a message or for another process) and no less (a message seen
    before it was sent).

    End metrics are not compared across placements: the same work takes a different CPU time
    from one run to the next on a virtual machine (seen here: 1.6x, for seconds at a time), and
    CPU time is all the emulation sees of it; how a host's CPU speed is accounted for is
    emulator/host_cpu.py's matter."""
    served, sent = _cpu_scenario(tmp_path, cpus, transport)
    errors = _timeline_errors(served, sent)
    print(", ".join(f"{step} {error * 1e6:.0f} us" for step, error in errors.items()))
    assert len(served) == len(sent) == 20
    # The bound is the CPU time between the measured points (the server's Python between answering
    # one request and reading the next: 0.1-0.65 ms on the 2-core host, 2026-12-06) with room for
    # a slow spell. Catching up with the latest send anywhere instead of the channel's own made
    # answers arrive 7-25 ms late here (three processes on one core), the host's scheduling.
    assert all(error < 0.001 for error in errors.values()), errors


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
