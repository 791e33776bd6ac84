"""What a serving engine adapter is: the knobs a trial sets, and how an engine turns them into its
own command line and environment. One module per engine implements `EngineAdapter`
(emulator/engines/vllm/adapter.py first); emulator/engines/registry.py names them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ServingKnobs:
    """A deployment's configuration. None means the engine's own default, which is what users
    deploy; only what a trial sets is passed on."""
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    data_parallel: int = 1
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None     # tokens per step; SGLang: its prefill chunk size
    chunked_prefill: bool | None = None
    prefix_caching: bool | None = None
    block_size: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_dtype: str | None = None
    scheduling_policy: str | None = None
    cuda_graphs: bool | None = None
    compilation_mode: int | None = None
    max_model_len: int | None = None
    max_total_tokens: int | None = None           # KV cache capacity in tokens (SGLang)
    expert_parallel: bool | None = None           # MoE experts split over the GPUs instead of each sliced
    # Disaggregated prefill/decode (0: aggregated, every instance does both): this many prefill-only
    # instances of prefill_tensor_parallel GPUs each (None: tensor_parallel), and decode_instances
    # decode-only instances of tensor_parallel GPUs, behind a proxy; the other knobs apply to both.
    prefill_instances: int = 0
    prefill_tensor_parallel: int | None = None
    decode_instances: int = 1

    def __post_init__(self) -> None:
        for name in ("tensor_parallel", "pipeline_parallel", "data_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self._check_layout()
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size", "max_model_len", "max_total_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or unset, got {value!r}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        # Which policies exist is the engine's to say (each adapter checks its own).
        if self.scheduling_policy is not None and not isinstance(self.scheduling_policy, str):
            raise ValueError(f"scheduling_policy must be a policy name or unset, got {self.scheduling_policy!r}")

    def _check_layout(self) -> None:
        for name in ("prefill_instances", "decode_instances"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.prefill_tensor_parallel is not None and (isinstance(self.prefill_tensor_parallel, bool) or not
                                                         isinstance(self.prefill_tensor_parallel, int) or
                                                         self.prefill_tensor_parallel < 1):
            raise ValueError(f"prefill_tensor_parallel must be an integer >= 1 or unset, got {self.prefill_tensor_parallel!r}")
        if not self.disaggregated:
            if self.decode_instances != 1 or self.prefill_tensor_parallel is not None:
                raise ValueError("decode_instances and prefill_tensor_parallel describe a disaggregated layout: "
                                 "set prefill_instances >= 1 with them, or leave them unset")
            return
        if self.decode_instances < 1:
            raise ValueError("a disaggregated layout needs decode_instances >= 1")
        if self.pipeline_parallel != 1 or self.data_parallel != 1:
            raise ValueError("a disaggregated layout sizes each instance by its tensor parallelism: pipeline_parallel "
                             "and data_parallel must be 1 (add instances with prefill_instances/decode_instances)")

    @property
    def disaggregated(self) -> bool:
        return self.prefill_instances > 0

    @property
    def layout(self) -> str:
        return "disaggregated" if self.disaggregated else "aggregated"

    @property
    def gpus(self) -> int:
        if self.disaggregated:
            return self.prefill_instances * self.prefill_tp + self.decode_instances * self.tensor_parallel
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel

    @property
    def prefill_tp(self) -> int:
        return self.prefill_tensor_parallel or self.tensor_parallel

    def roles(self) -> list[Role]:
        """The engine instances of the deployment: one that does both, or the prefill and decode ones."""
        if not self.disaggregated:
            return [Role("server", "both", self)]
        single = replace(self, prefill_instances=0, prefill_tensor_parallel=None, decode_instances=1)
        return ([Role(f"prefill-{i}", "prefill", replace(single, tensor_parallel=self.prefill_tp))
                 for i in range(self.prefill_instances)] +
                [Role(f"decode-{i}", "decode", single) for i in range(self.decode_instances)])

    @classmethod
    def from_dict(cls, values: dict) -> ServingKnobs:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown serving knob(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass(frozen=True)
class Role:
    """One engine instance of a deployment: its name (its log's), what it does (both, prefill or
    decode) and its own knobs (an aggregated layout's)."""
    name: str
    kind: str
    knobs: ServingKnobs


def aggregated_only(engine: str, knobs: ServingKnobs) -> None:
    if knobs.disaggregated:
        raise ValueError(f"prefill_instances: {engine} serves aggregated layouts only here; disaggregated "
                         "prefill/decode runs on vLLM (engine: vllm), or set prefill_instances to 0")


# Knobs that are switches: a value other than true or false would be read as one.
SWITCHES = ("chunked_prefill", "prefix_caching", "cuda_graphs")


def knobs_from_arguments(engine: str, arguments: dict[str, str], args: dict,
                         inverted: tuple[str, ...] = ()) -> ServingKnobs:
    """ServingKnobs from an engine's own argument names. arguments maps each name to its knob;
    an argument in `inverted` is the knob's negation (vLLM's enforce_eager is CUDA graphs off);
    None leaves the engine's default. Errors name the engine's argument, not the knob."""
    values = {}
    for arg, value in args.items():
        if arg not in arguments:
            raise ValueError(f"{arg} is not a {engine} argument the emulator maps; known: {', '.join(arguments)}")
        if value is not None and arguments[arg] in SWITCHES and not isinstance(value, bool):
            raise ValueError(f"{arg} must be true or false (or null: the engine's default), got {value!r}")
        if value is not None:
            values[arguments[arg]] = (not value) if arg in inverted else value
    try:
        return ServingKnobs.from_dict(values)
    except ValueError as error:
        raise ValueError(in_argument_names(str(error), arguments, inverted)) from None


def in_argument_names(message: str, arguments: dict[str, str], inverted: tuple[str, ...] = ()) -> str:
    """A message about ServingKnobs with each knob called by the engine's argument for it (not an
    inverted one's: enforce_eager is not what cuda_graphs says)."""
    names = {knob: arg for arg, knob in arguments.items() if arg not in inverted}
    if not names:
        return message
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: names[m.group(1)], message)


