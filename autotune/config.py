"""A study file plus command-line overrides, composed by Hydra and checked before anything runs.

    revati-tune search conf/llama70b_h100.yaml workload.rate=8 search.trials=60

The study file is a Hydra primary config: a defaults list picking one option of each group under
conf/ (model, hardware, workload, slo, engine, search) and its own values on top. A study file
kept outside conf/ still finds the groups (conf/ is on Hydra's search path). Every error names the
field and what it accepts, so a typo costs seconds, not a failed hour-long study.

A study searches its engine (the `engine` group) or, with `search.engines: [vllm, sglang]`, several:
the engine is then the first knob of every trial. An engine other than the study's takes its
arguments from conf/engine/<engine>.yaml and `search.engine_args.<engine>` (the study file's
`engine:` section is in the study engine's argument names); its trials run as the study file with
`engine=<engine>`, that section's keys it does not know removed.

Switching a study's engine on the command line (`engine=sglang`) drops the study file's settings
named for another engine (its `engine:` section, `search.space`) with a note; keys typed on the
command line are the user's own and are checked. `revati-tune run` checks only what one deployment
uses (load(..., for_run=True)): the search section, bar the trial's time limit, is the search's.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from emulator import feasibility
from emulator.engines.adapter import ServingKnobs, in_argument_names
from emulator.hardware import MAX_DEVICES, load_sku
from emulator.loadgen import SpecError, WorkloadSpec, trace_rows
from emulator.deployment import RunConfig
from emulator.engines import registry
from emulator.paths import CONF, MODELS, model_names
from search_spaces import EngineSpaces, SkuChoice, study_space

GROUPS = ("model", "hardware", "workload", "slo", "engine", "search")
RUNNERS = ("local", "ray")
SAMPLERS = ("tpe", "random", "nsga2", "grid")
SLO_KEYS = ("ttft_ms", "tpot_ms", "e2el_ms")
MODEL_KEYS = ("name", "hf_id")
# What a study's workload sets: the load generator's spec less what the deployment fills in
# (base_url, model, api) and `arrival`, which rate and burstiness make.
WORKLOAD_KEYS = ("num_requests", "rate", "burstiness", "prompt_len", "output_len", "shared_prefix", "trace",
                 "max_concurrency", "seed", "ready_timeout_s")


class ConfigError(ValueError):
    """The study configuration is wrong; the message names the field and the fix."""


@dataclass(frozen=True)
class SearchedEngine:
    args: dict                  # its base arguments, by its own names; None = the engine's default
    overrides: tuple[str, ...]  # what turns the study file into one for this engine (trial commands)


@dataclass(frozen=True)
class StudyConfig:
    source: Path                # the study file
    overrides: tuple[str, ...]  # as given on the command line
    model: str                  # a folder of conf/model
    hf_id: str | None           # what a real deployment serves
    sku: str
    engine: str
    engine_args: dict           # the engine's own argument names; None = the engine's default
    workload: dict              # emulator.loadgen's spec, less base_url and model
    slos_ms: dict               # ttft/tpot/e2el -> ms, only those given
    attainment: float           # share of all requests that must meet the SLOs
    search: dict
    out: Path
    engines: dict               # engine -> SearchedEngine: the engines searched, the study's first
    skus: tuple[str, ...]       # the GPU types searched, the study's first (`sku`)
    prices: dict                # SKU -> USD per GPU-hour, for every SKU searched
    notes: tuple[str, ...] = () # what was changed from the study file, for the command to print

    def run_config(self, engine_args: dict | None = None, engine: str | None = None,
                   sku: str | None = None) -> RunConfig:
        """One deployment: this study's model, hardware and workload with these engine arguments."""
        engine = engine or self.engine
        args = {**self.engines[engine].args, **(engine_args or {})}
        return RunConfig(model=self.model, sku=sku or self.sku, knobs=knobs_from_engine_args(engine, args),
                         workload=self.workload, engine=engine, slos_ms=self.slos_ms or None,
                         timeout_s=float(self.search["trial_timeout_s"]))

    def space(self):
        """What trials sample: the engine's space, or with several engines the engine and then its
        space; with several SKUs, the SKU first."""
        return study_space({engine: registry.space(engine) for engine in self.engines}, self.search["space"],
                           self.skus)

    @property
    def per_dollar(self) -> bool:
        """Whether trials are scored per dollar (several GPU types) rather than per GPU."""
        return len(self.skus) > 1

    @property
    def storage(self) -> str:
        return self.search["storage"] or f"sqlite:///{(self.out / 'study.db').resolve()}"

    @property
    def study_name(self) -> str:
        return self.search["study_name"] or self.source.stem

    def as_dict(self) -> dict:
        return {"source": str(self.source), "overrides": list(self.overrides), "model": self.model,
                "hf_id": self.hf_id, "hardware": self.sku, "engine": self.engine, "engine_args": self.engine_args,
                "workload": self.workload, "slo": {**self.slos_ms, "attainment": self.attainment},
                "search": self.search, "out": str(self.out), "skus": list(self.skus), "prices": self.prices}


