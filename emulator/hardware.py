"""GPU SKUs: what a virtual device is, read from conf/hardware/<sku>.yaml.

A SKU file names the device, its memory and driver facts, its peak rates (for the predictor) and
the CUdevice_attribute values the driver reports (from a measured JSON file, plus overrides for
SKUs that have not been measured yet). `Sku.write_spec` turns it into the key=value file the
vGPU library reads from REVATI_VGPU_SPEC.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from emulator.paths import HARDWARE as HARDWARE_DIR

# Longer names people use for the same SKU file.
SKU_ALIASES = {
    "h100_sxm_80gb": "h100",
    "h200_sxm_141gb": "h200",
    "a100_sxm4_80gb": "a100",
}

# The vGPU library's limits (emulator/vgpu/vgpu.h: VGPU_MAX_DEVICES, vgpu_model.attributes[256]).
MAX_DEVICES = 16
MAX_ATTRIBUTE_ID = 255

PEAK_TFLOPS_DTYPES = ("fp16", "bf16", "fp8", "fp32", "tf32")

# CUdevice_attribute ids the SKU's own fields must agree with.
ATTR_SM_COUNT = 16
ATTR_CC_MAJOR = 75
ATTR_CC_MINOR = 76


@dataclass(frozen=True)
class Sku:
    sku: str
    name: str
    compute_capability: str
    sm_count: int
    memory_bytes: int
    context_memory_bytes: int
    # Memory NVML and nvidia-smi count in their total (as "reserved") that CUDA never reports.
    nvml_reserved_memory_bytes: int
    driver_version: str
    cuda_driver_version: int
    nvlink_bandwidth_gbps: float
    hbm_bandwidth_gbps: float
    # What one GPU of this SKU costs an hour (USD): the default that studies score goodput per
    # dollar with (conf/hardware/README.md says where the figures come from).
    price_per_gpu_hour: float
    # TFLOP/s per dtype, dense; None where the GPU has no such tensor-core path (fp8 on A100).
    peak_tflops: dict[str, float | None]
    # CUdevice_attribute id -> value, measured values with the SKU's overrides applied.
    attributes: dict[int, int]
    source: Path

    @property
    def cc_major(self) -> int:
        return int(self.compute_capability.split(".")[0])

    @property
    def cc_minor(self) -> int:
        return int(self.compute_capability.split(".")[1])

    def write_spec(self, path: Path | str, count: int) -> Path:
        """Write the spec file for `count` devices of this SKU; returns its path."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_DEVICES:
            raise ValueError(f"device count must be an integer from 1 to {MAX_DEVICES}, "
                             f"got {count!r}")
        lines = [
            f"count={count}",
            f"name={self.name}",
            f"cc_major={self.cc_major}",
            f"cc_minor={self.cc_minor}",
            f"sm_count={self.sm_count}",
            f"total_memory={self.memory_bytes}",
            f"context_memory={self.context_memory_bytes}",
            f"nvml_reserved_memory={self.nvml_reserved_memory_bytes}",
            f"driver_version={self.driver_version}",
            f"cuda_driver_version={self.cuda_driver_version}",
            f"uuid_seed=revati-{self.sku}",
            "pci_bus_base=24",
            f"nvlink_bandwidth={float(self.nvlink_bandwidth_gbps) * 1e9!r}",
        ]
        lines += [f"attr.{attr}={value}" for attr, value in sorted(self.attributes.items())]
        path = Path(path)
        path.write_text("\n".join(lines) + "\n")
        return path


def known_skus() -> list[str]:
    """Short names of the SKUs in conf/hardware/ (aliases not included)."""
    return sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))


def goodput_per_dollar(goodput_per_gpu, price_per_gpu_hour):
    """Good requests per dollar: a GPU's good requests in an hour over what the hour costs (numbers
    or pandas columns)."""
    return goodput_per_gpu * 3600.0 / price_per_gpu_hour