class EngineAdapter(Protocol):
    name: str           # its managed environment (emulator/engines/envs.py)
    api: str            # the streaming API the load generator sends to (emulator.loadgen.APIS)
    arguments: dict[str, str]   # its own argument names -> ServingKnobs fields
    inverted: tuple[str, ...]   # arguments that are their knob's negation

    def knob_names(self) -> list[str]:
        """The engine's own argument names that map to ServingKnobs (what conf/engine/ sets)."""

    def knobs(self, args: dict) -> ServingKnobs:
        """ServingKnobs from the engine's own argument names; None leaves the engine's default."""

    def deploy_command(self, model: str, knobs: ServingKnobs) -> list[str]:
        """The command that serves the same deployment on real GPUs."""

    def server_command(self, model_dir: Path, port: int, knobs: ServingKnobs) -> list[str]:
        """The engine's OpenAI-compatible server on 127.0.0.1:port, token-id prompts, dummy weights."""

    # Engines that serve disaggregated layouts (vLLM); the others refuse them (aggregated_only).
    kv_transfer_note: str       # how KV moves between a layout's instances on virtual GPUs

    def deploy_instance(self, model: str, role: Role) -> list[str]:
        """One prefill or decode instance of a disaggregated layout on real GPUs."""

    def role_arguments(self, role: Role, side_channel_port: int) -> list[str]:
        """What makes an instance of a disaggregated layout a prefill or a decode one (its KV transfer
        listening on side_channel_port and the ports after it, one per rank); [] for "both"."""

    def proxy_command(self, port: int, prefill_urls: list[str], decode_urls: list[str]) -> list[str]:
        """The router in front of a disaggregated layout, on 127.0.0.1:port."""

    def environment(self) -> dict[str, str]:
        """Engine settings the emulation needs, each for a stated reason (emulation_notes)."""

    def emulation_notes(self) -> list[str]:
        """Where the deployment differs from the engine's defaults, and why."""

    def python(self) -> Path:
        """The interpreter the engine's server runs in."""
