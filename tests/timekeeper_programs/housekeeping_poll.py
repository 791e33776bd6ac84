"""A library thread that polls a flag between events, as torch's gloo transport loop does
(epoll_wait with a 10 ms timeout), beside a main thread that sleeps (tests/test_timekeeper.py).

    housekeeping_poll.py THREAD_NAME SLEEPS

The poller names itself THREAD_NAME (as gloo names its loop "gloo_tcp_loop"). The main thread
sleeps 1 s SLEEPS times, then asks the poller to stop and waits for it. Prints one JSON line: the
virtual seconds the main thread slept through and how many polls timed out.
"""
import ctypes
import json
import select
import sys
import threading
import time

name, sleeps = sys.argv[1].encode(), int(sys.argv[2])
stop = threading.Event()
polls = 0


def poller() -> None:
    global polls
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name))         # PR_SET_NAME
    epoll = select.epoll()
    while not stop.is_set():
        epoll.poll(0.01)
        polls += 1


thread = threading.Thread(target=poller)
thread.start()
start = time.monotonic()
for _ in range(sleeps):
    time.sleep(1.0)
slept = time.monotonic() - start
stop.set()
thread.join()
print(json.dumps({"slept": slept, "polls": polls}))
