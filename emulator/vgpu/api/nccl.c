/* nccl.c: NCCL (libnccl.so.2), for torch's ProcessGroupNCCL and vLLM's pynccl.
 *
 * Kernels are no-ops, so a collective moves no data. It is charged on its stream as one launch
 * of kind VGPU_OP_COLLECTIVE whose descriptor carries what a cost model and a cross-process
 * timekeeper need: the operation, the bytes of this rank's send buffer, the communicator's size
 * and this rank, and (comm_id, seq), which name the same collective on every rank: comm_id is a
 * hash of the ncclUniqueId every rank was given, seq counts the communicator's collectives.
 * Where the result is free it is exact: on one rank every collective is the identity, so an
 * out-of-place one copies its send buffer to its receive buffer (host-backed memory only, as
 * any copy here).
 *
 * The CUDA toolkit ships no nccl.h, so the types below mirror nccl.h of NCCL 2.30.7
 * (NCCL_VERSION_CODE 23007), the nvidia-nccl-cu13 wheel that torch 2.14 and vLLM 0.33 use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vgpu.h"

#define API VGPU_EXPORT

/* ---- the NCCL ABI (nccl.h 2.30.7) --------------------------------------------------------- */

#define NCCL_VERSION_CODE 23007
#define NCCL_UNIQUE_ID_BYTES 128
#define NCCL_API_MAGIC 0xcafebeef
#define NCCL_SPLIT_NOCOLOR (-1)

typedef enum {
    ncclSuccess = 0, ncclUnhandledCudaError = 1, ncclSystemError = 2, ncclInternalError = 3,
    ncclInvalidArgument = 4, ncclInvalidUsage = 5, ncclRemoteError = 6, ncclInProgress = 7,
    ncclTimeout = 8,
} ncclResult_t;

typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; } ncclUniqueId;
typedef struct ncclComm *ncclComm_t;
typedef void *ncclWindow_t;     /* opaque to callers; here it is the registered buffer itself */
typedef int ncclDataType_t;
typedef int ncclRedOp_t;

/* ncclRedOp_t: sum, prod, max, min, avg are 0..4; ncclRedOpCreate* hands out ids from 5. */
#define NCCL_NUM_OPS 5

/* ncclDataType_t -> element size: int8, uint8, int32, uint32, int64, uint64, float16, float32,
 * float64, bfloat16, float8e4m3, float8e5m2. */
static const size_t type_size[] = {1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1};
#define NCCL_NUM_TYPES (int)(sizeof type_size / sizeof *type_size)

/* Only the header of ncclConfig_t is read: the rest (blocking, CTA counts, names, sharing)
 * tunes a real NCCL and changes nothing that is charged here. */
typedef struct { size_t size; unsigned int magic, version; } ncclConfig_t;

/* ncclCommMemStat_t: GpuMemSuspend, GpuMemSuspended, GpuMemPersist, GpuMemTotal. */
#define NCCL_STAT_GPU_MEM_SUSPENDED 1
#define NCCL_NUM_STATS 4

/* ---- errors ------------------------------------------------------------------------------- */

static const char *error_text[] = {
    [ncclSuccess] = "no error",
    [ncclUnhandledCudaError] = "unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
    [ncclSystemError] = "unhandled system error (run with NCCL_DEBUG=INFO for details)",
    [ncclInternalError] = "internal error - please report this issue to the NCCL developers",
    [ncclInvalidArgument] = "invalid argument (run with NCCL_DEBUG=WARN for details)",
    [ncclInvalidUsage] = "invalid usage (run with NCCL_DEBUG=WARN for details)",
    [ncclRemoteError] = "remote process exited or there was a network error",
    [ncclInProgress] = "NCCL operation in progress",
    [ncclTimeout] = "NCCL operation timed out",
};

/* The detail behind the last failure, for ncclGetLastError (which NCCL keeps per thread too). */
static __thread char last_error[512];

