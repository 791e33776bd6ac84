"""The vGPU library's CUDA runtime and driver API, exercised by a real CUDA program (fast tier).

tests/vgpu_programs/runtime_checks.cu is compiled once per session with nvcc and run, one section
per process, on virtual GPUs under the fixed predictor: `kernel(float*)` (_Z6kernelPf) is charged
exactly 1 ms and `slow` (_Z4slowy) 10 s, so every event time below is exact. The program checks
every CUDA status itself and prints `key value` lines that these tests compare with the SKU files
and with the timelines worked out by hand. Issue acceptance items 1 and 6.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from emulator.hardware import load_sku
from vgpu_fixtures import cuda_programs, libdir, parse_keys, run_on_vgpu  # noqa: F401 (fixtures)

KERNEL = "_Z6kernelPf"
SLOW = "_Z4slowy"
RULES = f"kernel {KERNEL} 0.001\nkernel {SLOW} 10\n"
MS = 1e-3

# CUDA's numbers, for what the program prints by value.
CUDA_SUCCESS_NAME = "cudaSuccess"
NOT_READY = "cudaErrorNotReady"
STREAM_NON_BLOCKING = 1
CAPTURE_STATUS_NONE, CAPTURE_STATUS_ACTIVE = 0, 1
MEMORY_TYPE_DEVICE = 2
CUDA_ERROR_NOT_SUPPORTED = 801
SPEC_ERROR_EXIT = 86


@pytest.fixture(scope="module")
def checks(cuda_programs, libdir):
    return cuda_programs("runtime_checks", ["-ldl"])


def run_section(checks, section, *args, gpus=1, sku="h100", rules=RULES, env=None):
    """Run one section; it must exit 0 and say it finished. Returns (keys, trace rows, proc)."""
    proc, rows = run_on_vgpu([checks.binary, section, *args], gpus=gpus, sku=sku,
                             predictor_rules=rules, env=env)
    assert proc.returncode == 0, f"{section} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    keys = parse_keys(proc.stdout)
    assert keys.get(f"{section}_done") == "1", proc.stdout
    return keys, rows, proc


def ms(keys, key):
    return float(keys[key])


# ---- devices -------------------------------------------------------------------------------------

@pytest.mark.parametrize("sku,gpus", [("h100", 2), ("h200", 1), ("a100", 8)])
def test_device_queries_match_the_sku(checks, sku, gpus):
    model = load_sku(sku)
    keys, _, proc = run_section(checks, "devices", gpus=gpus, sku=sku)
    assert int(keys["count"]) == gpus
    for d in range(gpus):
        assert keys[f"prop.{d}.name"] == model.name
        assert int(keys[f"prop.{d}.totalGlobalMem"]) == model.memory_bytes
        assert (int(keys[f"prop.{d}.major"]), int(keys[f"prop.{d}.minor"])) == (model.cc_major, model.cc_minor)
        assert int(keys[f"prop.{d}.multiProcessorCount"]) == model.sm_count
        assert int(keys[f"prop.{d}.l2CacheSize"]) == model.attributes[38]        # L2_CACHE_SIZE
        assert int(keys[f"prop.{d}.sharedMemPerBlockOptin"]) == model.attributes[97]
        assert int(keys[f"prop.{d}.maxThreadsPerBlock"]) == model.attributes[1]
        assert int(keys[f"prop.{d}.warpSize"]) == 32
        assert int(keys[f"prop.{d}.pciBusID"]) == 24 + d                          # distinct per device
        # cudaDeviceGetAttribute: the model's fields, and the measured table for the rest.
        printed = {int(k.split(".")[2]): int(v) for k, v in keys.items() if k.startswith(f"attr.{d}.")}
        assert printed[16] == model.sm_count
        assert (printed[75], printed[76]) == (model.cc_major, model.cc_minor)
        for attr, value in printed.items():
            if attr not in (16, 75, 76):
                assert value == model.attributes[attr], f"attribute {attr}"
    # cudaSetDevice(count) failed with cudaErrorInvalidDevice (checked in the program) and left
    # the current device where it was.
    assert int(keys["device_after_invalid"]) == 0
    assert int(keys["driver_version"]) == model.cuda_driver_version
    assert proc.stderr == ""


# ---- memory --------------------------------------------------------------------------------------

def test_memory_accounting_is_exact(checks):
    h100 = load_sku("h100")
    keys, _, _ = run_section(checks, "memory", gpus=2)
    total = int(keys["mem_total"])
    assert total == h100.memory_bytes
    free0 = total - h100.context_memory_bytes
    assert int(keys["mem_free_initial"]) == free0
    assert int(keys["mem_free_after_small"]) == free0 - (4 << 20)
    assert int(keys["mem_free_after_big"]) == free0 - (4 << 20) - (64 << 20)
    assert int(keys["mem_free_after_free_small"]) == free0 - (64 << 20)
    assert int(keys["mem_free_after_free_all"]) == free0
    # More than is free: cudaErrorMemoryAllocation (checked in the program), pointer NULL,
    # nothing charged.
    assert keys["over_alloc_ptr_null"] == "1"
    assert int(keys["mem_free_after_failed"]) == free0
    # Each device has its own account.
    assert int(keys["dev1_free_after_small"]) == free0 - (4 << 20)
    assert int(keys["dev0_free_while_dev1_alloc"]) == free0
    assert int(keys["dev1_pointer_device"]) == 1
    assert int(keys["dev1_pointer_type"]) == MEMORY_TYPE_DEVICE


def test_70gb_on_a_virtual_h100_costs_the_host_nothing(checks):
    h100 = load_sku("h100")
    keys, _, _ = run_section(checks, "memory")
    free0 = h100.memory_bytes - h100.context_memory_bytes
    # Charged in full, rounded up to the 2 MiB granule as a real H100 does (70,000,836,608 bytes).
    assert int(keys["mem_free_after_huge"]) == free0 - 70_000_836_608
    # 256 MiB memset into it and 1 MiB copied in and out: reads are zeros, no host memory used.
    assert keys["huge_reads_zero"] == "1"
    rss_growth_kb = int(keys["rss_after_huge_kb"]) - int(keys["rss_before_kb"])
    assert rss_growth_kb < 16 * 1024, f"RSS grew by {rss_growth_kb} KiB"
    # A further 20 GB does not fit (checked in the program); freeing returns all of it.
    assert int(keys["mem_free_after_huge_freed"]) == free0


COPIES = ["h2d_d2h", "d2d", "h2h", "default", "offset", "async_pinned", "async_pageable", "2d",
          "2d_async", "symbol", "constant_symbol", "memset", "large_reads_zero"]


def test_copies_round_trip(checks):
    keys, rows, _ = run_section(checks, "copies")
    assert {c: keys.get(f"copy_{c}") for c in COPIES} == {c: "ok" for c in COPIES}
    # Copies and sets are charged to the timeline with their sizes.
    first_copy = next(r for r in rows if r["kind"] == "copy")
    assert first_copy["name"] == "memcpy" and first_copy["bytes"] == 4096 + 17
    assert any(r["kind"] == "copy" and r["name"] == "memcpy2d" and r["bytes"] == 100 * 13 for r in rows)
    assert any(r["kind"] == "memset" and r["bytes"] == 20 for r in rows)


# ---- launches ------------------------------------------------------------------------------------

def test_every_launch_path_is_charged_with_its_geometry(checks):
    assert checks.cubin is not None, "nvcc kept no cubin"
    keys, rows, proc = run_section(checks, "launches", str(checks.cubin), gpus=2)
    kernels = [(r["name"], r["grid"], r["block"], r["shared_mem"], r["seconds"])
               for r in rows if r["kind"] == "kernel" and r["device"] == 0]
    assert kernels == [
        (SLOW, (1, 1, 1), (1, 1, 1), 0, 10.0),              # keeps the stream busy
        (KERNEL, (1, 2, 3), (32, 1, 1), 0, MS),             # <<<>>>
        (KERNEL, (4, 1, 1), (64, 2, 1), 128, MS),           # cudaLaunchKernel
        (KERNEL, (5, 1, 1), (96, 1, 1), 256, MS),           # cudaLaunchKernelExC
        (KERNEL, (6, 1, 1), (128, 1, 1), 512, MS),          # cuLaunchKernel (cuModuleGetFunction)
        (KERNEL, (7, 2, 1), (256, 1, 1), 1024, MS),         # cuLaunchKernelEx
        (KERNEL, (132, 1, 1), (384, 1, 1), 200 * 1024, MS),  # after opting in to 200 KiB
        ("_ZN2ns2tkILi4EEEvPif", (3, 1, 1), (5, 1, 1), 0, 5e-6),   # fixed predictor default
        ("plain_c_kernel", (1, 1, 1), (1, 1, 1), 0, 5e-6),
    ]
    # The launches on one stream run back to back, 10 s and then 1 ms each.
    starts = [r["start"] for r in rows if r["kind"] == "kernel"][:7]
    assert [b - a for a, b in zip(starts, starts[1:])] == pytest.approx([10.0] + [MS] * 5, abs=3e-9)
    # After cudaSetDevice(1): a stream of device 1 and device 1's legacy stream.
    assert int(keys["dev1_stream_device"]) == 1
    assert [(r["name"], r["grid"], r["block"]) for r in rows if r["device"] == 1] == [
        (KERNEL, (8, 1, 1), (8, 1, 1)), (KERNEL, (9, 1, 1), (9, 1, 1))]
    # Not a kernel: an error and nothing charged (a real H100 with CUDA 13.0 says
    # cudaErrorInvalidResourceHandle, the library cudaErrorInvalidDeviceFunction).
    assert keys["launch_not_a_kernel"] in ("cudaErrorInvalidResourceHandle", "cudaErrorInvalidDeviceFunction")
    assert keys["entry_point_matches"] == "1"
    assert int(keys["func_max_dynamic_shared"]) == 200 * 1024
    assert proc.stderr == ""


# ---- streams, events, graphs ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def timing(checks):
    started = time.monotonic()
    keys, rows, proc = run_section(checks, "timing")
    return keys, rows, proc, time.monotonic() - started


def test_event_elapsed_time_is_the_charged_duration(timing):
    keys, _, _, _ = timing
    assert ms(keys, "elapsed_two_kernels_ms") == pytest.approx(2.0, abs=1e-4)
    assert keys["stream_query_busy"] == NOT_READY
    assert keys["event_query_busy"] == NOT_READY
    assert keys["stream_query_idle_stream"] == CUDA_SUCCESS_NAME
    assert keys["event_query_done"] == CUDA_SUCCESS_NAME
    assert keys["stream_query_done"] == CUDA_SUCCESS_NAME
    assert keys["elapsed_unrecorded"] == "cudaErrorInvalidResourceHandle"
    assert keys["elapsed_disable_timing"] == "cudaErrorInvalidResourceHandle"
    assert keys["event_query_unrecorded"] == CUDA_SUCCESS_NAME


def test_elapsed_time_of_a_pending_event_is_not_ready(timing):
    keys, _, _, _ = timing
    assert keys["elapsed_end_pending"] == NOT_READY


def test_synchronisation_jumps_the_virtual_clock(timing):
    # The section waits out eight 10 s kernels and more; in host time it takes a moment.
    _, _, _, wall = timing
    assert wall < 10


def test_stream_wait_event_orders_a_second_stream(timing):
    keys, _, _, _ = timing
    assert ms(keys, "elapsed_cross_stream_ms") == pytest.approx(2.0, abs=1e-4)
    # A stream that waits for nothing runs at once, ~10 s before the busy stream's event.
    assert ms(keys, "elapsed_unordered_stream_ms") < -9000


def test_legacy_default_stream_orders_blocking_streams_only(timing):
    keys, _, _, _ = timing
    assert int(keys["blocking_flags"]) == 0
    assert int(keys["nonblocking_flags"]) == STREAM_NON_BLOCKING
    assert ms(keys, "elapsed_legacy_then_blocking_ms") == pytest.approx(1.0, abs=1e-4)
    assert ms(keys, "elapsed_blocking_then_legacy_ms") == pytest.approx(1.0, abs=1e-4)
    assert ms(keys, "elapsed_legacy_then_nonblocking_ms") < -9000
    assert ms(keys, "elapsed_nonblocking_then_legacy_ms") < -9000


def test_stream_priorities(timing):
    keys, _, _, _ = timing
    assert keys["priority_range"] == "0 -5"
    assert keys["high_priority_stream"] == f"-5 {STREAM_NON_BLOCKING}"


def test_graph_capture_fork_join_replays_the_critical_path(timing):
    keys, rows, _, _ = timing
    assert keys["capturing"] == f"{CAPTURE_STATUS_ACTIVE} {CAPTURE_STATUS_ACTIVE}"  # s2 joined
    assert keys["capturing_after"] == f"{CAPTURE_STATUS_NONE} {CAPTURE_STATUS_NONE}"
    assert int(keys["graph_nodes"]) == 6
    # 1 ms, then 3 ms on the forked stream beside 1 ms on the origin, then 1 ms.
    assert ms(keys, "elapsed_graph_ms") == pytest.approx(5.0, abs=1e-4)
    assert ms(keys, "elapsed_graph_again_ms") == pytest.approx(5.0, abs=1e-4)
    # The trace: capture charges nothing, each replay attributes its six nodes at their place in
    # the graph. The last three `slow` launches: on the non-blocking stream (followed by one
    # legacy-stream kernel, then the capture), before the replays (followed by two replays of the
    # one-kernel graph with a host function), before the host functions.
    slow = [i for i, r in enumerate(rows) if r["name"] == SLOW]
    assert [rows[i]["name"] for i in range(slow[-3] + 1, slow[-2])] == [KERNEL]
    assert [r["name"] for r in rows[slow[-2] + 1:slow[-1]]] == [KERNEL] * 14
    replays = rows[slow[-2] + 1:slow[-2] + 13]
    origin = rows[slow[-2]]["start"] + 10
    offsets = [(r["start"] - origin) / MS for r in replays]
    assert offsets == pytest.approx([0, 1, 2, 3, 1, 4, 5, 6, 7, 8, 6, 9], abs=1e-6)


def test_host_functions_run(timing):
    keys, _, _, _ = timing
    assert keys["host_fn_ran"] == "1"
    assert int(keys["stream_callback_status"]) == 0


def test_a_captured_host_function_runs_at_each_replay(timing):
    keys, _, _, _ = timing
    assert int(keys["host_fn_calls_after_capture"]) == 0
    assert int(keys["host_fn_calls_after_two_replays"]) == 2


def test_launches_from_several_threads(checks):
    keys, rows, _ = run_section(checks, "threads", gpus=2)
    assert int(keys["main_thread_device"]) == 0
    by_thread = {}
    for r in rows:
        by_thread.setdefault(r["grid"][0] - 1, []).append(r)
    assert sorted(by_thread) == [0, 1, 2, 3]
    for t, launches in by_thread.items():
        assert len(launches) == 2000
        assert {r["device"] for r in launches} == {t % 2}      # the current device is per thread
        starts = [r["start"] for r in launches]                # one stream: in order, no overlap
        assert all(b >= a + 5e-6 - 3e-9 for a, b in zip(starts, starts[1:]))


def test_waiting_on_an_event_from_an_ended_capture_does_not_start_a_capture(checks):
    keys, _, _ = run_section(checks, "capture_event_after_end")
    assert int(keys["s2_capturing"]) == CAPTURE_STATUS_NONE
    assert ms(keys, "elapsed_after_wait_ms") == pytest.approx(1.0, abs=1e-4)


def test_an_external_event_record_is_replayed_with_its_graph(checks):
    keys, _, _ = run_section(checks, "external_event")
    assert int(keys["external_graph_nodes"]) == 3
    # Recorded after the replay's first 1 ms kernel, not at the end of its 10 s one.
    assert ms(keys, "elapsed_to_external_record_ms") == pytest.approx(1.0, abs=1e-4)
    assert ms(keys, "elapsed_replay_marker_ms") == pytest.approx(1.0, abs=1e-4)


def test_the_cute_dsl_runtime_loads_once_and_launches_on_the_vgpu(checks):
    keys, rows, proc = run_section(checks, "cute_dsl", str(checks.cubin))
    assert keys["cute_loads"] == "1" and keys["cute_library_loaded"] == "1"
    assert ms(keys, "cute_elapsed_ms") == pytest.approx(1.0, abs=1e-4)
    assert [(r["name"], r["grid"], r["block"]) for r in rows if r["name"] == KERNEL] == [(KERNEL, (2, 1, 1), (128, 1, 1))]
    assert keys["cute_library_unloaded"] == "1"
    # A failing load: -1, and the CUDA error reported through the caller's error setter.
    assert keys["cute_failed_init"] == "-1"
    assert keys["cute_error"].startswith("RuntimeError: CUDA error cudaErrorNotSupported (801)")
    assert keys["cute_error_name"] == "cudaErrorMemoryAllocation"


def test_stream_synchronize_waits_only_for_its_own_work(checks):
    keys, _, _ = run_section(checks, "legacy_sync")
    # The blocking stream's 1 ms kernel (plus host time); the legacy stream's 10 s came after it.
    assert ms(keys, "elapsed_sync_blocking_ms") < 1000


VMM_SHARING = r"""
import ctypes, json
cuda = ctypes.CDLL("libcuda.so.1")
def entry(name):
    # As torch's DriverAPI finds them: through cuGetProcAddress, every one of them required.
    fn = ctypes.c_void_p()
    assert cuda.cuGetProcAddress_v2(name.encode(), ctypes.byref(fn), 12000, 0, None) == 0, name
    return ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_void_p] * 5)(fn.value)

