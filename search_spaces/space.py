"""What a search space is: named knobs, each with a finite domain, some only meaningful when
another knob has a given value. Whether a combination can run on a model and GPU (heads divisible,
weights fitting, the GPU budget) is checked per trial before launch (autotune/study.py with
emulator/feasibility.py), because it depends on the study, not on the engine.

Knobs are named by the engine's own argument names (conf/engine/<engine>.yaml), so a trial's
parameters are the engine arguments a user would type. Domains are lists, not ranges: serving
knobs take a few meaningful values (powers of two for batch limits), and a categorical domain
lets the sampler model every knob the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol


class Suggester(Protocol):
    """The part of an Optuna trial a space needs (optuna.Trial satisfies it)."""

    def suggest_categorical(self, name: str, choices: list) -> object: ...


@dataclass(frozen=True)
class Knob:
    name: str                   # the engine's argument name
    domain: tuple
    # Sampled only when this holds for the knobs sampled before it; otherwise the engine's default.
    when: Callable[[dict], bool] | None = None
    help: str = ""
    # Arguments under which `when` holds, so that a value can be checked on its own (a study file's
    # domains are checked value by value before anything runs).
    context: dict | None = None


@dataclass(frozen=True)
class Space:
    engine: str
    knobs: tuple[Knob, ...]

    def narrowed(self, domains: dict) -> Space:
        """The space with some knobs' domains replaced (a study's `search.space`)."""
        names = [k.name for k in self.knobs]
        unknown = sorted(set(domains) - set(names))
        if unknown:
            raise ValueError(f"search.space.{unknown[0]}: not a knob of the {self.engine} space; knobs: {', '.join(names)}")
        knobs = []
        for knob in self.knobs:
            values = domains.get(knob.name, knob.domain)
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"search.space.{knob.name}: must be a non-empty list of values, got {values!r}")
            knobs.append(Knob(knob.name, tuple(values), knob.when, knob.help, knob.context))
        return Space(self.engine, tuple(knobs))

    def configurations(self) -> list[dict]:
        """Every set of trial parameters `suggest` can produce, conditions respected: the grid of
        an exhaustive study. Found by replaying `suggest`, branching on each knob it asks for."""
        complete, pending = [], [{}]
        while pending:
            fixed = pending.pop(0)
            branch = _Branch(fixed)
            self.suggest(branch)
            if branch.open is None:
                complete.append(fixed)
            else:
                name, choices = branch.open
                pending += [{**fixed, name: value} for value in choices]
        return complete

    def suggest(self, trial: Suggester) -> dict:
        """A trial's engine arguments: every knob the trial samples (conditions permitting)."""
        args: dict = {}
        for knob in self.knobs:
            if knob.when is not None and not knob.when(args):
                continue
            args[knob.name] = knob.domain[0] if len(knob.domain) == 1 else trial.suggest_categorical(knob.name, list(knob.domain))
        return args


class _Branch:
    """A Suggester answering with fixed values; of the knobs not fixed, it notes the first one asked."""

    def __init__(self, fixed: dict) -> None:
        self.fixed = fixed
        self.open: tuple[str, list] | None = None

    def suggest_categorical(self, name: str, choices: list) -> object:
        if name in self.fixed:
            return self.fixed[name]
        if self.open is None:
            self.open = (name, choices)
        return choices[0]


@dataclass(frozen=True)
class EngineSpaces:
    """Several engines' spaces searched in one study: the engine is the first knob (`engine`), then
    that engine's own knobs (their names differ between engines, so each keeps its own history)."""
    spaces: dict[str, Space]

    def suggest(self, trial: Suggester) -> dict:
        engine = trial.suggest_categorical("engine", list(self.spaces))
        return {"engine": engine, **self.spaces[engine].suggest(trial)}

    def configurations(self) -> list[dict]:
        return [{"engine": engine, **params} for engine, space in self.spaces.items() for params in space.configurations()]


@dataclass(frozen=True)
class SkuChoice:
    """A study over several GPU types: the type is the first knob (`sku`), then the engines' space.
    The knobs do not depend on the type (what does not fit one type's memory is refused per trial),
    so every type shares one space and the sampler learns across them."""
    skus: tuple[str, ...]
    inner: Space | EngineSpaces

    def suggest(self, trial: Suggester) -> dict:
        return {"sku": trial.suggest_categorical("sku", list(self.skus)), **self.inner.suggest(trial)}

    def configurations(self) -> list[dict]:
        return [{"sku": sku, **params} for sku in self.skus for params in self.inner.configurations()]
