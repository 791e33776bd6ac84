"""NVML (libnvidia-ml.so.1) and the nvidia-smi stand-in on virtual H100s.

NVML is read through NVIDIA's own bindings (nvidia-ml-py, what vLLM vendors and SGLang imports),
so their ctypes layouts check the library's structs; what the bindings hide (calls before
nvmlInit, struct versions) is checked through ctypes directly. Every process runs with the
library on LD_LIBRARY_PATH, as `revati-tune exec` runs engines.
"""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from emulator.hardware import load_sku
from emulator.vgpu.build import build_library

GPUS = 4
H100 = load_sku("h100")
N_CC_SETTINGS_V1 = 20 | 1 << 24       # nvml.h: NVML_STRUCT_VERSION(SystemConfComputeSettings, 1), 20 bytes
MIB = 1 << 20
BUS_BASE = 24        # the pci_bus_base emulator/hardware.py writes: GPU i is on bus 24 + i


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    spec = H100.write_spec(tmp_path_factory.mktemp("nvml") / "spec", GPUS)
    return {**os.environ, "REVATI_VGPU_SPEC": str(spec), "LD_LIBRARY_PATH": str(build_library())}


def python(env, program):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(program)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def smi(env, *args):
    tool = os.path.join(env["LD_LIBRARY_PATH"], "bin", "nvidia-smi")
    return subprocess.run([tool, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def nvml(env):
    """What pynvml reports for every device, beside what the CUDA runtime/driver report."""
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pytest.fail("nvidia-ml-py is not installed (pip install nvidia-ml-py; it is a test extra)")
    return python(env, """
        import ctypes, json, pynvml as N
        cuda = ctypes.CDLL("libcudart.so.13")
        N.nvmlInit()
        N.nvmlInit()                                  # nested, as pynvml users do
        def error(call, *args):
            try:
                call(*args)
            except N.NVMLError as e:
                return [e.value, str(e)]
        out = {"count": N.nvmlDeviceGetCount(), "driver": N.nvmlSystemGetDriverVersion(),
               "nvml_version": N.nvmlSystemGetNVMLVersion(),
               "cuda": N.nvmlSystemGetCudaDriverVersion(), "cuda_v2": N.nvmlSystemGetCudaDriverVersion_v2(),
               "devices": []}
        cc = N.c_nvmlSystemConfComputeSettings_v1_t()     # as SGLang asks at start-up
        out["cc_settings"] = [N.nvmlSystemGetConfComputeSettings(ctypes.byref(cc)), cc.version, cc.ccFeature,
                              cc.multiGpuMode]
        out["cc_feature"] = N.nvmlSystemGetConfComputeState().ccFeature
        # 256 MiB allocated on device 1 must show in device 1's NVML usage only.
        ptr = ctypes.c_void_p()
        assert cuda.cudaSetDevice(1) == 0 and cuda.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(256 << 20)) == 0
        for i in range(out["count"]):
            h = N.nvmlDeviceGetHandleByIndex(i)
            pci = N.nvmlDeviceGetPciInfo(h)
            m1, m2 = N.nvmlDeviceGetMemoryInfo(h), N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            assert cuda.cudaSetDevice(i) == 0 and cuda.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0
            runtime_bus = ctypes.create_string_buffer(32)
            assert cuda.cudaDeviceGetPCIBusId(runtime_bus, 32, i) == 0
            raw_uuid = ctypes.create_string_buffer(16)
            assert cuda.cuDeviceGetUuid_v2(raw_uuid, i) == 0
            peers = [N.nvmlDeviceGetHandleByIndex(j) for j in range(out["count"])]
            out["devices"].append({
                "name": N.nvmlDeviceGetName(h), "uuid": N.nvmlDeviceGetUUID(h),
                "runtime_uuid": raw_uuid.raw.hex(),
                "index": N.nvmlDeviceGetIndex(h), "minor": N.nvmlDeviceGetMinorNumber(h),
                "by_uuid": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(N.nvmlDeviceGetUUID(h))),
                "by_bus": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(pci.busId)),
                "by_legacy_bus": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(pci.busIdLegacy)),
                "bus_id": pci.busId, "bus_id_legacy": pci.busIdLegacy, "bus": pci.bus,
                "runtime_bus_id": runtime_bus.value.decode(),
                "cc": N.nvmlDeviceGetCudaComputeCapability(h),
                "memory_v1": [m1.total, m1.free, m1.used],
                "memory_v2": [m2.total, m2.reserved, m2.free, m2.used],
                "runtime_memory": [total.value, free.value],
                "arch": N.nvmlDeviceGetArchitecture(h), "brand": N.nvmlDeviceGetBrand(h),
                "clocks": [N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_SM),
                           N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_MEM),
                           N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_GRAPHICS)],
                "p2p_nvlink": [N.nvmlDeviceGetP2PStatus(h, p, N.NVML_P2P_CAPS_INDEX_NVLINK) for p in peers],
                "p2p_write": [N.nvmlDeviceGetP2PStatus(h, p, N.NVML_P2P_CAPS_INDEX_WRITE) for p in peers],
                "topology": [N.nvmlDeviceGetTopologyCommonAncestor(h, p) for p in peers],
                "links": [N.nvmlDeviceGetNvLinkState(h, l) for l in range(18)],
                "link_past_last": error(N.nvmlDeviceGetNvLinkState, h, 18),
                "processes": N.nvmlDeviceGetComputeRunningProcesses(h),
                "mig": N.nvmlDeviceGetMigMode(h), "persistence": N.nvmlDeviceGetPersistenceMode(h),
                "utilization": [N.nvmlDeviceGetUtilizationRates(h).gpu, N.nvmlDeviceGetUtilizationRates(h).memory],
                "temperature": error(N.nvmlDeviceGetTemperature, h, N.NVML_TEMPERATURE_GPU),
                "power_limit": error(N.nvmlDeviceGetEnforcedPowerLimit, h),
            })
        out["unknown_uuid"] = error(N.nvmlDeviceGetHandleByUUID, "GPU-00000000-0000-0000-0000-000000000000")
        out["bad_index"] = error(N.nvmlDeviceGetHandleByIndex, out["count"])
        N.nvmlShutdown()
        out["after_one_shutdown"] = N.nvmlDeviceGetCount()
        N.nvmlShutdown()
        print(json.dumps(out))
    """)


def test_system_facts_come_from_the_model(nvml):
    assert nvml["count"] == GPUS
    assert nvml["driver"] == H100.driver_version
    assert nvml["nvml_version"] == "13." + H100.driver_version
    assert nvml["cuda"] == nvml["cuda_v2"] == H100.cuda_driver_version
    assert nvml["after_one_shutdown"] == GPUS     # init/shutdown nest
    # Confidential computing is off: success, the caller's struct version kept, features disabled.
    assert nvml["cc_settings"] == [0, N_CC_SETTINGS_V1, 0, 0] and nvml["cc_feature"] == 0


def test_devices_match_the_model_and_the_runtime(nvml):
    for i, d in enumerate(nvml["devices"]):
        assert d["name"] == H100.name
        assert d["index"] == d["minor"] == d["by_uuid"] == d["by_bus"] == d["by_legacy_bus"] == i
        assert d["uuid"] == "GPU-{}-{}-{}-{}-{}".format(*(d["runtime_uuid"][a:b] for a, b in
                                                         [(0, 8), (8, 12), (12, 16), (16, 20), (20, 32)]))
        assert d["bus_id"] == d["runtime_bus_id"] == f"00000000:{BUS_BASE + i:02X}:00.0"
        assert d["bus_id_legacy"] == f"0000:{BUS_BASE + i:02X}:00.0" and d["bus"] == BUS_BASE + i
        assert d["cc"] == [9, 0]
        assert d["arch"] == 9 and d["brand"] == 14        # NVML_DEVICE_ARCH_HOPPER, NVML_BRAND_NVIDIA
        assert d["clocks"] == [1980, 2619, 1980]          # attributes 13 and 36, kHz -> MHz
    assert len({d["uuid"] for d in nvml["devices"]}) == GPUS
    assert nvml["unknown_uuid"] == [6, "Not Found"]
    assert nvml["bad_index"] == [2, "Invalid Argument"]


def test_memory_is_the_process_own_accounting(nvml):
    for i, d in enumerate(nvml["devices"]):
        total, free = d["runtime_memory"]
        used = H100.context_memory_bytes + (256 * MIB if i == 1 else 0)
        assert total == H100.memory_bytes and free == total - used
        # NVML's total adds what the driver reserves; v1 counts it as used, v2 reports it apart.
        reserved = H100.nvml_reserved_memory_bytes
        assert d["memory_v1"] == [total + reserved, free, used + reserved]
        assert d["memory_v2"] == [total + reserved, reserved, free, used]


def test_hgx_interconnect(nvml):
    for i, d in enumerate(nvml["devices"]):
        others = [j != i for j in range(GPUS)]
        assert d["p2p_nvlink"] == d["p2p_write"] == [0 if o else 5 for o in others]   # OK / NOT_SUPPORTED
        assert d["topology"] == [50 if o else 0 for o in others]                  # SYSTEM / INTERNAL
        assert d["links"] == [1] * 18                     # NVLink 4: 450 GB/s over 18 links
        assert d["link_past_last"][0] == 2


def test_unmodelled_state(nvml):
    for d in nvml["devices"]:
        assert d["processes"] == [] and d["mig"] == [0, 0] and d["persistence"] == 1
        assert d["utilization"] == [0, 0]
        assert d["temperature"] == d["power_limit"] == [3, "Not Supported"]


def test_abi_details(env):
    """What pynvml does not expose: the init check, struct versions and sizes, buffer sizes."""
    seen = python(env, """
        import ctypes, json
        lib = ctypes.CDLL("libnvidia-ml.so.1")
        lib.nvmlErrorString.restype = ctypes.c_char_p
        count, handle, other = ctypes.c_uint(), ctypes.c_void_p(), ctypes.c_void_p()
        text = ctypes.create_string_buffer(96)
        out = {"before": [lib.nvmlDeviceGetCount_v2(ctypes.byref(count)),
                          lib.nvmlSystemGetDriverVersion(text, 96),
                          lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)),
                          lib.nvmlShutdown()],
               "strings": [lib.nvmlErrorString(c).decode() for c in (0, 1, 2, 3, 7, 12345)]}
        assert lib.nvmlInit_v2() == 0 and lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(handle)) == 0
        name = ctypes.create_string_buffer(64)
        out["short_buffer"] = [lib.nvmlDeviceGetName(handle, name, 5), lib.nvmlDeviceGetName(handle, name, 64)]
        mem = (ctypes.c_ulonglong * 5)(0x01000028)        # a wrong struct version
        out["memory_version"] = lib.nvmlDeviceGetMemoryInfo_v2(handle, mem)
        pci = (ctypes.c_ubyte * 68)(*[0xAB] * 68)         # the _v2 struct is 52 bytes, busId not in it
        out["pci_v2"] = [lib.nvmlDeviceGetPciInfo_v2(handle, pci), bytes(pci[:12]).decode(), bytes(pci[36:]).hex()]
        out["bad_handle"] = lib.nvmlDeviceGetName(ctypes.c_void_p(0x1000), name, 64)
        remote = ctypes.c_uint()
        out["remote"] = [lib.nvmlDeviceGetNvLinkRemoteDeviceType(handle, l, ctypes.byref(remote)) or remote.value
                         for l in (0, 17, 18)]
        lib.nvmlDeviceGetHandleByIndex_v2(1, ctypes.byref(other))
        out["bus_ids"] = [lib.nvmlDeviceGetHandleByPciBusId_v2(s, ctypes.byref(other))
                          for s in (b"19:00.0", b"0000:19:00", b"00000000:19:00.1", b"nonsense", b"0:77:00.0")]
        out["nvlink_remote_pci"] = lib.nvmlDeviceGetNvLinkRemotePciInfo_v2(handle, 0, pci)
        lib.nvmlShutdown()
        out["after"] = lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        print(json.dumps(out))
    """)
    assert seen["before"] == [1, 1, 1, 1]           # NVML_ERROR_UNINITIALIZED, shutdown included
    assert seen["after"] == 1
    assert seen["strings"] == ["Success", "Uninitialized", "Invalid Argument", "Not Supported",
                               "Insufficient Size", "Unknown Error"]
    assert seen["short_buffer"] == [7, 0]
    assert seen["memory_version"] == 25             # NVML_ERROR_ARGUMENT_VERSION_MISMATCH
    assert seen["pci_v2"] == [0, "0000:18:00.0", "ab" * 32]
    assert seen["bad_handle"] == 2
    assert seen["remote"] == [2, 2, 2]               # NVSwitch on links 0 and 17, link 18 invalid
    assert seen["bus_ids"] == [0, 0, 6, 2, 6]        # function 1 and bus 0x77 are no GPU's
    assert seen["nvlink_remote_pci"] == 3            # switches are not in the model


# ---- nvidia-smi ----------------------------------------------------------------------------------

QUERY = ("index,name,uuid,pci.bus_id,memory.total,memory.used,memory.free,compute_cap,driver_version,"
         "clocks.max.sm,clocks.max.memory,power.limit,count,temperature.gpu,utilization.gpu")
TOTAL_MIB = (H100.memory_bytes + H100.nvml_reserved_memory_bytes) // MIB   # 81559, as measured
USED_MIB = H100.context_memory_bytes // MIB
FREE_MIB = (H100.memory_bytes - H100.context_memory_bytes) // MIB


def test_smi_list(env, nvml):
    proc = smi(env, "-L")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [f"GPU {i}: {H100.name} (UUID: {d['uuid']})"
                                        for i, d in enumerate(nvml["devices"])]
    assert smi(env, "-L", "-i", "2").stdout == f"GPU 2: {H100.name} (UUID: {nvml['devices'][2]['uuid']})\n"


def test_smi_query_csv(env, nvml):
    proc = smi(env, f"--query-gpu={QUERY}", "--format=csv", "-i", "1")
    assert proc.returncode == 0
    header, row = proc.stdout.splitlines()
    # The real tool's header and value formats (conf/hardware/measured/h100_sxm_80gb.json).
    assert header == ("index, name, uuid, pci.bus_id, memory.total [MiB], memory.used [MiB], "
                      "memory.free [MiB], compute_cap, driver_version, clocks.max.sm [MHz], "
                      "clocks.max.memory [MHz], power.limit [W], count, temperature.gpu, "
                      "utilization.gpu [%]")
    assert row == (f"1, {H100.name}, {nvml['devices'][1]['uuid']}, 00000000:{BUS_BASE + 1:02X}:00.0, "
                   f"{TOTAL_MIB} MiB, {USED_MIB} MiB, {FREE_MIB} MiB, 9.0, {H100.driver_version}, 1980 MHz, 2619 MHz, "
                   f"[N/A], {GPUS}, [N/A], 0 %")
    nounits = smi(env, f"--query-gpu={QUERY}", "--format=csv,nounits", "-i", "1").stdout.splitlines()
    assert nounits[0] == header                      # units stay in the header
    assert nounits[1] == row.replace(" MiB", "").replace(" MHz", "").replace(" %", "")


def test_smi_query_as_sglang_runs_it(env):
    proc = smi(env, "--query-gpu=memory.total", "--format=csv,noheader,nounits")
    assert proc.returncode == 0 and proc.stdout == f"{TOTAL_MIB}\n" * GPUS
    proc = smi(env, "--query-gpu=compute_cap,driver_version", "--format=csv,noheader")
    assert proc.stdout == f"9.0, {H100.driver_version}\n" * GPUS


def test_smi_errors(env):
    bad = smi(env, "--query-gpu=index,xyz", "--format=csv")
    assert bad.returncode == 2 and bad.stdout == 'Field "xyz" is not a valid field to query.\n\n'
    assert smi(env, "--query-gpu=index", "--format=json").returncode == 2
    assert smi(env, "--query-gpu=index").returncode == 2
    assert smi(env, "--bogus").returncode == 2
    missing = smi(env, "-L", "-i", str(GPUS))
    assert missing.returncode == 6 and "No devices were found" in missing.stdout


def test_smi_summary_table(env):
    proc = smi(env)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert all(len(line) == 91 for line in lines[1:] if line)       # the real table's width
    assert f"Driver Version: {H100.driver_version}" in proc.stdout and "CUDA Version: 13.0" in proc.stdout
    rows = [line for line in lines if re.match(r"\|\s+\d+\s+NVIDIA", line)]
    assert [row.split()[1] for row in rows] == [str(i) for i in range(GPUS)]
    for i, row in enumerate(rows):
        assert f"00000000:{BUS_BASE + i:02X}:00.0" in row and H100.name in row
    assert proc.stdout.count(f"{USED_MIB}MiB /  {TOTAL_MIB}MiB") == GPUS


def test_smi_topology(env):
    proc = smi(env, "topo", "-m")
    assert proc.returncode == 0
    rows = [line.split("\t") for line in proc.stdout.splitlines() if line.startswith("GPU")]
    assert len(rows) == GPUS
    for i, row in enumerate(rows):
        assert row[1:1 + GPUS] == [" X " if j == i else "NV18" for j in range(GPUS)]
