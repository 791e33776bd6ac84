"""The serving engines there are, by name: each one's adapter (how a deployment's knobs become its
command line and environment) and, for the engines a study can search, its search space. The
deployment module and the search driver read engines only through this module; an engine is added
as a folder like emulator/engines/vllm/ and named here.
"""
from __future__ import annotations

from dataclasses import dataclass

from emulator.engines.adapter import EngineAdapter
from emulator.engines.sglang import space as sglang_space
from emulator.engines.sglang.adapter import SglangAdapter
from emulator.engines.transformers.adapter import TransformersAdapter
from emulator.engines.vllm import space as vllm_space
from emulator.engines.vllm.adapter import VllmAdapter
from search_spaces.space import Space


@dataclass(frozen=True)
class Engine:
    adapter: EngineAdapter
    space: Space | None         # what a study searches; None: served, not searched (validate's reference)


ENGINES: dict[str, Engine] = {
    "vllm": Engine(VllmAdapter(), vllm_space.SPACE),
    "sglang": Engine(SglangAdapter(), sglang_space.SPACE),
    "transformers": Engine(TransformersAdapter(), None),
}
# The engines a study can search, in the order they are listed to users.
SEARCHABLE = tuple(name for name, engine in ENGINES.items() if engine.space is not None)


def adapter(name: str) -> EngineAdapter:
    """The named engine's adapter, or a ValueError that lists the engines there are."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return ENGINES[name].adapter


def space(name: str) -> Space:
    """The named engine's search space, or a ValueError that lists the engines a study can search."""
    if name not in SEARCHABLE:
        raise ValueError(f"engine must be one of {', '.join(SEARCHABLE)} to be searched, got {name!r}")
    return ENGINES[name].space
