"""vLLM's search space: parallelism (which sets the GPU count, an objective), batch limits,
chunked prefill, prefix caching and memory use. Values are vLLM's argument values.

Domains are the values worth trying on an 8-GPU node; a study narrows them (`search.space`).
"""
from __future__ import annotations

from search_spaces.space import Knob, Space


SPACE = Space(
    engine="vllm",
    knobs=(
        Knob("tensor_parallel_size", (1, 2, 4, 8), help="GPUs one replica's layers are split across"),
        Knob("pipeline_parallel_size", (1, 2), help="stages one replica's layers are cut into"),
        Knob("data_parallel_size", (1, 2, 4, 8), help="replicas behind one endpoint"),
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
