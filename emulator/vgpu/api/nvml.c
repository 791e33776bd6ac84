/* nvml.c: NVML (libnvidia-ml.so.1) over the device model, for vLLM's and SGLang's pynvml calls,
 * torch's NVLink detector (c10::cuda::DriverAPI) and the nvidia-smi stand-in.
 *
 * A device handle is the address of an entry in a static per-device array. Every answer comes
 * from the device model. Sensors it lacks (temperature, power) answer NVML_ERROR_NOT_SUPPORTED,
 * NVML's own answer for a board without them; entry points about things it has no notion of at
 * all (serial numbers, CPU affinity, NUMA nodes) are left out, so callers find them missing.
 */
#include <cuda.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nvml_types.h"
#include "vgpu.h"

#define API VGPU_EXPORT
/* Older versions of an entry point whose arguments and behaviour here match the newer one. */
#define ALIAS(name, target) API __typeof__(target) name __attribute__((alias(#target)));

/* Handles are &devices[i]; the entry's content is never read, only its address. */
struct nvmlDevice_st { char unused; };
static struct nvmlDevice_st devices[VGPU_MAX_DEVICES];
static int init_count;          /* nvmlInit calls not yet matched by nvmlShutdown */

/* The one place that enforces nvmlInit (every entry point but nvmlInit* and nvmlErrorString
 * comes through here, directly or through device_of), then the NULL check of the output. */
