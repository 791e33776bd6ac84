"""SGLang 0.5.23 as a serving engine under emulation: `sglang serve` with the trial's knobs."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from emulator.engines.adapter import ServingKnobs, aggregated_only, knobs_from_arguments
from emulator.engines.envs import env_python

# revati-tune's SGLang general plugin (a module and its static dist-info, found by importlib.metadata
# on PYTHONPATH): publishes each forward pass's attention batch to the vGPU library.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"

# SGLang's argument names (`sglang serve --x-y` as x_y) for the knobs of ServingKnobs.
ARGUMENTS = {
    "tp_size": "tensor_parallel",
    "pp_size": "pipeline_parallel",
    "dp_size": "data_parallel",
    "max_running_requests": "max_num_seqs",
    "chunked_prefill_size": "max_num_batched_tokens",   # -1: chunked prefill off
    "disable_radix_cache": "prefix_caching",            # inverted
    "page_size": "block_size",
    "mem_fraction_static": "gpu_memory_utilization",
    "max_total_tokens": "max_total_tokens",
    "kv_cache_dtype": "kv_cache_dtype",
    "schedule_policy": "scheduling_policy",
    "disable_cuda_graph": "cuda_graphs",                # inverted
    "context_length": "max_model_len",
}
INVERTED = ("disable_radix_cache", "disable_cuda_graph")
# SGLang's scheduling policies (`--schedule-policy`); lpm (longest prefix match) uses the radix cache.
POLICIES = ("fcfs", "lpm", "lof", "random", "dfs-weight")

NOTES = [
    "SGLang's JIT kernels (sgl-kernel's jit modules) are compiled with the host's nvcc at start-up, "
    "as on a real deployment; CUDA_HOME names the toolkit the vGPU library was built against",
    "--disable-custom-all-reduce: SGLang's custom all-reduce kernels synchronise the ranks through flags in "
    "peer memory, which kernels that do nothing cannot; tensor-parallel all-reduces go through NCCL, whose "
    "collectives the vGPU library times from measurements and synchronises across ranks",
    "requests go to SGLang's native /generate with token ids (its OpenAI endpoints need a tokenizer, and "
    "no tokenizer is downloaded), as sglang.bench_serving sends them",
    "FlashAttention 3 kernels (SGLang's Hopper default, from sgl-kernel) are MODELLED, not measured: each is "
    "charged the FA3 model for the forward pass's batch (published by revati-tune's SGLang plugin), as for "
    "vLLM; SGLang's other kernels (sgl-kernel, FlashInfer, its CuTe DSL "
    "norms) were not profiled and take the default kernel model fitted over measured kernels",
    "every rank samples token 0 (revati-tune's SGLang plugin overwrites the sampler's output): each "
    "tensor-parallel rank schedules from the ids its own sampler returned, and ids no kernel computed would "
    "differ between ranks; output lengths are the workload's (ignore_eos), so the token does not matter",
]


class SglangAdapter:
    name = "sglang"
    api = "sglang"
    arguments = ARGUMENTS
    inverted = INVERTED

    def knob_names(self) -> list[str]:
        return list(ARGUMENTS)

    def knobs(self, args: dict) -> ServingKnobs:
        off = args.get("chunked_prefill_size") == -1      # SGLang's way of turning chunked prefill off
        knobs = knobs_from_arguments("SGLang", ARGUMENTS, {k: v for k, v in args.items()
                                                           if not (off and k == "chunked_prefill_size")},
                                     inverted=INVERTED)
        return replace(knobs, chunked_prefill=False) if off else knobs

    def server_command(self, model_dir: Path, port: int, knobs: ServingKnobs) -> list[str]:
        return ["sglang", "serve", "--model-path", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
                "--load-format", "dummy", "--skip-tokenizer-init", "--disable-custom-all-reduce", *_flags(knobs)]

    def deploy_command(self, model: str, knobs: ServingKnobs) -> list[str]:
        """The same deployment on real GPUs: what a report recommends."""
        return ["sglang", "serve", "--model-path", model, *_flags(knobs)]

    def environment(self) -> dict[str, str]:
        from emulator.vgpu.build import cuda_include_dir
        return {"CUDA_HOME": str(cuda_include_dir().parent), "PYTHONPATH": str(PLUGIN_DIR)}

    def emulation_notes(self) -> list[str]:
        return list(NOTES)

    def python(self) -> Path:
        return env_python(self.name)


def _flags(knobs: ServingKnobs) -> list[str]:
    aggregated_only("SGLang", knobs)
    if knobs.compilation_mode is not None:
        raise ValueError("compilation_mode is a vLLM knob; SGLang has no equivalent the emulator maps")
    if knobs.scheduling_policy not in (None, *POLICIES):
        raise ValueError(f"scheduling_policy {knobs.scheduling_policy!r} is not an SGLang schedule policy; "
                         f"use one of {', '.join(POLICIES)}")
    if knobs.chunked_prefill is False and knobs.max_num_batched_tokens is not None:
        raise ValueError("chunked prefill is off (chunked_prefill_size -1) but a chunk size is set: set one")
    cmd = ["--tp-size", str(knobs.tensor_parallel), "--pp-size", str(knobs.pipeline_parallel),
           "--dp-size", str(knobs.data_parallel)]
    chunk = -1 if knobs.chunked_prefill is False else knobs.max_num_batched_tokens
    options = {
        "--max-running-requests": knobs.max_num_seqs,
        "--chunked-prefill-size": chunk,
        "--page-size": knobs.block_size,
        "--mem-fraction-static": knobs.gpu_memory_utilization,
        "--max-total-tokens": knobs.max_total_tokens,
        "--kv-cache-dtype": knobs.kv_cache_dtype,
        "--schedule-policy": knobs.scheduling_policy,
        "--context-length": knobs.max_model_len,
    }
    for flag, value in options.items():
        if value is not None:
            cmd += [flag, str(value)]
    if knobs.prefix_caching is False:
        cmd.append("--disable-radix-cache")
    if knobs.cuda_graphs is False:
        cmd.append("--disable-cuda-graph")
    return cmd
