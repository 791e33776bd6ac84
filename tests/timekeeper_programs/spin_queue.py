"""A shared-memory queue whose waiting sides spin with sched_yield, as vLLM's and SGLang's worker
queues do (tests/test_timekeeper.py). The file at PATH holds int64 slots: slot 0 the round the
writer has written, slot 1 + i the round reader i has taken.

    spin_queue.py writer PATH READERS ROUNDS
        each round: sleeps 1 s (odd rounds) or computes 20 ms (even ones), writes the round,
        announces it, then spins until every reader has taken it
    spin_queue.py reader PATH INDEX ROUNDS
        each round: spins until it is written, computes 5 ms, marks it taken, announces that

Announcing is a one-byte write to a pipe nobody reads: vLLM follows each queue write with a
ZeroMQ notification, and to the vGPU library a write to a pipe or socket is a send (one to a
file or a device such as /dev/null is not). Each side prints one JSON line of its times.
"""
import json
import mmap
import os
import struct
import sys
import time

role, path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[4])
with open(path, "r+b") as f:
    slots = mmap.mmap(f.fileno(), 0)
_, announcements = os.pipe()


def get(i: int) -> int:
    return struct.unpack_from("<q", slots, 8 * i)[0]


def put(i: int, value: int) -> None:
    struct.pack_into("<q", slots, 8 * i, value)
    os.write(announcements, b"\0")


def compute(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


if role == "writer":
    readers = int(sys.argv[3])
    written, taken = [], []
    for r in range(1, rounds + 1):
        time.sleep(1.0) if r % 2 else compute(0.020)
        written.append(time.monotonic())
        put(0, r)
        while any(get(1 + i) < r for i in range(readers)):
            os.sched_yield()
        taken.append(time.monotonic())
    print(json.dumps({"written": written, "taken": taken}), flush=True)
else:
    index = int(sys.argv[3])
    seen = []
    for r in range(1, rounds + 1):
        while get(0) < r:
            os.sched_yield()
        seen.append(time.monotonic())
        compute(0.005)
        put(1 + index, r)
    print(json.dumps({"seen": seen}), flush=True)
