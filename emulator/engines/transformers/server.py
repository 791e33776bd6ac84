"""A thin OpenAI-compatible streaming server around Hugging Face transformers' continuous batching.

    python -m emulator.engines.transformers.server --model-dir conf/model/llama3_2_1b --port 8000 \
        [--max-requests-per-batch 16] [--max-batch-tokens N] [--block-size 256] [--num-blocks N] \
        [--cuda-graphs on|off] [--attn-implementation sdpa]

Why not `transformers serve`: it serves chat completions and responses from text (a tokenizer is
needed, and the config-only model folders here have none), needs fastapi/uvicorn (absent from the
GPU machines), and cannot take token-id prompts; emulator/loadgen.py sends token-id prompts to
`/v1/completions`, as `vllm bench serve` does. So this module serves exactly that API and nothing
else, and everything that decides performance is transformers' own: the model (built from its
config.json with random bf16 weights, nothing downloaded), its paged KV cache, scheduler and
generation loop (`ContinuousBatchingManager`, the engine behind `generate_batch` and
`transformers serve`), in its default configuration unless a flag says otherwise.

Endpoints: GET /health (200 once the engine's generation thread runs), POST /v1/completions with
{"prompt": [token ids], "max_tokens": n, "stream": true, ...}: greedy, EOS ignored (eos -1), one
SSE chunk per generation step that produced tokens for the request, then a usage chunk and
[DONE]. Run with `-m` from the repository root (the adapter does), so that its imports resolve as
the project's.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path


def build_manager(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    if args.cudnn_attention == "off":
        # As the validation tables before 2026-12-06 ran (docs/fidelity/h200_cudnn_off.md): to compare with them.
        torch.backends.cuda.enable_cudnn_sdp(False)
    config = AutoConfig.from_pretrained(args.model_dir)
    started = time.monotonic()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                 attn_implementation=args.attn_implementation)
    model.eval()
    print(f"hf_server: {type(model).__name__} built from {args.model_dir} with random weights "
          f"({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters) in "
          f"{time.monotonic() - started:.1f} s", flush=True)
    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    values = {"max_requests_per_batch": args.max_requests_per_batch, "max_batch_tokens": args.max_batch_tokens,
              "num_blocks": args.num_blocks, "max_memory_percent": args.max_memory_percent,
              "allow_block_sharing": args.allow_block_sharing, "scheduler_type": args.scheduler}
    if args.block_size is not None:
        # transformers 5.20 renamed block_size to page_size.
        values["page_size" if "page_size" in fields else "block_size"] = args.block_size
    if args.cuda_graphs is not None:
        values["use_cuda_graph"] = args.cuda_graphs == "on"
    if "auto_switch_to_flash" in fields:
        values["auto_switch_to_flash"] = False     # keep the attention asked for on every version
    cb_config = ContinuousBatchingConfig(**{k: v for k, v in values.items() if v is not None})
    generation = GenerationConfig(do_sample=False, max_new_tokens=args.default_max_tokens, eos_token_id=-1)
    manager = model.init_continuous_batching(generation_config=generation, continuous_batching_config=cb_config)
    if args.sample_host:
        sample_host_between_steps(manager, args.sample_host, args.sample_host_every)
    manager.start()
    resolved = manager.continuous_batching_config
    print("hf_server: continuous batching config " + json.dumps(
        {k: getattr(resolved, k, None) for k in ("max_requests_per_batch", "max_batch_tokens", "num_blocks",
                                                 "block_size", "page_size", "use_cuda_graph",
                                                 "use_async_batching", "max_memory_percent")}, default=str),
          flush=True)
    print(f"hf_server: attention {model.config._attn_implementation}; device {torch.cuda.get_device_name(0)}; "
          f"torch {torch.__version__}; SDPA backends: flash {torch.backends.cuda.flash_sdp_enabled()}, "
          f"mem_efficient {torch.backends.cuda.mem_efficient_sdp_enabled()}, cudnn {torch.backends.cuda.cudnn_sdp_enabled()}",
          flush=True)
    return manager


def sample_host_between_steps(manager, out: Path, every_s: float) -> None:
    """Time the host-speed workload in the generation thread, before a step, every `every_s` seconds
    (emulator.host_cpu.ServingThreadSampler): transformers calls manager._generation_step once per
    step from that thread."""
    from emulator.host_cpu import ServingThreadSampler
    if not callable(getattr(manager, "_generation_step", None)):
        raise SystemExit("hf_server: --sample-host needs ContinuousBatchingManager._generation_step, which this "
                         "transformers lacks; run without --sample-host")
    sampler, step = ServingThreadSampler(out, every_s), manager._generation_step

    def sampled_step():
        sampler.tick()
        step()
    manager._generation_step = sampled_step


def make_app(manager, model_name: str):
    from aiohttp import web

    async def health(request):
        if not manager.is_running():
            return web.Response(status=503, text="generation thread not running")
        return web.Response(text="ok")

    async def completions(request):
        body = await request.json()
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], list):
            prompt = prompt[0]
        if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
            return web.json_response({"error": "prompt must be a list of token ids"}, status=400)
        max_tokens = int(body.get("max_tokens") or 16)
        request_id = request.headers.get("x-request-id") or f"cmpl-{id(request)}-{time.monotonic_ns()}"
        queue: asyncio.Queue = asyncio.Queue()
        manager.register_result_handler(request_id, queue.put_nowait)
        accepted = manager.add_request(input_ids=prompt, request_id=request_id, max_new_tokens=max_tokens,
                                       streaming=True, eos_token_id=-1)
        if accepted is None:    # the engine refused it (its generation thread stopped): say so at once
            return web.json_response({"error": "the engine is not accepting requests"}, status=503)
        created = int(time.time())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(payload) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {text}\n\n".encode())

        sent = 0
        while True:
            output = await queue.get()
            if output.error:
                await send({"error": {"message": output.error}})
                break
            tokens = list(output.generated_tokens)
            finished = output.is_finished()
            if len(tokens) > sent or finished:
                new = tokens[sent:]
                sent = len(tokens)
                await send({"id": request_id, "object": "text_completion", "created": created, "model": model_name,
                            "choices": [{"index": 0, "text": "", "token_ids": new, "logprobs": None,
                                         "finish_reason": "length" if finished else None}]})
            if finished:
                break
        await send({"id": request_id, "object": "text_completion", "created": created, "model": model_name,
                    "choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": sent,
                                             "total_tokens": len(prompt) + sent}})
        await send("[DONE]")
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/completions", completions)
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulator.engines.transformers.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--attn-implementation", default="sdpa",
                        help="the model's attention; continuous batching uses its paged form (paged|sdpa)")
    parser.add_argument("--max-requests-per-batch", type=int)
    parser.add_argument("--max-batch-tokens", type=int)
    parser.add_argument("--block-size", type=int)
    parser.add_argument("--num-blocks", type=int)
    parser.add_argument("--max-memory-percent", type=float)
    parser.add_argument("--allow-block-sharing", type=lambda s: s == "on", default=None)
    parser.add_argument("--scheduler", default=None)
    parser.add_argument("--cuda-graphs", choices=("on", "off"))
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (seconds): how long a thread "
                        "waiting for the GIL waits before forcing a switch; Python's default 0.005")
    parser.add_argument("--default-max-tokens", type=int, default=256)
    parser.add_argument("--cudnn-attention", choices=("on", "off"), default="on",
                        help="SDPA's cuDNN backend (on: torch's own choice among its backends)")
    parser.add_argument("--sample-host", type=Path, metavar="FILE", help="append the host's speed, timed in the "
                        "generation thread between steps, to FILE (emulator/host_cpu.py: ServingThreadSampler)")
    parser.add_argument("--sample-host-every", type=float, default=5.0, metavar="S",
                        help="seconds between two samples (default 5)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from aiohttp import web

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    manager = build_manager(args)
    app = make_app(manager, args.model_dir)

    async def serve() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"hf_server: serving on http://{args.host}:{args.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(serve())
    # Requests still in flight are the load generator's business, not the engine's: stop at once,
    # and leave without tearing the interpreter down (seconds of garbage collection and CUDA
    # teardown that would be counted in every run's wall time; the vGPU library writes its
    # statistics on _exit too).
    manager.stop(block=True, timeout=5, hard_stop=True)
    print("hf_server: stopped", flush=True)
    os._exit(0)

if __name__ == "__main__":
    sys.exit(main())