def load(study_file: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
         for_run: bool = False) -> StudyConfig:
    """The study, checked; for_run: only what `revati-tune run` uses (one deployment of its engine)."""
    path = Path(study_file)
    if not path.is_file():
        raise ConfigError(f"study file {study_file} not found (for example: conf/llama70b_h100.yaml)")
    overrides = tuple(overrides)
    for override in overrides:
        if "=" not in override and not override.startswith("~"):
            raise ConfigError(f"override {override!r} is not KEY=VALUE (for example: workload.rate=8)")
        _check_group_pick(override)
    search_path = f"hydra.searchpath=[file://{CONF}]"
    try:
        cfg = _compose(path, [*overrides, search_path])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain(error, path, overrides, search_path)) from None
    notes = _drop_other_engines_keys(cfg, overrides, for_run)
    try:
        return _checked(cfg, path, overrides, search_path, for_run, notes)
    except ConfigError as error:     # what was left out may be why: say so with the error
        raise ConfigError("\n".join([str(error), *(f"note: {note}" for note in notes)])) from None


def _check_group_pick(override: str) -> None:
    """A group takes an option's name (Hydra fails with a TypeError on some other values)."""
    key, _, value = override.lstrip("+~").partition("=")
    if key in GROUPS and value.strip()[:1] in ("[", "{"):
        options = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
        raise ConfigError(f"{key}: pick one option by its name, e.g. {key}={options[0]} (options: {', '.join(options)}), "
                          f"got {value}; set the group's values as {key}.KEY=VALUE")


def _checked(cfg: DictConfig, path: Path, overrides: tuple[str, ...], search_path: str, for_run: bool,
             notes: tuple[str, ...]) -> StudyConfig:
    config = replace(validate(cfg, path, overrides, for_run), notes=notes)
    if for_run:
        _check_deployment(config)
        return config
    engines = dict(config.engines)
    for engine in config.search["engines"] or ():
        if engine not in engines:
            engines[engine] = _other_engine(path, overrides, search_path, engine, config.search["engine_args"])
    config = replace(config, engines=engines)
    _check_space(config)
    return config


def _other_engine(path: Path, overrides: tuple[str, ...], search_path: str, engine: str,
                  engine_args: dict) -> SearchedEngine:
    """An engine searched beside the study's: the study file composed with engine=<engine>; the
    keys of its `engine:` section this engine does not know are removed, search.engine_args set."""
    own = without_engine_overrides(overrides)
    try:
        cfg = _compose(path, [*own, f"engine={engine}", search_path])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"search.engines: the study with engine={engine}: {_explain(error, path, tuple(own), search_path)}") from None
    known = registry.adapter(engine).knob_names()
    stray = _unknown_engine_keys(cfg.engine, engine)
    extra = engine_args.get(engine) or {}
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise ConfigError(f"search.engine_args.{engine}.{unknown[0]}: not a {engine} argument the emulator maps; "
                          f"known: {', '.join(known)}")
    args = {**{k: v for k, v in OmegaConf.to_container(cfg.engine).items() if k in known}, **extra}
    return SearchedEngine(args, (f"engine={engine}", *(f"~engine.{key}" for key in stray),
                                 *(f"engine.{key}={hydra_value(value)}" for key, value in extra.items())))


