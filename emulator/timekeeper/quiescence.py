"""Is every thread of the deployment idle? Asked of the kernel, not of the threads.

A thread may block anywhere: in a virtual-time wait the Timekeeper knows of, in a futex, in a
read from a pipe. Asking the OS covers all of them. A deployment is idle when every thread of
every registered process is asleep (state S) and none has run since the previous look
(/proc/<pid>/task/<tid>/schedstat counts the timeslices a thread has had). A thread woken by a
message (a socket write, a futex wake) is runnable (R) from the moment of the wake-up, before it
gets a CPU, so a message in flight is never mistaken for idleness.

Looks are on the path of every time jump and run on the host's cores beside the deployment, so
they are kept cheap: a busy deployment is usually busy in the thread found busy last time, which
is asked first; the first of two looks only notes how much each thread has run (schedstat, a
quarter of the cost of stat), since the second asks every thread for both; thread lists are read
anew only by a look that may declare idleness (a new thread was started by one that ran, so the
look before it was not idle either).
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
    open, a read and a close (a third of the time)."""

    def __init__(self) -> None:
        self._open: dict[int, dict[int, tuple[int, int] | None]] = {}   # pid -> tid -> (stat, schedstat)

    def tids(self, pid: int, relist: bool) -> list[int]:
        """The threads of pid, as listed last time or (relist, or never listed) listed now."""
        files = self._open.get(pid)
        if files is None or relist:
            try:
                listed = {int(t) for t in os.listdir(f"/proc/{pid}/task")}
            except (FileNotFoundError, ProcessLookupError):
                self.forget(pid)
                return []
            files = self._open.setdefault(pid, {})
            for tid in set(files) - listed:
                _close(files.pop(tid))
            for tid in listed - set(files):
                files[tid] = None           # opened at its first read
        return list(files)

    def state(self, pid: int, tid: int) -> str | None:
        """The thread's state letter (S: asleep), None once it has exited."""
        stat = self._pread(pid, tid, 0, 1024)
        return chr(stat[stat.rindex(b")") + 2]) if stat else None

    def schedstat(self, pid: int, tid: int) -> bytes | None:
        """The thread's CPU time, run-queue time and timeslices, None once it has exited."""
        return self._pread(pid, tid, 1, 128) or None

    def _pread(self, pid: int, tid: int, which: int, size: int) -> bytes:
        files = self._open.setdefault(pid, {})
        fds = files.get(tid)
        if fds is None:
            try:
                fds = (os.open(f"/proc/{pid}/task/{tid}/stat", os.O_RDONLY | os.O_CLOEXEC),
                       os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY | os.O_CLOEXEC))
            except OSError:             # exited since the listing
                files.pop(tid, None)
                return b""
            files[tid] = fds
        try:
            data = os.pread(fds[which], size, 0)
        except OSError:
            data = b""
        if not data:                    # exited: its files read empty or fail
            _close(files.pop(tid))
        return data

    def forget(self, pid: int) -> None:
        for fds in self._open.pop(pid, {}).values():
            _close(fds)

    def close(self) -> None:
        for pid in list(self._open):
            self.forget(pid)


def _close(fds: tuple[int, int] | None) -> None:
    for fd in fds or ():
        os.close(fd)


def _busy(state: str | None) -> bool:
    return state is not None and state not in "SZX"     # running, runnable, in disk wait or stopped


def _stopped(state: str | None) -> bool:
    return state is not None and state in "Tt"          # SIGSTOP, or a debugger


class IdleDetector:
    """Reports idle when a look finds every thread asleep and none has run since the previous
    look. Any activity the caller sees itself (a message) should call reset().

    A thread the caller has just answered (resumed, sent a completion) is asleep until the answer
    reaches it, which takes a moment: expect_run() makes the deployment count as busy until that
    thread has run."""

    def __init__(self) -> None:
        self._files = ThreadFiles()
        self._previous: dict[int, bytes | None] | None = None     # tid -> schedstat
        self._expected: dict[tuple[int, int], tuple[bytes | None, float]] = {}
        self._last_busy: tuple[int, int] | None = None
        # The busy thread, if it is a stopped one, and since when (wall): a stopped thread counts
        # as busy (it holds its work), so a deployment with one never jumps and never ends.
        self._stopped: tuple[int, int] | None = None
        self._stopped_since = 0.0

    def reset(self) -> None:
        self._previous = None

    def forget(self, pid: int) -> None:
        """pid has left the deployment."""
        self._files.forget(pid)

    def close(self) -> None:
        self._files.close()

    def expect_run(self, pid: int, tid: int) -> None:
        self._expected[pid, tid] = (self._files.schedstat(pid, tid), time.monotonic())
        self._previous = None

    def _answers_in_flight(self) -> bool:
        now = time.monotonic()
        for (pid, tid), (before, since) in list(self._expected.items()):
            current = self._files.schedstat(pid, tid)
            # Ran, gone, or (a safety net: an answer that raced with the thread waking up by
            # itself wakes nothing) not run after ANSWER_LATENCY_S of wall time.
            if current is None or current != before or now - since > ANSWER_LATENCY_S:
                del self._expected[pid, tid]
        return bool(self._expected)

    def stopped(self) -> tuple[int, int, float] | None:
        """(pid, tid, wall seconds) of a thread found stopped at every look since, or None."""
        if self._stopped is None:
            return None
        return (*self._stopped, time.monotonic() - self._stopped_since)

    def _busy_thread(self, thread: tuple[int, int], state: str | None) -> None:
        self._last_busy = thread
        if not _stopped(state):
            self._stopped = None
        elif self._stopped != thread:
            self._stopped, self._stopped_since = thread, time.monotonic()

    def look(self, pids) -> bool:
        if self._answers_in_flight():
            self._previous = None
            return False
        busy = self._last_busy
        state = self._files.state(*busy) if busy and busy[0] in pids else None
        if _busy(state):
            self._busy_thread(busy, state)
            self._previous = None
            return False
        self._stopped = None
        if self._previous is None:
            # The first look only notes how much every thread has run; the next one asks each
            # whether it is asleep and has not run since.
            self._previous = {tid: self._files.schedstat(pid, tid)
                              for pid in pids for tid in self._files.tids(pid, relist=False)}
            return False
        sample: dict[int, bytes | None] = {}
        for pid in pids:
            for tid in self._files.tids(pid, relist=True):
                state = self._files.state(pid, tid)
                if _busy(state):
                    self._busy_thread((pid, tid), state)
                    self._previous = None
                    return False
                if state is not None:
                    sample[tid] = self._files.schedstat(pid, tid)
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
