"""Two threads handing items back and forth through two queue.Queue objects, each get with a 10 s
timeout (tests/test_timekeeper.py). One of the two always has an item on its way, so the
deployment is never idle with both waiting and no time jump is due; every wait is ended by the
other thread's put (Condition.notify: a semaphore post) and cancelled.

    queue_pingpong.py ROUNDS

Prints one JSON line: the rounds and the virtual seconds they took.
"""
import json
import queue
import sys
import threading
import time

rounds = int(sys.argv[1])
there, back = queue.Queue(), queue.Queue()


def echo() -> None:
    for _ in range(rounds):
        back.put(there.get(timeout=10))


thread = threading.Thread(target=echo)
start = time.monotonic()
thread.start()
for i in range(rounds):
    there.put(i)
    assert back.get(timeout=10) == i
thread.join()
print(json.dumps({"rounds": rounds, "took": time.monotonic() - start}))
