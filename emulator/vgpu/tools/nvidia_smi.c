/* nvidia_smi.c: nvidia-smi for virtual GPUs, answering from the library's NVML.
 *
 * What engines and people run: the summary table, -L, -i, topo -m, and
 * --query-gpu=FIELDS --format=csv[,noheader][,nounits] (SGLang reads memory.total this way).
 * Output follows the real tool's layout; a value NVML does not support prints as [N/A], as
 * there. Exit codes follow nvidia-smi(1): 2 for bad arguments, 6 when no GPU matches -i.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nvml_types.h"

#define MIB (1024ull * 1024ull)
#define MAX_GPUS 64

static unsigned int gpu_count;
static int selected[MAX_GPUS];      /* -i; every GPU when -i is absent */

static nvmlDevice_t gpu(unsigned int index) {
    nvmlDevice_t device = NULL;
    nvmlDeviceGetHandleByIndex_v2(index, &device);
    return device;
}

static int usage_error(void) {
    printf("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n");
    return 2;
}

/* -i takes indices, UUIDs or PCI bus ids, comma-separated. */
static int select_gpus(char *list) {
    for (char *token = strtok(list, ","); token; token = strtok(NULL, ",")) {
        char *end;
        unsigned long index = strtoul(token, &end, 10);
        nvmlDevice_t device;
        if (*end && (nvmlDeviceGetHandleByUUID(token, &device) == NVML_SUCCESS ||
                     nvmlDeviceGetHandleByPciBusId_v2(token, &device) == NVML_SUCCESS)) {
            unsigned int i;
            nvmlDeviceGetIndex(device, &i);
            index = i;
        } else if (*end || index >= gpu_count) {
            printf("No devices were found\n");
            return 6;
        }
        selected[index] = 1;
    }
    return 0;
}

/* ---- --query-gpu ------------------------------------------------------------------------------- */

enum field { F_INDEX, F_NAME, F_UUID, F_BUS_ID, F_MEMORY_TOTAL, F_MEMORY_USED, F_MEMORY_FREE,
             F_COMPUTE_CAP, F_DRIVER_VERSION, F_CLOCK_SM, F_CLOCK_MEMORY, F_POWER_LIMIT, F_COUNT,
             F_TEMPERATURE, F_UTILIZATION, F_FIELD_COUNT };

/* Names as --help-query-gpu lists them (with the short alias, if any) and the unit shown in the
 * header and after each value. */
static const struct { const char *name, *alias, *unit; } fields[F_FIELD_COUNT] = {
    [F_INDEX] = {"index", NULL, NULL},
    [F_NAME] = {"name", "gpu_name", NULL},
    [F_UUID] = {"uuid", "gpu_uuid", NULL},
    [F_BUS_ID] = {"pci.bus_id", "gpu_bus_id", NULL},
    [F_MEMORY_TOTAL] = {"memory.total", NULL, "MiB"},
    [F_MEMORY_USED] = {"memory.used", NULL, "MiB"},
    [F_MEMORY_FREE] = {"memory.free", NULL, "MiB"},
    [F_COMPUTE_CAP] = {"compute_cap", NULL, NULL},
    [F_DRIVER_VERSION] = {"driver_version", NULL, NULL},
    [F_CLOCK_SM] = {"clocks.max.sm", NULL, "MHz"},
    [F_CLOCK_MEMORY] = {"clocks.max.memory", "clocks.max.mem", "MHz"},
    [F_POWER_LIMIT] = {"power.limit", NULL, "W"},
    [F_COUNT] = {"count", NULL, NULL},
    [F_TEMPERATURE] = {"temperature.gpu", NULL, NULL},
    [F_UTILIZATION] = {"utilization.gpu", NULL, "%"},
};

static int find_field(const char *name) {
    for (int f = 0; f < F_FIELD_COUNT; f++)
        if (strcmp(name, fields[f].name) == 0 || (fields[f].alias && strcmp(name, fields[f].alias) == 0))
            return f;
    return -1;
}

