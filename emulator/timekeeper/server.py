"""The Timekeeper: owns the virtual clock of one emulated deployment.

Clients are the processes of the deployment (through the vGPU library; see protocol.py for the
messages). The clock itself is a shared page every process maps (clock.c): threads move it with
their CPU time, and the Timekeeper moves it across idle stretches:

    when every thread of every registered process is idle (quiescence.py), the clock jumps to the
    earliest deadline any thread waits for, and the threads whose deadline has come are resumed.

That is conservative: no thread can still do something that should have happened before the
jump, because none is running. Collectives complete at the last rank's arrival plus their
predicted length. Deadlocks (idle with nothing to wait for), dead processes and a wall-clock
watchdog end the deployment with a report instead of a hang.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import secrets
import select
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zmq

from emulator.vgpu import protocol
from emulator.vgpu.protocol import TYPES, Message
from emulator.timekeeper.quiescence import IdleDetector, describe_thread


PAUSE_MIN_S = 20e-6      # first look for idleness after something happened
PAUSE_MAX_S = 1e-3       # and then at least this often while threads wait
LOST_MESSAGE_S = 0.05    # wall time after which a counted message that never came is given up
# Wall time a deployment's thread may stay stopped (SIGSTOP, a debugger) before the deployment
# fails: long enough for a look with gdb, far shorter than a trial's time budget.
STOPPED_FAIL_S = 30.0


@dataclass
class Wait:
    identity: bytes
    token: int
    pid: int
    tid: int
    deadline_ns: int
    call: str


@dataclass
class Arrival:
    identity: bytes
    token: int
    pid: int
    tid: int
    time_ns: int
    duration_ns: int
    call: str


@dataclass
class Collective:
    nranks: int
    arrivals: dict[int, Arrival] = field(default_factory=dict)


@dataclass
class Process:
    pid: int
    parent: int
    name: str


class SharedClock:
    """The clock page: created here, mapped by every process of the deployment."""

    def __init__(self, cpu_scale: float) -> None:
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="revati-clock-", dir=folder)
        os.ftruncate(fd, protocol.CLOCK_PAGE)
        self.path = path
        self._map = mmap.mmap(fd, protocol.CLOCK_PAGE)
        os.close(fd)
        self._fields = {name: ctypes.c_int64.from_buffer(self._map, 8 * i)
                        for i, name in enumerate(protocol.CLOCK_FIELDS)}
        self._fields["realtime_base_ns"].value = time.clock_gettime_ns(time.CLOCK_REALTIME)
        self._fields["monotonic_base_ns"].value = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._fields["cpu_scale_ppm"].value = round(cpu_scale * 1_000_000)
        self._fields["magic"].value = protocol.CLOCK_MAGIC
        self._jump = _clock_jump_function()

    @property
    def now_ns(self) -> int:
        return self._fields["now_ns"].value

    @property
    def messages_sent(self) -> int:
        return self._fields["messages_sent"].value

    def jump_to(self, t_ns: int) -> None:
        """Move the clock to t_ns unless threads have already moved it further; whatever happens
        next happens at t_ns or later (clock.c: a jump is received like a send)."""
        self._jump(ctypes.addressof(self._fields["magic"]), t_ns)

    def close(self) -> None:
        self._fields.clear()
        self._map.close()
        Path(self.path).unlink(missing_ok=True)


def _clock_jump_function():
    """The vGPU library's jump (clock.c): the same atomic maximum the threads use on the clock,
    so this process and the threads that publish their CPU time into the same word never undo
    each other's writes, and the wake-up of threads sleeping in a spin-wait."""
    import cffi
    from emulator.vgpu.build import LIBRARY, build_library
    ffi = cffi.FFI()
    ffi.cdef("void revati_clock_jump(void *page, int64_t t);")
    lib = ffi.dlopen(str(build_library() / LIBRARY))
    return lambda address, t: lib.revati_clock_jump(ffi.cast("void *", address), t)


