/* memory.c: split-state device memory.
 *
 * Engines read back only small device buffers (sampled token ids, flags), while the big ones
 * (weights, KV cache, activations) are written and read by kernels alone, and kernels are no-ops
 * here. So an allocation up to the host-backed limit gets real (lazily committed) host pages
 * and copies to and from it round-trip exactly; a larger one gets address space that is never
 * touched (PROT_NONE, MAP_NORESERVE), so 80 GB per virtual GPU costs the host nothing.
 * Accounting is exact because engines size their KV cache from cudaMemGetInfo.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "vgpu.h"

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;

/* Live allocations and VMM mappings, sorted by base, never overlapping. */
static vgpu_alloc *table;
static size_t table_len, table_cap;
/* VMM address ranges (cuMemAddressReserve): unmapped parts read as reserved memory. */
static vgpu_alloc *ranges;
static size_t ranges_len, ranges_cap;

static size_t used[VGPU_MAX_DEVICES];

/* The driver hands out device memory in 2 MiB pages (measured on an H100: a 70e9-byte
 * cudaMalloc took 70,000,836,608 bytes from cudaMemGetInfo), so that is what is charged. */
#define CHARGE_GRANULE ((size_t)2 << 20)

static size_t charged_size(size_t size) {
    return (size + CHARGE_GRANULE - 1) / CHARGE_GRANULE * CHARGE_GRANULE;
}

size_t vgpu_mem_host_backed_max(void) {
    static size_t limit;
    if (!limit) {
        const char *v = getenv("REVATI_VGPU_HOST_BACKED_MAX");
        limit = v && *v ? strtoull(v, NULL, 10) : (size_t)32 << 20;
    }
    return limit;
}

/* Index of the first entry with base > addr. */
static size_t upper_bound(const vgpu_alloc *t, size_t n, uintptr_t addr) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (t[mid].base <= addr) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static const vgpu_alloc *find_in(const vgpu_alloc *t, size_t n, uintptr_t addr) {
    size_t i = upper_bound(t, n, addr);
    if (i == 0) return NULL;
    const vgpu_alloc *a = &t[i - 1];
    return addr < a->base + a->size ? a : NULL;
}

static void insert(vgpu_alloc **t, size_t *n, size_t *cap, vgpu_alloc a) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *t = realloc(*t, *cap * sizeof **t);
    }
    size_t i = upper_bound(*t, *n, a.base);
    memmove(*t + i + 1, *t + i, (*n - i) * sizeof **t);
    (*t)[i] = a;
    (*n)++;
}

static int remove_at_base(vgpu_alloc *t, size_t *n, uintptr_t base, vgpu_alloc *out) {
    size_t i = upper_bound(t, *n, base);
    if (i == 0 || t[i - 1].base != base) return -1;
    *out = t[i - 1];
    memmove(t + i - 1, t + i, (*n - i) * sizeof *t);
    (*n)--;
    return 0;
}