/* Field f of GPU index into out (without its unit). */
static nvmlReturn_t field_value(int f, unsigned int index, char *out, size_t len) {
    nvmlDevice_t device = gpu(index);
    nvmlMemory_v2_t memory = {.version = nvmlMemory_v2};
    nvmlPciInfo_t pci = {0};
    nvmlUtilization_t utilization = {0};
    unsigned int value = 0;
    int major = 0, minor = 0;
    nvmlReturn_t r = NVML_SUCCESS;
    switch ((enum field)f) {
    case F_INDEX: snprintf(out, len, "%u", index); break;
    case F_COUNT: snprintf(out, len, "%u", gpu_count); break;
    case F_NAME: r = nvmlDeviceGetName(device, out, (unsigned int)len); break;
    case F_UUID: r = nvmlDeviceGetUUID(device, out, (unsigned int)len); break;
    case F_DRIVER_VERSION: r = nvmlSystemGetDriverVersion(out, (unsigned int)len); break;
    case F_BUS_ID:
        r = nvmlDeviceGetPciInfo_v3(device, &pci);
        snprintf(out, len, "%s", pci.busId);
        break;
    case F_MEMORY_TOTAL: case F_MEMORY_USED: case F_MEMORY_FREE:
        r = nvmlDeviceGetMemoryInfo_v2(device, &memory);
        snprintf(out, len, "%llu", (f == F_MEMORY_TOTAL ? memory.total : f == F_MEMORY_USED ? memory.used
                                    : memory.free) / MIB);
        break;
    case F_COMPUTE_CAP:
        r = nvmlDeviceGetCudaComputeCapability(device, &major, &minor);
        snprintf(out, len, "%d.%d", major, minor);
        break;
    case F_CLOCK_SM: case F_CLOCK_MEMORY:
        r = nvmlDeviceGetMaxClockInfo(device, f == F_CLOCK_SM ? NVML_CLOCK_SM : NVML_CLOCK_MEM, &value);
        snprintf(out, len, "%u", value);
        break;
    case F_POWER_LIMIT:
        r = nvmlDeviceGetEnforcedPowerLimit(device, &value);
        snprintf(out, len, "%.2f", value / 1000.0);
        break;
    case F_TEMPERATURE:
        r = nvmlDeviceGetTemperature(device, NVML_TEMPERATURE_GPU, &value);
        snprintf(out, len, "%u", value);
        break;
    case F_UTILIZATION:
        r = nvmlDeviceGetUtilizationRates(device, &utilization);
        snprintf(out, len, "%u", utilization.gpu);
        break;
    case F_FIELD_COUNT: break;
    }
    return r;
}

static int query_gpu(char *field_list, char *format) {
    int header = 1, units = 1, csv = 0, chosen[64], n = 0;
    for (char *token = strtok(format, ","); token; token = strtok(NULL, ",")) {
        if (strcmp(token, "csv") == 0) csv = 1;
        else if (strcmp(token, "noheader") == 0) header = 0;
        else if (strcmp(token, "nounits") == 0) units = 0;
        else return usage_error();
    }
    if (!csv) return usage_error();
    for (char *token = strtok(field_list, ", "); token; token = strtok(NULL, ", ")) {
        int f = find_field(token);
        if (f < 0) {
            printf("Field \"%s\" is not a valid field to query.\n\n", token);
            return 2;
        }
        if (n == (int)(sizeof chosen / sizeof *chosen)) return usage_error();
        chosen[n++] = f;
    }
    if (n == 0) return usage_error();
    for (int i = 0; header && i < n; i++)   /* the header keeps its units even with nounits */
        printf(fields[chosen[i]].unit ? "%s%s [%s]" : "%s%s", i ? ", " : "", fields[chosen[i]].name,
               fields[chosen[i]].unit);
    if (header) printf("\n");
    for (unsigned int g = 0; g < gpu_count; g++) {
        if (!selected[g]) continue;
        for (int i = 0; i < n; i++) {
            const char *unit = fields[chosen[i]].unit;
            char value[128];
            nvmlReturn_t r = field_value(chosen[i], g, value, sizeof value);
            if (r == NVML_ERROR_NOT_SUPPORTED) printf("%s[N/A]", i ? ", " : "");
            else if (r != NVML_SUCCESS) printf("%s[%s]", i ? ", " : "", nvmlErrorString(r));
            else printf("%s%s%s%s", i ? ", " : "", value, units && unit ? " " : "", units && unit ? unit : "");
        }
        printf("\n");
    }
    return 0;
}