class Prop(ctypes.Structure):   # CUmemAllocationProp: type, requestedHandleTypes, location {type, id}, ...
    _fields_ = [("type", ctypes.c_int), ("handle_types", ctypes.c_int), ("location_type", ctypes.c_int),
                ("device", ctypes.c_int), ("win32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]
MB = 1 << 20
assert cuda.cuInit(0) == 0
prop = Prop(type=1, handle_types=1, location_type=1, device=1)      # pinned, POSIX fd, device 1
handle, base = ctypes.c_ulonglong(), ctypes.c_ulonglong()
assert entry("cuMemCreate")(ctypes.byref(handle), 8 * MB, ctypes.byref(prop), 0, None) == 0
assert entry("cuMemAddressReserve")(ctypes.byref(base), 8 * MB, 0, 0, 0) == 0
assert entry("cuMemMap")(base.value, 8 * MB, 0, handle.value, 0) == 0
out = {}
retained = ctypes.c_ulonglong()
out["retain"] = entry("cuMemRetainAllocationHandle")(ctypes.byref(retained), base.value + 4096, None, None, None)
out["retained_same"] = retained.value == handle.value
back = Prop()
entry("cuMemGetAllocationPropertiesFromHandle")(ctypes.byref(back), handle.value, None, None, None)
out["props"] = [back.type, back.handle_types, back.device]
fd = ctypes.c_int(-1)
out["export"] = entry("cuMemExportToShareableHandle")(ctypes.byref(fd), handle.value, 1, 0, None)
imported = ctypes.c_ulonglong()
out["import"] = entry("cuMemImportFromShareableHandle")(ctypes.byref(imported), fd.value, 1, None, None)
entry("cuMemGetAllocationPropertiesFromHandle")(ctypes.byref(back), imported.value, None, None, None)
out["imported_device"] = back.device
out["fabric_export"] = entry("cuMemExportToShareableHandle")(ctypes.byref(fd), handle.value, 8, 0, None)
free, total = ctypes.c_size_t(), ctypes.c_size_t()
rt = ctypes.CDLL("libcudart.so.13")
rt.cudaSetDevice(1)
def used():
    rt.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
    return (total.value - free.value) // MB
out["used_mapped"] = used()
for h in (imported, retained):      # an import charges its owner; a retained handle keeps the memory
    entry("cuMemRelease")(h.value, None, None, None, None)
out["used_after_two_releases"] = used()
entry("cuMemUnmap")(base.value, 8 * MB, None, None, None)
entry("cuMemRelease")(handle.value, None, None, None, None)
out["used_after_last"] = used()
small = ctypes.c_void_p()
rt.cudaMalloc(ctypes.byref(small), ctypes.c_size_t(256))
out["retain_cudamalloc"] = entry("cuMemRetainAllocationHandle")(ctypes.byref(retained), small.value, None, None, None)
out["write_value"] = entry("cuStreamWriteValue32")(None, small.value, 0x5eed, 0, None)
value = ctypes.c_uint32()
rt.cudaMemcpy(ctypes.byref(value), small, ctypes.c_size_t(4), 2)
out["written"] = value.value
print(json.dumps(out))
"""


def test_vmm_handles_are_retained_shared_and_released_as_torch_uses_them(libdir):
    import json
    import sys
    proc, _ = run_on_vgpu([sys.executable, "-c", VMM_SHARING], gpus=2, check=True)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["retain"] == 0 and out["retained_same"] and out["props"] == [1, 1, 1]
    assert out["export"] == 0 and out["import"] == 0 and out["imported_device"] == 1
    assert out["fabric_export"] == CUDA_ERROR_NOT_SUPPORTED
    context = out["used_after_last"]                    # the context's own memory
    assert out["used_mapped"] == out["used_after_two_releases"] == context + 8
    assert out["retain_cudamalloc"] == 1                # CUDA_ERROR_INVALID_VALUE: not a VMM mapping
    assert out["write_value"] == 0 and out["written"] == 0x5eed


# ---- the library's own failure modes ----------------------------------------------------------------

def stubbed_runtime_entry_point(libdir: Path) -> str:
    """A runtime entry point the build stubbed: from the stub source it keeps beside the library,
    else the surface names that no library source mentions."""
    stubs = libdir / "unimplemented.c"
    if stubs.exists():
        names = re.findall(r"^STUB\((cuda[A-Za-z0-9_]+), 801\)", stubs.read_text(), re.M)
    else:
        source_dir = Path(__file__).resolve().parent.parent / "emulator" / "vgpu"
        sources = "\n".join(p.read_text() for p in source_dir.glob("*.c"))
        names = [line.split()[1] for line in (source_dir / "surface.txt").read_text().splitlines()
                 if line.startswith("cudart ") and not re.search(rf"\b{line.split()[1]}\b", sources)]
    if not names:
        pytest.skip("every runtime entry point of the surface is implemented")
    return names[0]


def test_unimplemented_entry_point_names_itself_once(checks, libdir):
    name = stubbed_runtime_entry_point(libdir)
    keys, _, proc = run_section(checks, "unimplemented", name)
    assert keys["unimplemented_status"] == f"{CUDA_ERROR_NOT_SUPPORTED} {CUDA_ERROR_NOT_SUPPORTED}"
    assert proc.stderr.splitlines() == [
        f"vgpu: {name} is not implemented by the vGPU library (returning error {CUDA_ERROR_NOT_SUPPORTED})"]


@pytest.mark.parametrize("spec", [None, "/nonexistent/vgpu.spec"])
def test_a_program_without_a_device_spec_fails_clearly(checks, spec):
    proc, _ = run_on_vgpu([checks.binary, "devices"], env={"REVATI_VGPU_SPEC": spec})
    assert proc.returncode == SPEC_ERROR_EXIT, proc.stderr
    assert "REVATI_VGPU_SPEC" in proc.stderr
    assert proc.stdout == ""