def _unknown_engine_keys(section: DictConfig, engine: str) -> list[str]:
    """Keys of an `engine:` section that are not arguments of this engine."""
    known = registry.adapter(engine).knob_names()
    return [key for key in section if key != "name" and key not in known]


def _drop_other_engines_keys(cfg: DictConfig, overrides: tuple[str, ...], for_run: bool) -> tuple[str, ...]:
    """With the engine switched on the command line, remove from cfg the study file's settings that
    are another engine's (the study file writes them in its own engine's names); return a note for
    each section changed. Typos, and whatever the command line set, stay to be refused."""
    engine = _engine_switch(overrides)
    if engine not in registry.SEARCHABLE:
        return ()
    typed = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    others = [registry.adapter(name).knob_names() for name in registry.SEARCHABLE if name != engine]
    stray = [key for key in _unknown_engine_keys(cfg.engine, engine)
             if f"engine.{key}" not in typed and any(key in known for known in others)]
    notes = _drop(cfg.engine, stray, f"engine={engine}: the study's engine settings {{keys}} are not {engine} "
                                     f"arguments and are left out (set {engine}'s own as engine.KEY=VALUE)")
    space = cfg.search.get("space") if isinstance(cfg.get("search"), DictConfig) else None
    if not for_run and isinstance(space, DictConfig) and not cfg.search.get("engines"):
        own = {knob.name for knob in registry.space(engine).knobs}
        other_knobs = {knob.name for name in registry.SEARCHABLE if name != engine for knob in registry.space(name).knobs}
        stray = [key for key in space if key not in own and key in other_knobs and f"search.space.{key}" not in typed]
        notes += _drop(space, stray, f"engine={engine}: search.space's {{keys}} are not {engine} knobs and are "
                                     f"left out (narrow {engine}'s own as search.space.KNOB=[...])")
    return notes


def _engine_switch(overrides: tuple[str, ...]) -> str | None:
    """The engine an `engine=NAME` override picks, if one does."""
    picks = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+") == "engine"]
    return picks[-1] if picks else None


def _drop(section: DictConfig, keys: list[str], note: str) -> tuple[str, ...]:
    if not keys:
        return ()
    with open_dict(section):
        for key in keys:
            section.pop(key)
    return (note.format(keys=", ".join(keys)),)


