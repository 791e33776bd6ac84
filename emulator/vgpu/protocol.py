"""The messages between the Timekeeper and its clients, defined once.

Every message is one ZeroMQ frame holding one fixed-size little-endian record, so the C client in
the vGPU library (emulator/vgpu/time/timekeeper.c) and the Python service read it with a struct, not
a parser. The build writes the C view of this table (tk_protocol.h) from this file, so the two
cannot drift apart.

A client is a process (the vGPU library connects once per process, in its constructor); any of
its threads may wait. The Timekeeper learns that a process is busy or idle by watching its
threads in /proc, so a client only reports what the OS cannot show: the virtual deadlines its
threads wait for, and collective arrivals.

client -> Timekeeper
    REGISTER    pid, tid=parent pid, call=process name, token=the deployment's secret
                (REVATI_TIMEKEEPER_SECRET). Sent first on every connection, once per process (and
                again after exec, which keeps the pid); the process's threads are watched from
                then on. A connection whose REGISTER lacks the secret is not of the deployment:
                its messages are dropped (another user's process on the same host, or a stray
                client of an earlier deployment that reached a reused port).
    UNREGISTER  pid. The process is exiting; its waits are dropped.
    WAIT        token, time_ns=deadline, tid, call=the intercepted call. Thread tid blocks until
                virtual time reaches the deadline (a "time jump" request), unless it cancels.
    CANCEL      token. The wait ended early (its file descriptor became ready, its condition was
                signalled); the reply says whether the deadline had been reached first.
    ARRIVE      token, comm, seq, rank, nranks, time_ns=arrival, duration_ns=predicted length.
                A rank reached a collective; the reply comes when every rank has.

Timekeeper -> client
    RESUME      token, time_ns=the clock. The wait's deadline has been reached.
    CANCELLED   token, flag=1 if a RESUME was sent first (the wait had already fired).
    COMPLETE    token, time_ns=completion: the last arrival plus the longest predicted length.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

# name, struct code, C type; the record's fields in order. All 8-byte fields sit at offsets that
# are multiples of 8, so the C struct has no padding and matches the packed Python record.
FIELDS = (
    ("type", "I", "uint32_t"),
    ("pid", "i", "int32_t"),
    ("tid", "i", "int32_t"),
    ("rank", "i", "int32_t"),
    ("token", "Q", "uint64_t"),
    ("time_ns", "q", "int64_t"),
    ("duration_ns", "q", "int64_t"),
    ("comm", "Q", "uint64_t"),
    ("seq", "Q", "uint64_t"),
    ("nranks", "i", "int32_t"),
    ("flag", "i", "int32_t"),
    ("call", "32s", "char"),
)
RECORD = struct.Struct("<" + "".join(code for _, code, _ in FIELDS))
SIZE = RECORD.size

TYPES = {
    "REGISTER": 1, "UNREGISTER": 2, "WAIT": 3, "CANCEL": 4, "ARRIVE": 5,
    "RESUME": 101, "CANCELLED": 102, "COMPLETE": 103,
}
NAMES = {code: name for name, code in TYPES.items()}

# The shared clock page (see emulator/vgpu/time/clock.c): int64 fields, in this order from offset 0.
#   now_ns            the deployment's virtual clock, nanoseconds since it started
#   realtime_base_ns  CLOCK_REALTIME at the start: virtual wall time is this plus now_ns
#   monotonic_base_ns CLOCK_MONOTONIC at the start, likewise
#   cpu_scale_ppm     virtual nanoseconds charged per million nanoseconds of host CPU time
#   messages_sent     messages the clients have sent, counted before each is written: the
#                     Timekeeper does not move the clock while it has received fewer, since a
#                     thread may block right after sending (its message still in flight)
#   sent_ns           the latest virtual time at which any thread sent anything (a write, a
#                     send), or the time of the latest jump: what a thread that receives
#                     catches up with (clock.c)
#   wake_gen          a futex word (its low 32 bits) bumped by every send and jump: threads in a
#                     spin-wait (sched_yield) sleep on it instead of spinning (clock.c)
#   yielders          how many threads sleep on wake_gen (a send wakes them only if any do)
# From CHANNELS_OFFSET on, CHANNEL_SLOTS pairs (key uint64, sent_ns int64): the latest virtual
# time of a send on each channel (emulator/vgpu/time/channels.c), an open-addressed hash table that
# the threads fill; a receiver catches up with its own channel's entry.
CLOCK_FIELDS = ("magic", "now_ns", "realtime_base_ns", "monotonic_base_ns", "cpu_scale_ppm",
                "messages_sent", "sent_ns", "wake_gen", "yielders")
CLOCK_MAGIC = 0x5245564154493032   # "REVATI02"
CHANNELS_OFFSET = 4096
CHANNEL_SLOTS = 16384
CLOCK_PAGE = CHANNELS_OFFSET + 16 * CHANNEL_SLOTS


@dataclass
class Message:
    type: int
    pid: int = 0
    tid: int = 0
    rank: int = 0
    token: int = 0
    time_ns: int = 0
    duration_ns: int = 0
    comm: int = 0
    seq: int = 0
    nranks: int = 0
    flag: int = 0
    call: str = ""

    def pack(self) -> bytes:
        values = [getattr(self, name) for name, _, _ in FIELDS]
        values[-1] = self.call.encode()[:31]
        return RECORD.pack(*values)

    @classmethod
    def unpack(cls, data: bytes) -> "Message":
        if len(data) != SIZE:
            raise ValueError(f"timekeeper message of {len(data)} bytes, expected {SIZE}")
        values = list(RECORD.unpack(data))
        values[-1] = values[-1].split(b"\0", 1)[0].decode(errors="replace")
        return cls(*values)

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"unknown({self.type})")


def c_header() -> str:
    """The C declarations of this protocol, for the vGPU library's build."""
    lines = ["/* Generated from emulator/vgpu/protocol.py by the build: do not edit. */",
             "#include <stdint.h>", "typedef struct tk_message {"]
    for name, code, ctype in FIELDS:
        lines.append(f"    {ctype} {name}{'[32]' if code == '32s' else ''};")
    lines.append("} tk_message;")
    lines.append(f"_Static_assert(sizeof(tk_message) == {SIZE}, \"tk_message layout\");")
    lines += [f"#define TK_{name} {code}" for name, code in TYPES.items()]
    lines.append("typedef struct tk_clock {")
    lines += [f"    int64_t {name};" for name in CLOCK_FIELDS]
    lines.append("} tk_clock;")
    lines.append(f"#define TK_CLOCK_MAGIC 0x{CLOCK_MAGIC:x}LL")
    lines.append("typedef struct tk_channel { uint64_t key; int64_t sent_ns; } tk_channel;")
    lines.append(f"#define TK_CHANNELS_OFFSET {CHANNELS_OFFSET}")
    lines.append(f"#define TK_CHANNEL_SLOTS {CHANNEL_SLOTS}")
    lines.append(f"#define TK_CLOCK_PAGE {CLOCK_PAGE}")
    return "\n".join(lines) + "\n"