static ncclResult_t fail(ncclResult_t code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static ncclResult_t fail(ncclResult_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    vgpu_debug("nccl: %s", last_error);
    return code;
}

API const char *ncclGetErrorString(ncclResult_t result) {
    if ((unsigned)result < sizeof error_text / sizeof *error_text) return error_text[result];
    return "unknown result code";
}

API const char *ncclGetLastError(ncclComm_t comm) { return last_error; }

API ncclResult_t ncclGetVersion(int *version) {
    if (!version) return fail(ncclInvalidArgument, "ncclGetVersion: version is NULL");
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

/* ---- communicators ------------------------------------------------------------------------ */

struct ncclComm {
    uint64_t id;                /* comm_id: the same on every rank of the communicator */
    int nranks, rank;
    int device;                 /* the current device when the communicator was made */
    uint64_t seq;               /* collectives issued so far */
    /* Point-to-point operations count per peer, apart from seq: only the two ranks involved
     * issue one, so counting them in seq would put the ranks' seq out of step. The k-th send
     * to a peer matches that peer's k-th receive from this rank. */
    uint64_t *sent, *received;
    unsigned derived;           /* communicators split or shrunk from this one so far */
    int suspended;
};

/* FNV-1a, continued from h: ids derived from bytes every rank holds are equal on every rank. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    for (const unsigned char *p = data; n--; p++) h = (h ^ *p) * 0x100000001b3ULL;
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

static void comm_set(struct ncclComm *c, uint64_t id, int nranks, int rank, int device) {
    c->id = id;
    c->nranks = nranks;
    c->rank = rank;
    c->device = device;
    c->sent = calloc(nranks, sizeof *c->sent);
    c->received = calloc(nranks, sizeof *c->received);
}

static struct ncclComm *comm_new(uint64_t id, int nranks, int rank, int device) {
    struct ncclComm *c = calloc(1, sizeof *c);
    comm_set(c, id, nranks, rank, device);
    return c;
}

static void comm_free(struct ncclComm *c) {
    free(c->sent);
    free(c->received);
    free(c);
}

static ncclResult_t check_config(const ncclConfig_t *config) {
    if (config && config->magic != NCCL_API_MAGIC)
        return fail(ncclInvalidArgument, "ncclConfig_t was not initialised with NCCL_CONFIG_INITIALIZER");
    return ncclSuccess;
}

static ncclResult_t init_rank(ncclComm_t *comm, int nranks, const ncclUniqueId *id, int rank, int device) {
    if (!comm) return fail(ncclInvalidArgument, "communicator pointer is NULL");
    if (nranks < 1 || rank < 0 || rank >= nranks)
        return fail(ncclInvalidArgument, "rank %d is not in a communicator of %d ranks", rank, nranks);
    if (!vgpu_device_valid(device)) return fail(ncclInvalidArgument, "device %d does not exist", device);
    *comm = comm_new(fnv1a(FNV_OFFSET, id, sizeof *id), nranks, rank, device);
    vgpu_debug("nccl: communicator %016llx rank %d/%d on device %d", (unsigned long long)(*comm)->id,
               rank, nranks, device);
    return ncclSuccess;
}

API ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    /* Random, so that every communicator (and so every comm_id) of every run is distinct. */
    int fd = open("/dev/urandom", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, id->internal, sizeof id->internal) : -1;
    if (fd >= 0) close(fd);
    if (n != (ssize_t)sizeof id->internal) return fail(ncclSystemError, "cannot read /dev/urandom");
    return ncclSuccess;
}

/* Ranks make their communicators independently: nranks and rank are all a rank needs, so
 * there is no bootstrap to wait for. */
API ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    return init_rank(comm, nranks, &id, rank, vgpu_current_device());
}

API ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                        ncclConfig_t *config) {
    ncclResult_t r = check_config(config);
    return r != ncclSuccess ? r : init_rank(comm, nranks, &id, rank, vgpu_current_device());
}

/* Several ids speed up a real bootstrap; every rank holds the same list, so the first names it. */
API ncclResult_t ncclCommInitRankScalable(ncclComm_t *comm, int nranks, int rank, int nids,
                                          ncclUniqueId *ids, ncclConfig_t *config) {
    if (nids < 1 || !ids) return fail(ncclInvalidArgument, "ncclCommInitRankScalable needs at least one id");
    ncclResult_t r = check_config(config);
    return r != ncclSuccess ? r : init_rank(comm, nranks, ids, rank, vgpu_current_device());
}

API ncclResult_t ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist) {
    if (!comms || ndev < 1) return fail(ncclInvalidArgument, "ncclCommInitAll: no communicators to make");
    ncclUniqueId id;
    ncclResult_t r = ncclGetUniqueId(&id);
    for (int i = 0; i < ndev && r == ncclSuccess; i++)
        r = init_rank(&comms[i], ndev, &id, i, devlist ? devlist[i] : i);
    return r;
}

