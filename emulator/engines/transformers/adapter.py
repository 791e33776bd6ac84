"""Hugging Face transformers' continuous batching as a serving engine: the reference engine of
`revati-tune validate` (DESIGN.md; issue 7), because it runs unchanged on the lent GPU machines,
where vLLM cannot be installed, and on virtual GPUs here.

The server is emulator/engines/transformers/server.py: transformers' `ContinuousBatchingManager` (paged KV
cache, its scheduler and generation loop) behind a thin OpenAI-compatible `/v1/completions`
streaming endpoint that takes token-id prompts, so emulator/loadgen.py drives it as it drives
`vllm serve`. The module is not named `transformers` so that it can never shadow the package.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from emulator.engines.adapter import ServingKnobs, aggregated_only, knobs_from_arguments
from emulator.engines import envs

# transformers' ContinuousBatchingConfig field names for the knobs of ServingKnobs.
ARGUMENTS = {
    "max_requests_per_batch": "max_num_seqs",
    "max_batch_tokens": "max_num_batched_tokens",
    "block_size": "block_size",
    "max_memory_percent": "gpu_memory_utilization",
    "allow_block_sharing": "prefix_caching",
    "use_cuda_graph": "cuda_graphs",
}

ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",             # config-only model folders: nothing to fetch
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

NOTES = [
    "transformers continuous batching (ContinuousBatchingManager) behind revati-tune's thin OpenAI "
    "/v1/completions server (emulator/engines/transformers/server.py): `transformers serve` takes text, not token ids",
    "attention paged|sdpa (no flash-attn package on the machines), so transformers' defaults turn CUDA graphs "
    "and async batching off",
    "SDPA's backends as torch chooses them on both sides, cuDNN included (the vGPU library runs and charges "
    "cuDNN's attention, emulator/vgpu/api/cudnn.c)",
    "random bf16 weights built from config.json; greedy decoding, EOS ignored",
]


class TransformersAdapter:
    name = "transformers"
    api = "openai"
    arguments = ARGUMENTS
    inverted = ()

    def knob_names(self) -> list[str]:
        return list(ARGUMENTS)

    def knobs(self, args: dict) -> ServingKnobs:
        return knobs_from_arguments("transformers continuous-batching", ARGUMENTS, args)

    def server_command(self, model_dir: Path, port: int, knobs: ServingKnobs) -> list[str]:
        return [str(self.python()), "-m", "emulator.engines.transformers.server", "--model-dir", str(model_dir),
                "--port", str(port), *_flags(knobs)]

    def deploy_command(self, model: str, knobs: ServingKnobs) -> list[str]:
        return ["python", "-m", "emulator.engines.transformers.server", "--model-dir", model, *_flags(knobs)]

    def environment(self) -> dict[str, str]:
        return dict(ENVIRONMENT)

    def emulation_notes(self) -> list[str]:
        return list(NOTES)

    def python(self) -> Path:
        """The interpreter that has torch and transformers: $REVATI_TRANSFORMERS_PYTHON, else this
        one or `python3` on PATH if they import there (the GPU machines' image), else the vLLM
        env's (it carries transformers)."""
        chosen = os.environ.get("REVATI_TRANSFORMERS_PYTHON")
        if chosen:
            return Path(chosen)
        candidates = [sys.executable, shutil.which("python3")]
        if envs.is_ready("vllm"):
            candidates.append(str(envs.env_python("vllm")))
        for candidate in filter(None, candidates):
            if _imports(candidate, "torch", "transformers", "aiohttp"):
                return Path(candidate)
        raise envs.EngineEnvError("no Python with torch, transformers and aiohttp found: set "
                                  "REVATI_TRANSFORMERS_PYTHON or run `revati-tune setup vllm` (its env has them)")


def _imports(python: str, *modules: str) -> bool:
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    try:
        return subprocess.run([python, "-c", code, *modules], env=env, capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _flags(knobs: ServingKnobs) -> list[str]:
    aggregated_only("the transformers engine", knobs)
    unsupported = [name for name in ("chunked_prefill", "kv_cache_dtype", "compilation_mode", "max_model_len",
                                     "max_total_tokens")
                   if getattr(knobs, name) is not None]
    if knobs.gpus != 1 or unsupported:
        raise ValueError("the transformers engine serves on one GPU with the knobs "
                         f"{', '.join(ARGUMENTS.values())}; got {knobs}")
    options = {
        "--max-requests-per-batch": knobs.max_num_seqs,
        "--max-batch-tokens": knobs.max_num_batched_tokens,
        "--block-size": knobs.block_size,
        "--max-memory-percent": knobs.gpu_memory_utilization,
        "--scheduler": knobs.scheduling_policy and {"fcfs": "fifo"}.get(knobs.scheduling_policy, knobs.scheduling_policy),
    }
    cmd = []
    for flag, value in options.items():
        if value is not None:
            cmd += [flag, str(value)]
    if knobs.prefix_caching is not None:
        cmd += ["--allow-block-sharing", "on" if knobs.prefix_caching else "off"]
    if knobs.cuda_graphs is not None:
        cmd += ["--cuda-graphs", "on" if knobs.cuda_graphs else "off"]
    return cmd
