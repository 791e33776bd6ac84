"""Configurations that cannot work, refused before anything is launched.

A trial that the engine would reject after minutes of start-up (or that could never fit) fails
here in milliseconds, with the knob and the fix named. Only checks that hold for every engine
live here; the engine still has the last word.
"""
from __future__ import annotations

import json
from pathlib import Path

from emulator.engines.adapter import ServingKnobs
from emulator.hardware import MAX_DEVICES, Sku

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
GPUS_PER_NODE = 8       # an HGX node: the NVLink domain tensor and pipeline parallelism run in


class Infeasible(ValueError):
    """The configuration cannot run; the message names the knob and what would work."""


def check(model_dir: Path, knobs: ServingKnobs, sku: Sku) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    if knobs.disaggregated:
        _check_layout(config, knobs)
        for role in knobs.roles():
            check(model_dir, role.knobs, sku)
        return
    tp, pp = knobs.tensor_parallel, knobs.pipeline_parallel
    if tp * pp > GPUS_PER_NODE:
        raise Infeasible(f"tensor_parallel x pipeline_parallel = {tp * pp} GPUs per replica: one replica spans one "
                         f"node of {GPUS_PER_NODE} GPUs here; use at most {GPUS_PER_NODE} (and data_parallel for more)")
    check_tensor_parallel(config, tp)
    if knobs.gpus > MAX_DEVICES:
        raise Infeasible(f"data_parallel={knobs.data_parallel} makes {knobs.gpus} GPUs (tensor_parallel x pipeline_parallel x "
                         f"data_parallel), more than the {MAX_DEVICES} virtual GPUs of one deployment: use data_parallel "
                         f"<= {MAX_DEVICES // (tp * pp)}")
    layers = config["num_hidden_layers"]
    if pp > layers:
        raise Infeasible(f"pipeline_parallel={pp} exceeds the model's {layers} layers")
    # The engines refuse a context longer than the model's positions (their limit is larger only
    # under a RoPE scaling that extends it, e.g. yarn, which is not checked here).
    positions = config.get("max_position_embeddings")
    rope = (config.get("rope_scaling") or {}).get("rope_type", "default")
    if knobs.max_model_len is not None and positions and rope in ("default", "llama3") and knobs.max_model_len > positions:
        raise Infeasible(f"max_model_len={knobs.max_model_len} is more than the model's {positions} positions "
                         f"(max_position_embeddings in its config.json): use at most {positions}, or leave it unset")
    weights = parameter_count(config) * DTYPE_BYTES.get(config.get("torch_dtype", "bfloat16"), 2)
    per_gpu = weights / (tp * pp)
    usable = (sku.memory_bytes - sku.context_memory_bytes) * (knobs.gpu_memory_utilization or 0.9)
    if per_gpu > usable:
        need = -(-weights // int(usable))
        raise Infeasible(f"the weights take {per_gpu / 2**30:.1f} GiB per GPU at tensor_parallel={tp} x "
                         f"pipeline_parallel={pp}, more than the {usable / 2**30:.1f} GiB usable on a {sku.name}: "
                         f"use at least {need} GPUs per replica (tensor_parallel x pipeline_parallel)")


def _check_layout(config: dict, knobs: ServingKnobs) -> None:
    """A decode rank pulls the KV heads it holds from the prefill ranks holding them, so neither
    side may replicate heads (tensor parallelism beyond the KV heads). Each instance is then
    checked as a deployment of its own (it has GPUs of its own)."""
    kv_heads = config.get("num_key_value_heads", config["num_attention_heads"])
    for name, tp in (("prefill_tensor_parallel", knobs.prefill_tp), ("tensor_parallel", knobs.tensor_parallel)):
        if kv_heads % tp:
            raise Infeasible(f"{name}={tp} in a disaggregated layout: KV is pulled by heads, so it must divide the "
                             f"model's {kv_heads} KV heads (use one of {[d for d in range(1, kv_heads + 1) if kv_heads % d == 0]})")


def check_tensor_parallel(config: dict, tp: int) -> None:
    """A tensor-parallel size splits the attention and KV heads of the model (its config.json) and fits
    one node, or no other setting makes it run."""
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    if tp > GPUS_PER_NODE:
        raise Infeasible(f"tensor_parallel={tp}: one replica spans one node of {GPUS_PER_NODE} GPUs here; "
                         f"use at most {GPUS_PER_NODE} (and data_parallel for more)")
    if heads % tp:
        raise Infeasible(f"tensor_parallel={tp} does not divide the model's {heads} attention heads: "
                         f"use one of {_divisors(heads, 8)}")
    if tp > kv_heads and tp % kv_heads or tp <= kv_heads and kv_heads % tp:
        raise Infeasible(f"tensor_parallel={tp} and the model's {kv_heads} KV heads: one must divide the other "
                         f"(use one of {[d for d in _divisors(heads, 8) if d % kv_heads == 0 or kv_heads % d == 0]})")


def parameter_count(config: dict) -> int:
    """Weights of a decoder-only transformer from its config (dense or mixture of experts)."""
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    mlp = 3 * hidden * config["intermediate_size"] * config.get("num_local_experts", 1)
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings + hidden


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, limit + 1) if n % d == 0]
