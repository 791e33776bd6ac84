"""Where the project's own files are: the one place that knows the repository's layout.

Everything here is relative to the checkout (an editable install), since the C library's sources,
the Hydra config tree and the measured predictor data are files the code reads at run time.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
MODELS = CONF / "model"             # one folder per model, each with its config.json
HARDWARE = CONF / "hardware"        # one yaml per GPU SKU
PREDICTOR_DATA = REPO / "emulator" / "predictor" / "data"


def revati_home() -> Path:
    """The user's revati-tune state: engine envs, the built vGPU library, fitted predictor model
    files, host-CPU calibrations ($REVATI_HOME, default ~/.local/share/revati-tune)."""
    return Path(os.environ.get("REVATI_HOME") or "~/.local/share/revati-tune").expanduser()


def model_dir(name: str) -> Path:
    """conf/model/<name>, or a ValueError that lists the models there are."""
    path = MODELS / name
    if not isinstance(name, str) or not (path / "config.json").is_file():
        raise ValueError(f"model {name!r} has no conf/model/{name}/config.json; known: {', '.join(model_names())}")
    return path


def model_names() -> list[str]:
    return sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file())
