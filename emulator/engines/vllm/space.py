"""vLLM's search space: the layout (aggregated, or disaggregated prefill/decode instances),
parallelism (which sets the GPU count, an objective), batch limits, chunked prefill, prefix caching
and memory use. Values are vLLM's argument values.

Domains are the values worth trying on an 8-GPU node; a study narrows them (`search.space`).
"""
from __future__ import annotations

from search_spaces.space import Knob, Space


AGGREGATED, DISAGGREGATED = {"prefill_instances": 0}, {"prefill_instances": 1}


def _disaggregated(args: dict) -> bool:
    return bool(args.get("prefill_instances"))


SPACE = Space(
    engine="vllm",
    knobs=(
        Knob("prefill_instances", (0,),
             help="0: aggregated (every instance prefills and decodes); n: disaggregated, n prefill-only "
                  "instances; narrow to e.g. [0, 1, 2] to search layouts"),
        Knob("decode_instances", (1, 2, 3), when=_disaggregated, help="decode-only instances of a disaggregated layout",
             context=DISAGGREGATED),
        Knob("tensor_parallel_size", (1, 2, 4, 8), help="GPUs one replica's (one decode instance's) layers are split across"),
        Knob("prefill_tensor_parallel_size", (1, 2, 4, 8), when=_disaggregated,
             help="GPUs each prefill instance's layers are split across", context=DISAGGREGATED),
        Knob("pipeline_parallel_size", (1, 2), when=lambda args: not _disaggregated(args),
             help="stages one replica's layers are cut into", context=AGGREGATED),
        Knob("data_parallel_size", (1, 2, 4, 8), when=lambda args: not _disaggregated(args),
             help="replicas behind one endpoint", context=AGGREGATED),
        Knob("max_num_seqs", (64, 128, 256, 512), help="requests batched in one step at most"),
        Knob("enable_chunked_prefill", (True,),
             help="split long prompts across steps (vLLM's V1 default); narrow to [true, false] to search it"),
        Knob("max_num_batched_tokens", (2048, 4096, 8192, 16384),
             when=lambda args: args.get("enable_chunked_prefill", True),
             help="tokens per step: the chunk size of chunked prefill"),
        Knob("enable_prefix_caching", (True,), help="reuse KV blocks of shared prefixes (vLLM's default)"),
        Knob("gpu_memory_utilization", (0.9,), help="share of GPU memory vLLM may use (vLLM's default)"),
    ),
)
