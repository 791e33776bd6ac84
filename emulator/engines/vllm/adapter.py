"""vLLM 0.33.0 as a serving engine under emulation: `vllm serve` with the trial's knobs."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from emulator.engines.adapter import Role, ServingKnobs, knobs_from_arguments
from emulator.engines.envs import env_python

# revati-tune's vLLM general plugin (a module and its static dist-info, found by importlib.metadata
# on PYTHONPATH): publishes each step's attention batch to the vGPU library.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"

# Settings the emulation needs, by vLLM's own environment variables, each with its reason (they
# are printed with every run, so a result is never read as vLLM's defaults where it is not).
ENVIRONMENT = {
    # The V2 model runner keeps request state on the GPU and advances requests by counts that
    # kernels compute; kernels do nothing here, so no request ever advances. The V1 runner reads
    # back sampled token ids (host-backed memory: they round-trip) and runs the same kernels.
    "VLLM_USE_V2_MODEL_RUNNER": "0",
    # FlashInfer's top-k/top-p sampler is compiled just in time with nvcc and cuRAND headers that
    # the emulating host lacks; vLLM's PyTorch sampler is used instead (its kernels are predicted).
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    # No usage reports from emulated deployments.
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}

NOTES = [
    "VLLM_USE_V2_MODEL_RUNNER=0: vLLM 0.33's default V2 model runner advances requests by counts "
    "computed in kernels, which the emulator does not run; the V1 runner is used",
    "VLLM_USE_FLASHINFER_SAMPLER=0: FlashInfer's sampler needs a JIT build (nvcc, cuRAND headers); "
    "vLLM's PyTorch sampler is used",
    "FlashAttention 3 kernels (vLLM's Hopper default) are MODELLED, not measured (FA3 is not installed "
    "on the lent GPUs): each is charged a model of its CTAs over the SMs for the step's batch (published by "
    "revati-tune's vLLM plugin), calibrated to the FA3 paper's H100 prefill figures and carried to other SKUs "
    "by one SM's rate; decodes by their K/V bytes on the measured memory curve; CUDA graph replays re-charge "
    "attention for the batch being replayed",
]


# vLLM's argument names (`vllm serve --x-y` as x_y) for the knobs of ServingKnobs.
ARGUMENTS = {
    "tensor_parallel_size": "tensor_parallel",
    "pipeline_parallel_size": "pipeline_parallel",
    "data_parallel_size": "data_parallel",
    "max_num_seqs": "max_num_seqs",
    "max_num_batched_tokens": "max_num_batched_tokens",
    "enable_chunked_prefill": "chunked_prefill",
    "enable_prefix_caching": "prefix_caching",
    "block_size": "block_size",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "kv_cache_dtype": "kv_cache_dtype",
    "scheduling_policy": "scheduling_policy",
    "enforce_eager": "cuda_graphs",        # inverted: enforce_eager is CUDA graphs off
    "compilation_mode": "compilation_mode",
    "max_model_len": "max_model_len",
    "enable_expert_parallel": "expert_parallel",
    # The layout of a disaggregated deployment: revati-tune's names, not vLLM arguments (each instance
    # is a `vllm serve` of its own with a --kv-transfer-config; ServingKnobs says what they mean).
    "prefill_instances": "prefill_instances",
    "prefill_tensor_parallel_size": "prefill_tensor_parallel",
    "decode_instances": "decode_instances",
}


KV_ROLES = {"prefill": "kv_producer", "decode": "kv_consumer"}


# vLLM 0.33's compilation modes (vllm/config/compilation.py's CompilationMode); another fails only
# once the server starts.
COMPILATION_MODES = {0: "none", 1: "stock torch.compile", 2: "Dynamo trace once", 3: "vLLM's compile"}


class VllmAdapter:
    name = "vllm"
    api = "openai"
    kv_transfer_note = ("KV blocks move by revati-tune's NCCL connector (NixlConnector's protocol; NIXL's UCX "
                        "transports do not run on virtual GPUs): one send/recv per pull, charged by the predictor's "
                        "MODELLED NVLink send/recv")
    arguments = ARGUMENTS
    inverted = ("enforce_eager",)

    def knob_names(self) -> list[str]:
        return list(ARGUMENTS)

    def knobs(self, args: dict) -> ServingKnobs:
        return knobs_from_arguments("vLLM", ARGUMENTS, args, self.inverted)

    def server_command(self, model_dir: Path, port: int, knobs: ServingKnobs) -> list[str]:
        return ["vllm", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
                "--load-format", "dummy", "--skip-tokenizer-init",
                # Let the engine processes end by themselves when the server stops (they write
                # where their GPU time went as they exit); vLLM's default kills them at once.
                "--shutdown-timeout", "10", *_flags(knobs)]

    def deploy_command(self, model: str, knobs: ServingKnobs) -> list[str]:
        """The same deployment on real GPUs: what a report recommends. A disaggregated layout is one
        node's script: each instance on its own GPUs with NixlConnector (what the emulation's
        connector stands in for), and the proxy (revati-tune's, which speaks NIXL's protocol) on
        port 8000 in front."""
        if not knobs.disaggregated:
            return ["vllm", "serve", model, *_flags(knobs)]
        lines, urls, first_gpu = [], {"prefill": [], "decode": []}, 0
        for i, role in enumerate(knobs.roles()):
            port, gpus = 8100 + i, role.knobs.gpus
            devices = ",".join(str(first_gpu + g) for g in range(gpus))
            first_gpu += gpus
            lines.append(f"CUDA_VISIBLE_DEVICES={devices} VLLM_NIXL_SIDE_CHANNEL_PORT={5600 + 16 * i} "
                         + shlex.join([*self.deploy_instance(model, role), "--port", str(port)]) + " &")
            urls[role.kind].append(f"http://127.0.0.1:{port}")
        lines.append("exec " + shlex.join(_proxy("python3", 8000, urls, host="0.0.0.0")))
        return ["sh", "-c", "\n".join(lines)]

    def deploy_instance(self, model: str, role: Role) -> list[str]:
        """One prefill or decode instance of a disaggregated layout on real GPUs, with NixlConnector."""
        config = json.dumps({"kv_connector": "NixlConnector", "kv_role": KV_ROLES[role.kind]})
        return ["vllm", "serve", model, *_flags(role.knobs), "--kv-transfer-config", config]

    def role_arguments(self, role: Role, side_channel_port: int) -> list[str]:
        if role.kind == "both":
            return []
        # KV moves between instances by revati-tune's NCCL connector (plugin/revati_nccl_connector.py
        # says why not NIXL's), over vLLM's connector interface and NixlConnector's protocol.
        return ["--kv-transfer-config", json.dumps({
            "kv_connector": "NcclConnector", "kv_connector_module_path": "revati_nccl_connector",
            "kv_role": KV_ROLES[role.kind], "kv_connector_extra_config": {"side_channel_port": side_channel_port}})]

    def proxy_command(self, port: int, prefill_urls: list[str], decode_urls: list[str]) -> list[str]:
        return _proxy(str(self.python()), port, {"prefill": prefill_urls, "decode": decode_urls})

    def environment(self) -> dict[str, str]:
        return {**ENVIRONMENT, "PYTHONPATH": str(PLUGIN_DIR)}

    def emulation_notes(self) -> list[str]:
        return list(NOTES)

    def python(self) -> Path:
        return env_python(self.name)


def _proxy(python: str, port: int, urls: dict[str, list[str]], host: str | None = None) -> list[str]:
    """The P/D proxy's command: on `host` (its default, loopback, when None) and `port`."""
    return [python, "-m", "emulator.engines.vllm.pd_proxy", *(["--host", host] if host else []), "--port", str(port),
            "--prefill", *urls["prefill"], "--decode", *urls["decode"]]