/* ---- -L, topo -m, the summary table ------------------------------------------------------------ */

static int list_gpus(void) {
    for (unsigned int g = 0; g < gpu_count; g++) {
        char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE], uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE];
        if (!selected[g]) continue;
        nvmlDeviceGetName(gpu(g), name, sizeof name);
        nvmlDeviceGetUUID(gpu(g), uuid, sizeof uuid);
        printf("GPU %u: %s (UUID: %s)\n", g, name, uuid);
    }
    return 0;
}

/* A pair's cell: NV# for the links they share (through NVSwitches every active link of a GPU
 * reaches every peer), else the PCIe level at which they meet. CPU and NUMA affinity are not
 * part of the device model. */
static int topology_matrix(void) {
    static const struct { nvmlGpuTopologyLevel_t level; const char *name; } levels[] = {
        {NVML_TOPOLOGY_SINGLE, "PIX"}, {NVML_TOPOLOGY_MULTIPLE, "PXB"}, {NVML_TOPOLOGY_HOSTBRIDGE, "PHB"},
        {NVML_TOPOLOGY_NODE, "NODE"}, {NVML_TOPOLOGY_SYSTEM, "SYS"},
    };
    printf("\t\033[4m");
    for (unsigned int g = 0; g < gpu_count; g++) printf("GPU%u\t", g);
    printf("CPU Affinity\tNUMA Affinity\tGPU NUMA ID\033[0m\n");
    for (unsigned int a = 0; a < gpu_count; a++) {
        unsigned int links = 0;
        nvmlEnableState_t active;
        while (links < NVML_NVLINK_MAX_LINKS &&
               nvmlDeviceGetNvLinkState(gpu(a), links, &active) == NVML_SUCCESS && active == NVML_FEATURE_ENABLED)
            links++;
        printf("GPU%u\t", a);
        for (unsigned int b = 0; b < gpu_count; b++) {
            nvmlGpuTopologyLevel_t level = NVML_TOPOLOGY_SYSTEM;
            const char *name = "SYS";
            if (a == b) { printf(" X \t"); continue; }
            if (links) { printf("NV%u\t", links); continue; }
            nvmlDeviceGetTopologyCommonAncestor(gpu(a), gpu(b), &level);
            for (size_t i = 0; i < sizeof levels / sizeof *levels; i++)
                if (levels[i].level == level) name = levels[i].name;
            printf("%s\t", name);
        }
        printf("N/A\tN/A\t\tN/A\n");
    }
    printf("\nLegend:\n\n"
           "  X    = Self\n"
           "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)\n"
           "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node\n"
           "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n"
           "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)\n"
           "  PIX  = Connection traversing at most a single PCIe bridge\n"
           "  NV#  = Connection traversing a bonded set of # NVLinks\n");
    return 0;
}

/* The default view. Fan, temperature, performance state, power and ECC are not part of the
 * device model and print as N/A. */