static nvmlReturn_t ready(const void *out) {
    if (__atomic_load_n(&init_count, __ATOMIC_ACQUIRE) == 0) return NVML_ERROR_UNINITIALIZED;
    return out ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

/* The device index a handle denotes, after ready(out). */
static nvmlReturn_t device_of(nvmlDevice_t handle, const void *out, int *dev) {
    nvmlReturn_t r = ready(out);
    if (r != NVML_SUCCESS) return r;
    uintptr_t offset = (uintptr_t)handle - (uintptr_t)devices;
    if (offset % sizeof *devices || offset / sizeof *devices >= (uintptr_t)vgpu_device_count())
        return NVML_ERROR_INVALID_ARGUMENT;
    *dev = (int)(offset / sizeof *devices);
    return NVML_SUCCESS;
}

/* out was checked by ready() or device_of(). */
static nvmlReturn_t copy_string(char *out, unsigned int length, const char *text) {
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

static int attribute(int dev, int id) {
    int value = 0;
    vgpu_device_attribute(id, dev, &value);
    return value;
}

/* ---- initialisation and errors ------------------------------------------------------------------ */

/* The flags (NO_GPUS, NO_ATTACH) only relax failures that cannot happen here. */
API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    vgpu_model_get();           /* a missing or bad spec stops the process here, clearly */
    __atomic_add_fetch(&init_count, 1, __ATOMIC_ACQ_REL);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
ALIAS(nvmlInit, nvmlInit_v2)

/* Reference-counted like the real one: pynvml users nest nvmlInit/nvmlShutdown pairs. */
API nvmlReturn_t nvmlShutdown(void) {
    int n = __atomic_load_n(&init_count, __ATOMIC_ACQUIRE);
    do {
        if (n == 0) return NVML_ERROR_UNINITIALIZED;
    } while (!__atomic_compare_exchange_n(&init_count, &n, n - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return NVML_SUCCESS;
}

/* NVML's texts, as pynvml's NVMLError table repeats them. */
static const struct { nvmlReturn_t code; const char *text; } error_table[] = {
    {NVML_SUCCESS, "Success"},
    {NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_MEMORY, "Insufficient Memory"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "Argument version mismatch"},
};

API const char *nvmlErrorString(nvmlReturn_t result) {
    for (size_t i = 0; i < sizeof error_table / sizeof *error_table; i++)
        if (error_table[i].code == result) return error_table[i].text;
    return "Unknown Error";
}

/* ---- system ------------------------------------------------------------------------------------- */

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = ready(version);
    return r ? r : copy_string(version, length, vgpu_model_get()->driver_version);
}

/* NVML's version is the CUDA major version followed by the driver's: "13.580.159.04". */
API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    nvmlReturn_t r = ready(version);
    if (r) return r;
    const vgpu_model *m = vgpu_model_get();
    char text[64];
    snprintf(text, sizeof text, "%d.%s", m->cuda_driver_version / 1000, m->driver_version);
    return copy_string(version, length, text);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    nvmlReturn_t r = ready(version);
    if (r) return r;
    *version = vgpu_model_get()->cuda_driver_version;
    return NVML_SUCCESS;
}
ALIAS(nvmlSystemGetCudaDriverVersion, nvmlSystemGetCudaDriverVersion_v2)

/* Confidential computing is off on the modelled machines (SGLang asks at start-up). */
API nvmlReturn_t nvmlSystemGetConfComputeSettings(nvmlSystemConfComputeSettings_t *settings) {
    nvmlReturn_t r = ready(settings);
    if (r) return r;
    unsigned int version = settings->version;
    memset(settings, 0, sizeof *settings);
    settings->version = version;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlSystemGetConfComputeState(nvmlConfComputeSystemState_t *state) {
    nvmlReturn_t r = ready(state);
    if (r) return r;
    memset(state, 0, sizeof *state);
    return NVML_SUCCESS;
}

/* ---- finding devices ---------------------------------------------------------------------------- */

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    nvmlReturn_t r = ready(count);
    if (r) return r;
    *count = (unsigned int)vgpu_device_count();
    return NVML_SUCCESS;
}
ALIAS(nvmlDeviceGetCount, nvmlDeviceGetCount_v2)

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    nvmlReturn_t r = ready(device);
    if (r) return r;
    if (index >= (unsigned int)vgpu_device_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}
ALIAS(nvmlDeviceGetHandleByIndex, nvmlDeviceGetHandleByIndex_v2)

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    nvmlReturn_t r = ready(device);
    if (r) return r;
    if (!uuid) return NVML_ERROR_INVALID_ARGUMENT;
    for (int dev = 0; dev < vgpu_device_count(); dev++) {
        char text[96];
        vgpu_device_uuid_string(dev, text, sizeof text);
        if (strcmp(text, uuid) == 0) { *device = &devices[dev]; return NVML_SUCCESS; }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* The bus id forms nvml.h accepts, all hexadecimal: domain:bus:device.function,
 * domain:bus:device and bus:device.function. Fills domain, bus, device, function. */
static int parse_bus_id(const char *text, unsigned int v[4]) {
    int end = -1;
    v[0] = v[3] = 0;
    if (sscanf(text, "%x:%x:%x.%x%n", &v[0], &v[1], &v[2], &v[3], &end) == 4 && !text[end]) return 0;
    end = -1;
    if (sscanf(text, "%x:%x:%x%n", &v[0], &v[1], &v[2], &end) == 3 && !text[end]) return 0;
    end = -1;
    v[0] = 0;
    if (sscanf(text, "%x:%x.%x%n", &v[1], &v[2], &v[3], &end) == 3 && !text[end]) return 0;
    return -1;
}

API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device) {
    nvmlReturn_t r = ready(device);
    if (r) return r;
    unsigned int v[4];
    if (!bus_id || parse_bus_id(bus_id, v) != 0) return NVML_ERROR_INVALID_ARGUMENT;
    for (int dev = 0; dev < vgpu_device_count(); dev++) {
        if (v[0] == (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID) && v[3] == 0 &&
            v[1] == (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID) &&
            v[2] == (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)) {
            *device = &devices[dev];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}
ALIAS(nvmlDeviceGetHandleByPciBusId, nvmlDeviceGetHandleByPciBusId_v2)

/* ---- identity ----------------------------------------------------------------------------------- */

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    int dev;
    nvmlReturn_t r = device_of(device, name, &dev);
    return r ? r : copy_string(name, length, vgpu_model_get()->name);
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    int dev;
    nvmlReturn_t r = device_of(device, uuid, &dev);
    if (r) return r;
    char text[96];
    vgpu_device_uuid_string(dev, text, sizeof text);
    return copy_string(uuid, length, text);
}

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    int dev;
    nvmlReturn_t r = device_of(device, index, &dev);
    if (r) return r;
    *index = (unsigned int)dev;
    return NVML_SUCCESS;
}

/* /dev/nvidiaN: the model numbers its device nodes like its devices. */
ALIAS(nvmlDeviceGetMinorNumber, nvmlDeviceGetIndex)

/* The _v2 struct ends after pciSubSystemId (then 16 reserved bytes), so busId is written only by
 * _v3. The PCI location is the model's, as cuDeviceGetPCIBusId reports it; the model has no PCI
 * vendor/product ids, so those read 0. */
static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci, int with_bus_id) {
    int dev;
    nvmlReturn_t r = device_of(device, pci, &dev);
    if (r) return r;
    pci->domain = (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID);
    pci->bus = (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID);
    pci->device = (unsigned int)attribute(dev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID);
    pci->pciDeviceId = pci->pciSubSystemId = 0;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0",
             pci->domain & 0xffff, pci->bus & 0xff, pci->device & 0xff);
    if (with_bus_id)
        snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus, pci->device);
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) { return pci_info(device, pci, 0); }
API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) { return pci_info(device, pci, 1); }

API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    int dev;
    nvmlReturn_t r = device_of(device, major, &dev);
    if (r) return r;
    if (!minor) return NVML_ERROR_INVALID_ARGUMENT;
    *major = vgpu_model_get()->cc_major;
    *minor = vgpu_model_get()->cc_minor;
    return NVML_SUCCESS;
}

