#!/usr/bin/env python3
"""Published collective timings of a GPU node, as the predictor's collectives table of a SKU that
no multi-GPU machine has measured here.

    /root/envs/aic/bin/python emulator/profiler/published_collectives.py   (writes data/published/)

The source is NVIDIA's AIConfigurator (pip `aiconfigurator`, Apache-2.0), whose package carries
timings measured on 8-GPU SXM nodes: NCCL's all-reduce, all-gather and reduce-scatter (its
nccl_perf tables, collected with TensorRT-LLM's NCCL benchmark) and vLLM's custom all-reduce
kernel under CUDA graphs (its custom_allreduce_perf tables), at 2, 4 and 8 GPUs from 512 B to
1 GiB. Both give `message_size` in elements of the whole buffer (the gathered output of an
all-gather, the input of a reduce-scatter: their bus bandwidths come out at 250-445 GB/s on an
H100 that way, and eight times NVLink's if it were one rank's part), fp16/bf16, and `latency` in
milliseconds. This script only reads them: one CSV per SKU in collectives.csv's columns (bytes
of the whole buffer, seconds), every third size of each (op, ranks) held out so that the
accuracy table shows the interpolation's error, and a JSON beside it naming the files read.
vLLM's custom all-reduce is the op `custom_all_reduce` (backend vllm_custom); NCCL's rows are
backend nccl. The newest NCCL and vLLM versions in the package are taken.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parents[1] / "predictor" / "data" / "published"
# Our SKU -> AIConfigurator's system folder.
SYSTEMS = {"h100": "h100_sxm", "h200": "h200_sxm", "a100": "a100_sxm"}
NCCL_OPS = ("all_reduce", "all_gather", "reduce_scatter")
ELEMENT_BYTES = 2           # fp16 (NCCL's rows), bf16 (vLLM's)
HOLDOUT_EVERY = 3


def _newest(folder: Path) -> Path:
    def key(path: Path):
        return tuple(int(p) if p.isdigit() else 0 for p in path.name.replace("post", ".").split("."))
    versions = sorted((p for p in folder.iterdir() if p.is_dir()), key=key)
    if not versions:
        raise SystemExit(f"{folder}: no versions")
    return versions[-1]


def _rows(frame: pd.DataFrame, op: str, backend: str, dtype: str) -> pd.DataFrame:
    rows = pd.DataFrame({"op": op, "ranks": frame["num_gpus"].astype(int),
                         "bytes": frame["message_size"].astype("int64") * ELEMENT_BYTES, "dtype": dtype,
                         "backend": backend, "seconds": frame["latency"].astype(float) * 1e-3})
    rows = rows.sort_values(["ranks", "bytes"]).reset_index(drop=True)
    position = rows.groupby("ranks").cumcount()
    rows["split"] = ["holdout" if i % HOLDOUT_EVERY == 1 else "fit" for i in position]
    return rows


def convert(system_dir: Path) -> tuple[pd.DataFrame, dict]:
    nccl_dir = _newest(system_dir / "comm" / "nccl")
    vllm_dir = _newest(system_dir / "comm" / "vllm")
    nccl = pd.read_parquet(nccl_dir / "nccl_perf.parquet")
    custom = pd.read_parquet(vllm_dir / "custom_allreduce_perf.parquet")
    parts = [_rows(nccl[(nccl["op_name"] == op) & (nccl["nccl_dtype"] == "half")], op, "nccl", "fp16")
             for op in NCCL_OPS]
    graph = custom[(custom["backend"] == "vllm_graph") & (custom["allreduce_dtype"] == "bfloat16")]
    parts.append(_rows(graph, "custom_all_reduce", "vllm_custom", "bf16"))
    table = pd.concat(parts, ignore_index=True)
    if table.empty or (table["seconds"] <= 0).any():
        raise SystemExit(f"{system_dir}: no usable rows")
    meta = {"source": "AIConfigurator (pip aiconfigurator), NVIDIA's measured system data",
            "device": str(nccl["device"].iloc[0]),
            "nccl_file": str(nccl_dir.relative_to(system_dir.parent.parent.parent)) + "/nccl_perf.parquet",
            "nccl_version": nccl_dir.name,
            "custom_all_reduce_file": str(vllm_dir.relative_to(system_dir.parent.parent.parent)) + "/custom_allreduce_perf.parquet",
            "vllm_version": vllm_dir.name, "custom_all_reduce_mode": "CUDA graph (backend vllm_graph)",
            "element_bytes": ELEMENT_BYTES, "converted_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return table, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=Path, default=None,
                        help="aiconfigurator_core/systems/data (default: the installed package's)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    systems = args.systems
    if systems is None:
        import aiconfigurator_core
        systems = Path(aiconfigurator_core.__file__).parent / "systems" / "data"
        version = __import__("importlib.metadata").metadata.version("aiconfigurator")
    else:
        version = "unknown"
    for sku, system in SYSTEMS.items():
        table, meta = convert(systems / system)
        meta["aiconfigurator"] = version
        table.to_csv(args.out / f"collectives_{sku}.csv", index=False)
        (args.out / f"collectives_{sku}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{sku}: {len(table)} rows from {meta['nccl_file']} and {meta['custom_all_reduce_file']}")


if __name__ == "__main__":
    main()
