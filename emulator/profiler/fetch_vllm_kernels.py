"""Copy vLLM's unified Triton attention kernel out of the local vLLM env.

The profiler (profile_gpu.py) times this kernel on a GPU machine where vLLM
is not installed.  vLLM's source is never committed to this repository, so
this script copies the two files into the git-ignored ``.carry/vllm_triton/``
at the repository root, replacing their few ``vllm.*`` imports with a small
shim module, so that they import with only torch and triton present.

    python3 emulator/profiler/fetch_vllm_kernels.py

Every rewrite must match exactly once: a vLLM version whose source differs
fails here loudly instead of producing a kernel that silently differs.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_DEST = os.path.join(REPO_ROOT, ".carry", "vllm_triton")
ENV_GLOB = os.path.expanduser(
    "~/.local/share/revati-tune/envs/vllm/lib/python3*/site-packages/vllm"
)
OPS_DIR = os.path.join("v1", "attention", "ops")

# (file, old text, new text): each old text must occur exactly once.
REWRITES = {
    "triton_attention_helpers.py": [
        ("from vllm.triton_utils import tl, triton\n",
         "import triton\nimport triton.language as tl\n"),
    ],
    "triton_unified_attention.py": [
        ("import vllm.envs as envs\n", ""),
        ("from vllm.logger import init_logger\n", ""),
        ("from vllm.platforms import current_platform\n", ""),
        ("from vllm.triton_utils import tl, triton\n",
         "import triton\nimport triton.language as tl\n\n"
         "from ._vllm_shims import KVQuantMode, current_platform, init_logger\n"),
        ("from vllm.v1.attention.ops.triton_attention_helpers import (",
         "from .triton_attention_helpers import ("),
        ("from vllm.v1.kv_cache_interface import KVQuantMode\n", ""),
        # Batch-invariant mode is off unless a user asks for it.
        ("is_batch_invariant = envs.VLLM_BATCH_INVARIANT\n",
         "is_batch_invariant = False\n"),
    ],
}

# Stand-ins for the vLLM objects the kernel's wrapper uses.
SHIMS = '''"""Minimal stand-ins for the vllm objects used by triton_unified_attention.py.

Written by emulator/profiler/fetch_vllm_kernels.py; not vLLM code.
"""
import logging
from enum import IntEnum

import torch


class KVQuantMode(IntEnum):
    # Values as in vllm/v1/kv_cache_interface.py; only these are reached here.
    NONE = 0
    FP8_PER_TENSOR = 1
    INT8_PER_TOKEN_HEAD = 2
    FP8_PER_TOKEN_HEAD = 3
    INT4_PER_TOKEN_HEAD = 4


class _Platform:
    @staticmethod
    def fp8_dtype():
        return torch.float8_e4m3fn

    @staticmethod
    def is_device_capability_family(capability, device_id=0):
        # vLLM: same major version ("10.x" for 100).
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(device_id)
        return major == capability // 10


current_platform = _Platform()


class _Logger(logging.LoggerAdapter):
    def debug_once(self, msg, *args):
        self.debug(msg, *args)


def init_logger(name):
    return _Logger(logging.getLogger(name), {})
'''


def find_vllm_root(explicit: str | None) -> str:
    if explicit:
        return explicit
    roots = sorted(glob.glob(ENV_GLOB))
    if not roots:
        sys.exit(f"no vLLM found at {ENV_GLOB}; pass --vllm-root")
    return roots[-1]


def rewrite(name: str, text: str) -> str:
    for old, new in REWRITES[name]:
        count = text.count(old)
        if count != 1:
            sys.exit(f"{name}: expected 1 occurrence of {old!r}, found {count}")
        text = text.replace(old, new)
    return text


def vllm_version(root: str) -> str:
    dist = glob.glob(os.path.join(os.path.dirname(root), "vllm-*.dist-info"))
    return os.path.basename(dist[0])[len("vllm-"):-len(".dist-info")] if dist else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-root", help="path of the installed vllm package")
    parser.add_argument("--dest", default=DEFAULT_DEST)
    args = parser.parse_args()

    root = find_vllm_root(args.vllm_root)
    os.makedirs(args.dest, exist_ok=True)
    manifest = {"vllm_version": vllm_version(root), "source": root, "files": {}}
    for name in REWRITES:
        with open(os.path.join(root, OPS_DIR, name), encoding="utf-8") as f:
            source = f.read()
        with open(os.path.join(args.dest, name), "w", encoding="utf-8") as f:
            f.write(rewrite(name, source))
        manifest["files"][name] = hashlib.sha256(source.encode()).hexdigest()
    with open(os.path.join(args.dest, "_vllm_shims.py"), "w", encoding="utf-8") as f:
        f.write(SHIMS)
    with open(os.path.join(args.dest, "__init__.py"), "w", encoding="utf-8") as f:
        f.write("")
    with open(os.path.join(args.dest, "MANIFEST.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    print(f"copied vLLM {manifest['vllm_version']} Triton attention into {args.dest}")


if __name__ == "__main__":
    main()