static int summary(void) {
    static const char *rule = "+-----------------------------------------+------------------------+----------------------+\n";
    char driver[NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE], stamp[64];
    int cuda = 0;
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%a %b %e %H:%M:%S %Y", localtime(&now));
    nvmlSystemGetDriverVersion(driver, sizeof driver);
    nvmlSystemGetCudaDriverVersion_v2(&cuda);
    char cuda_text[16];
    snprintf(cuda_text, sizeof cuda_text, "%d.%d", cuda / 1000, cuda % 1000 / 10);
    printf("%s       \n", stamp);
    printf("+-----------------------------------------------------------------------------------------+\n");
    printf("| NVIDIA-SMI %-22s Driver Version: %-14s CUDA Version: %-9s|\n", driver, driver, cuda_text);
    printf("%s", rule);
    printf("| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |\n"
           "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |\n"
           "|                                         |                        |               MIG M. |\n"
           "|=========================================+========================+======================|\n");
    for (unsigned int g = 0; g < gpu_count; g++) {
        char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE];
        nvmlPciInfo_t pci = {0};
        nvmlMemory_v2_t memory = {.version = nvmlMemory_v2};
        nvmlUtilization_t utilization = {0};
        nvmlEnableState_t persistence = NVML_FEATURE_DISABLED;
        unsigned int mig = NVML_DEVICE_MIG_DISABLE, pending;
        if (!selected[g]) continue;
        nvmlDeviceGetName(gpu(g), name, sizeof name);
        nvmlDeviceGetPciInfo_v3(gpu(g), &pci);
        nvmlDeviceGetMemoryInfo_v2(gpu(g), &memory);
        nvmlDeviceGetUtilizationRates(gpu(g), &utilization);
        nvmlDeviceGetPersistenceMode(gpu(g), &persistence);
        nvmlDeviceGetMigMode(gpu(g), &mig, &pending);
        printf("|%4u  %-29.29s%4s  |   %-16s %3s | %20s |\n", g, name,
               persistence == NVML_FEATURE_ENABLED ? "On" : "Off", pci.busId, "Off", "N/A");
        printf("|%4s %5s %5s %15s / %5s |%8lluMiB / %6lluMiB |%7u%% %12s |\n", "N/A", "N/A", "N/A", "N/A",
               "N/A", memory.used / MIB, memory.total / MIB, utilization.gpu, "Default");
        printf("|                                         |                        | %20s |\n",
               mig == NVML_DEVICE_MIG_DISABLE ? "Disabled" : "Enabled");
        printf("%s", rule);
    }
    printf("\n"
           "+-----------------------------------------------------------------------------------------+\n"
           "| Processes:                                                                              |\n"
           "|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |\n"
           "|        ID   ID                                                               Usage      |\n"
           "|=========================================================================================|\n"
           "|  No running processes found                                                             |\n"
           "+-----------------------------------------------------------------------------------------+\n");
    return 0;
}

int main(int argc, char **argv) {
    char *query = NULL, *format = NULL, *ids = NULL;
    int list = 0, topo = 0;
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (strcmp(arg, "-L") == 0 || strcmp(arg, "--list-gpus") == 0) list = 1;
        else if (strncmp(arg, "--query-gpu=", 12) == 0) query = arg + 12;
        else if (strncmp(arg, "--format=", 9) == 0) format = arg + 9;
        else if (strncmp(arg, "--id=", 5) == 0) ids = arg + 5;
        else if (strcmp(arg, "-i") == 0 && i + 1 < argc) ids = argv[++i];
        else if (strcmp(arg, "topo") == 0 && i == 1 && argc == 3 && strcmp(argv[2], "-m") == 0) topo = 1, i++;
        else return usage_error();
    }
    if ((query != NULL) != (format != NULL) || list + topo + (query != NULL) > 1 || (topo && ids))
        return usage_error();
    nvmlReturn_t r = nvmlInit_v2();
    if (r == NVML_SUCCESS) r = nvmlDeviceGetCount_v2(&gpu_count);
    if (r != NVML_SUCCESS) {
        printf("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver: %s\n",
               nvmlErrorString(r));
        return 9;
    }
    if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
    int status = 0;
    if (ids) status = select_gpus(ids);
    else for (unsigned int g = 0; g < gpu_count; g++) selected[g] = 1;
    if (status == 0)
        status = topo ? topology_matrix() : list ? list_gpus() : query ? query_gpu(query, format) : summary();
    nvmlShutdown();
    return status;
}
