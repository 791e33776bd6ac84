"""Is every thread of the deployment idle? Asked of the kernel, not of the threads.

A thread may block anywhere: in a virtual-time wait the Timekeeper knows of, in a futex, in a
read from a pipe. Asking the OS covers all of them. A deployment is idle when every thread of
every registered process is asleep (state S) and none has run since the previous look
(/proc/<pid>/task/<tid>/schedstat counts the timeslices a thread has had). A thread woken by a
message (a socket write, a futex wake) is runnable (R) from the moment of the wake-up, before it
gets a CPU, so a message in flight is never mistaken for idleness.
"""
from __future__ import annotations

import os


def _read(path: str) -> str:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def thread_states(pid: int) -> dict[int, tuple[str, str]]:
    """tid -> (state letter, schedstat line) for every thread of pid; {} if pid is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return {}
    states = {}
    for tid in tids:
        stat = _read(f"/proc/{pid}/task/{tid}/stat")
        if not stat:
            continue
        state = stat[stat.rindex(")") + 2]
        states[int(tid)] = (state, _read(f"/proc/{pid}/task/{tid}/schedstat"))
    return states


class IdleDetector:
    """Reports idle once two consecutive looks at the same threads found them all asleep and
    unchanged. Any activity the caller sees itself (a message) should call reset().

    A thread the caller has just answered (resumed, sent a completion) is asleep until the answer
    reaches it, which takes a moment: expect_run() makes the deployment count as busy until that
    thread has run."""

    def __init__(self) -> None:
        self._previous: dict[int, tuple[str, str]] | None = None
        self._expected: dict[tuple[int, int], str] = {}

    def reset(self) -> None:
        self._previous = None

    def expect_run(self, pid: int, tid: int) -> None:
        self._expected[pid, tid] = _read(f"/proc/{pid}/task/{tid}/schedstat")
        self._previous = None

    def _answers_in_flight(self) -> bool:
        for (pid, tid), before in list(self._expected.items()):
            now = _read(f"/proc/{pid}/task/{tid}/schedstat")
            if not now or now != before:
                del self._expected[pid, tid]
        return bool(self._expected)

    def look(self, pids) -> bool:
        if self._answers_in_flight():
            self._previous = None
            return False
        sample: dict[int, tuple[str, str]] = {}
        for pid in pids:
            for tid, (state, sched) in thread_states(pid).items():
                if state not in "SZX":      # running, runnable, in disk wait or stopped
                    self._previous = None
                    return False
                sample[tid] = (state, sched)
        idle = sample == self._previous
        self._previous = sample
        return idle


def describe_thread(pid: int, tid: int) -> str:
    """What the kernel says a thread is doing, for deadlock reports."""
    name = _read(f"/proc/{pid}/task/{tid}/comm").strip()
    wchan = _read(f"/proc/{pid}/task/{tid}/wchan").strip() or "?"
    stat = _read(f"/proc/{pid}/task/{tid}/stat")
    state = stat[stat.rindex(")") + 2] if stat else "?"
    return f"{name or '?'} state {state}, kernel wait {wchan}"
