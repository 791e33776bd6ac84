"""What a killed deployment left is removed: its temporary directory, and its shared memory unless a
live process still holds it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emulator import leftovers

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
    record = tmp_path / leftovers.RECORD_FILE
    killed, killed_files = _holder(f"killed-{os.getpid()}")
    alive, alive_files = _holder(f"alive-{os.getpid()}")
    try:
        noted = leftovers.Leftovers(record)
        env = noted.environment({"PATH": "/usr/bin"})
        assert env["TMPDIR"] == noted.tmpdir and env["TORCHINDUCTOR_CACHE_DIR"].startswith(tempfile.gettempdir())
        assert len(os.path.join(noted.tmpdir, "0" * 36)) < 100      # room for vLLM's ipc:// socket names
        Path(noted.tmpdir, "socket-left-by-vllm").touch()
        noted.look_at([killed.pid])
        assert noted.shm == set(killed_files)
        # Another process comes to hold one of them: it must outlive the deployment's sweep.
        sharer = subprocess.Popen([sys.executable, "-c", f"f = open({killed_files[1]!r}); import time; time.sleep(600)"])
        time.sleep(0.5)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert all(Path(f).exists() for f in killed_files)       # SIGKILL unlinks nothing
        # The record outlives the process that kept it: whoever ends a killed deployment reads it.
        assert leftovers.sweep(record) == [noted.tmpdir, killed_files[0]]
        assert not os.path.exists(noted.tmpdir)
        sharer.kill()
        sharer.wait()
        assert leftovers.sweep(record) == [killed_files[1]]
        assert all(Path(f).exists() for f in alive_files)       # another session's files are not noted
    finally:
        for process in (killed, alive):
            process.kill()
            process.wait()
        for path in killed_files + alive_files:
            Path(path).unlink(missing_ok=True)


def test_a_deployment_that_recorded_nothing_sweeps_nothing(tmp_path):
    assert leftovers.sweep(tmp_path / leftovers.RECORD_FILE) == []