def _flags(knobs: ServingKnobs) -> list[str]:
    if knobs.scheduling_policy not in (None, "fcfs", "priority"):
        raise ValueError(f"scheduling_policy must be fcfs or priority for vLLM, got {knobs.scheduling_policy!r}")
    if knobs.max_total_tokens is not None:
        raise ValueError("max_total_tokens is an SGLang knob; vLLM sizes its KV cache by gpu_memory_utilization")
    if knobs.compilation_mode is not None and not (type(knobs.compilation_mode) is int
                                                   and knobs.compilation_mode in COMPILATION_MODES):
        raise ValueError(f"compilation_mode must be one of {', '.join(f'{k} ({v})' for k, v in COMPILATION_MODES.items())} "
                         f"for vLLM, got {knobs.compilation_mode!r}")
    cmd = ["--tensor-parallel-size", str(knobs.tensor_parallel),
           "--pipeline-parallel-size", str(knobs.pipeline_parallel),
           "--data-parallel-size", str(knobs.data_parallel)]
    options = {
        "--max-num-seqs": knobs.max_num_seqs,
        "--max-num-batched-tokens": knobs.max_num_batched_tokens,
        "--block-size": knobs.block_size,
        "--gpu-memory-utilization": knobs.gpu_memory_utilization,
        "--kv-cache-dtype": knobs.kv_cache_dtype,
        "--scheduling-policy": knobs.scheduling_policy,
        "--max-model-len": knobs.max_model_len,
        "--compilation-config": None if knobs.compilation_mode is None else f'{{"mode": {knobs.compilation_mode}}}',
    }
    for flag, value in options.items():
        if value is not None:
            cmd += [flag, str(value)]
    switches = {"--enable-chunked-prefill": knobs.chunked_prefill, "--enable-prefix-caching": knobs.prefix_caching}
    for flag, on in switches.items():
        if on is not None:
            cmd.append(flag if on else flag.replace("--enable-", "--disable-"))
    if knobs.cuda_graphs is False:
        cmd.append("--enforce-eager")
    if knobs.expert_parallel:       # off is vLLM's default
        cmd.append("--enable-expert-parallel")
    return cmd