def without_engine_overrides(overrides) -> list[str]:
    """The overrides less those of the `engine` group (named in the study's own engine's terms)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("engine")]


def _compose(path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(path.resolve().parent), version_base=None):
        return compose(config_name=path.stem, overrides=overrides)


def validate(cfg: DictConfig, source: Path, overrides: tuple[str, ...] = (), for_run: bool = False) -> StudyConfig:
    for group in GROUPS:
        if not isinstance(cfg.get(group), DictConfig):
            options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
            raise ConfigError(f"{group}: missing; pick one in the study's defaults list or with {group}=NAME "
                              f"(options: {', '.join(options)})")
    data = OmegaConf.to_container(cfg, resolve=True)
    # A study file's own sections merge freely into the groups': a misspelt key would be ignored.
    _no_unknown_keys("", data, (*GROUPS, "out"))
    model = _model(data["model"])
    sku = _sku(data["hardware"])
    own_price = data["hardware"].get("price_per_gpu_hour")
    engine, engine_args = _engine(data["engine"])
    slos, attainment = _slo(data["slo"])
    search = _search(data["search"], RUN_SEARCH_KEYS if for_run else None)
    workload = _workload(data["workload"])
    out = data.get("out")
    if not isinstance(out, str) or not out:
        raise ConfigError("out: must be a folder for the study's database, trials and report (out=studies/NAME)")
    _check_out(Path(out))
    if not for_run and search["engines"] is not None and engine not in search["engines"]:
        raise ConfigError(f"search.engines: must include the study's engine ({engine}, its engine.name), "
                          f"got {search['engines']}")
    skus, prices = (sku,), {sku: own_price}
    if not for_run:
        skus, prices = _skus_and_prices(sku, own_price, search["skus"], search["price_per_gpu_hour"] or {})
    config = StudyConfig(source=source, overrides=overrides, model=model["name"], hf_id=model.get("hf_id"),
                         sku=sku, engine=engine, engine_args=engine_args, workload=workload, slos_ms=slos,
                         attainment=attainment, search=search, out=Path(out),
                         engines={engine: SearchedEngine(engine_args, ())}, skus=skus, prices=prices)
    return config


def _check_out(out: Path) -> None:
    """out is a folder, or one can be made there: `run` and `search` write into it once started."""
    here = out.absolute()
    existing = next(path for path in (here, *here.parents) if path.exists())
    if existing == here and not here.is_dir():
        reason = "a file is there"
    elif not existing.is_dir():
        reason = f"{existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable"
    else:
        return
    raise ConfigError(f"out: cannot create {out} ({reason}); give a folder you can write (out=studies/NAME)")


def _check_deployment(config: StudyConfig) -> None:
    """What `run` would refuse once started (the engine's checks of its flags, a model that does
    not fit the GPUs), refused here with the engine's argument named."""
    try:
        knobs = config.run_config().knobs
        registry.adapter(config.engine).deploy_command(config.model, knobs)     # the engine checks its flags
        feasibility.check(MODELS / config.model, knobs, load_sku(config.sku))
    except ValueError as error:
        raise _engine_error(config.engine, error, "engine") from None


def _check_space(config: StudyConfig) -> None:
    """Every searched engine's arguments make knobs, and so does every value of the space; the
    space narrows; its tensor-parallel sizes can run; grid sizes the budget."""
    for engine in config.engines:
        _check_args(config, engine, {}, "engine" if engine == config.engine else f"search.engine_args.{engine}")
    try:
        space = config.space()
    except ValueError as error:
        raise ConfigError(str(error)) from None
    engines_space = space.inner if isinstance(space, SkuChoice) else space
    for engine, engine_space in (engines_space.spaces if isinstance(engines_space, EngineSpaces)
                                 else {config.engine: engines_space}).items():
        for knob in engine_space.knobs:
            for value in knob.domain:
                _check_args(config, engine, {**(knob.context or {}), knob.name: value}, f"search.space.{knob.name}")
        _check_tensor_parallel(config, engine)
    if config.search["sampler"] == "grid":
        config.search["trials"] = len(space.configurations())     # every configuration once


def _check_args(config: StudyConfig, engine: str, args: dict, field: str) -> None:
    """The engine takes these arguments over its base ones (a trial would fail on them otherwise)."""
    try:
        registry.adapter(engine).deploy_command(config.model, config.run_config(args, engine).knobs)
    except ValueError as error:
        raise _engine_error(engine, error, field) from None


def _check_tensor_parallel(config: StudyConfig, engine: str) -> None:
    """Each tensor-parallel size the study lists splits the model's heads, fits one node and
    search.max_gpus: otherwise no other knob makes it run. What fails only in some combination
    (memory, the GPU budget) is refused trial by trial and recorded as infeasible."""
    adapter = registry.adapter(engine)
    name = next((arg for arg, knob in adapter.arguments.items() if knob == "tensor_parallel"), None)
    model = json.loads((MODELS / config.model / "config.json").read_text())
    for tp in config.search["space"].get(name) or ():
        try:
            feasibility.check_tensor_parallel(model, tp)
            if tp > config.search["max_gpus"]:
                raise feasibility.Infeasible(f"tensor_parallel={tp} is over the budget search.max_gpus="
                                             f"{config.search['max_gpus']}")
        except feasibility.Infeasible as error:
            raise ConfigError(f"search.space.{name}: {in_argument_names(str(error), adapter.arguments)}; "
                              f"leave {tp} out") from None


