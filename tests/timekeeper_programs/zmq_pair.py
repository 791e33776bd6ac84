"""A ZeroMQ REQ/REP pair across two processes on one virtual clock (tests/test_timekeeper_time.py).

    zmq_pair.py rep        prints its port; after a handshake, polls 5 s for the next request
    zmq_pair.py req PORT   handshakes, sleeps 3 s, sends its monotonic
"""
import json
import sys
import time

import zmq

context = zmq.Context()
if sys.argv[1] == "rep":
    sock = context.socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(port, flush=True)
    sock.recv()                         # the handshake: both sides now share a moment
    sock.send(b"ack")
    acked = time.monotonic()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    events = poller.poll(5000)
    woke = time.monotonic()
    sent = float(sock.recv()) if events else None
    sock.send(b"bye")
    print(json.dumps({"waited": woke - acked, "ready": bool(events), "woke": woke, "sent": sent}), flush=True)
else:
    sock = context.socket(zmq.REQ)
    sock.connect(f"tcp://127.0.0.1:{sys.argv[2]}")
    sock.send(b"hello")
    sock.recv()
    time.sleep(3)
    sock.send(repr(time.monotonic()).encode())
    sock.recv()
sock.close(linger=0)
context.term()