class Timekeeper:
    """One per deployment. start() serves on a thread; env() is what its processes need."""

    def __init__(self, *, cpu_scale: float = 1.0, deadlock_after_s: float = 5.0,
                 watchdog_s: float | None = None, host: str = "127.0.0.1",
                 on_failure: Callable[[str], None] | None = None,
                 log: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
        self.clock = SharedClock(cpu_scale)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port(f"tcp://{host}")
        self.endpoint = f"tcp://{host}:{port}"
        # What a client proves it belongs to the deployment with (protocol.py, REGISTER): the
        # port is open to every process of the host, the environment only to the deployment's.
        self.secret = secrets.randbits(64) | 1
        self._members: set[bytes] = set()       # connections that registered with the secret
        self._refused: set[bytes] = set()
        self.deadlock_after_s = deadlock_after_s
        self.watchdog_s = watchdog_s
        self.on_failure = on_failure
        self.log = log
        self.failure: str | None = None
        self.processes: dict[int, Process] = {}
        self.waits: dict[tuple[bytes, int], Wait] = {}
        self.collectives: dict[tuple[int, int], Collective] = {}
        self.jumps = 0
        self._received = 0          # messages handled, against the clients' count on the clock page
        self._unreceived_since: float | None = None
        self._idle = IdleDetector()
        self._idle_since: float | None = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {"REVATI_TIMEKEEPER": self.endpoint, "REVATI_TIMEKEEPER_CLOCK": self.clock.path,
                "REVATI_TIMEKEEPER_SECRET": f"{self.secret:016x}"}

    def start(self) -> "Timekeeper":
        self._thread = threading.Thread(target=self.serve, name="timekeeper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._socket.close()
        self._context.term()
        self._idle.close()
        self.final_ns = self.clock.now_ns
        self.clock.close()

    def __enter__(self) -> "Timekeeper":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the loop -------------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            self._serve()
        except Exception:       # a Timekeeper that dies silently leaves its deployment hung
            self._fail(f"internal error:\n{traceback.format_exc()}")

    def _serve(self) -> None:
        # The socket's descriptor, for waits finer than zmq.poll's whole milliseconds. It is
        # edge-triggered: pending messages are looked for (zmq.EVENTS) before each wait on it.
        fd = self._socket.getsockopt(zmq.FD)
        last_reap = 0.0
        pause = PAUSE_MIN_S
        while not self._stop.is_set() and self.failure is None:
            if self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                while self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    identity, *frames = self._socket.recv_multipart()
                    self._received += 1
                    if len(frames) == 1 and len(frames[0]) == protocol.SIZE:
                        self._handle(identity, Message.unpack(frames[0]))
                    elif identity in self._members:
                        raise ValueError(f"a malformed message from a client of this deployment: "
                                         f"{[len(f) for f in frames]} bytes, expected [{protocol.SIZE}]")
                    else:
                        self._refuse(identity, "a malformed message")
                # More received than counted: messages given up on as lost came after all (each
                # is counted before it is sent, so the excess is theirs). Counted twice, they
                # would hide as many messages in flight from every look from here on.
                self._received = min(self._received, self.clock.messages_sent)
                self._idle.reset()
                self._idle_since = None
                pause = PAUSE_MIN_S
            else:
                # With threads waiting, look for idleness soon after anything happens, then less
                # and less often. A message ends the wait at once: a thread may be blocked on its
                # reply (a cancelled wait).
                select.select([fd], [], [], pause if self.waits else 0.02)
                if self.waits:
                    pause = min(2 * pause, PAUSE_MAX_S)
            now = time.monotonic()
            if now - last_reap > 0.1:
                self._reap_dead()
                last_reap = now
            self._resume_due()
            self._advance_if_idle(now)
            if self.watchdog_s is not None and now - self._started > self.watchdog_s:
                self._fail(f"watchdog: the deployment ran for more than {self.watchdog_s:g} s of "
                           f"wall time")

    def _handle(self, identity: bytes, m: Message) -> None:
        if m.type == TYPES["REGISTER"] and m.token == self.secret:
            self._members.add(identity)
            self.processes[m.pid] = Process(m.pid, m.tid, m.call)
        elif identity not in self._members:
            self._refuse(identity, f"a {protocol.NAMES.get(m.type, m.type)} from pid {m.pid} ({m.call}) without "
                                   f"a REGISTER carrying REVATI_TIMEKEEPER_SECRET first")
        elif m.type == TYPES["UNREGISTER"]:
            self._forget(m.pid)
        elif m.type == TYPES["WAIT"]:
            self.waits[identity, m.token] = Wait(identity, m.token, m.pid, m.tid, m.time_ns, m.call)
        elif m.type == TYPES["CANCEL"]:
            # A wait still here has not fired; one already gone was resumed before the cancel,
            # and that RESUME is what the thread wakes on: this reply wakes nothing.
            fired = self.waits.pop((identity, m.token), None) is None
            reply = Message(TYPES["CANCELLED"], token=m.token, flag=int(fired))
            if fired:
                self._socket.send_multipart([identity, reply.pack()])
            else:
                self._answer(identity, m.pid, m.tid, reply)
        elif m.type == TYPES["ARRIVE"]:
            self._arrive(identity, m)
        else:
            self.log(f"timekeeper: ignoring a message of unknown type {m.type} from pid {m.pid}")

    def _refuse(self, identity: bytes, what: str) -> None:
        """Drop a message from a connection that is not of this deployment, saying so once."""
        if identity not in self._refused:
            self._refused.add(identity)
            self.log(f"timekeeper: refused a client that is not of this deployment: {what}")

    def _answer(self, identity: bytes, pid: int, tid: int, m: Message) -> None:
        """Wake thread tid of pid, which is blocked until this message reaches it."""
        self._idle.expect_run(pid, tid)     # before sending: the thread may run and sleep again at once
        self._socket.send_multipart([identity, m.pack()])

    def _arrive(self, identity: bytes, m: Message) -> None:
        key = (m.comm, m.seq)
        collective = self.collectives.setdefault(key, Collective(m.nranks))
        collective.arrivals[m.rank] = Arrival(identity, m.token, m.pid, m.tid, m.time_ns, m.duration_ns, m.call)
        if len(collective.arrivals) < collective.nranks:
            return
        del self.collectives[key]
        arrivals = collective.arrivals.values()
        completion = max(a.time_ns for a in arrivals) + max(a.duration_ns for a in arrivals)
        for a in arrivals:
            self._answer(a.identity, a.pid, a.tid, Message(TYPES["COMPLETE"], token=a.token, time_ns=completion))

    def _resume_due(self) -> None:
        """Resume every wait whose deadline the clock has reached (threads' CPU time moves the
        clock too, so this is checked even while the deployment is busy)."""
        now = self.clock.now_ns
        for key, wait in list(self.waits.items()):
            if wait.deadline_ns <= now:
                del self.waits[key]
                self._answer(wait.identity, wait.pid, wait.tid, Message(TYPES["RESUME"], token=wait.token, time_ns=now))

    def _advance_if_idle(self, now: float) -> None:
        if not self.processes or not self._idle.look(self.processes):
            self._idle_since = None
            self._unreceived_since = None       # a missing count is timed over idleness only
            stopped = self._idle.stopped()
            if stopped and stopped[2] > STOPPED_FAIL_S:
                pid, tid, seconds = stopped
                name = self.processes[pid].name if pid in self.processes else "?"
                self._fail(f"process {pid} ({name}), thread {tid}, has been stopped for {seconds:.0f} s of wall "
                           f"time (SIGSTOP, or a debugger): virtual time cannot pass while it holds its work")
            return
        if self._messages_in_flight(now):
            self._idle_since = None
            return
        if self.waits:
            self.clock.jump_to(min(w.deadline_ns for w in self.waits.values()))
            self.jumps += 1
            self._idle.reset()
            self._resume_due()
            return
        # Idle with nothing to wait for: nothing in the deployment can ever happen again.
        self._idle_since = self._idle_since or now
        if now - self._idle_since > self.deadlock_after_s:
            self._fail("deadlock: every thread of the deployment is blocked and none waits for a "
                       "virtual deadline")

    def _messages_in_flight(self, now: float) -> bool:
        """Whether a client has counted a message this loop has not received yet. A process
        killed between counting and writing leaves a count that never arrives: after
        LOST_MESSAGE_S of unbroken idleness the count is taken as it is (idle with a message in
        flight is common: a thread writes its wait and sleeps before the Timekeeper reads it)."""
        missing = self.clock.messages_sent - self._received
        if missing <= 0:
            self._unreceived_since = None
            return False
        self._unreceived_since = self._unreceived_since or now
        if now - self._unreceived_since < LOST_MESSAGE_S:
            return True
        self.log(f"timekeeper: {missing} message(s) counted by clients never arrived (a process "
                 f"died while sending); going on without them")
        self._received += missing
        self._unreceived_since = None
        return False

    def _reap_dead(self) -> None:
        for pid in list(self.processes):
            if not _alive(pid):
                process = self.processes[pid]
                self.log(f"timekeeper: process {pid} ({process.name}) exited without unregistering "
                         f"(crashed or killed); it is no longer waited for")
                self._forget(pid)

    def _forget(self, pid: int) -> None:
        self.processes.pop(pid, None)
        self._idle.forget(pid)
        for key in [key for key, wait in self.waits.items() if wait.pid == pid]:
            del self.waits[key]

    # ---- failure --------------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self.failure = f"timekeeper: {reason} (virtual time {self.clock.now_ns / 1e9:.6f} s)\n" + self.report()
        self.log(self.failure)
        if self.on_failure:
            self.on_failure(self.failure)

    def report(self) -> str:
        """Every process and thread of the deployment, and what each is blocked in."""
        known: dict[int, str] = {}
        for wait in self.waits.values():
            known[wait.tid] = f"{wait.call} until virtual {wait.deadline_ns / 1e9:.6f} s"
        for (comm, seq), collective in self.collectives.items():
            for rank, a in collective.arrivals.items():
                known[a.tid] = (f"{a.call} (communicator {comm:016x}, #{seq}): rank {rank}; ranks "
                                f"{sorted(collective.arrivals)} of {collective.nranks} have arrived")
        lines = []
        for pid, process in sorted(self.processes.items()):
            lines.append(f"  process {pid} ({process.name}), parent {process.parent}:")
            try:
                tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
            except OSError:
                tids = []
            for tid in tids:
                lines.append(f"    thread {tid}: {known.get(tid) or describe_thread(pid, tid)}")
        return "\n".join(lines)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"