def refusal(config: StudyConfig, run_config: RunConfig) -> str | None:
    """Why a configuration cannot run here, found in milliseconds instead of after start-up."""
    budget = config.search["max_gpus"]
    if run_config.knobs.gpus > budget:
        how = "all its instances" if run_config.knobs.disaggregated else "tensor x pipeline x data parallel"
        return f"{run_config.knobs.gpus} GPUs ({how}), over the budget search.max_gpus={budget}"
    try:
        feasibility.check(run_config.model_dir(), run_config.knobs, load_sku(run_config.sku))
    except feasibility.Infeasible as error:
        return str(error)
    return None


def _engine_error(engine: str, error: Exception, field: str) -> ConfigError:
    """An engine's refusal in its own argument names, under the field given, or under that field's
    argument where the message starts with one (engine.tp_size: ...)."""
    adapter = registry.adapter(engine)
    message = in_argument_names(str(error), adapter.arguments, adapter.inverted)
    arg = re.match(r"\w+", message).group(0)
    if field == "engine" and arg in adapter.arguments:
        field = f"engine.{arg}"
        message = message.removeprefix(f"{arg} ") if message.startswith(f"{arg} must ") else message
    return ConfigError(f"{field}: {message}")


def knobs_from_engine_args(engine: str, args: dict) -> ServingKnobs:
    return registry.adapter(engine).knobs(args)


def _no_unknown_keys(section: str, data: dict, allowed) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{section}{unknown[0]}: unknown; allowed: {', '.join(allowed)}")


def _model(model: dict) -> dict:
    _no_unknown_keys("model.", model, MODEL_KEYS)
    if not isinstance(model.get("hf_id"), str | None):
        raise ConfigError(f"model.hf_id: must be a Hugging Face model id (org/name) or null, got {model['hf_id']!r}")
    name = model.get("name")
    if not isinstance(name, str) or not (MODELS / name / "config.json").is_file():
        raise ConfigError(f"model.name: {name!r} has no conf/model/{name}/config.json; known: {', '.join(model_names())}")
    return model


def _sku(hardware: dict) -> str:
    # The run loads the SKU by name, so only `sku` may be set; the rest is the SKU file's.
    _no_unknown_keys("hardware.", hardware, _hardware_keys())
    try:
        return load_sku(hardware.get("sku", "")).sku
    except ValueError as error:
        raise ConfigError(f"hardware.sku: {error}") from None


def _skus_and_prices(sku: str, own_price: object, searched: list | None,
                     overrides: dict) -> tuple[tuple[str, ...], dict[str, float]]:
    """The SKUs a study searches (its own first) and each one's price per GPU-hour: the
    search.price_per_gpu_hour entry, else for the study's own SKU hardware.price_per_gpu_hour,
    else the SKU file's."""
    try:
        named = [load_sku(name).sku for name in searched or ()]
    except ValueError as error:
        raise ConfigError(f"search.skus: {error}") from None
    if searched is not None and sku not in named:
        raise ConfigError(f"search.skus: must include the study's hardware ({sku}, its hardware.sku), got {searched}")
    skus = list(dict.fromkeys([sku, *named]))
    prices = {}
    for name in skus:
        price = overrides.get(name, own_price if name == sku else load_sku(name).price_per_gpu_hour)
        if not _is_number(price) or price <= 0:
            field = (f"search.price_per_gpu_hour.{name}" if name in overrides else "hardware.price_per_gpu_hour")
            raise ConfigError(f"{field}: must be a positive number of USD per GPU-hour, got {price!r}")
        prices[name] = float(price)
    unknown = sorted(set(overrides) - set(skus))
    if unknown:
        raise ConfigError(f"search.price_per_gpu_hour.{unknown[0]}: not a SKU this study searches "
                          f"({', '.join(skus)}); list it in search.skus")
    return tuple(skus), prices


def _hardware_keys() -> list[str]:
    """sku and the fields a SKU file has (conf/hardware/*.yaml)."""
    files = [OmegaConf.load(path) for path in sorted((CONF / "hardware").glob("*.yaml"))]
    return list(dict.fromkeys(key for data in files for key in data))


