"""What a deployment leaves on the host besides processes: shared memory and temporary files,
found and removed once it has ended.

Engines keep queues and tables in /dev/shm (vLLM's message queues `psm_*`, SGLang's `sglang_loads_*`
and `sgl_shm_mq_*`, multiprocessing's `sem.mp-*`), the Timekeeper its clock page, and they put
sockets and scratch files in the temporary directory (vLLM's ZeroMQ `ipc://` sockets and
`vllm_dist_*` files, `tempfile` folders). A process killed by SIGKILL or the OOM killer removes
none of them, and /dev/shm is memory that stays taken until the host reboots.

So a deployment gets a temporary directory of its own (TMPDIR), and while it runs, the files under
/dev/shm that its processes hold open or mapped are noted. Both go into a record beside its logs,
so that whoever ends a deployment that was killed outright can still clean up after it. Once the
deployment has ended, its temporary directory is removed, and so is every noted /dev/shm file
that no live process holds any more. A /dev/shm file held only between two looks is not noted;
the last look is taken just before the deployment is stopped, when everything it keeps for its
lifetime is held.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from emulator.process_groups import live_processes, open_files

SHM = "/dev/shm/"
RECORD_FILE = "leftovers.json"


def session_pids(sessions: set[int]) -> list[int]:
    """The live processes whose session is one of `sessions`."""
    return [pid for pid, _, session in live_processes() if session in sessions]


def held(pids: list[int] | None = None) -> set[str]:
    """The /dev/shm files that processes `pids` (every process, by default) hold open or mapped."""
    if pids is None:
        pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    files = set()
    for pid in pids:
        try:
            files.update(open_files(pid))
            with open(f"/proc/{pid}/maps") as maps:
                files.update(line[line.index(SHM):].rstrip("\n") for line in maps if SHM in line)
        except OSError:         # gone meanwhile, or not ours to read
            continue
    return {f for f in files if f.startswith(SHM) and not f.endswith(" (deleted)")}


class Leftovers:
    """A deployment's temporary directory and the /dev/shm files its sessions have held, kept in
    `record` as they are found."""

    def __init__(self, record: Path) -> None:
        self.record = record
        # Short, under the host's temporary directory: a Unix socket's path has at most 107 bytes.
        self.tmpdir = tempfile.mkdtemp(prefix="revati-run-")
        self.shm: set[str] = set()
        self._write()

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with the deployment's TMPDIR; Inductor keeps the cache it would have had (it is
        under the temporary directory by default, and trials share it)."""
        cache = env.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                                     f"torchinductor_{_user()}")
        return {**env, "TMPDIR": self.tmpdir, "TORCHINDUCTOR_CACHE_DIR": cache}

    def look_at(self, pids: list[int]) -> None:
        new = held(pids) - self.shm
        if new:
            self.shm |= new
            self._write()

    def _write(self) -> None:
        self.record.write_text(json.dumps({"tmpdir": self.tmpdir, "shm": sorted(self.shm)}, indent=1))


def sweep(record: Path) -> list[str]:
    """Remove what `record` notes: the temporary directory, and the /dev/shm files that no live
    process holds; the paths removed."""
    if not record.is_file():
        return []
    noted = json.loads(record.read_text())
    removed = []
    if os.path.isdir(noted["tmpdir"]):
        shutil.rmtree(noted["tmpdir"], ignore_errors=True)
        removed.append(noted["tmpdir"])
    for path in sorted(set(noted["shm"]) - held()):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def _user() -> str:
    try:
        import getpass
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
