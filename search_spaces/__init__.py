"""Search spaces: the knobs of an engine (each engine's own, emulator/engines/<engine>/space.py) and
what a study samples from them."""
from __future__ import annotations

from search_spaces.space import EngineSpaces, Knob, SkuChoice, Space


def study_space(spaces: dict[str, Space], domains: dict, skus: tuple[str, ...] = ()
                ) -> Space | EngineSpaces | SkuChoice:
    """The space of a study searching these engines (name -> its space), each narrowed by the
    `search.space` domains of its own knobs; one engine's space alone when there is one. With
    several GPU types (skus), the type is chosen first."""
    if len(skus) > 1:
        return SkuChoice(tuple(skus), study_space(spaces, domains))
    if len(spaces) == 1:
        return next(iter(spaces.values())).narrowed(domains)
    names = {engine: {knob.name for knob in space.knobs} for engine, space in spaces.items()}
    unknown = sorted(set(domains) - set().union(*names.values()))
    if unknown:
        raise ValueError(f"search.space.{unknown[0]}: not a knob of the {' or '.join(spaces)} spaces; knobs: "
                         + "; ".join(f"{e}: {', '.join(sorted(n))}" for e, n in names.items()))
    return EngineSpaces({engine: space.narrowed({k: v for k, v in domains.items() if k in names[engine]})
                         for engine, space in spaces.items()})


__all__ = ["EngineSpaces", "Knob", "SkuChoice", "Space", "study_space"]
