"""Attention kernels whose batch lives in device memory (FlashAttention 3, vLLM's) are charged for the
batch the engine publishes (emulator/vgpu/predict/attention_batch.c, emulator/engines/vllm/plugin/ and
sglang/plugin/), also when they replay inside a CUDA graph. The last tests are end to end (the real
vLLM and SGLang servers, about three minutes each on 2 cores)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator.engines.adapter import ServingKnobs
from emulator.engines.envs import is_ready
from emulator.engines.sglang import adapter as sglang
from emulator.engines.vllm import adapter as vllm
from emulator.hardware import load_sku
from emulator.predictor import modelfile, native
from emulator.deployment import RunConfig, serve
from test_predictor_flash_attention_3 import fa3_charged
from vgpu_fixtures import cuda_programs, libdir, run_on_vgpu  # noqa: F401 (fixtures)

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128          # what tests/vgpu_programs/attention_batch.cu publishes


@pytest.fixture(scope="module")
def h200_model() -> str:
    return str(modelfile.ensure_model_file("h200"))


def _decode_seconds(model: str, seqs: int, context: int) -> float:
    return native.attention_seconds(model, "vllm_triton_unified", seqs, 1, context, HEADS, KV_HEADS, HEAD_DIM)


def test_flash_attention_3_is_charged_for_the_published_batch_also_in_graph_replays(cuda_programs, h200_model):
    program = cuda_programs("attention_batch")
    _, trace = run_on_vgpu([program.binary], sku="h200", env={"REVATI_PREDICTOR": f"profiled:{h200_model}"},
                           check=True)
    forward = [r for r in trace if "FlashAttnFwdSm90" in r["name"]]
    combine = [r for r in trace if "FlashAttnFwdCombine" in r["name"]]
    plain = [r for r in trace if "other_kernel" in r["name"]]
    triton = [r for r in trace if "kernel_unified_attention" in r["name"]]
    assert (len(forward), len(combine), len(plain), len(triton)) == (7, 3, 5, 1)
    before, eager_a, eager_b, replay_a, replay_b, mixed, padded = forward
    short, long = (fa3_charged(h200_model, [(1, context, 8)], HEADS, KV_HEADS, HEAD_DIM)[0] for context in (1024, 8192))
    # Nothing published yet: the per-kernel model, as the combine kernel of the same launch geometry.
    assert before["seconds"] == pytest.approx(combine[0]["seconds"], abs=2e-9)
    # Published batches: FA3's model for them; longer contexts cost more. vLLM's Triton kernel on the
    # same batch: what it measured.
    assert eager_a["seconds"] == pytest.approx(short, rel=1e-3)
    assert eager_b["seconds"] == pytest.approx(long, rel=1e-3)
    assert long > 3 * short
    assert triton[0]["seconds"] == pytest.approx(_decode_seconds(h200_model, 8, 1024), rel=1e-3)
    # A replay charges the batch published before it, not the one of its capture.
    assert replay_a["seconds"] == pytest.approx(short, rel=1e-3)
    assert replay_b["seconds"] == pytest.approx(long, rel=1e-3)
    # The other nodes keep their captured durations, and what follows the attention node moves.
    graph_a, graph_b = plain[1:3], plain[3:5]
    assert [r["seconds"] for r in graph_a] == [r["seconds"] for r in graph_b]
    assert combine[1]["seconds"] == combine[2]["seconds"] == combine[0]["seconds"]
    span = lambda graph: graph[1]["start"] - graph[0]["start"]
    assert span(graph_b) - span(graph_a) == pytest.approx(long - short, abs=3e-9)
    # Decodes mixed with a prefill chunk: FA3's CTAs for both.
    assert mixed["seconds"] == pytest.approx(fa3_charged(h200_model, [(1, 2048, 4), (512, 2048, 1)], HEADS, KV_HEADS,
                                                         HEAD_DIM)[0], rel=1e-3)
    # CUDA-graph padding rows (no tokens) are no work.
    assert padded["seconds"] == pytest.approx(short, rel=1e-3)


@pytest.mark.parametrize("engine, plugin_dir, group", [("vllm", vllm.PLUGIN_DIR, "vllm.general_plugins"),
                                                       ("sglang", sglang.PLUGIN_DIR, "sglang.srt.plugins")])
def test_the_engine_finds_the_plugin_which_does_nothing_off_virtual_gpus(engine, plugin_dir, group):
    code = ("import sys, importlib.metadata as m; sys.path.insert(0, sys.argv[1]);"
            f"(p,) = [e for e in m.entry_points(group='{group}') if e.name == 'revati_vgpu_attention'];"
            f"p.load()(); print('{engine}' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(plugin_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"        # it returned before importing the engine


@pytest.mark.e2e
@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_decode_time_follows_the_context_on_a_virtual_h100(engine, tmp_path):
    """Llama-3.1-8B serving one request at a time, 64-token and 8000-token prompts in turn: the
    decode steps of the long ones read 125 times more K/V, and their TPOT shows it (FA3, vLLM's and
    SGLang's attention on Hopper, is charged its bytes once it is memory-bound)."""
    if not is_ready(engine):
        pytest.fail(f"the {engine} engine env is not set up: run `revati-tune setup {engine}`")
    trace = tmp_path / "trace.jsonl"
    prompts = [64, 8000, 64, 8000]
    trace.write_text("".join(json.dumps({"arrival_s": 3.0 * i, "prompt_tokens": p, "output_tokens": 32}) + "\n"
                             for i, p in enumerate(prompts)))
    workload = {"num_requests": len(prompts), "seed": 0, "arrival": None, "prompt_len": None, "output_len": None,
                "shared_prefix": None, "trace": {"path": str(trace), "format": "jsonl"}, "max_concurrency": 1,
                "ready_timeout_s": 1200.0}
    # The host's step work charged at a quarter: uncalibrated (1:1), a 64-token decode step was
    # host-bound at 8.8 ms on a slow CI host (6.2 ms here) against 7.5 ms of GPU time for the
    # 8000-token ones, and this checks the GPU side.
    config = RunConfig(model="llama3_8b", sku="h100", engine=engine, knobs=ServingKnobs(max_model_len=8192),
                       workload=workload, timeout_s=600, cpu_scale=0.25)
    summary = serve(config, tmp_path / "run")
    import pandas as pd
    requests = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    tpot = requests.groupby("prompt_tokens")["tpot_s"].mean()
    families = {row["family"]: row for row in summary.gpu_time_by_family}
    print(f"TPOT 64-token prompts {tpot[64] * 1e3:.3f} ms, 8000-token prompts {tpot[8000] * 1e3:.3f} ms; "
          f"attention {families['attention']['share']:.1%} of GPU time")
    # A long decode step reads 7936 tokens more K/V (32 layers x 8 KV heads x 128 x K and V x bf16,
    # 1.04 GB): 0.31 ms at the H100's datasheet bandwidth, of which a short one's own launch and
    # CTA latencies overlap some.
    extra_kv_s = (8000 - 64) * 32 * 8 * 128 * 2 * 2 / (load_sku("h100").hbm_bandwidth_gbps * 1e9)
    assert tpot[8000] - tpot[64] > 0.5 * extra_kv_s
    # Charged by FA3's model, attention is 2% of SGLang's GPU time here (its graph captures' GEMMs
    # count too) and 9% of vLLM's.
    assert families["attention"]["share"] > 0.01
    assert "MODELLED, not measured" in " ".join(summary.config["emulation_notes"])