/* The architecture a compute capability belongs to. */
API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *arch) {
    int dev;
    nvmlReturn_t r = device_of(device, arch, &dev);
    if (r) return r;
    int cc = vgpu_model_get()->cc_major * 10 + vgpu_model_get()->cc_minor;
    *arch = cc >= 100 ? NVML_DEVICE_ARCH_BLACKWELL : cc >= 90 ? NVML_DEVICE_ARCH_HOPPER
          : cc == 89 ? NVML_DEVICE_ARCH_ADA : cc >= 80 ? NVML_DEVICE_ARCH_AMPERE
          : cc == 75 ? NVML_DEVICE_ARCH_TURING : cc >= 70 ? NVML_DEVICE_ARCH_VOLTA
          : NVML_DEVICE_ARCH_UNKNOWN;
    return NVML_SUCCESS;
}

/* Every SKU in conf/hardware is a data-center part, which NVML brands "NVIDIA" (as the measured
 * H100 reports). */
API nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, nvmlBrandType_t *brand) {
    int dev;
    nvmlReturn_t r = device_of(device, brand, &dev);
    if (r) return r;
    *brand = NVML_BRAND_NVIDIA;
    return NVML_SUCCESS;
}

/* ---- memory ------------------------------------------------------------------------------------- */

/* NVML in the real driver sees every process's use of the device; here each process sees its own
 * accounting (vgpu_mem_info: its context and its allocations), until the Timekeeper aggregates
 * usage across an emulated deployment. NVML's total also counts memory the driver reserves and
 * CUDA never reports (measured: 480 MiB on an H100, 616 MiB on an H200), as "reserved". */
static void memory_of(int dev, unsigned long long *total, unsigned long long *free_bytes) {
    size_t f, t;
    vgpu_mem_info(dev, &f, &t);
    *total = t + vgpu_model_get()->nvml_reserved;
    *free_bytes = f;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    int dev;
    nvmlReturn_t r = device_of(device, memory, &dev);
    if (r) return r;
    memory_of(dev, &memory->total, &memory->free);
    memory->used = memory->total - memory->free;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    int dev;
    nvmlReturn_t r = device_of(device, memory, &dev);
    if (r) return r;
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory_of(dev, &memory->total, &memory->free);
    memory->reserved = vgpu_model_get()->nvml_reserved;
    memory->used = memory->total - memory->reserved - memory->free;
    return NVML_SUCCESS;
}

/* ---- clocks, activity, sensors ------------------------------------------------------------------ */

/* MHz from the measured attributes (kHz): CLOCK_RATE for the SM and graphics clocks,
 * MEMORY_CLOCK_RATE for memory. The model runs at its maximum clocks (the predictor's rates are
 * peak rates), so current and maximum clocks are the same; the video clock is not modelled. */
API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *mhz) {
    int dev, khz;
    nvmlReturn_t r = device_of(device, mhz, &dev);
    if (r) return r;
    if ((unsigned int)type > NVML_CLOCK_VIDEO) return NVML_ERROR_INVALID_ARGUMENT;
    int id = type == NVML_CLOCK_MEM ? CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE : CU_DEVICE_ATTRIBUTE_CLOCK_RATE;
    if (type == NVML_CLOCK_VIDEO || vgpu_device_attribute(id, dev, &khz) != 0) return NVML_ERROR_NOT_SUPPORTED;
    *mhz = (unsigned int)khz / 1000;
    return NVML_SUCCESS;
}
ALIAS(nvmlDeviceGetMaxClockInfo, nvmlDeviceGetClockInfo)

/* Busy time lives in each process's virtual clock and is not aggregated per device, so the device
 * reads as idle. */
API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    int dev;
    nvmlReturn_t r = device_of(device, utilization, &dev);
    if (r) return r;
    utilization->gpu = utilization->memory = 0;
    return NVML_SUCCESS;
}

/* Sensors the model lacks: NVML's answer for a board without the sensor. */
static nvmlReturn_t no_sensor(nvmlDevice_t device, const void *out) {
    int dev;
    nvmlReturn_t r = device_of(device, out, &dev);
    return r ? r : NVML_ERROR_NOT_SUPPORTED;
}

API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor, unsigned int *temp) {
    (void)sensor;
    return no_sensor(device, temp);
}

API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    return no_sensor(device, milliwatts);
}

API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *milliwatts) {
    return no_sensor(device, milliwatts);
}

/* ---- modes and processes ------------------------------------------------------------------------ */

/* The virtual driver stays initialised between clients at no cost, which is what persistence
 * mode buys on a real one (and the measured H100 runs with it on). */
API nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    int dev;
    nvmlReturn_t r = device_of(device, mode, &dev);
    if (r) return r;
    *mode = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

/* The model has no MIG partitions. */
API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    int dev;
    nvmlReturn_t r = device_of(device, current, &dev);
    if (r) return r;
    if (!pending) return NVML_ERROR_INVALID_ARGUMENT;
    *current = *pending = NVML_DEVICE_MIG_DISABLE;
    return NVML_SUCCESS;
}

/* A real driver lists every process holding a context; the model keeps no cross-process registry
 * (each process accounts only for itself), so the list is empty and no entry is ever written,
 * whichever version of the entry struct the caller uses. */
API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                         nvmlProcessInfo_t *infos) {
    (void)infos;
    int dev;
    nvmlReturn_t r = device_of(device, count, &dev);
    if (r) return r;
    *count = 0;
    return NVML_SUCCESS;
}
ALIAS(nvmlDeviceGetComputeRunningProcesses_v2, nvmlDeviceGetComputeRunningProcesses_v3)
ALIAS(nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetComputeRunningProcesses_v3)

/* ---- interconnect ------------------------------------------------------------------------------- */

/* NVLink as on an HGX board: each GPU's links all go to NVSwitches, so every pair of GPUs shares
 * all of them (nvidia-smi topo -m shows NV18 between H100s). The model gives the per-direction
 * bandwidth; the link count follows from the generation's per-link rate: 25 GB/s per direction
 * for NVLink 3 and 4 (Ampere: 12 links, Hopper: 18), 50 GB/s for NVLink 5 (Blackwell: 18). */
static unsigned int nvlink_count(void) {
    const vgpu_model *m = vgpu_model_get();
    double per_link = m->cc_major >= 10 ? 50e9 : 25e9;
    unsigned int links = (unsigned int)(m->nvlink_bandwidth / per_link + 0.5);
    return links < NVML_NVLINK_MAX_LINKS ? links : NVML_NVLINK_MAX_LINKS;
}

/* Checks shared by the per-link queries: no NVLink at all is NOT_SUPPORTED, a link past the
 * device's last is INVALID_ARGUMENT (callers probe upwards until that error). */
static nvmlReturn_t link_of(nvmlDevice_t device, unsigned int link, const void *out) {
    int dev;
    nvmlReturn_t r = device_of(device, out, &dev);
    if (r) return r;
    if (nvlink_count() == 0) return NVML_ERROR_NOT_SUPPORTED;
    return link < nvlink_count() ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *active) {
    nvmlReturn_t r = link_of(device, link, active);
    if (r) return r;
    *active = NVML_FEATURE_ENABLED;
    return NVML_SUCCESS;
}

API nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                     nvmlIntNvLinkDeviceType_t *type) {
    nvmlReturn_t r = link_of(device, link, type);
    if (r) return r;
    *type = NVML_NVLINK_DEVICE_TYPE_SWITCH;
    return NVML_SUCCESS;
}

/* Every link ends at an NVSwitch, which the model does not describe. torch asks for the remote
 * PCI info only of links whose remote end is a GPU. */
API nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci) {
    nvmlReturn_t r = link_of(device, link, pci);
    return r ? r : NVML_ERROR_NOT_SUPPORTED;
}

/* Peer access between distinct devices, as cuDeviceCanAccessPeer reports it; over NVLink only
 * where the model has NVLink. */
API nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuP2PCapsIndex_t index,
                                        nvmlGpuP2PStatus_t *status) {
    int da, db;
    nvmlReturn_t r = device_of(a, status, &da);
    if (r == NVML_SUCCESS) r = device_of(b, status, &db);
    if (r) return r;
    if ((unsigned int)index >= NVML_P2P_CAPS_INDEX_UNKNOWN) return NVML_ERROR_INVALID_ARGUMENT;
    int ok = da != db && (index != NVML_P2P_CAPS_INDEX_NVLINK || nvlink_count() > 0);
    *status = ok ? NVML_P2P_STATUS_OK : NVML_P2P_STATUS_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

/* The PCIe path between two GPUs (NVLink is not a level of it). On an HGX board each GPU sits
 * behind its own PCIe switch on one of two CPU sockets, so a pair meets at NODE (same socket) or
 * SYSTEM; the model has no sockets, so every pair reports SYSTEM, the farther one. */
API nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, nvmlGpuTopologyLevel_t *level) {
    int da, db;
    nvmlReturn_t r = device_of(a, level, &da);
    if (r == NVML_SUCCESS) r = device_of(b, level, &db);
    if (r) return r;
    *level = da == db ? NVML_TOPOLOGY_INTERNAL : NVML_TOPOLOGY_SYSTEM;
    return NVML_SUCCESS;
}