#define CHECK_COMM(comm) \
    do { if (!(comm)) return fail(ncclInvalidArgument, "%s: communicator is NULL", __func__); } while (0)

/* Nothing is ever in flight outside virtual time, so finalising has nothing to flush. */
API ncclResult_t ncclCommFinalize(ncclComm_t comm) { CHECK_COMM(comm); return ncclSuccess; }

API ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm) comm_free(comm);
    return ncclSuccess;
}

API ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

API ncclResult_t ncclCommRevoke(ncclComm_t comm, int flags) { CHECK_COMM(comm); return ncclSuccess; }

API ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *error) {
    CHECK_COMM(comm);
    *error = ncclSuccess;       /* no peer can fail: there is no network */
    return ncclSuccess;
}

API ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
    CHECK_COMM(comm);
    *count = comm->nranks;
    return ncclSuccess;
}

API ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int *device) {
    CHECK_COMM(comm);
    *device = comm->device;
    return ncclSuccess;
}

API ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
    CHECK_COMM(comm);
    *rank = comm->rank;
    return ncclSuccess;
}

/* Suspending releases NCCL's own buffers; there are none here, but the state is reported. */
API ncclResult_t ncclCommSuspend(ncclComm_t comm, int flags) { CHECK_COMM(comm); comm->suspended = 1; return ncclSuccess; }
API ncclResult_t ncclCommResume(ncclComm_t comm) { CHECK_COMM(comm); comm->suspended = 0; return ncclSuccess; }

API ncclResult_t ncclCommMemStats(ncclComm_t comm, int stat, uint64_t *value) {
    CHECK_COMM(comm);
    if (stat < 0 || stat >= NCCL_NUM_STATS) return fail(ncclInvalidArgument, "unknown memory statistic %d", stat);
    *value = stat == NCCL_STAT_GPU_MEM_SUSPENDED ? (uint64_t)comm->suspended : 0;
    return ncclSuccess;
}

/* ---- splitting: the one call that needs the other ranks' arguments ------------------------ */

/* Which parent ranks share a color, and in which key order, is known only once every parent
 * rank has said. The ranks of a deployment run on this host and share its folder (the one
 * REVATI_VGPU_SPEC is in, which the deployment's owner removes), so each rank writes its
 * (color, key) to a file there and reads everyone's: the exchange a real NCCL does over its
 * bootstrap network. A split inside ncclGroupStart/End completes at the group's end, so that
 * one thread can split all the communicators of ncclCommInitAll. */
#define SPLIT_TIMEOUT_S 600     /* a rank missing for this long has died: fail, do not hang */

typedef struct pending_split {
    struct ncclComm *parent;
    struct ncclComm *child;     /* allocated when the split is issued, filled in when it completes */
    ncclComm_t *out;            /* the caller's handle, cleared if the split fails */
    unsigned index;             /* the parent's derived count when the split was issued */
    int color, key;
    struct pending_split *next;
} pending_split;

static __thread int group_depth;
static __thread pending_split *pending;

static void split_folder(char *out, size_t len, const struct ncclComm *parent, unsigned index) {
    const char *spec = getenv("REVATI_VGPU_SPEC");
    const char *slash = strrchr(spec, '/');
    snprintf(out, len, "%.*snccl-split-%016llx-%u", slash ? (int)(slash - spec + 1) : 0, spec,
             (unsigned long long)parent->id, index);
}

static ncclResult_t split_announce(const struct ncclComm *parent, unsigned index, int color, int key) {
    char dir[4096], tmp[4200], path[4200];
    vgpu_model_get();           /* fails clearly if REVATI_VGPU_SPEC is unset */
    split_folder(dir, sizeof dir, parent, index);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return fail(ncclSystemError, "cannot create %s", dir);
    snprintf(tmp, sizeof tmp, "%s/.rank%d", dir, parent->rank);
    snprintf(path, sizeof path, "%s/rank%d", dir, parent->rank);
    FILE *f = fopen(tmp, "w");
    if (!f) return fail(ncclSystemError, "cannot write %s", tmp);
    fprintf(f, "%d %d\n", color, key);
    /* Renamed into place whole, so a reader never sees half a file. */
    if (fclose(f) != 0 || rename(tmp, path) != 0) return fail(ncclSystemError, "cannot write %s", path);
    return ncclSuccess;
}

