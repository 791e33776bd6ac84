"""Where a transformers continuous-batching step spends its time, real or emulated (issue 19: check
each fix against the real per-step timeline, not only end metrics).

    python3 -m docs.fidelity.step_timeline --model-dir conf/model/llama3_8b --out DIR [--cudnn-attention off]
        [--batch 64 --requests 96 --prompt-len 1280:1536 --shared-prefix 4:1024]
    revati-tune exec --engine vllm --gpus 1 --sku h100 -- python3 -m docs.fidelity.step_timeline ... --cuda-activity off

The engine is built exactly as `revati-tune validate` serves it (emulator/engines/transformers/server.py's
build_manager), then all requests are submitted at once so that the batch limit binds, as in the
overloaded scenarios. Each step of the generation thread is split into transformers' own phases,
timed with perf_counter (virtual time under the vGPU library): prepare_next_batch (scheduling,
host tensors), get_model_kwargs, compute_batch (the forward's launches, and any wait inside it),
retrieve_device_outputs (the blocking device-to-host copy: where the host waits for the GPU) and
update_batch. A window of steps is also recorded by torch.profiler inside the generation thread
(with CUDA activity on a real GPU: kernel times and runtime calls such as cudaMalloc or
cudaStreamSynchronize). Writes DIR/steps.csv, DIR/summary.json and DIR/profile_*.txt.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import random
import statistics
import time
from pathlib import Path

PHASES = ("prepare", "kwargs", "compute", "retrieve", "update")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch", type=int, default=16, help="max_requests_per_batch")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--prompt-len", default="128:512", help="LOW:HIGH, uniform")
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--cudnn-attention", choices=("on", "off"), default="on")
    parser.add_argument("--shared-prefix", metavar="GROUPS:LEN", help="prompts in GROUPS groups, each sharing "
                        "its first LEN tokens, with transformers' prefix caching (block sharing) on; as validate's "
                        "prefix scenarios (4:1024, prompts 1280:1536)")
    parser.add_argument("--profile-steps", default="40:50", help="FIRST:LAST steps recorded by torch.profiler")
    parser.add_argument("--cuda-activity", choices=("on", "off"), default="on",
                        help="off under the vGPU library (no CUPTI there)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers.generation.continuous_batching import continuous_api, input_outputs, model_runner
    from emulator.engines.transformers import server

    steps: list[dict] = []
    current: dict = {}
    first, last = (int(x) for x in args.profile_steps.split(":"))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.cuda_activity == "on":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)

    def timed(phase, method):
        @functools.wraps(method)
        def wrapper(*a, **kw):
            started = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                current[phase] = current.get(phase, 0.0) + time.perf_counter() - started
        return wrapper

    def shape(method):
        @functools.wraps(method)
        def wrapper(self, *a, **kw):
            current.update(requests=len(kw["requests_in_batch"]), q_tokens=kw["num_q_tokens"],
                           kv_read=kw["max_kv_read"], decode_fast_path=bool(kw["use_decode_fast_path"]))
            return method(self, *a, **kw)
        return wrapper

    def step_boundary(method):
        # prepare_next_batch opens a step; the previous one is closed there, so update_batch is in it.
        @functools.wraps(method)
        def wrapper(self, *a, **kw):
            now = time.perf_counter()
            if "start" in current:
                current["wall"] = now - current["start"]
                steps.append(dict(current))
                if len(steps) == first:
                    profiler.__enter__()
                elif len(steps) == last:
                    profiler.__exit__(None, None, None)
            current.clear()
            current["start"] = now
            ready = timed("prepare", method)(self, *a, **kw)
            if not ready:
                current.clear()
            return ready
        return wrapper

    processor = continuous_api.ContinuousBatchProcessor
    processor.prepare_next_batch = step_boundary(processor.prepare_next_batch)
    processor.update_batch = timed("update", processor.update_batch)
    runner = model_runner.ModelRunner
    runner.compute_batch = timed("compute", runner.compute_batch)
    for cls in (input_outputs.ContinuousBatchingIOs, input_outputs.ContinuousBatchingAsyncIOs):
        cls.get_model_kwargs = timed("kwargs", cls.get_model_kwargs)
        cls.retrieve_device_outputs = timed("retrieve", cls.retrieve_device_outputs)
        cls.prepare_batch_tensors = shape(cls.prepare_batch_tensors)

    # As the server parses its flags, so that this builds the engine exactly as validate serves it.
    server_args = server.parse_args([
        "--model-dir", args.model_dir, "--port", "0", "--max-requests-per-batch", str(args.batch),
        "--max-batch-tokens", "8192", "--default-max-tokens", str(args.output_len),
        "--cudnn-attention", args.cudnn_attention,
        *(["--allow-block-sharing", "on"] if args.shared_prefix else [])])
    manager = server.build_manager(server_args)
    low, high = (int(x) for x in args.prompt_len.split(":"))
    groups, prefix_len = (int(x) for x in (args.shared_prefix or "1:0").split(":"))
    rng = random.Random(0)
    prefixes = [[rng.randrange(1000, 30000) for _ in range(prefix_len)] for _ in range(groups)]
    started = time.perf_counter()
    for i in range(args.requests):
        length = rng.randint(low, high)
        shared = prefixes[i % groups][:length]
        prompt = shared + [rng.randrange(1000, 30000) for _ in range(length - len(shared))]
        manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=args.output_len)
    finished = 0
    while finished < args.requests:
        output = manager.get_result(timeout=600)
        if output is None:
            break
        finished += output.is_finished()
    elapsed = time.perf_counter() - started
    manager.stop(block=True, timeout=10)

    with open(args.out / "steps.csv", "w", newline="") as f:
        fields = ["wall", *PHASES, "requests", "q_tokens", "kv_read", "decode_fast_path"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(steps)
    # Full-batch decode steps are the ones TPOT is made of.
    decodes = [s for s in steps if s.get("requests") == args.batch and s.get("q_tokens") == args.batch]
    summary = {
        "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "model_dir": args.model_dir,
        "batch": args.batch, "requests": args.requests, "prompt_len": args.prompt_len,
        "shared_prefix": args.shared_prefix, "finished": finished, "elapsed_s": elapsed,
        "steps": len(steps), "full_decode_steps": len(decodes),
        "full_decode_median_ms": {k: 1e3 * statistics.median(s.get(k, 0.0) for s in decodes)
                                  for k in ("wall", *PHASES)} if decodes else None,
        "memory": {k: v for k, v in torch.cuda.memory_stats().items()
                   if k in ("num_alloc_retries", "num_ooms", "num_device_alloc", "num_device_free",
                            "allocated_bytes.all.peak", "reserved_bytes.all.peak", "reserved_bytes.all.current")},
        "mem_get_info": torch.cuda.mem_get_info(),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if len(steps) >= last:
        for key in ("self_cpu_time_total", "self_device_time_total" if args.cuda_activity == "on" else None):
            if key:
                table = profiler.key_averages().table(sort_by=key, row_limit=60, max_name_column_width=70)
                (args.out / f"profile_{key}.txt").write_text(table)
                print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