def _engine(engine: dict) -> tuple[str, dict]:
    name = engine.get("name")
    if name not in registry.SEARCHABLE:
        raise ConfigError(f"engine.name: must be one of {', '.join(registry.SEARCHABLE)}, got {name!r}")
    args = {k: v for k, v in engine.items() if k != "name"}
    known = registry.adapter(name).knob_names()
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(f"engine.{unknown[0]}: not a {name} argument the emulator maps; known: {', '.join(known)}")
    return name, args


def _slo(slo: dict) -> tuple[dict, float]:
    unknown = sorted(set(slo) - {*SLO_KEYS, "attainment"})
    if unknown:
        raise ConfigError(f"slo.{unknown[0]}: unknown; allowed: {', '.join((*SLO_KEYS, 'attainment'))}")
    slos = {}
    for key in SLO_KEYS:
        value = slo.get(key)
        if value is None:
            continue
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"slo.{key}: must be a positive number of milliseconds or null, got {value!r}")
        slos[key.removesuffix("_ms")] = float(value)
    if not slos:
        raise ConfigError(f"slo: give at least one of {', '.join(SLO_KEYS)} (milliseconds)")
    attainment = slo.get("attainment")
    if not _is_number(attainment) or not 0 < attainment <= 1:
        raise ConfigError(f"slo.attainment: must be a share in (0, 1], e.g. 0.9, got {attainment!r}")
    return slos, float(attainment)


# What one deployment (`revati-tune run`) uses of the search section.
RUN_SEARCH_KEYS = ("trial_timeout_s",)