static ncclResult_t split_complete(const pending_split *p) {
    char dir[4096], path[4200];
    split_folder(dir, sizeof dir, p->parent, p->index);
    int nranks = 0, rank = 0;
    time_t deadline = time(NULL) + SPLIT_TIMEOUT_S;
    for (int r = 0; r < p->parent->nranks; r++) {
        int color, key;
        snprintf(path, sizeof path, "%s/rank%d", dir, r);
        FILE *f;
        while (!(f = fopen(path, "r"))) {
            if (time(NULL) > deadline)
                return fail(ncclTimeout, "ncclCommSplit: rank %d of the parent never arrived (%s)", r, path);
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
        int ok = fscanf(f, "%d %d", &color, &key) == 2;
        fclose(f);
        if (!ok) return fail(ncclInternalError, "ncclCommSplit: unreadable %s", path);
        if (color != p->color) continue;
        nranks++;
        if (key < p->key || (key == p->key && r < p->parent->rank)) rank++;
    }
    uint64_t salt[2] = {p->index, (uint64_t)(int64_t)p->color};
    comm_set(p->child, fnv1a(p->parent->id, salt, sizeof salt), nranks, rank, p->parent->device);
    vgpu_debug("nccl: split %016llx color %d -> %016llx rank %d/%d", (unsigned long long)p->parent->id,
               p->color, (unsigned long long)p->child->id, rank, nranks);
    return ncclSuccess;
}

/* Completes every split issued since the outermost ncclGroupStart; the first failure is the
 * result, and every split after it fails too (its ranks' views could no longer agree). */
static ncclResult_t complete_pending_splits(void) {
    ncclResult_t r = ncclSuccess;
    while (pending) {
        pending_split *p = pending;
        pending = p->next;
        if (r == ncclSuccess) r = split_complete(p);
        if (r != ncclSuccess) {
            *p->out = NULL;
            comm_free(p->child);
        }
        free(p);
    }
    return r;
}

API ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config) {
    CHECK_COMM(comm);
    ncclResult_t r = check_config(config);
    if (r != ncclSuccess) return r;
    unsigned index = comm->derived++;
    *newcomm = NULL;
    if ((r = split_announce(comm, index, color, key)) != ncclSuccess) return r;
    if (color == NCCL_SPLIT_NOCOLOR) return ncclSuccess;   /* this rank joins no communicator */
    pending_split *p = malloc(sizeof *p);
    *p = (pending_split){comm, calloc(1, sizeof(struct ncclComm)), newcomm, index, color, key, pending};
    pending = p;
    *newcomm = p->child;
    return group_depth ? ncclSuccess : complete_pending_splits();
}

/* Every remaining rank holds the same exclusion list, so each works out its new rank alone. */
API ncclResult_t ncclCommShrink(ncclComm_t comm, int *exclude, int nexclude, ncclComm_t *newcomm,
                                ncclConfig_t *config, int flags) {
    CHECK_COMM(comm);
    ncclResult_t r = check_config(config);
    if (r != ncclSuccess) return r;
    int below = 0;
    for (int i = 0; i < nexclude; i++) {
        if (exclude[i] == comm->rank) return fail(ncclInvalidArgument, "ncclCommShrink: this rank is excluded");
        below += exclude[i] < comm->rank;
    }
    uint64_t salt[2] = {comm->derived++, (uint64_t)-2};    /* apart from any split color */
    *newcomm = comm_new(fnv1a(comm->id, salt, sizeof salt), comm->nranks - nexclude, comm->rank - below,
                        comm->device);
    return ncclSuccess;
}

/* ---- groups ------------------------------------------------------------------------------- */

/* Groups only nest. An operation inside a group is charged when it is issued rather than fused
 * at ncclGroupEnd: per-operation launches keep the attribution (which collective cost what);
 * fusing the group's operations into one is the cross-process timekeeper's to decide. */
API ncclResult_t ncclGroupStart(void) {
    group_depth++;
    return ncclSuccess;
}

API ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return fail(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
    return --group_depth ? ncclSuccess : complete_pending_splits();
}

/* ---- reduction operators ------------------------------------------------------------------- */

static int next_op = NCCL_NUM_OPS;

