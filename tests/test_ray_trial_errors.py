"""What a trial whose Ray trainable failed is recorded with: the reason read from the error.txt
Ray Tune writes for the trial (the texts below are Ray 2.x's, as a killed worker left them)."""
from __future__ import annotations

from pathlib import Path

from autotune.ray_runner import _ray_error

WORKER_KILLED = """Failure # 1 (occurred at 2026-12-07_18-23-34)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tpid: 18044
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes include: (1) the OOM killer
"""

RAISED = """Failure # 1 (occurred at 2026-12-07_18-23-34)
ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)
  File "autotune/ray_runner.py", line 1, in _serve
RuntimeError: the engine environment is missing
"""


def _error_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "error.txt"
    path.write_text(text)
    return str(path)


def test_a_lost_worker_is_named_with_rays_exit_detail(tmp_path):
    assert _ray_error(_error_file(tmp_path, WORKER_KILLED)) == (
        "the Ray worker running the trial died (Worker unexpectedly exits with a connection error code 2)")


def test_an_exception_in_the_trainable_is_quoted(tmp_path):
    assert _ray_error(_error_file(tmp_path, RAISED)) == (
        "the Ray trial failed: RuntimeError: the engine environment is missing")


def test_no_error_file_says_so(tmp_path):
    for missing in (None, str(tmp_path / "absent.txt")):
        assert _ray_error(missing) == "the Ray trial failed, and Ray Tune wrote no error"