static void *map_pages(size_t size, vgpu_mem_state state) {
    int prot = state == VGPU_MEM_HOST_BACKED ? PROT_READ | PROT_WRITE : PROT_NONE;
    void *p = mmap(NULL, size ? size : 1, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int vgpu_mem_charge(int dev, size_t size) {
    const vgpu_model *m = vgpu_model_get();
    if (!vgpu_device_valid(dev)) return -1;
    pthread_mutex_lock(&mem_lock);
    int ok = used[dev] + size + m->context_memory <= m->total_memory;
    if (ok) used[dev] += size;
    pthread_mutex_unlock(&mem_lock);
    return ok ? 0 : -1;
}

void vgpu_mem_release(int dev, size_t size) {
    if (!vgpu_device_valid(dev)) return;
    pthread_mutex_lock(&mem_lock);
    used[dev] = used[dev] >= size ? used[dev] - size : 0;
    pthread_mutex_unlock(&mem_lock);
}

void vgpu_mem_info(int dev, size_t *free_bytes, size_t *total_bytes) {
    const vgpu_model *m = vgpu_model_get();
    pthread_mutex_lock(&mem_lock);
    size_t in_use = used[dev] + m->context_memory;
    pthread_mutex_unlock(&mem_lock);
    *total_bytes = m->total_memory;
    *free_bytes = m->total_memory > in_use ? m->total_memory - in_use : 0;
}

static void *map_registered(size_t size, int dev, vgpu_alloc_kind kind, int owner_pid, uintptr_t owner_base) {
    vgpu_mem_state state = size <= vgpu_mem_host_backed_max() ? VGPU_MEM_HOST_BACKED : VGPU_MEM_RESERVED;
    void *p = map_pages(size, state);
    if (!p) return NULL;
    vgpu_alloc a = {(uintptr_t)p, size, dev, kind, state, owner_pid, owner_base};
    pthread_mutex_lock(&mem_lock);
    insert(&table, &table_len, &table_cap, a);
    pthread_mutex_unlock(&mem_lock);
    return p;
}

int vgpu_mem_alloc_device(int dev, size_t size, void **out) {
    size_t bytes = size ? size : 1;
    if (vgpu_mem_charge(dev, charged_size(bytes)) != 0) return -1;
    void *p = map_registered(bytes, dev, VGPU_ALLOC_DEVICE, 0, 0);
    if (!p) { vgpu_mem_release(dev, charged_size(bytes)); return -1; }
    *out = p;
    return 0;
}

int vgpu_mem_open_ipc(int dev, size_t size, int owner_pid, uintptr_t owner_base, void **out) {
    void *p = map_registered(size ? size : 1, dev, VGPU_ALLOC_IPC, owner_pid, owner_base);
    if (!p) return -1;
    *out = p;
    return 0;
}

int vgpu_mem_alloc_host(size_t size, void **out) {
    void *p = map_pages(size, VGPU_MEM_HOST_BACKED);
    if (!p) return -1;
    vgpu_alloc a = {(uintptr_t)p, size ? size : 1, -1, VGPU_ALLOC_HOST, VGPU_MEM_HOST_BACKED};
    pthread_mutex_lock(&mem_lock);
    insert(&table, &table_len, &table_cap, a);
    pthread_mutex_unlock(&mem_lock);
    *out = p;
    return 0;
}

int vgpu_mem_free(void *ptr) {
    pthread_mutex_lock(&mem_lock);
    size_t i = upper_bound(table, table_len, (uintptr_t)ptr);
    vgpu_alloc a = {0};
    int ok = i > 0 && table[i - 1].base == (uintptr_t)ptr &&
             (table[i - 1].kind == VGPU_ALLOC_DEVICE || table[i - 1].kind == VGPU_ALLOC_HOST ||
              table[i - 1].kind == VGPU_ALLOC_IPC);
    if (ok) {
        remove_at_base(table, &table_len, (uintptr_t)ptr, &a);
        if (a.kind == VGPU_ALLOC_DEVICE)
            used[a.device] -= charged_size(a.size);
    }
    pthread_mutex_unlock(&mem_lock);
    if (!ok) return -1;
    munmap(ptr, a.size);
    return 0;
}

int vgpu_mem_lookup(const void *ptr, vgpu_alloc *out) {
    uintptr_t addr = (uintptr_t)ptr;
    pthread_mutex_lock(&mem_lock);
    const vgpu_alloc *a = find_in(table, table_len, addr);
    if (!a) a = find_in(ranges, ranges_len, addr);
    if (a) *out = *a;
    pthread_mutex_unlock(&mem_lock);
    return a ? 0 : -1;
}

int vgpu_vmm_reserve(size_t size, size_t alignment, uintptr_t fixed_addr, void **out) {
    (void)alignment;            /* mmap's page alignment is what callers get; see below */
    size_t align = (size_t)2 << 20;  /* VMM granularity: reserve extra so the start is 2 MiB aligned */
    void *p = mmap((void *)fixed_addr, size + align, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -1;
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    if (start > (uintptr_t)p) munmap(p, start - (uintptr_t)p);
    uintptr_t end = (uintptr_t)p + size + align;
    if (end > start + size) munmap((void *)(start + size), end - (start + size));
    vgpu_alloc r = {start, size, -1, VGPU_ALLOC_VMM_RANGE, VGPU_MEM_RESERVED};
    pthread_mutex_lock(&mem_lock);
    insert(&ranges, &ranges_len, &ranges_cap, r);
    pthread_mutex_unlock(&mem_lock);
    *out = (void *)start;
    return 0;
}

int vgpu_vmm_free(void *ptr, size_t size) {
    vgpu_alloc r;
    pthread_mutex_lock(&mem_lock);
    int rc = remove_at_base(ranges, &ranges_len, (uintptr_t)ptr, &r);
    pthread_mutex_unlock(&mem_lock);
    if (rc != 0) return -1;
    munmap(ptr, size ? size : r.size);
    return 0;
}

int vgpu_vmm_map(void *ptr, size_t size, int dev) {
    vgpu_mem_state state = size <= vgpu_mem_host_backed_max() ? VGPU_MEM_HOST_BACKED : VGPU_MEM_RESERVED;
    if (state == VGPU_MEM_HOST_BACKED &&
        mmap(ptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
             -1, 0) == MAP_FAILED)
        return -1;
    vgpu_alloc a = {(uintptr_t)ptr, size, dev, VGPU_ALLOC_VMM_MAPPING, state};
    pthread_mutex_lock(&mem_lock);
    insert(&table, &table_len, &table_cap, a);
    pthread_mutex_unlock(&mem_lock);
    return 0;
}

int vgpu_vmm_unmap(void *ptr, size_t size) {
    uintptr_t addr = (uintptr_t)ptr, end = addr + size;
    pthread_mutex_lock(&mem_lock);
    /* Unmapping may cover several mappings; drop each one that starts inside the span. */
    size_t i = upper_bound(table, table_len, addr);
    if (i > 0 && table[i - 1].base == addr) i--;
    size_t j = i;
    while (j < table_len && table[j].base < end) j++;
    memmove(table + i, table + j, (table_len - j) * sizeof *table);
    table_len -= j - i;
    pthread_mutex_unlock(&mem_lock);
    return mmap(ptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
                   == MAP_FAILED ? -1 : 0;
}

static int readable(const void *p, vgpu_alloc *a) {
    if (vgpu_mem_lookup(p, a) != 0) return 1;   /* plain host memory */
    return a->state == VGPU_MEM_HOST_BACKED;
}

void vgpu_copy_bytes(void *dst, const void *src, size_t n) {
    vgpu_alloc a;
    if (!n || !readable(dst, &a)) return;       /* writes into reserved memory are dropped */
    if (readable(src, &a)) memmove(dst, src, n);
    else memset(dst, 0, n);                     /* reserved memory reads as zeros */
}

void vgpu_set_bytes(void *dst, int value, size_t n) {
    vgpu_alloc a;
    if (n && readable(dst, &a)) memset(dst, value, n);
}
