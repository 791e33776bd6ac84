"""What profile_gpu.py measures: the sizes of every family's rows, for its three runs.

FULL is the real run, QUICK a smoke run on a real GPU (--quick), DRY tiny sizes for the CPU
(--dry-run). The models whose linear layers the GEMM rows cover are read from conf/model/
(shapes.py); the other families' sizes follow from those models (comments say which).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from emulator.profiler.shapes import PROFILED_MODELS, ModelShape, model_shape

GiB = 1 << 30
MiB = 1 << 20

# Real models' linear layers, by their conf/model/<name> folder (shapes.py). Mixtral's experts
# are timed as plain GEMMs of one expert's shape.
MODELS = {name: model_shape(name) for name in PROFILED_MODELS}
# The dry run's sizes: small enough for the CPU and Triton's interpreter, not a model.
TINY = ModelShape(hidden=64, heads=4, kv_heads=2, head_dim=16, inter=96, layers=1, vocab=160)
LLAMA_8B, LLAMA_70B, QWEN_72B = MODELS["llama3_8b"], MODELS["llama3_70b"], MODELS["qwen2_5_72b"]
# One GPU's slice of Llama-8B and of Llama-70B at TP 1/2/4/8: the per-rank sizes of the
# attention and per-layer kernels follow from these.
LLAMA_8B_RANKS = tuple(LLAMA_8B.tp_slice(tp) for tp in (1, 2, 4, 8))
LLAMA_70B_RANKS = tuple(LLAMA_70B.tp_slice(tp) for tp in (1, 2, 4, 8))


@dataclass(frozen=True)
class Grid:
    """Every size a run visits; FULL, QUICK and DRY below are the three runs."""

    models: dict
    tps: tuple
    gemm_tokens: tuple
    gemm_tokens_holdout: tuple
    gemm_subset: tuple  # (model, tp) whose shapes are also run in fp16 and fp8
    head_configs: tuple  # (q heads, kv heads, head dim)
    attention_dtype: torch.dtype
    decode_seqs: tuple
    decode_ctx: tuple
    decode_holdout: tuple  # (num_seqs, context)
    prefill_q: tuple
    prefill_seqs: tuple
    prefill_max_tokens: int
    prefill_holdout: tuple  # (num_seqs, query_len)
    chunked: tuple  # (num_seqs, query_len, context)
    chunked_holdout: tuple
    mixed: tuple  # compositions: ((query_len, context, count), ...)
    mixed_holdout: tuple
    ew_tokens: tuple
    ew_tokens_holdout: tuple
    ew_hidden: dict  # op -> hidden sizes
    sampling_max_tokens: int
    ew_head_dim: int
    rotary_kv_heads: dict  # rotary q hidden -> k heads
    ew_vocab: int
    ew_cache_slots: int
    copy_sizes: tuple
    copy_sizes_holdout: tuple
    pool_bytes: int  # random data kept per dtype to cut inputs from
    rotate_bytes: int  # rotate inputs until one pass reads this much
    max_rotations: int
    kv_cache_min_bytes: int
    ceiling_gemm: int  # m = n = k of the bf16 GEMM ceiling
    ceiling_copy_bytes: int


def _powers_of_two(lo, hi):
    return tuple(1 << i for i in range(lo.bit_length() - 1, hi.bit_length()))


FULL = Grid(
    models=MODELS,
    tps=(1, 2, 4, 8),
    gemm_tokens=_powers_of_two(1, 16384),
    gemm_tokens_holdout=(3, 24, 48, 96, 200, 384, 768, 1536, 3000, 6000, 12000),
    gemm_subset=(("llama3_8b", 1), ("llama3_8b", 2)),
    # (q heads, kv heads, head dim) per rank: Llama-8B TP1, Llama-70B TP 1/2/4/8.
    head_configs=tuple((s.heads, s.kv_heads, s.head_dim) for s in (LLAMA_8B_RANKS[0], *LLAMA_70B_RANKS)),
    attention_dtype=torch.bfloat16,
    # Dense in the sequence count: the kernels change their split over the keys as it grows
    # (between 64 and 128 sequences on the H200), which a sparse grid interpolates across.
    decode_seqs=(1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 256),
    decode_ctx=(128, 512, 1024, 2048, 4096, 8192),
    decode_holdout=((12, 768), (12, 3000), (40, 2048), (40, 3000), (72, 768), (72, 2048),
                    (104, 768), (104, 3000), (144, 2048), (224, 768)),
    prefill_q=(128, 512, 1024, 2048, 4096, 8192),
    prefill_seqs=(1, 2, 4),
    prefill_max_tokens=16384,
    prefill_holdout=((1, 384), (2, 384), (1, 1536), (2, 1536), (1, 3000), (2, 3000)),
    chunked=((1, 256, 2048), (1, 512, 2048), (1, 2048, 2048 + 2048),
             (1, 256, 8192), (1, 512, 8192), (1, 2048, 8192),
             (4, 512, 2048), (4, 512, 8192)),
    chunked_holdout=((1, 1024, 4096), (2, 384, 3000)),
    mixed=(((512, 512, 1), (1, 1024, 63)),
           ((2048, 2048, 1), (1, 2048, 127)),
           ((256, 4096, 2), (1, 512, 30)),
           ((1024, 1024, 1), (512, 2048, 1), (1, 4096, 62)),
           ((128, 128, 4), (1, 8192, 16)),
           ((4096, 4096, 1), (1, 1024, 255))),
    mixed_holdout=(((1000, 1000, 1), (1, 3000, 40)),
                   ((300, 3000, 1), (1, 768, 90))),
    ew_tokens=_powers_of_two(1, 16384),
    ew_tokens_holdout=(3, 48, 384, 3000),
    ew_hidden={
        # hidden: Llama-8B, Llama-70B.
        "rms_norm": (LLAMA_8B.hidden, LLAMA_70B.hidden),
        "fused_add_rms_norm": (LLAMA_8B.hidden, LLAMA_70B.hidden),
        "residual_add": (LLAMA_8B.hidden, LLAMA_70B.hidden),
        "embedding": (LLAMA_8B.hidden, LLAMA_70B.hidden),
        # q heads x head dim per rank: Llama-8B TP 1/2/4/8 and 70B TP1 (k heads: rotary_kv_heads).
        "rotary_neox": tuple(s.heads * s.head_dim for s in (*LLAMA_8B_RANKS, LLAMA_70B)),
        # intermediate per rank: Llama-8B TP 1/2/4/8 and 70B TP1.
        "silu_and_mul": tuple(s.inter for s in (*LLAMA_8B_RANKS, LLAMA_70B)),
        # the vocabularies of Llama-3 and Qwen2.5.
        "sample_softmax_argmax": (LLAMA_8B.vocab, QWEN_72B.vocab),
        # kv heads x head dim per rank: Llama-8B TP 1/2/4/8.
        "reshape_and_cache": tuple(s.kv_heads * s.head_dim for s in LLAMA_8B_RANKS),
    },
    sampling_max_tokens=4096,
    ew_head_dim=LLAMA_8B.head_dim,
    rotary_kv_heads={s.heads * s.head_dim: s.kv_heads for s in (*LLAMA_8B_RANKS, LLAMA_70B)},
    ew_vocab=LLAMA_8B.vocab,
    ew_cache_slots=262144,
    copy_sizes=tuple(4 ** i * 1024 for i in range(1, 11)),
    copy_sizes_holdout=(40_000, 3_000_000, 100_000_000),
    pool_bytes=8 * GiB,
    rotate_bytes=256 * MiB,
    max_rotations=256,
    kv_cache_min_bytes=1 * GiB,
    ceiling_gemm=8192,
    ceiling_copy_bytes=2 * GiB,
)

QUICK = dataclasses.replace(
    FULL,
    models={"llama3_8b": MODELS["llama3_8b"]},
    tps=(1,),
    gemm_subset=(("llama3_8b", 1),),
    head_configs=((32, 8, 128),),
    decode_seqs=(1, 16, 128),
    decode_ctx=(512, 2048, 8192),
    decode_holdout=((32, 3000),),
    prefill_q=(512, 2048),
    prefill_seqs=(1,),
    prefill_holdout=((1, 1536),),
    chunked=((1, 512, 2048),),
    chunked_holdout=((1, 384, 3000),),
    mixed=FULL.mixed[:1],
    mixed_holdout=FULL.mixed_holdout[:1],
    ew_tokens=(1, 16, 256, 4096),
    ew_tokens_holdout=(48, 3000),
    ew_hidden={op: sizes[:1] for op, sizes in FULL.ew_hidden.items()},
    copy_sizes=(4096, MiB, 256 * MiB),
    copy_sizes_holdout=(3_000_000,),
)

DRY = Grid(
    models={"tiny": TINY},
    tps=(1, 2),
    gemm_tokens=(1, 8),
    gemm_tokens_holdout=(3,),
    gemm_subset=(("tiny", 1),),
    head_configs=((4, 2, 16),),
    attention_dtype=torch.float16,  # Triton's interpreter computes bf16 wrongly
    decode_seqs=(1, 2),
    decode_ctx=(16, 40),
    decode_holdout=((3, 24),),
    prefill_q=(16, 32),
    prefill_seqs=(1, 2),
    prefill_max_tokens=48,
    prefill_holdout=((1, 24),),
    chunked=((1, 8, 40),),
    chunked_holdout=((1, 5, 24),),
    mixed=(((16, 16, 1), (1, 40, 3)),),
    mixed_holdout=(((8, 24, 1), (1, 16, 2)),),
    ew_tokens=(1, 8),
    ew_tokens_holdout=(3,),
    ew_hidden={op: (64,) for op in FULL.ew_hidden},
    sampling_max_tokens=8,
    ew_head_dim=16,
    rotary_kv_heads={64: 2},
    ew_vocab=1000,
    ew_cache_slots=64,
    copy_sizes=(4096, 65536),
    copy_sizes_holdout=(3000,),
    pool_bytes=16 * MiB,
    rotate_bytes=64 * 1024,
    max_rotations=4,
    kv_cache_min_bytes=256 * 1024,
    ceiling_gemm=128,
    ceiling_copy_bytes=MiB,
)
