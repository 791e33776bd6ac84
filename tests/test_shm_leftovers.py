"""Shared memory left by a killed deployment is removed, and nothing that a live process holds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from emulator import shm_leftovers

# Creates two files under /dev/shm, one kept mapped (as a shared-memory segment is) and one kept
# open, prints their paths, then waits to be killed: it never unlinks them. (Not through
# multiprocessing.shared_memory: its resource tracker, a process of its own, would unlink the
# segment when the holder dies, unless it is killed with the session as a deployment's is.)
HOLDER = """
import mmap, sys, time
mapped = open('/dev/shm/revati-test-mapped-' + sys.argv[1], 'w+b')
mapped.truncate(4096)
view = mmap.mmap(mapped.fileno(), 4096)
mapped.close()
plain = open('/dev/shm/revati-test-open-' + sys.argv[1], 'w')
print(mapped.name, plain.name, flush=True)
time.sleep(600)
"""


def _holder(tag: str) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, tag], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    return process, process.stdout.readline().split()


def test_files_of_a_killed_session_are_removed_and_those_still_held_are_kept(tmp_path):
    record = tmp_path / shm_leftovers.RECORD_FILE
    killed, killed_files = _holder(f"killed-{os.getpid()}")
    alive, alive_files = _holder(f"alive-{os.getpid()}")
    try:
        noted = shm_leftovers.Noted(record)
        noted.look({killed.pid})
        assert noted.files == set(killed_files)
        # Another process comes to hold one of them: it must outlive the deployment's sweep.
        sharer = subprocess.Popen([sys.executable, "-c", f"f = open({killed_files[1]!r}); import time; time.sleep(600)"])
        time.sleep(0.5)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert all(Path(f).exists() for f in killed_files)       # SIGKILL unlinks nothing
        # The record outlives the process that kept it: a new reader sees what was noted.
        assert shm_leftovers.Noted(record).files == set(killed_files)
        assert shm_leftovers.sweep(record) == [killed_files[0]]
        sharer.kill()
        sharer.wait()
        assert shm_leftovers.sweep(record) == [killed_files[1]]
        assert all(Path(f).exists() for f in alive_files)       # another session's files are not noted
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait()
        for path in killed_files + alive_files:
            Path(path).unlink(missing_ok=True)


def test_a_deployment_that_noted_nothing_sweeps_nothing(tmp_path):
    assert shm_leftovers.sweep(tmp_path / shm_leftovers.RECORD_FILE) == []
