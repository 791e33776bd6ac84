/* device.c: the virtual devices, as described by the spec file REVATI_VGPU_SPEC names.
 * The spec is written by emulator/hardware.py from conf/hardware/<sku>.yaml; every API family
 * (runtime, driver, NVML, nvidia-smi) reads the same model, so they all tell one story. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

static vgpu_model model;
static pthread_once_t model_once = PTHREAD_ONCE_INIT;

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "vgpu: %s: %s\n", what, detail);
    fprintf(stderr, "vgpu: run programs on virtual GPUs with `revati-tune exec --gpus N --sku SKU -- CMD`\n");
    exit(86);
}

static void set_key(const char *key, const char *value) {
    if (strcmp(key, "count") == 0) model.count = atoi(value);
    else if (strcmp(key, "name") == 0) snprintf(model.name, sizeof model.name, "%s", value);
    else if (strcmp(key, "cc_major") == 0) model.cc_major = atoi(value);
    else if (strcmp(key, "cc_minor") == 0) model.cc_minor = atoi(value);
    else if (strcmp(key, "sm_count") == 0) model.sm_count = atoi(value);
    else if (strcmp(key, "total_memory") == 0) model.total_memory = strtoull(value, NULL, 10);
    else if (strcmp(key, "context_memory") == 0) model.context_memory = strtoull(value, NULL, 10);
    else if (strcmp(key, "nvml_reserved_memory") == 0) model.nvml_reserved = strtoull(value, NULL, 10);
    else if (strcmp(key, "driver_version") == 0)
        snprintf(model.driver_version, sizeof model.driver_version, "%s", value);
    else if (strcmp(key, "cuda_driver_version") == 0) model.cuda_driver_version = atoi(value);
    else if (strcmp(key, "uuid_seed") == 0) snprintf(model.uuid_seed, sizeof model.uuid_seed, "%s", value);
    else if (strcmp(key, "pci_bus_base") == 0) model.pci_bus_base = atoi(value);
    else if (strcmp(key, "nvlink_bandwidth") == 0) model.nvlink_bandwidth = atof(value);
    else if (strncmp(key, "attr.", 5) == 0) {
        int id = atoi(key + 5);
        if (id <= 0 || id >= 256) fail("bad attribute id in spec", key);
        model.attributes[id] = atoi(value);
        model.has_attribute[id] = 1;
    } else {
        vgpu_warn_once("spec key '%s' is not known to this library; ignored", key);
    }
}

static void load_model(void) {
    const char *path = getenv("REVATI_VGPU_SPEC");
    if (!path || !*path) fail("REVATI_VGPU_SPEC is not set", "no virtual device model");
    FILE *f = fopen(path, "r");
    if (!f) fail("cannot open the device spec named by REVATI_VGPU_SPEC", path);
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *eq = strchr(line, '=');
        if (!eq) fail("spec line without '='", line);
        *eq = 0;
        set_key(line, eq + 1);
    }
    fclose(f);
    if (model.count < 1 || model.count > VGPU_MAX_DEVICES) fail("spec: count must be 1..16", path);
    if (!model.name[0] || !model.total_memory || !model.sm_count || !model.cc_major)
        fail("spec lacks name, total_memory, sm_count or cc_major", path);
}

const vgpu_model *vgpu_model_get(void) {
    pthread_once(&model_once, load_model);
    return &model;
}

int vgpu_device_count(void) { return vgpu_model_get()->count; }

int vgpu_device_valid(int dev) { return dev >= 0 && dev < vgpu_device_count(); }

/* splitmix64 finaliser: every output bit depends on every input bit. */
static uint64_t mix(uint64_t x) {
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Derived from the seed and the index: stable across processes, unrelated between devices. */
void vgpu_device_uuid(int dev, unsigned char out[16]) {
    uint64_t seed = 0xcbf29ce484222325ULL;              /* FNV-1a of the seed string */
    for (const char *p = vgpu_model_get()->uuid_seed; *p; p++) seed = (seed ^ (unsigned char)*p) * 0x100000001b3ULL;
    uint64_t h[2] = {mix(seed + 2 * (uint64_t)dev), mix(seed + 2 * (uint64_t)dev + 1)};
    memcpy(out, h, 16);
    out[6] = (out[6] & 0x0f) | 0x40;   /* shaped like a version-4 UUID, as NVIDIA's are */
    out[8] = (out[8] & 0x3f) | 0x80;
}

void vgpu_device_uuid_string(int dev, char *out, size_t len) {
    unsigned char u[16];
    vgpu_device_uuid(dev, u);
    snprintf(out, len, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
}

int vgpu_device_attribute(int attribute, int dev, int *value) {
    const vgpu_model *m = vgpu_model_get();
    if (!vgpu_device_valid(dev) || attribute <= 0 || attribute >= 256) return -1;
    switch (attribute) {        /* these follow the model, not the measured table */
    case 16: *value = m->sm_count; return 0;          /* MULTIPROCESSOR_COUNT */
    case 75: *value = m->cc_major; return 0;          /* COMPUTE_CAPABILITY_MAJOR */
    case 76: *value = m->cc_minor; return 0;          /* COMPUTE_CAPABILITY_MINOR */
    case 33: *value = m->pci_bus_base + dev; return 0; /* PCI_BUS_ID */
    case 34: *value = 0; return 0;                    /* PCI_DEVICE_ID */
    case 50: *value = 0; return 0;                    /* PCI_DOMAIN_ID */
    }
    if (!m->has_attribute[attribute]) return -1;
    *value = m->attributes[attribute];
    return 0;
}

static __thread int current_device;

int vgpu_current_device(void) { return current_device; }

void vgpu_set_current_device(int dev) { current_device = dev; }
