"""SKU files: loading, aliases, validation errors, and the spec file the vGPU library reads."""
import json
from pathlib import Path

import pytest
import yaml

from emulator.hardware import HARDWARE_DIR, SKU_ALIASES, known_skus, load_sku

MEASURED_H100 = HARDWARE_DIR / "measured" / "h100_sxm_80gb.json"
SPEC_KEYS = {"count", "name", "cc_major", "cc_minor", "sm_count", "total_memory", "context_memory", "nvml_reserved_memory",
             "driver_version", "cuda_driver_version", "uuid_seed", "pci_bus_base",
             "nvlink_bandwidth"}


def write_sku(tmp_path: Path, **changes) -> Path:
    """A copy of h100.yaml in tmp_path (with its measured file), with fields changed or removed
    (a value of None removes the field)."""
    (tmp_path / "measured").mkdir(exist_ok=True)
    (tmp_path / "measured" / MEASURED_H100.name).write_text(MEASURED_H100.read_text())
    data = yaml.safe_load((HARDWARE_DIR / "h100.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_known_skus_all_load():
    assert known_skus() == ["a100", "h100", "h200"]
    for name in known_skus():
        sku = load_sku(name)
        assert sku.sku == name
        assert sku.attributes[16] == sku.sm_count
        assert (sku.attributes[75], sku.attributes[76]) == (sku.cc_major, sku.cc_minor)


@pytest.mark.parametrize("name, measured_file, nvidia_smi_total_mib", [
    ("h100", "h100_sxm_80gb.json", 81559), ("h200", "h200_sxm_141gb.json", 143771)])
def test_measured_skus_match_their_measurement(name, measured_file, nvidia_smi_total_mib):
    measured = json.loads((MEASURED_H100.parent / measured_file).read_text())
    sku = load_sku(name)
    free, total = measured["torch"]["mem_get_info"]
    assert sku.name == measured["name"]
    assert sku.memory_bytes == measured["cuDeviceTotalMem"]
    assert sku.context_memory_bytes == total - free == 552402944
    assert sku.cuda_driver_version == measured["cuDriverGetVersion"]
    assert sku.attributes == {int(k): v for k, v in measured["attributes"].items()}
    # nvidia-smi's total is CUDA's plus what the driver reserves.
    assert sku.memory_bytes + sku.nvml_reserved_memory_bytes == nvidia_smi_total_mib * 2**20
    assert f"{nvidia_smi_total_mib} MiB" in measured["nvidia_smi"]["query"]


def test_a100_overrides_the_h100_attributes():
    a100 = load_sku("a100")
    assert (a100.cc_major, a100.cc_minor, a100.sm_count) == (8, 0, 108)
    assert a100.attributes[97] == 166912 and a100.attributes[81] == 167936
    assert a100.attributes[38] == 40 * 2**20
    assert a100.peak_tflops["fp8"] is None
    # attributes it does not override are the H100's
    assert a100.attributes[1] == load_sku("h100").attributes[1]


def test_aliases_and_case():
    for alias, short in SKU_ALIASES.items():
        assert load_sku(alias) == load_sku(short)
    assert load_sku("H100").sku == "h100"


def test_unknown_sku_lists_known_ones():
    with pytest.raises(ValueError, match="unknown SKU 'b300': known SKUs are a100, h100, h200"):
        load_sku("b300")


def test_load_by_path(tmp_path):
    sku = load_sku(write_sku(tmp_path, sku="mine", nvlink_bandwidth_gbps=100))
    assert sku.sku == "mine" and sku.nvlink_bandwidth_gbps == 100.0
    with pytest.raises(ValueError, match="does not exist"):
        load_sku(tmp_path / "absent.yaml")


@pytest.mark.parametrize("changes, message", [
    ({"sm_count": None}, "missing field 'sm_count'"),
    ({"sm_count": "lots"}, "field 'sm_count' must be int"),
    ({"memory_bytes": True}, "field 'memory_bytes' must be int"),
    ({"memory_bytes": 0}, "field 'memory_bytes' must be positive"),
    ({"price_per_gpu_hour": None}, "missing field 'price_per_gpu_hour'"),
    ({"price_per_gpu_hour": -2.5}, "field 'price_per_gpu_hour' must be positive"),
    ({"compute_capability": 9.0}, "field 'compute_capability' must be str"),
    ({"compute_capability": "9"}, "must look like \"9.0\""),
    ({"peak_tflops": {"fp16": 1.0}}, "'peak_tflops' lacks bf16, fp8, fp32, tf32"),
    ({"peak_tflops": {"fp16": -1, "bf16": 1, "fp8": 1, "fp32": 1, "tf32": 1}},
     "'peak_tflops.fp16' must be a positive number"),
    ({"attributes_from": "measured/nope.json"}, "'attributes_from' names .*nope.json"),
    ({"attribute_overrides": {300: 1}}, r"attribute ids \[300\] outside 1..255"),
    ({"attribute_overrides": {16: "x"}}, "integer attribute ids to integer values"),
    ({"sm_count": 100}, "attribute 16 is 132 but 'sm_count' says 100; add `16: 100`"),
    ({"compute_capability": "8.0"}, "attribute 75 is 9 but 'compute_capability' says 8"),
    ({"context_memory_bytes": 10**12}, "'context_memory_bytes' .* must be less than"),
])
def test_bad_sku_file_names_file_and_field(tmp_path, changes, message):
    path = write_sku(tmp_path, **changes)
    with pytest.raises(ValueError, match=message) as error:
        load_sku(path)
    assert str(error.value).startswith(f"{path}: ")


def test_write_spec(tmp_path):
    sku = load_sku("h200")
    path = sku.write_spec(tmp_path / "vgpu.spec", 8)
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()]
    spec = dict(pairs)
    assert len(spec) == len(pairs)  # no key twice
    plain = {key for key in spec if not key.startswith("attr.")}
    assert plain == SPEC_KEYS
    assert spec["count"] == "8"
    assert spec["name"] == "NVIDIA H200"
    assert (spec["cc_major"], spec["cc_minor"]) == ("9", "0")
    assert int(spec["total_memory"]) == sku.memory_bytes
    assert int(spec["context_memory"]) == sku.context_memory_bytes
    assert spec["uuid_seed"] == "revati-h200"
    assert float(spec["nvlink_bandwidth"]) == 450e9
    attributes = {int(key.removeprefix("attr.")): int(value)
                  for key, value in spec.items() if key.startswith("attr.")}
    assert attributes == sku.attributes


@pytest.mark.parametrize("count", [0, 17, -1, True, 2.0])
def test_write_spec_rejects_bad_counts(tmp_path, count):
    with pytest.raises(ValueError, match="device count must be an integer from 1 to 16"):
        load_sku("h100").write_spec(tmp_path / "vgpu.spec", count)
