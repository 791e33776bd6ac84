"""Process groups: an emulated deployment (or an `exec` command) runs in a session of its own,
and ends as a whole, none of its processes left behind."""
from __future__ import annotations

import os
import signal
import time

GROUP_GRACE_SECONDS = 5.0       # between SIGTERM and SIGKILL


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def end_group(pgid: int) -> None:
    """SIGTERM to the group, then SIGKILL to whatever is left after the grace period; returns
    once nothing of the group runs any more (a killed process takes a moment to go)."""
    if not group_alive(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    if _gone_within(pgid, GROUP_GRACE_SECONDS):
        return
    signal_group(pgid, signal.SIGKILL)
    _gone_within(pgid, GROUP_GRACE_SECONDS)


def _gone_within(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def live_processes():
    """(pid, process group, session) of every live (non-zombie) process, read from /proc rather
    than probed with signals, which also reach zombies that an init not reaping leaves."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # fields after "(comm)": state ppid pgrp session ...
                state, _, pgrp, session = stat.read().rsplit(")", 1)[1].split()[:4]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z":
            yield int(entry.name), int(pgrp), int(session)


def open_files(pid: int) -> list[str]:
    """What process `pid`'s file descriptors point at (paths, "socket:[inode]", ...); OSError if
    the process is gone or not ours to read. A descriptor closed meanwhile is skipped."""
    targets = []
    for fd in os.scandir(f"/proc/{pid}/fd"):
        try:
            targets.append(os.readlink(fd.path))
        except OSError:
            continue
    return targets


def group_alive(pgid: int) -> bool:
    """Whether a live process is in group pgid."""
    return any(pgrp == pgid for _, pgrp, _ in live_processes())
