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
import time

# Wall time within which an answered thread runs on any host this runs on (it is runnable at once;
# this only bounds a wait for a thread that had nothing left to wake for).
ANSWER_LATENCY_S = 0.5


def _read(path: str) -> str:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read().decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


class ThreadFiles:
    """The stat and schedstat files of every watched thread, kept open: procfs makes their
    content anew on each read from offset 0, so a look costs one pread per file instead of an
    open, a read and a close (a third of the time; looks are on the path of every time jump)."""

    def __init__(self) -> None:
        self._open: dict[int, dict[int, tuple[int, int]]] = {}     # pid -> tid -> (stat, schedstat)

    def states(self, pid: int) -> dict[int, tuple[str, bytes]]:
        """tid -> (state letter, schedstat line) for every thread of pid; {} if pid is gone."""
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except (FileNotFoundError, ProcessLookupError):
            self.forget(pid)
            return {}
        files = self._open.setdefault(pid, {})
        for tid in set(files) - set(tids):
            _close(files.pop(tid))
        states = {}
        for tid in tids:
            if tid not in files:
                try:
                    files[tid] = (os.open(f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC),
                                  os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY | os.O_CLOEXEC))
                except OSError:         # exited since the listing
                    continue
            stat_fd, sched_fd = files[tid]
            try:
                stat = os.pread(stat_fd, 1024, 0)
                sched = os.pread(sched_fd, 128, 0)
            except OSError:
                stat = b""
            if not stat:                # exited: its files read empty or fail
                _close(files.pop(tid))
                continue
            states[tid] = (chr(stat[stat.rindex(b")") + 2]), sched)
        return states

    def forget(self, pid: int) -> None:
        for fds in self._open.pop(pid, {}).values():
            _close(fds)

    def close(self) -> None:
        for pid in list(self._open):
            self.forget(pid)


def _close(fds: tuple[int, int]) -> None:
    for fd in fds:
        os.close(fd)


class IdleDetector:
    """Reports idle once two consecutive looks at the same threads found them all asleep and
    unchanged. Any activity the caller sees itself (a message) should call reset().

    A thread the caller has just answered (resumed, sent a completion) is asleep until the answer
    reaches it, which takes a moment: expect_run() makes the deployment count as busy until that
    thread has run."""

    def __init__(self) -> None:
        self._files = ThreadFiles()
        self._previous: dict[int, tuple[str, bytes]] | None = None
        self._expected: dict[tuple[int, int], str] = {}

    def reset(self) -> None:
        self._previous = None

    def forget(self, pid: int) -> None:
        """pid has left the deployment."""
        self._files.forget(pid)

    def close(self) -> None:
        self._files.close()

    def expect_run(self, pid: int, tid: int) -> None:
        self._expected[pid, tid] = (_read(f"/proc/{pid}/task/{tid}/schedstat"), time.monotonic())
        self._previous = None

    def _answers_in_flight(self) -> bool:
        now = time.monotonic()
        for (pid, tid), (before, since) in list(self._expected.items()):
            current = _read(f"/proc/{pid}/task/{tid}/schedstat")
            # Ran, gone, or (a safety net: an answer that raced with the thread waking up by
            # itself wakes nothing) not run after ANSWER_LATENCY_S of wall time.
            if not current or current != before or now - since > ANSWER_LATENCY_S:
                del self._expected[pid, tid]
        return bool(self._expected)

    def look(self, pids) -> bool:
        if self._answers_in_flight():
            self._previous = None
            return False
        sample: dict[int, tuple[str, bytes]] = {}
        for pid in pids:
            for tid, (state, sched) in self._files.states(pid).items():
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
