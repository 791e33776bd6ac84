"""SGLang's search space: parallelism (which sets the GPU count, an objective), batch limits,
chunked prefill, the radix prefix cache and memory use. Values are SGLang's argument values.

Domains are the values worth trying on an 8-GPU node; a study narrows them (`search.space`).
"""
from __future__ import annotations

from search_spaces.space import Knob, Space


SPACE = Space(
    engine="sglang",
    knobs=(
        Knob("tp_size", (1, 2, 4, 8), help="GPUs one replica's layers are split across"),
        Knob("pp_size", (1, 2), help="stages one replica's layers are cut into"),
        Knob("dp_size", (1, 2, 4, 8), help="replicas behind one endpoint"),
        Knob("max_running_requests", (64, 128, 256, 512), help="requests batched in one step at most"),
        Knob("chunked_prefill_size", (2048, 4096, 8192, 16384),
             help="tokens of a prompt prefilled per step (-1: chunked prefill off; SGLang's default is 8192 on H100)"),
        Knob("disable_radix_cache", (False,),
             help="turn off the radix prefix cache (on by default); narrow to [false, true] to search it"),
        Knob("schedule_policy", ("fcfs",),
             help="request order: fcfs, or lpm (longest prefix match first, with the radix cache); narrow to search"),
        Knob("mem_fraction_static", (None,), help="share of GPU memory for weights and KV cache (None: SGLang's own sizing)"),
    ),
)