def _search(search: dict, only: tuple[str, ...] | None = None) -> dict:
    """The search section checked: every key, or `only` these."""
    checks = {
        "trials": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
        "runner": (lambda v: v in RUNNERS, f"one of {', '.join(RUNNERS)}"),
        "parallel": (lambda v: v == "auto" or isinstance(v, int) and v >= 1, "auto or an integer >= 1"),
        "ray_address": (lambda v: v is None or isinstance(v, str), "a Ray address (host:port) or null"),
        "storage": (lambda v: v is None or isinstance(v, str) and "://" in v, "an Optuna storage URL or null"),
        "study_name": (lambda v: v is None or isinstance(v, str) and v != "", "a name or null"),
        "sampler": (lambda v: v in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
        "seed": (lambda v: isinstance(v, int), "an integer"),
        "max_gpus": (lambda v: isinstance(v, int) and 1 <= v <= MAX_DEVICES,
                     f"an integer from 1 to {MAX_DEVICES} (the virtual GPUs of one deployment)"),
        "trial_timeout_s": (lambda v: _is_number(v) and v > 0, "a positive number of seconds"),
        "prune": (lambda v: isinstance(v, bool), "true or false"),
        "space": (lambda v: isinstance(v, dict), "a mapping of knob name to a list of values"),
        "engines": (lambda v: v is None or isinstance(v, list) and len(v) >= 1 and all(e in registry.SEARCHABLE for e in v),
                    f"null (the study's engine) or a list of engines from {', '.join(registry.SEARCHABLE)}"),
        "engine_args": (lambda v: isinstance(v, dict) and all(e in registry.SEARCHABLE and isinstance(a, dict | None)
                                                              for e, a in v.items()),
                        "a mapping of engine name to its arguments, e.g. {sglang: {context_length: 2048}}"),
        "skus": (lambda v: v is None or isinstance(v, list) and len(v) >= 1 and all(isinstance(s, str) for s in v),
                 "null (the study's hardware) or a list of SKUs, e.g. [h100, h200]"),
        "price_per_gpu_hour": (lambda v: v is None or isinstance(v, dict) and all(isinstance(k, str) for k in v),
                               "null (each SKU's default) or a mapping of SKU to USD per GPU-hour, e.g. {h200: 3.2}"),
    }
    unknown = sorted(set(search) - set(checks))
    if unknown and only is None:
        raise ConfigError(f"search.{unknown[0]}: unknown; allowed: {', '.join(checks)}")
    for key in only or checks:
        ok, expected = checks[key]
        if key not in search or not ok(search[key]):
            raise ConfigError(f"search.{key}: must be {expected}, got {search.get(key)!r}")
    return search


def _workload(workload: dict) -> dict:
    _no_unknown_keys("workload.", workload, WORKLOAD_KEYS)
    workload = dict(workload)
    rate = workload.pop("rate", None)
    burstiness = workload.pop("burstiness", 1.0)
    if workload.get("trace") is None:
        workload["arrival"] = {"process": "poisson" if burstiness == 1 else "gamma", "rate": rate,
                               "burstiness": burstiness}
    try:
        spec = WorkloadSpec.from_dict({**workload, "base_url": "http://127.0.0.1:1", "model": "m"})
        if spec.trace is not None:      # read now: the load generator reads it only once the engine is up
            trace_rows(spec)
    except SpecError as error:
        raise ConfigError("workload." + str(error).removeprefix("workload spec: ").removeprefix("arrival.")) from None
    # Hydra merges mappings: a study's {kind: uniform, low, high} over a group's {kind: fixed,
    # value} keeps `value`; keep only what the distribution uses.
    for key in ("prompt_len", "output_len"):
        if getattr(spec, key) is not None:
            workload[key] = {"kind": getattr(spec, key).kind, **getattr(spec, key).params}
    return workload


def hydra_value(value: object) -> str:
    """A value as a Hydra override writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _explain(error: Exception, path: Path, overrides: tuple[str, ...], search_path: str) -> str:
    """Hydra's message; where an override names a key that does not exist, the keys that do."""
    message = str(error).strip().splitlines()[0]
    cause = str(error.__cause__ or "")
    merging = re.match(r"Error merging override ([^=]+)=(.*)", message)
    kind = re.search(r"object_type=(dict|list)", cause)
    if merging and kind:        # a list given for a mapping, or a mapping for a list
        key, value = merging.groups()
        wanted = (f"a mapping such as {{KEY: VALUE}} (or set one entry: {key}.KEY=VALUE)" if kind.group(1) == "dict"
                  else "a list such as [A,B]")
        return f"{key}: must be {wanted}, got {value}"
    bad = re.match(r"Could not override '([^']+)'", message)
    if bad:
        key = bad.group(1)
        parent, _, leaf = key.rpartition(".")
        try:
            cfg = _compose(path, [o for o in overrides if not o.lstrip("+~").startswith(key + "=")] + [search_path])
            section = OmegaConf.select(cfg, parent) if parent else cfg
            missing = re.match(r"Key '([^']+)' is not in struct", cause)
            value = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").startswith(key + "=")), None)
            if isinstance(section, DictConfig) and leaf in section and missing and value is not None:
                # It exists: the mapping given is merged into it and has a key it lacks.
                return (f"{key}: {value} is merged into the study's {key}, which has no key {missing.group(1)!r}; "
                        f"to replace it instead, write ++{key}={value}")
            if isinstance(section, DictConfig):
                elsewhere = [f"{group}.{leaf}" for group in GROUPS if leaf in cfg.get(group, {})]
                hint = f"; did you mean {' or '.join(elsewhere)}?" if elsewhere else ""
                return f"{key}: unknown; {parent or 'the study'} has: {', '.join(str(k) for k in section.keys())}{hint}"
        except (HydraException, OmegaConfBaseException):
            pass
    # Hydra's full message lists the options of a group, then its search path: keep the options.
    details = str(error).strip().split("Config search path")[0].strip().splitlines()[1:]
    option = re.search(r"Could not find '(\w+)/([^']+)'", message)
    if option and option.group(1) in GROUPS:
        group, name = option.groups()
        options = [line.strip() for line in details if line.startswith(("\t", " ")) and line.strip()]
        return f"{group}: {name} is not an option (no conf/{group}/{name}.yaml); options: {', '.join(options)}"
    return f"{path}: {message}" + ("" if bad else "".join(f"\n{line}" for line in details))
