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


def group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is in group pgid. Read from /proc rather than probed
    with killpg(pgid, 0), which also succeeds for zombies that an init not reaping leaves."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # fields after "(comm)": state ppid pgrp ...
                state, _, pgrp = stat.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False
