"""Shared memory a deployment leaves behind, found and removed.

Engines keep queues and tables in /dev/shm (vLLM's message queues `psm_*`, SGLang's `sglang_loads_*`
and `sgl_shm_mq_*`, multiprocessing's `sem.mp-*`), and the Timekeeper its clock page. A process
killed by SIGKILL or the OOM killer never unlinks them, and /dev/shm is memory that stays taken
until the host reboots. So while a deployment runs, the files under /dev/shm that its processes
hold open or mapped are noted in a file beside its logs (a deployment killed outright can still be
cleaned up after by whoever ends it), and once it has ended, every noted file that no live process
holds any more is removed. A file held only between two looks is not noted; the last look is taken
just before the deployment is stopped, when everything it keeps for its lifetime is held.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

SHM = "/dev/shm/"
RECORD_FILE = "shm_files.json"


def session_pids(sessions: set[int]) -> list[int]:
    """The live processes whose session is one of `sessions`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # fields after "(comm)": state ppid pgrp session ...
                state, _, _, session = stat.read().rsplit(")", 1)[1].split()[:4]
        except (OSError, IndexError, ValueError):
            continue
        if int(session) in sessions and state != "Z":
            pids.append(int(entry.name))
    return pids


def held(pids: list[int] | None = None) -> set[str]:
    """The /dev/shm files that processes `pids` (every process, by default) hold open or mapped."""
    if pids is None:
        pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    files = set()
    for pid in pids:
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    files.add(os.readlink(fd.path))
                except OSError:
                    continue
            with open(f"/proc/{pid}/maps") as maps:
                files.update(line[line.index(SHM):].rstrip("\n") for line in maps if SHM in line)
        except OSError:         # gone meanwhile, or not ours to read
            continue
    return {f for f in files if f.startswith(SHM) and not f.endswith(" (deleted)")}


class Noted:
    """The /dev/shm files a deployment's sessions have held, kept in `record` as they are found."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.files = set(json.loads(record.read_text())) if record.is_file() else set()

    def look(self, sessions: set[int]) -> None:
        new = held(session_pids(sessions)) - self.files
        if new:
            self.files |= new
            self.record.write_text(json.dumps(sorted(self.files), indent=1))


def sweep(record: Path) -> list[str]:
    """Remove the files noted in `record` that no live process holds; the files removed."""
    if not record.is_file():
        return []
    noted = set(json.loads(record.read_text()))
    still_held = held()
    removed = []
    for path in sorted(noted - still_held):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
