"""Per-engine search spaces, by engine name (the `engine.name` of a study)."""
from __future__ import annotations

from search_spaces import sglang, vllm
from search_spaces.space import EngineSpaces, Knob, Space

SPACES: dict[str, Space] = {"vllm": vllm.SPACE, "sglang": sglang.SPACE}


def study_space(engines: list[str], domains: dict) -> Space | EngineSpaces:
    """The space of a study searching these engines, each narrowed by the `search.space` domains of
    its own knobs; one engine's space alone when there is one."""
    if len(engines) == 1:
        return SPACES[engines[0]].narrowed(domains)
    names = {engine: {knob.name for knob in SPACES[engine].knobs} for engine in engines}
    unknown = sorted(set(domains) - set().union(*names.values()))
    if unknown:
        raise ValueError(f"search.space.{unknown[0]}: not a knob of the {' or '.join(engines)} spaces; knobs: "
                         + "; ".join(f"{e}: {', '.join(sorted(n))}" for e, n in names.items()))
    return EngineSpaces({engine: SPACES[engine].narrowed({k: v for k, v in domains.items() if k in names[engine]})
                         for engine in engines})


__all__ = ["EngineSpaces", "Knob", "SPACES", "Space", "study_space"]
