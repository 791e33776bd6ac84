"""A deployment whose virtual timeline depends on real CPU work: a server and two clients.

    cpu_scenario.py server ADDRESS CLIENTS REQUESTS ITERATIONS     prints its address, then serves
    cpu_scenario.py client ADDRESS INDEX REQUESTS ITERATIONS

ADDRESS is "tcp" for the server (it listens on a loopback port and prints it) and that port for
the clients, or the path of a Unix socket for both (ZeroMQ's ipc://, which vLLM's processes use).

The server accepts every client, then tells all of them the virtual origin t0. Each client sends
REQUESTS requests at fixed times after t0 (the two clients take turns, one request every 40 ms),
doing ITERATIONS x (INDEX + 1) of CPU work before each, without waiting for answers; the server
answers them one at a time, in the order it reads them, each after 4 x ITERATIONS of CPU work of
its own and a 30 ms virtual "GPU step" (a sleep). Once all are served it says "bye" to each
client, which only then hangs up: a client hanging up as soon as it had its own answers would be
seen by the server whenever the host ran its exit, before or after the other client's last
request, and where a hang-up falls in virtual time is not what this program measures. Every
program prints one JSON line with, per request, when (virtual seconds after t0) each step of it
happened and the CPU time its work took: the test checks that virtual time between those points
is the CPU time charged plus the sleeps, wherever the processes ran.
"""
import json
import selectors
import socket
import sys
import threading
import time


def cpu_work(iterations: int) -> float:
    """Pure-Python arithmetic, a fixed amount of CPU work; returns the CPU time it took."""
    start = time.thread_time()
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return time.thread_time() - start


def server(address: str, clients: int, requests: int, iterations: int) -> None:
    if address == "tcp":
        listener = socket.create_server(("127.0.0.1", 0))
        address = listener.getsockname()[1]
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen()
    print(address, flush=True)
    conns = [listener.accept()[0] for _ in range(clients)]
    t0 = time.monotonic() + 0.1
    for c in conns:
        c.sendall(f"{t0!r}\n".encode())
    # Requests are read from the sockets as they come (a client's two requests may arrive in one
    # read) and served in the order they were read.
    partial = {c: b"" for c in conns}
    pending = []
    selector = selectors.DefaultSelector()
    for c in conns:
        selector.register(c, selectors.EVENT_READ)
    served = []
    while len(served) < clients * requests:
        if not pending:
            for key, _ in selector.select():
                conn = key.fileobj
                *lines, partial[conn] = (partial[conn] + conn.recv(4096)).split(b"\n")
                pending += [(conn, line.decode()) for line in lines]
            continue
        conn, request = pending.pop(0)
        received = time.monotonic() - t0
        cpu = cpu_work(4 * iterations)
        time.sleep(0.030)
        answered = time.monotonic() - t0
        conn.sendall(b"done\n")
        served.append({"request": request, "received": received, "cpu": cpu, "answered": answered})
    for c in conns:
        c.sendall(b"bye\n")
    print(json.dumps({"served": served}))


def client(address: str, index: int, requests: int, iterations: int) -> None:
    """Open loop, as a load generator: requests go out on schedule, answers are collected by a
    second thread (the server answers in order, one connection a client)."""
    if address.isdigit():
        sock = socket.create_connection(("127.0.0.1", int(address)))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
    lines = sock.makefile("r")
    t0 = float(lines.readline())
    sent = []
    finishes = []

    def collect():
        for _ in range(requests):
            lines.readline()
            finishes.append(time.monotonic() - t0)
        lines.readline()

    collector = threading.Thread(target=collect)
    collector.start()
    for i in range(requests):
        due = 0.08 * i + 0.04 * index
        time.sleep(max(0.0, t0 + due - time.monotonic()))
        started = time.monotonic() - t0
        cpu = cpu_work(iterations * (index + 1))
        sock.sendall(f"{index}:{i}\n".encode())
        sent.append({"request": f"{index}:{i}", "due": due, "started": started, "cpu": cpu,
                     "sent": time.monotonic() - t0})
    collector.join()
    for request, finish in zip(sent, finishes):
        request["finished"] = finish
    print(json.dumps({"sent": sent}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