def load_sku(name_or_path: str | Path) -> Sku:
    """Load a SKU by short name, alias ("h100_sxm_80gb") or path to a SKU yaml file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"SKU file {path} does not exist")
    else:
        short = SKU_ALIASES.get(text.lower(), text.lower())
        path = HARDWARE_DIR / f"{short}.yaml"
        if not path.is_file():
            aliases = ", ".join(f"{alias} (= {short})" for alias, short in SKU_ALIASES.items())
            raise ValueError(f"unknown SKU {text!r}: known SKUs are {', '.join(known_skus())}; "
                             f"aliases: {aliases}; or give the path of a SKU yaml file")
    return _parse_sku(path)


def _parse_sku(path: Path) -> Sku:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of SKU fields, got {type(data).__name__}")

    def field(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in data:
            raise ValueError(f"{path}: missing field '{key}'")
        value = data[key]
        # bool is an int in Python; a `true` where a number belongs is a typo, not a number.
        if isinstance(value, bool) or not isinstance(value, kind):
            kinds = (kind,) if isinstance(kind, type) else kind
            names = " or ".join(k.__name__ for k in kinds)
            raise ValueError(f"{path}: field '{key}' must be {names}, got {value!r}")
        return value

    def positive(key: str, kind: type | tuple[type, ...]) -> Any:
        value = field(key, kind)
        if value <= 0:
            raise ValueError(f"{path}: field '{key}' must be positive, got {value!r}")
        return value

    def non_negative(key: str, kind: type | tuple[type, ...]) -> Any:
        value = field(key, kind)
        if value < 0:
            raise ValueError(f"{path}: field '{key}' must be zero or more, got {value!r}")
        return value

    cc = field("compute_capability", str)
    if not (len(cc.split(".")) == 2 and all(part.isdigit() for part in cc.split("."))):
        raise ValueError(f"{path}: field 'compute_capability' must look like \"9.0\" (a quoted "
                         f"string), got {cc!r}")
    name = field("name", str)
    if "\n" in name or not name.strip():
        raise ValueError(f"{path}: field 'name' must be one non-empty line, got {name!r}")

    peak = field("peak_tflops", dict)
    missing = [dtype for dtype in PEAK_TFLOPS_DTYPES if dtype not in peak]
    if missing:
        raise ValueError(f"{path}: field 'peak_tflops' lacks {', '.join(missing)} "
                         f"(give null where the GPU lacks that dtype)")
    for dtype, value in peak.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value <= 0):
            raise ValueError(f"{path}: field 'peak_tflops.{dtype}' must be a positive number, or "
                             f"null where the GPU lacks that dtype; got {value!r}")

    attributes = _load_attributes(path, field("attributes_from", str))
    overrides = data.get("attribute_overrides") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: field 'attribute_overrides' must be a mapping of attribute id "
                         f"to value, got {overrides!r}")
    for attr, value in overrides.items():
        if isinstance(attr, bool) or not isinstance(attr, int) or isinstance(value, bool) \
                or not isinstance(value, int):
            raise ValueError(f"{path}: field 'attribute_overrides' must map integer attribute ids "
                             f"to integer values, got {attr!r}: {value!r}")
        attributes[attr] = value
    _check_attribute_ids(path, "attribute_overrides", attributes)

    sku = Sku(
        sku=field("sku", str),
        name=name,
        compute_capability=cc,
        sm_count=positive("sm_count", int),
        memory_bytes=positive("memory_bytes", int),
        context_memory_bytes=positive("context_memory_bytes", int),
        nvml_reserved_memory_bytes=non_negative("nvml_reserved_memory_bytes", int),
        driver_version=field("driver_version", str),
        cuda_driver_version=positive("cuda_driver_version", int),
        nvlink_bandwidth_gbps=float(positive("nvlink_bandwidth_gbps", (int, float))),
        hbm_bandwidth_gbps=float(positive("hbm_bandwidth_gbps", (int, float))),
        price_per_gpu_hour=float(positive("price_per_gpu_hour", (int, float))),
        peak_tflops={dtype: None if v is None else float(v) for dtype, v in peak.items()},
        attributes=attributes,
        source=path,
    )
    if sku.context_memory_bytes >= sku.memory_bytes:
        raise ValueError(f"{path}: field 'context_memory_bytes' ({sku.context_memory_bytes}) must "
                         f"be less than 'memory_bytes' ({sku.memory_bytes})")
    # The driver API and the runtime must tell the same story, so a SKU whose attributes still
    # carry another GPU's SM count or compute capability is an error, not a quiet mismatch.
    for attr, expected, what in ((ATTR_SM_COUNT, sku.sm_count, "sm_count"),
                                 (ATTR_CC_MAJOR, sku.cc_major, "compute_capability"),
                                 (ATTR_CC_MINOR, sku.cc_minor, "compute_capability")):
        if attr in attributes and attributes[attr] != expected:
            raise ValueError(f"{path}: attribute {attr} is {attributes[attr]} but '{what}' says "
                             f"{expected}; add `{attr}: {expected}` to 'attribute_overrides'")
    return sku


def _load_attributes(path: Path, relative: str) -> dict[int, int]:
    measured = path.parent / relative
    if not measured.is_file():
        raise ValueError(f"{path}: field 'attributes_from' names {measured}, which does not exist "
                         f"(it is relative to {path.parent})")
    try:
        raw = json.loads(measured.read_text())["attributes"]
        attributes = {int(attr): value for attr, value in raw.items()}
    except (json.JSONDecodeError, KeyError, AttributeError, ValueError) as error:
        raise ValueError(f"{measured}: expected JSON with an 'attributes' object of "
                         f"{{attribute id: value}} ({error})") from error
    for attr, value in attributes.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{measured}: attribute {attr} must be an integer, got {value!r}")
    _check_attribute_ids(measured, "attributes", attributes)
    return attributes


def _check_attribute_ids(path: Path, where: str, attributes: dict[int, int]) -> None:
    bad = [attr for attr in attributes if not 0 < attr <= MAX_ATTRIBUTE_ID]
    if bad:
        raise ValueError(f"{path}: '{where}' has attribute ids {bad} outside "
                         f"1..{MAX_ATTRIBUTE_ID}, the range the vGPU library stores")
