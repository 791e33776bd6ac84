/* kernels.c: kernel identity. Launch handles (host stubs registered by __cudaRegisterFunction,
 * CUfunction and cudaKernel_t values we hand out) map to a vgpu_function that carries the
 * kernel's name to the predictor. An open-addressing table keyed by pointer keeps the lookup
 * on the launch path to a few nanoseconds. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

#define FUNCTION_MAGIC 0x76677075u

typedef struct slot { const void *key; vgpu_function *fn; } slot;
static slot *slots;
static size_t slot_cap, slot_len;
static pthread_rwlock_t table_lock = PTHREAD_RWLOCK_INITIALIZER;

static size_t hash_ptr(const void *p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33;
    return (size_t)x;
}

static void put(slot *table, size_t cap, const void *key, vgpu_function *fn) {
    size_t i = hash_ptr(key) & (cap - 1);
    while (table[i].key && table[i].key != key) i = (i + 1) & (cap - 1);
    table[i] = (slot){key, fn};
}

static void grow(void) {
    size_t cap = slot_cap ? slot_cap * 2 : 4096;
    slot *fresh = calloc(cap, sizeof *fresh);
    for (size_t i = 0; i < slot_cap; i++)
        if (slots[i].key) put(fresh, cap, slots[i].key, slots[i].fn);
    free(slots);
    slots = fresh;
    slot_cap = cap;
}

vgpu_function *vgpu_function_register(const void *key, const char *name, const void *module) {
    vgpu_function *fn = calloc(1, sizeof *fn);
    fn->magic = FUNCTION_MAGIC;
    fn->name = strdup(name);
    fn->module = module;
    pthread_rwlock_wrlock(&table_lock);
    if (2 * (slot_len + 2) > slot_cap) grow();
    put(slots, slot_cap, key ? key : fn, fn);
    put(slots, slot_cap, fn, fn);       /* the function's own address is a handle too */
    slot_len += 2;
    pthread_rwlock_unlock(&table_lock);
    return fn;
}

vgpu_function *vgpu_function_lookup(const void *key) {
    vgpu_function *fn = NULL;
    pthread_rwlock_rdlock(&table_lock);
    if (slot_cap) {
        size_t i = hash_ptr(key) & (slot_cap - 1);
        while (slots[i].key && slots[i].key != key) i = (i + 1) & (slot_cap - 1);
        fn = slots[i].fn;
    }
    pthread_rwlock_unlock(&table_lock);
    return fn;
}

/* C++ demangling comes from libstdc++ (already loaded in every C++ engine, where Python's
 * RTLD_LOCAL loading hides it from RTLD_DEFAULT; opened here otherwise); this library stays
 * plain C. Done on a kernel's first prediction, not at registration, which sees tens of thousands
 * of kernels that never run. */
typedef char *(*demangle_fn)(const char *mangled, char *buffer, size_t *length, int *status);

static demangle_fn demangler(void) {
    static demangle_fn found;
    static int looked;
    if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
        void *libstdcxx = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL);
        __atomic_store_n(&found, libstdcxx ? (demangle_fn)dlsym(libstdcxx, "__cxa_demangle") : NULL, __ATOMIC_RELAXED);
        __atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&found, __ATOMIC_RELAXED);
}

const char *vgpu_function_display_name(vgpu_function *fn) {
    const char *name = __atomic_load_n(&fn->display_name, __ATOMIC_ACQUIRE);
    if (name) return name;
    demangle_fn demangle = demangler();
    int status = -1;
    char *demangled = demangle ? demangle(fn->name, NULL, NULL, &status) : NULL;
    const char *made = status == 0 && demangled ? demangled : fn->name;
    const char *expected = NULL;
    if (!__atomic_compare_exchange_n(&fn->display_name, &expected, made, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        if (made != fn->name) free(demangled);      /* another thread was first */
        return expected;
    }
    return made;
}