/* The scalar only matters to the arithmetic, which no-op kernels never do. */
API ncclResult_t ncclRedOpCreatePreMulSum(ncclRedOp_t *op, void *scalar, ncclDataType_t type, int residence,
                                          ncclComm_t comm) {
    CHECK_COMM(comm);
    *op = __atomic_fetch_add(&next_op, 1, __ATOMIC_RELAXED);
    return ncclSuccess;
}

API ncclResult_t ncclRedOpDestroy(ncclRedOp_t op, ncclComm_t comm) {
    CHECK_COMM(comm);
    if (op < NCCL_NUM_OPS) return fail(ncclInvalidArgument, "built-in reduction %d cannot be destroyed", op);
    return ncclSuccess;
}

/* ---- collectives and point-to-point ------------------------------------------------------- */

/* What an operation's arguments mean. */
static const struct {
    unsigned per_rank_blocks : 1;   /* the send buffer holds count elements for every rank */
    unsigned reduces : 1;           /* takes an ncclRedOp_t */
    unsigned rooted : 1;            /* the int argument is a root rank */
    unsigned p2p : 1;               /* the int argument is a peer rank */
} shape[] = {
    [VGPU_COLL_ALL_REDUCE] = {.reduces = 1},
    [VGPU_COLL_ALL_GATHER] = {0},
    [VGPU_COLL_REDUCE_SCATTER] = {.per_rank_blocks = 1, .reduces = 1},
    [VGPU_COLL_BROADCAST] = {.rooted = 1},
    [VGPU_COLL_REDUCE] = {.reduces = 1, .rooted = 1},
    [VGPU_COLL_SEND] = {.p2p = 1},
    [VGPU_COLL_RECV] = {.p2p = 1},
    [VGPU_COLL_ALL_TO_ALL] = {.per_rank_blocks = 1},
};

/* A collective runs on its communicator's device (NCCL switches to it while enqueuing), so a
 * default-stream handle means that device's default stream, not the caller's current one's. */
static vgpu_stream *stream_of(const struct ncclComm *comm, void *handle) {
    int caller = vgpu_current_device();
    vgpu_set_current_device(comm->device);
    vgpu_stream *s = vgpu_stream_resolve(handle);
    vgpu_set_current_device(caller);
    return s;
}

/* count is in elements as the API takes it; send and recv are the API's buffers (NULL where an
 * operation has only one); arg is the root or peer rank where the operation has one. */
static ncclResult_t enqueue(const char *name, vgpu_collective_op op, const void *send, void *recv,
                            size_t count, ncclDataType_t type, ncclRedOp_t redop, int arg,
                            ncclComm_t comm, void *stream) {
    if (!comm) return fail(ncclInvalidArgument, "%s: communicator is NULL", name);
    if (type < 0 || type >= NCCL_NUM_TYPES) return fail(ncclInvalidArgument, "%s: unknown datatype %d", name, type);
    if (shape[op].reduces && (redop < 0 || redop >= __atomic_load_n(&next_op, __ATOMIC_RELAXED)))
        return fail(ncclInvalidArgument, "%s: unknown reduction %d", name, redop);
    if ((shape[op].rooted || shape[op].p2p) && (arg < 0 || arg >= comm->nranks))
        return fail(ncclInvalidArgument, "%s: rank %d is not in a communicator of %d", name, arg, comm->nranks);
    vgpu_stream *s = stream_of(comm, stream);
    vgpu_launch l = {.kind = VGPU_OP_COLLECTIVE, .device = vgpu_stream_device(s), .name = name};
    /* Every rank reports the same message size, root or not, so the ranks' records agree. */
    l.u.coll.bytes = count * type_size[type] * (shape[op].per_rank_blocks ? comm->nranks : 1);
    l.u.coll.op = op;
    l.u.coll.nranks = comm->nranks;
    l.u.coll.rank = comm->rank;
    l.u.coll.datatype = type;
    l.u.coll.comm_id = comm->id;
    l.u.coll.peer = shape[op].rooted || shape[op].p2p ? arg : -1;
    if (op == VGPU_COLL_SEND) l.u.coll.seq = comm->sent[arg]++;
    else if (op == VGPU_COLL_RECV) l.u.coll.seq = comm->received[arg]++;
    else l.u.coll.seq = comm->seq++;
    vgpu_debug("nccl: %s comm %016llx seq %llu rank %d/%d bytes %zu", name, (unsigned long long)comm->id,
               (unsigned long long)l.u.coll.seq, comm->rank, comm->nranks, l.u.coll.bytes);
    /* On one rank a collective is the identity (a pre-multiplied sum would scale, so only the
     * built-in reductions qualify); point-to-point has no single-rank meaning to copy. */
    if (comm->nranks == 1 && !shape[op].p2p && send && recv && send != recv &&
        (!shape[op].reduces || redop < NCCL_NUM_OPS))
        vgpu_copy_bytes(recv, send, l.u.coll.bytes);
    vgpu_submit(s, &l);
    return ncclSuccess;
}

API ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, void *stream) {
    return enqueue("ncclAllReduce", VGPU_COLL_ALL_REDUCE, send, recv, count, type, op, 0, comm, stream);
}

API ncclResult_t ncclAllGather(const void *send, void *recv, size_t sendcount, ncclDataType_t type,
                               ncclComm_t comm, void *stream) {
    return enqueue("ncclAllGather", VGPU_COLL_ALL_GATHER, send, recv, sendcount, type, 0, 0, comm, stream);
}

API ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t recvcount, ncclDataType_t type,
                                   ncclRedOp_t op, ncclComm_t comm, void *stream) {
    return enqueue("ncclReduceScatter", VGPU_COLL_REDUCE_SCATTER, send, recv, recvcount, type, op, 0, comm, stream);
}

API ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type, int root,
                               ncclComm_t comm, void *stream) {
    return enqueue("ncclBroadcast", VGPU_COLL_BROADCAST, send, recv, count, type, 0, root, comm, stream);
}

API ncclResult_t ncclBcast(void *buff, size_t count, ncclDataType_t type, int root, ncclComm_t comm, void *stream) {
    return enqueue("ncclBcast", VGPU_COLL_BROADCAST, buff, buff, count, type, 0, root, comm, stream);
}

API ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                            int root, ncclComm_t comm, void *stream) {
    return enqueue("ncclReduce", VGPU_COLL_REDUCE, send, recv, count, type, op, root, comm, stream);
}

API ncclResult_t ncclAlltoAll(const void *send, void *recv, size_t count, ncclDataType_t type,
                              ncclComm_t comm, void *stream) {
    return enqueue("ncclAlltoAll", VGPU_COLL_ALL_TO_ALL, send, recv, count, type, 0, 0, comm, stream);
}

API ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                          void *stream) {
    return enqueue("ncclSend", VGPU_COLL_SEND, send, NULL, count, type, 0, peer, comm, stream);
}

API ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, void *stream) {
    return enqueue("ncclRecv", VGPU_COLL_RECV, NULL, recv, count, type, 0, peer, comm, stream);
}

/* ---- memory: allocation and registration -------------------------------------------------- */

API ncclResult_t ncclMemAlloc(void **ptr, size_t size) {
    if (!ptr) return fail(ncclInvalidArgument, "ncclMemAlloc: ptr is NULL");
    if (vgpu_mem_alloc_device(vgpu_current_device(), size, ptr) != 0)
        return fail(ncclUnhandledCudaError, "ncclMemAlloc: out of memory allocating %zu bytes", size);
    return ncclSuccess;
}

API ncclResult_t ncclMemFree(void *ptr) {
    if (ptr && vgpu_mem_free(ptr) != 0) return fail(ncclInvalidArgument, "ncclMemFree: %p was not allocated", ptr);
    return ncclSuccess;
}

/* Registration lets a real NCCL skip staging copies; with no data moving there is nothing to
 * set up, and the buffer itself serves as the handle. */
API ncclResult_t ncclCommRegister(const ncclComm_t comm, void *buff, size_t size, void **handle) {
    CHECK_COMM(comm);
    *handle = buff;
    return ncclSuccess;
}

API ncclResult_t ncclCommDeregister(const ncclComm_t comm, void *handle) { CHECK_COMM(comm); return ncclSuccess; }

API ncclResult_t ncclCommWindowRegister(ncclComm_t comm, void *buff, size_t size, ncclWindow_t *win, int flags) {
    CHECK_COMM(comm);
    *win = buff;
    return ncclSuccess;
}

API ncclResult_t ncclCommWindowDeregister(ncclComm_t comm, ncclWindow_t win) { CHECK_COMM(comm); return ncclSuccess; }

API ncclResult_t ncclWinGetUserPtr(ncclComm_t comm, ncclWindow_t win, void **ptr) {
    CHECK_COMM(comm);
    *ptr = win;
    return ncclSuccess;
}
