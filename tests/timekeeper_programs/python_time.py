"""Python's clocks, sleeps and timeouts in virtual time (tests/test_timekeeper_time.py).

Prints one JSON object of virtual durations; the test asserts them."""
import json
import os
import queue
import select
import threading
import time

out = {}
m0, t0, p0, r0 = time.monotonic(), time.time(), time.perf_counter(), time.clock_gettime(time.CLOCK_REALTIME)
cpu0 = time.thread_time()
time.sleep(30)
out["sleep_monotonic"] = time.monotonic() - m0
out["sleep_time"] = time.time() - t0
out["sleep_perf_counter"] = time.perf_counter() - p0
out["sleep_realtime"] = time.clock_gettime(time.CLOCK_REALTIME) - r0
out["sleep_thread_time"] = time.thread_time() - cpu0       # CPU time: real, and tiny

start = time.monotonic()
out["event_result"] = threading.Event().wait(5)
out["event_waited"] = time.monotonic() - start

start = time.monotonic()
try:
    queue.Queue().get(timeout=2)
    out["queue_raised"] = False
except queue.Empty:
    out["queue_raised"] = True
out["queue_waited"] = time.monotonic() - start

r, w = os.pipe()
start = time.monotonic()
out["select_ready"] = len(select.select([r], [], [], 1.5)[0])
out["select_waited"] = time.monotonic() - start

# A lock acquired with a timeout while another thread releases it after its own 0.5 s sleep.
lock = threading.Lock()
lock.acquire()
releaser = threading.Thread(target=lambda: (time.sleep(0.5), lock.release()))
start = time.monotonic()
releaser.start()
out["lock_acquired"] = lock.acquire(timeout=10)
out["lock_waited"] = time.monotonic() - start
releaser.join()

# A timed acquire that times out must not hand the lock to another thread blocked on it (the
# deadline must not be delivered as a post to the lock's semaphore).
held = threading.Lock()
held.acquire()
untimed = {}
blocked = threading.Thread(target=lambda: (held.acquire(), untimed.setdefault("at", time.monotonic())), daemon=True)
blocked.start()
time.sleep(0.1)                         # the untimed acquire waits first
start = time.monotonic()
out["contended_acquired"] = held.acquire(timeout=1)
out["contended_waited"] = time.monotonic() - start
time.sleep(0.5)
out["untimed_acquired_while_held"] = "at" in untimed
held.release()
blocked.join(5)
out["untimed_acquired_after_release"] = "at" in untimed

print(json.dumps(out), flush=True)
