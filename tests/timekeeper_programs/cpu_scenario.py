"""A deployment whose virtual timeline depends on real CPU work: a server and two clients.

    cpu_scenario.py server CLIENTS REQUESTS     prints its port, then serves
    cpu_scenario.py client PORT INDEX REQUESTS

The server accepts every client, then tells all of them the virtual origin t0. Each client sends
REQUESTS requests at fixed times after t0 (the two clients take turns, one request every 40 ms),
doing some CPU work before each, without waiting for answers; the server answers them one at a
time, in order, each after CPU work of its own and a 30 ms virtual "GPU step" (a sleep). Each
client prints its requests' finish times after t0 (one JSON line); the test compares those
timelines across runs and CPU placements.
"""
import json
import selectors
import socket
import sys
import threading
import time


def cpu_work(iterations: int) -> int:
    """Pure-Python arithmetic: a fixed amount of CPU work."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total


def server(clients: int, requests: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    conns = [listener.accept()[0] for _ in range(clients)]
    t0 = time.monotonic() + 0.1
    for c in conns:
        c.sendall(f"{t0!r}\n".encode())
    selector = selectors.DefaultSelector()
    for c in conns:
        selector.register(c, selectors.EVENT_READ)
    served = 0
    while served < clients * requests:
        conn = selector.select()[0][0].fileobj
        if not conn.recv(8):            # a client that has had all its answers
            selector.unregister(conn)
            continue
        served += 1
        cpu_work(110_000)
        time.sleep(0.030)
        conn.sendall(b"done\n")


def client(port: int, index: int, requests: int) -> None:
    """Open loop, as a load generator: requests go out on schedule, answers are collected by a
    second thread (the server answers in order, one connection a client)."""
    sock = socket.create_connection(("127.0.0.1", port))
    lines = sock.makefile("r")
    t0 = float(lines.readline())
    finishes = []

    def collect():
        for _ in range(requests):
            lines.readline()
            finishes.append(time.monotonic() - t0)

    collector = threading.Thread(target=collect)
    collector.start()
    for i in range(requests):
        time.sleep(max(0.0, t0 + 0.08 * i + 0.04 * index - time.monotonic()))
        cpu_work(30_000 * (index + 1))
        sock.sendall(b"request\n")
    collector.join()
    print(json.dumps({"finishes": finishes}))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
