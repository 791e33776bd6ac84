"""Services of a deployment listen on loopback only, and the Timekeeper takes messages only from the
deployment's own processes: those that carry its secret (REVATI_TIMEKEEPER_SECRET, protocol.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from emulator.engines import registry
from emulator.engines.adapter import ServingKnobs
from emulator.timekeeper.server import Timekeeper
from emulator.vgpu.protocol import TYPES, Message
from vgpu_fixtures import vgpu_env


def _until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _non_loopback_address() -> str | None:
    """This host's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_timekeeper_listens_on_loopback_only():
    with Timekeeper(log=lambda line: None) as tk:
        host, port = tk.endpoint.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1"
        socket.create_connection((host, int(port)), timeout=2).close()
        address = _non_loopback_address()
        if address is None:
            pytest.skip("this host has no non-loopback IPv4 address to try")
        with pytest.raises(OSError):
            socket.create_connection((address, int(port)), timeout=2).close()


def test_a_client_without_the_deployments_secret_is_refused_and_a_member_is_not():
    log: list[str] = []
    sleeper = subprocess.Popen(["sleep", "30"])
    context = zmq.Context()
    try:
        with Timekeeper(log=log.append) as tk:
            def client() -> zmq.Socket:
                dealer = context.socket(zmq.DEALER)
                dealer.setsockopt(zmq.LINGER, 0)
                dealer.connect(tk.endpoint)
                return dealer

            # An outsider: a wait with no REGISTER, a REGISTER with a wrong secret, bytes of no message.
            stranger, impostor, vandal = client(), client(), client()
            stranger.send(Message(TYPES["WAIT"], pid=sleeper.pid, tid=sleeper.pid, token=7, time_ns=10**9).pack())
            impostor.send(Message(TYPES["REGISTER"], pid=sleeper.pid, tid=os.getpid(), token=tk.secret ^ 1,
                                  call="impostor").pack())
            impostor.send(Message(TYPES["WAIT"], pid=sleeper.pid, tid=sleeper.pid, token=8, time_ns=10**9).pack())
            vandal.send_multipart([b"not", b"a message"])
            assert _until(lambda: sum("refused a client" in line for line in log) == 3), log
            assert tk.failure is None and not tk.waits and sleeper.pid not in tk.processes

            member = client()
            member.send(Message(TYPES["REGISTER"], pid=sleeper.pid, tid=os.getpid(), token=tk.secret,
                                call="member").pack())
            member.send(Message(TYPES["WAIT"], pid=sleeper.pid, tid=sleeper.pid, token=9, time_ns=10**9).pack())
            # The member's wait is served: with the sleeper idle, the clock jumps to its deadline.
            assert member.poll(5000), log
            reply = Message.unpack(member.recv())
            assert (reply.type, reply.token, reply.time_ns) == (TYPES["RESUME"], 9, 10**9)
            assert sleeper.pid in tk.processes and tk.failure is None
            assert not stranger.poll(0) and not impostor.poll(0), "an outsider's wait was served"
    finally:
        sleeper.kill()
        sleeper.wait()
        context.destroy(linger=0)


def test_a_library_client_without_the_secret_stops_and_names_it(tmp_path):
    with Timekeeper(log=lambda line: None) as tk:
        env = vgpu_env(1, workdir=tmp_path)
        env.update(tk.env())
        del env["REVATI_TIMEKEEPER_SECRET"]
        proc = subprocess.run(["python3", "-c", "print('ran')"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ran" not in proc.stdout
    assert "REVATI_TIMEKEEPER_SECRET" in proc.stderr


@pytest.mark.parametrize("engine", ["vllm", "sglang", "transformers"])
def test_every_engines_server_binds_loopback(engine):
    """What the deployment starts: the serving endpoint on 127.0.0.1 (the transformers server's
    default, the others' --host)."""
    command = registry.adapter(engine).server_command(Path("/models/tiny"), 8123, ServingKnobs())
    if "--host" in command:
        assert command[command.index("--host") + 1] == "127.0.0.1"
    else:
        from emulator.engines.transformers import server
        assert server.parse_args(command[command.index("--model-dir"):]).host == "127.0.0.1"


BINDS = """
import socket
for family, address, v6only in ((socket.AF_INET, "0.0.0.0", None), (socket.AF_INET6, "::", 0),
                                (socket.AF_INET6, "::", 1), (socket.AF_INET, "127.0.0.1", None)):
    s = socket.socket(family)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((address, 0))
    s.listen()
    if family == socket.AF_INET6 and not v6only:    # a dual-stack server is still reached at 127.0.0.1
        socket.create_connection(("127.0.0.1", s.getsockname()[1])).close()
    print(s.getsockname()[0])
"""


@pytest.mark.parametrize("bind_any, expected", [
    (None, ["127.0.0.1", "::ffff:127.0.0.1", "::1", "127.0.0.1"]),
    ("1", ["0.0.0.0", "::", "::", "127.0.0.1"]),
])
def test_a_process_on_virtual_gpus_that_binds_every_interface_gets_loopback(tmp_path, bind_any, expected):
    """What torch.distributed's TCPStore does (libuv binds "::"): the library's bind() makes it
    loopback, unless REVATI_BIND_ANY=1 asks for every interface."""
    env = vgpu_env(1, workdir=tmp_path)
    if bind_any:
        env["REVATI_BIND_ANY"] = bind_any
    proc = subprocess.run(["python3", "-c", BINDS], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected
