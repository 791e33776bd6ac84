"""Model shapes for the profiler, read from the project's model descriptions.

The profiler times the kernels of real models' layers. Their shapes are not written down here:
each comes from conf/model/<name>/config.json (the model's published Hugging Face config, the
same file the engines start on), found through emulator.paths. The profiler's scripts run as
plain files on a GPU machine with no install: each puts the repository root on sys.path before
importing this (emulator/paths.py imports nothing beyond the standard library).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from emulator.paths import model_dir

# The models whose layers profile_gpu.py times (GEMMs of every linear layer; grids.py) and whose
# hidden sizes profile_collectives.py moves, by conf/model/ folder.
PROFILED_MODELS = ("llama3_8b", "llama3_70b", "qwen2_5_72b", "mixtral_8x7b")


@dataclass(frozen=True)
class ModelShape:
    """What the profiled kernels' sizes follow from: one decoder layer's dimensions, the layer
    count and the vocabulary. A mixture of experts is described by one expert's MLP."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    layers: int
    vocab: int

    def tp_slice(self, tp: int) -> ModelShape:
        """One GPU's slice under tensor parallelism tp: heads, KV heads, MLP and vocabulary
        divided (no collectives; the caller checks that tp divides them)."""
        return dataclasses.replace(self, heads=self.heads // tp, kv_heads=self.kv_heads // tp,
                                   inter=self.inter // tp, vocab=self.vocab // tp)


def model_shape(name: str) -> ModelShape:
    """The shape of conf/model/<name>/config.json (a ValueError naming the known models if absent)."""
    with open(model_dir(name) / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    return ModelShape(hidden=hidden, heads=heads,
                      kv_heads=config.get("num_key_value_heads") or heads,
                      head_dim=config.get("head_dim") or hidden // heads,
                      inter=config["intermediate_size"], layers=config["num_hidden_layers"],
                      vocab=config["vocab_size"])
