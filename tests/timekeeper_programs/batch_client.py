"""The client of batch_worker.cu: sends requests at fixed virtual times after it connects and
prints, per request, when it was sent, when the worker started and finished it and when the
answer arrived, all in seconds after the connection (one JSON line).
usage: batch_client.py PORT NAME:AT:STEPS ..."""
import json
import socket
import sys
import threading
import time

port, schedule = int(sys.argv[1]), [arg.split(":") for arg in sys.argv[2:]]
sock = socket.create_connection(("127.0.0.1", port))
sent, answers = {}, {}


def read_answers():
    lines = sock.makefile("r")
    while len(answers) < len(schedule):
        name, arrival, start, finish = lines.readline().split()
        answers[name] = {"arrival": float(arrival) - t0, "start": float(start) - t0,
                         "finish": float(finish) - t0, "received": time.monotonic() - t0}


reader = threading.Thread(target=read_answers)
reader.start()
t0 = time.monotonic()       # after the thread's start, CPU work of a millisecond on a slow host
for name, at, steps in schedule:
    time.sleep(max(0.0, t0 + float(at) - time.monotonic()))
    sent[name] = time.monotonic() - t0
    sock.sendall(f"{name} {steps}\n".encode())
reader.join()
sock.sendall(b"quit\n")
print(json.dumps({name: {"sent": sent[name], **answer} for name, answer in answers.items()}))
