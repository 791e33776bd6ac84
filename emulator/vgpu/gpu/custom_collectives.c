/* custom_collectives.c: an engine's own collective kernels, charged and met as collectives.
 *
 * vLLM (and SGLang, whose sgl-kernel copies it) all-reduces a decode step's activations with its
 * own kernels over peer memory, not with NCCL: every rank's kernel writes a flag into each peer's
 * signal buffer, waits for theirs, then reads the peers' inputs over NVLink. Launched as plain
 * kernels they would be charged by the generic kernel line (about 1.8 us, a fifth of the
 * published figure) and the ranks would never wait for each other. Here such a launch becomes a
 * VGPU_OP_COLLECTIVE: charged by the predictor's curve for it, and met across processes through
 * the Timekeeper like an NCCL collective (stream.c), inside CUDA graphs too.
 *
 * The kernels, all (RankData *ptrs, RankSignals sg, Signal *self_sg, T *result, int rank,
 * int size) with sizes in 16-byte packs, the rank count a template argument:
 *   cross_device_reduce_1stage / _2stage / _half_butterfly<T, ngpus>: all-reduce of size packs;
 *   cross_device_reduce_scatter<T, ngpus>: each rank's output is size packs of the summed input;
 *   cross_device_all_gather<ngpus>: each rank contributes size packs.
 * The communicator is known by its signal buffers: RankSignals holds every rank's (its own
 * allocation, the others opened over CUDA IPC), so (owner pid, owner address) of each names the
 * same set on every rank; its hash is the comm_id and a per-communicator count the seq. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

#define PACK_BYTES 16
#define MAX_RANKS 8

/* Matched on the mangled name's own length-prefixed identifier and its template list ('I'), so a
 * kernel of another signature that merely starts the same (cross_device_reduce_scatter_2stage)
 * is not taken for one of these. */
static const struct { const char *mangled; vgpu_collective_op op; } kernels[] = {
    {"26cross_device_reduce_1stageI", VGPU_COLL_CUSTOM_ALL_REDUCE},
    {"26cross_device_reduce_2stageI", VGPU_COLL_CUSTOM_ALL_REDUCE},
    {"34cross_device_reduce_half_butterflyI", VGPU_COLL_CUSTOM_ALL_REDUCE},
    {"27cross_device_reduce_scatterI", VGPU_COLL_REDUCE_SCATTER},
    {"23cross_device_all_gatherI", VGPU_COLL_ALL_GATHER},
};
#define N_KERNELS (int)(sizeof kernels / sizeof *kernels)

/* The function's reading, cached in it: -1 none, else kernel index + 1 and ngpus << 8. */
static int reading(vgpu_function *fn) {
    int known = __atomic_load_n(&fn->custom_collective, __ATOMIC_RELAXED);
    if (known) return known;
    int found = -1;
    for (int i = 0; i < N_KERNELS && found < 0; i++) {
        const char *at = strstr(fn->name, kernels[i].mangled);
        if (!at) continue;
        /* ngpus is the template's int argument: Li<n>E */
        const char *li = strstr(at + strlen(kernels[i].mangled), "Li");
        char *end;
        long n = li ? strtol(li + 2, &end, 10) : 0;
        if (li && *end == 'E' && n >= 2 && n <= MAX_RANKS) found = (i + 1) | (int)n << 8;
    }
    __atomic_store_n(&fn->custom_collective, found, __ATOMIC_RELAXED);
    return found;
}

/* Where a signal buffer lives, the same on every rank: (owner pid, owner's address). Only a peer's
 * buffer opened over CUDA IPC names its owner; anything else (a peer's buffer reached some other
 * way) would name a different communicator on each rank, whose meetings would never complete. */
static int canonical(const void *p, int own, uint64_t *pid, uint64_t *addr) {
    vgpu_alloc a;
    if (!p || vgpu_mem_lookup(p, &a) != 0) return -1;
    if ((a.kind == VGPU_ALLOC_IPC) == own) return -1;
    if (a.kind == VGPU_ALLOC_IPC) {
        *pid = (uint64_t)a.owner_pid;
        *addr = a.owner_base + ((uintptr_t)p - a.base);
    } else {
        *pid = (uint64_t)vgpu_own_pid();
        *addr = (uintptr_t)p;
    }
    return 0;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= h >> 31; h *= 0xbf58476d1ce4e5b9ULL; h ^= h >> 29;
    return h;
}

/* Collectives issued so far per communicator, in this process. */
static struct { uint64_t id, seq; } *counts;
static size_t n_counts;
static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t next_seq(uint64_t id) {
    pthread_mutex_lock(&counts_lock);
    size_t i = 0;
    while (i < n_counts && counts[i].id != id) i++;
    if (i == n_counts) {
        counts = realloc(counts, (n_counts + 1) * sizeof *counts);
        counts[n_counts].id = id;
        counts[n_counts].seq = 0;
        n_counts++;
    }
    uint64_t seq = counts[i].seq++;
    pthread_mutex_unlock(&counts_lock);
    return seq;
}

int vgpu_custom_collective(vgpu_launch *l) {
    if (!l->function || !l->args) return 0;
    int r = reading(l->function);
    if (r < 0) return 0;
    int index = (r & 0xff) - 1, nranks = r >> 8;
    void *const *signals = (void *const *)l->args[1];
    int rank = *(const int *)l->args[4], size = *(const int *)l->args[5];
    if (rank < 0 || rank >= nranks || size <= 0) return 0;
    uint64_t id = mix(0, (uint64_t)nranks);
    for (int i = 0; i < nranks; i++) {
        uint64_t pid, addr;
        if (canonical(signals[i], i == rank, &pid, &addr) != 0) {
            vgpu_warn_once("%s: rank %d's signal buffer %p is neither this rank's device memory nor a peer's "
                           "opened over CUDA IPC; charged, not met", l->name, i, signals[i]);
            id = 0;
            break;
        }
        id = mix(mix(id, pid), addr);
    }
    vgpu_collective_op op = kernels[index].op;
    size_t part = (size_t)size * PACK_BYTES;
    l->kind = VGPU_OP_COLLECTIVE;
    memset(&l->u.coll, 0, sizeof l->u.coll);
    l->u.coll.op = op;
    l->u.coll.bytes = op == VGPU_COLL_REDUCE_SCATTER ? part * (size_t)nranks : part;   /* this rank's send buffer */
    l->u.coll.nranks = nranks;
    l->u.coll.rank = rank;
    l->u.coll.datatype = -1;
    l->u.coll.comm_id = id;
    l->u.coll.seq = id ? next_seq(id) : 0;
    l->u.coll.peer = -1;
    vgpu_debug("custom collective: %s comm %016llx seq %llu rank %d/%d bytes %zu", l->name,
               (unsigned long long)id, (unsigned long long)l->u.coll.seq, rank, nranks, l->u.coll.bytes);
    return 1;
}
