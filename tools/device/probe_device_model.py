"""Record what a real GPU reports about itself, for conf/hardware/<sku>.yaml.

Run on a lent GPU machine (see tools/device/README.md). Writes $OUT/device_model_<name>.json with
every CUdevice_attribute the driver answers, cudaMemGetInfo, NVML facts and nvidia-smi's answers
to the queries engines run, so the virtual device can tell the same story.
"""
import ctypes
import json
import os
import subprocess

import torch

cuda = ctypes.CDLL("libcuda.so.1")
assert cuda.cuInit(0) == 0
dev = ctypes.c_int()
assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0

attributes = {}
for attr in range(1, 160):
    value = ctypes.c_int()
    if cuda.cuDeviceGetAttribute(ctypes.byref(value), attr, dev) == 0:
        attributes[attr] = value.value

name = ctypes.create_string_buffer(256)
cuda.cuDeviceGetName(name, 256, dev)
total_mem = ctypes.c_size_t()
cuda.cuDeviceTotalMem_v2(ctypes.byref(total_mem), dev)
driver_version = ctypes.c_int()
cuda.cuDriverGetVersion(ctypes.byref(driver_version))

torch.cuda.init()
props = torch.cuda.get_device_properties(0)
free, total = torch.cuda.mem_get_info(0)

def smi(*args):
    return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True).stdout

record = {
    "name": name.value.decode(),
    "cuDeviceTotalMem": total_mem.value,
    "cuDriverGetVersion": driver_version.value,
    "attributes": attributes,
    "torch": {
        "version": torch.__version__,
        "name": props.name,
        "total_memory": props.total_memory,
        "multi_processor_count": props.multi_processor_count,
        "major": props.major,
        "minor": props.minor,
        "L2_cache_size": getattr(props, "L2_cache_size", None),
        "mem_get_info": [free, total],
        "repr": repr(props),
    },
    "nvidia_smi": {
        "query": smi("--query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.used,memory.free,"
                     "compute_cap,driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                     "--format=csv"),
        "L": smi("-L"),
        "topo": smi("topo", "-m"),
        "q": smi("-q"),
    },
}
out = os.environ.get("OUT", ".")
tag = props.name.replace(" ", "_")
with open(os.path.join(out, f"device_model_{tag}.json"), "w") as f:
    json.dump(record, f, indent=1)
print(json.dumps({k: v for k, v in record.items() if k != "nvidia_smi"}, indent=1)[:6000])
print(record["nvidia_smi"]["query"])
