"""endpoints.listening: the listening TCP sockets that given processes hold, read from /proc, with
whether each is reachable only from this host."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from emulator import endpoints

HOLDER = """
import socket, sys, time
held = []
for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1")):
    s = socket.socket(family)
    s.bind((address, 0))
    s.listen()
    held.append(s)
connected = socket.create_connection(("127.0.0.1", held[0].getsockname()[1]))  # not listening: not counted
print(" ".join(str(s.getsockname()[1]) for s in held), flush=True)
time.sleep(600)
"""


def test_the_sockets_a_process_listens_on_and_whether_each_is_loopback():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in holder.stdout.readline().split()]
        found = endpoints.listening([holder.pid, os.getpid()])
        assert [(e.pid, e.address, e.port) for e in found] == sorted(
            [(holder.pid, "127.0.0.1", ports[0]), (holder.pid, "0.0.0.0", ports[1]), (holder.pid, "::1", ports[2])],
            key=lambda e: e[2])
        assert {e.port: e.loopback for e in found} == {ports[0]: True, ports[1]: False, ports[2]: True}
        assert all(e.process == "python3" or e.process.startswith("python") for e in found)
        assert str(next(e for e in found if e.port == ports[2])) == f"[::1]:{ports[2]} ({found[0].process}, pid {holder.pid})"
    finally:
        holder.kill()
        holder.wait()


def test_processes_gone_or_without_sockets_have_none():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    time.sleep(0.1)
    assert endpoints.listening([gone.pid, os.getpid()]) == []
