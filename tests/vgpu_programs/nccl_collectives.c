/* nccl_collectives.c: NCCL through the vGPU library from one process, the way a multi-GPU C
 * program uses it (ncclCommInitAll, or one id shared by ncclCommInitRank calls in a group).
 * No headers: the prototypes below are what the program needs of cudart and NCCL.
 * Checks what it can itself (results, event timing, single-rank data) and exits non-zero on the
 * first failure; tests/test_vgpu_nccl.py checks the trace it leaves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef void *ncclComm_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;

int ncclGetVersion(int *version);
int ncclGetUniqueId(ncclUniqueId *id);
int ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist);
int ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank);
int ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, void *config);
int ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, void *config);
int ncclCommInitRankScalable(ncclComm_t *comm, int nranks, int rank, int nids, ncclUniqueId *ids, void *config);
int ncclCommShrink(ncclComm_t comm, int *exclude, int nexclude, ncclComm_t *newcomm, void *config, int flags);
int ncclCommDestroy(ncclComm_t comm);
int ncclCommAbort(ncclComm_t comm);
int ncclCommFinalize(ncclComm_t comm);
int ncclCommGetAsyncError(ncclComm_t comm, int *error);
int ncclCommRegister(ncclComm_t comm, void *buff, size_t size, void **handle);
int ncclCommDeregister(ncclComm_t comm, void *handle);
int ncclCommMemStats(ncclComm_t comm, int stat, unsigned long long *value);
int ncclCommSuspend(ncclComm_t comm, int flags);
int ncclMemAlloc(void **ptr, size_t size);
int ncclMemFree(void *ptr);
int ncclRedOpCreatePreMulSum(int *op, void *scalar, int type, int residence, ncclComm_t comm);
int ncclRedOpDestroy(int op, ncclComm_t comm);
int ncclCommCount(ncclComm_t comm, int *count);
int ncclCommCuDevice(ncclComm_t comm, int *device);
int ncclCommUserRank(ncclComm_t comm, int *rank);
int ncclGroupStart(void);
int ncclGroupEnd(void);
int ncclAllReduce(const void *send, void *recv, size_t count, int type, int op, ncclComm_t comm, cudaStream_t s);
int ncclAllGather(const void *send, void *recv, size_t count, int type, ncclComm_t comm, cudaStream_t s);
int ncclBroadcast(const void *send, void *recv, size_t count, int type, int root, ncclComm_t comm, cudaStream_t s);
int ncclReduceScatter(const void *send, void *recv, size_t count, int type, int op, ncclComm_t comm, cudaStream_t s);
int ncclAlltoAll(const void *send, void *recv, size_t count, int type, ncclComm_t comm, cudaStream_t s);
int ncclSend(const void *send, size_t count, int type, int peer, ncclComm_t comm, cudaStream_t s);
int ncclRecv(void *recv, size_t count, int type, int peer, ncclComm_t comm, cudaStream_t s);
const char *ncclGetErrorString(int result);
const char *ncclGetLastError(ncclComm_t comm);

int cudaSetDevice(int dev);
int cudaStreamCreate(cudaStream_t *s);
int cudaEventCreate(cudaEvent_t *e);
int cudaEventRecord(cudaEvent_t e, cudaStream_t s);
int cudaEventSynchronize(cudaEvent_t e);
int cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end);
int cudaMalloc(void **p, size_t n);
int cudaMemcpy(void *dst, const void *src, size_t n, int kind);
int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

/* ncclConfig_t as NCCL_CONFIG_INITIALIZER starts it: size, magic, version, then settings. */
typedef struct { size_t size; unsigned magic, version; int settings[20]; } ncclConfig_t;

enum { ncclInt8 = 0, ncclInt32 = 2, ncclInt64 = 4, ncclFloat16 = 6, ncclFloat32 = 7 };
enum { ncclSum = 0 };
enum { H2D = 1, D2H = 2 };

#define CHECK(call) do { int rc_ = (call); if (rc_ != 0) { \
    fprintf(stderr, "FAIL %s:%d %s -> %d\n", __FILE__, __LINE__, #call, rc_); exit(1); } } while (0)
#define EXPECT(cond, ...) do { if (!(cond)) { \
    fprintf(stderr, "FAIL %s:%d %s: ", __FILE__, __LINE__, #cond); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); exit(1); } } while (0)

static cudaStream_t streams[2];
static cudaEvent_t starts[2], ends[2];
static void *buf[2];

/* Start a timed section on both streams. Virtual time runs with host time while a stream is
 * idle, so each stream is first given work reaching past "now" (an all-to-all the predictor
 * charges 1 s): the section's operations then start exactly where the start event sits. */
static void begin(ncclComm_t *comms) {
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) CHECK(ncclAlltoAll(buf[d], buf[d], 1, ncclInt8, comms[d], streams[d]));
    CHECK(ncclGroupEnd());
    for (int d = 0; d < 2; d++) CHECK(cudaEventRecord(starts[d], streams[d]));
}

/* Elapsed milliseconds between the events recorded around work on device d's stream. */
static float elapsed(int d) {
    float ms = -1;
    CHECK(cudaEventSynchronize(ends[d]));
    CHECK(cudaEventElapsedTime(&ms, starts[d], ends[d]));
    return ms;
}

static void near(float got, float want, const char *what) {
    EXPECT(got > want - 1e-4f && got < want + 1e-4f, "%s took %f ms, want %f", what, got, want);
}

int main(void) {
    int version = 0;
    CHECK(ncclGetVersion(&version));
    EXPECT(version == 23007, "version %d", version);

    /* Two ranks on devices 0 and 1 from ncclCommInitAll. */
    ncclComm_t comms[2];
    CHECK(ncclCommInitAll(comms, 2, NULL));
    for (int d = 0; d < 2; d++) {
        int count, device, rank;
        CHECK(ncclCommCount(comms[d], &count));
        CHECK(ncclCommCuDevice(comms[d], &device));
        CHECK(ncclCommUserRank(comms[d], &rank));
        EXPECT(count == 2 && device == d && rank == d, "comm %d: count %d device %d rank %d", d, count, device, rank);
        CHECK(cudaSetDevice(d));
        CHECK(cudaStreamCreate(&streams[d]));
        CHECK(cudaEventCreate(&starts[d]));
        CHECK(cudaEventCreate(&ends[d]));
    }
    for (int d = 0; d < 2; d++) { CHECK(cudaSetDevice(d)); CHECK(cudaMalloc(&buf[d], 1 << 20)); }

    /* One stream per device; each collective is timed by its own events. The fixed predictor
     * charges ncclAllReduce 1 ms, ncclAllGather 2 ms, ncclBroadcast 3 ms, ncclReduceScatter 4 ms,
     * ncclSend and ncclRecv 0.5 ms. */
    begin(comms);
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) CHECK(ncclAllReduce(buf[d], buf[d], 1024, ncclFloat32, ncclSum, comms[d], streams[d]));
    CHECK(ncclGroupEnd());
    for (int d = 0; d < 2; d++) { CHECK(cudaEventRecord(ends[d], streams[d])); near(elapsed(d), 1.0f, "allreduce"); }

    begin(comms);
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++)
        CHECK(ncclAllGather(buf[d], (char *)buf[d] + 4096, 256, ncclFloat16, comms[d], streams[d]));
    for (int d = 0; d < 2; d++) CHECK(ncclBroadcast(buf[d], buf[d], 100, ncclInt64, 0, comms[d], streams[d]));
    CHECK(ncclGroupEnd());
    for (int d = 0; d < 2; d++) { CHECK(cudaEventRecord(ends[d], streams[d])); near(elapsed(d), 5.0f, "allgather+broadcast"); }

    begin(comms);
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++)
        CHECK(ncclReduceScatter(buf[d], (char *)buf[d] + 4096, 10, ncclFloat32, ncclSum, comms[d], streams[d]));
    CHECK(ncclSend(buf[0], 64, ncclInt32, 1, comms[0], streams[0]));
    CHECK(ncclRecv(buf[1], 64, ncclInt32, 0, comms[1], streams[1]));
    CHECK(ncclGroupEnd());
    for (int d = 0; d < 2; d++) { CHECK(cudaEventRecord(ends[d], streams[d])); near(elapsed(d), 4.5f, "reducescatter+p2p"); }

    /* The same pair made from one id: ncclCommInitRank per device inside a group. A NULL
     * stream is the communicator's device's default stream, whatever the current device. */
    ncclUniqueId id;
    ncclComm_t pair[2];
    CHECK(ncclGetUniqueId(&id));
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) { CHECK(cudaSetDevice(d)); CHECK(ncclCommInitRank(&pair[d], 2, id, d)); }
    CHECK(ncclGroupEnd());
    CHECK(cudaSetDevice(0));
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) CHECK(ncclAllReduce(buf[d], buf[d], 2048, ncclInt8, ncclSum, pair[d], NULL));
    CHECK(ncclGroupEnd());

    /* One rank: collectives are the identity, so out-of-place ones deliver the send buffer. */
    ncclComm_t one;
    CHECK(ncclGetUniqueId(&id));
    CHECK(ncclCommInitRank(&one, 1, id, 0));
    int host[64], back[64];
    for (int i = 0; i < 64; i++) host[i] = i * 7 + 1;
    void *send, *recv;
    CHECK(cudaMalloc(&send, sizeof host));
    CHECK(cudaMalloc(&recv, sizeof host));
    CHECK(cudaMemcpy(send, host, sizeof host, H2D));
    for (int op = 0; op < 3; op++) {
        memset(back, 0, sizeof back);
        CHECK(cudaMemcpy(recv, back, sizeof back, H2D));
        if (op == 0) CHECK(ncclAllReduce(send, recv, 64, ncclInt32, ncclSum, one, NULL));
        if (op == 1) CHECK(ncclAllGather(send, recv, 64, ncclInt32, one, NULL));
        if (op == 2) CHECK(ncclBroadcast(send, recv, 64, ncclInt32, 0, one, NULL));
        CHECK(cudaMemcpy(back, recv, sizeof back, D2H));
        EXPECT(memcmp(host, back, sizeof host) == 0, "single-rank op %d did not deliver its input", op);
    }

    /* Errors name themselves. */
    EXPECT(ncclAllReduce(send, recv, 1, 99, ncclSum, one, NULL) == 4, "a bad datatype is ncclInvalidArgument");
    EXPECT(strstr(ncclGetErrorString(4), "invalid argument"), "%s", ncclGetErrorString(4));
    EXPECT(strstr(ncclGetLastError(NULL), "datatype 99"), "last error: %s", ncclGetLastError(NULL));
    EXPECT(ncclAllReduce(send, recv, 1, ncclInt32, ncclSum, NULL, NULL) == 4, "a NULL comm is ncclInvalidArgument");
    EXPECT(ncclBroadcast(send, recv, 1, ncclInt32, 1, one, NULL) == 4, "root 1 of 1 rank is ncclInvalidArgument");
    EXPECT(ncclGroupEnd() == 5, "ncclGroupEnd without ncclGroupStart is ncclInvalidUsage");

    /* Splitting four ranks, from one thread, so inside a group: by parity with reversed keys,
     * then ranks 0-2 together while rank 3 opts out. */
    ncclComm_t four[4], halves[4], three[4];
    CHECK(ncclCommInitAll(four, 4, NULL));
    CHECK(ncclGroupStart());
    for (int r = 0; r < 4; r++) CHECK(ncclCommSplit(four[r], r % 2, -r, &halves[r], NULL));
    CHECK(ncclGroupEnd());
    for (int r = 0; r < 4; r++) {
        int count, rank, device;
        CHECK(ncclCommCount(halves[r], &count));
        CHECK(ncclCommUserRank(halves[r], &rank));
        CHECK(ncclCommCuDevice(halves[r], &device));
        EXPECT(count == 2 && rank == (r < 2) && device == r, "half %d: count %d rank %d device %d", r, count, rank, device);
    }
    CHECK(ncclGroupStart());
    for (int r = 0; r < 4; r++) CHECK(ncclCommSplit(four[r], r < 3 ? 5 : -1, 0, &three[r], NULL));
    CHECK(ncclGroupEnd());
    EXPECT(three[3] == NULL, "NCCL_SPLIT_NOCOLOR gives no communicator");
    for (int r = 0; r < 3; r++) {
        int count, rank;
        CHECK(ncclCommCount(three[r], &count));
        CHECK(ncclCommUserRank(three[r], &rank));
        EXPECT(count == 3 && rank == r, "three %d: count %d rank %d", r, count, rank);
    }
    /* The halves' collectives: ranks {1, 3} on devices 1 and 3 (recorded for the test). */
    CHECK(ncclGroupStart());
    for (int r = 1; r < 4; r += 2) CHECK(ncclAllReduce(buf[0], buf[0], 8, ncclFloat32, ncclSum, halves[r], NULL));
    CHECK(ncclGroupEnd());

    /* Shrinking without rank 1: the others close the gap, in order, without talking. */
    int excluded = 1, kept[] = {0, 2, 3};
    for (int i = 0; i < 3; i++) {
        ncclComm_t shrunk;
        int count, rank;
        CHECK(ncclCommShrink(four[kept[i]], &excluded, 1, &shrunk, NULL, 0));
        CHECK(ncclCommCount(shrunk, &count));
        CHECK(ncclCommUserRank(shrunk, &rank));
        EXPECT(count == 3 && rank == i, "shrunk %d: count %d rank %d", kept[i], count, rank);
        CHECK(ncclCommDestroy(shrunk));
    }

    /* The rest of a communicator's life, on one rank. */
    ncclConfig_t config = {sizeof config, 0xcafebeef, 23007, {0}};
    ncclComm_t managed;
    CHECK(ncclGetUniqueId(&id));
    CHECK(ncclCommInitRankConfig(&managed, 1, id, 0, &config));
    config.magic = 0;
    EXPECT(ncclCommInitRankConfig(&managed, 1, id, 0, &config) == 4, "an uninitialised config is refused");
    int async = -1, premul = -1;
    CHECK(ncclCommGetAsyncError(managed, &async));
    EXPECT(async == 0, "async error %d", async);
    /* A pre-multiplied sum scales even on one rank, so it is not copied as the identity. */
    float two = 2;
    CHECK(ncclRedOpCreatePreMulSum(&premul, &two, ncclFloat32, 1, managed));
    EXPECT(premul >= 5, "a created reduction is numbered after the built-in ones, got %d", premul);
    memset(back, 0, sizeof back);
    CHECK(cudaMemcpy(recv, back, sizeof back, H2D));
    CHECK(ncclAllReduce(send, recv, 64, ncclFloat32, premul, managed, NULL));
    CHECK(cudaMemcpy(back, recv, sizeof back, D2H));
    EXPECT(back[0] == 0 && back[63] == 0, "a pre-multiplied sum must not deliver its input unscaled");
    CHECK(ncclRedOpDestroy(premul, managed));
    EXPECT(ncclRedOpDestroy(0, managed) == 4, "ncclSum cannot be destroyed");
    void *handle = NULL, *symmetric = NULL;
    CHECK(ncclCommRegister(managed, send, sizeof host, &handle));
    EXPECT(handle != NULL, "registration gives a handle");
    CHECK(ncclCommDeregister(managed, handle));
    size_t free_before, free_after, total;
    CHECK(cudaMemGetInfo(&free_before, &total));
    CHECK(ncclMemAlloc(&symmetric, 64 << 20));
    CHECK(cudaMemGetInfo(&free_after, &total));
    EXPECT(free_before - free_after == 64 << 20, "ncclMemAlloc is device memory: %zu", free_before - free_after);
    CHECK(ncclMemFree(symmetric));
    unsigned long long suspended = 9;
    CHECK(ncclCommSuspend(managed, 1));
    CHECK(ncclCommMemStats(managed, 1, &suspended));
    EXPECT(suspended == 1, "suspended %llu", suspended);
    CHECK(ncclCommFinalize(managed));
    CHECK(ncclCommAbort(managed));
    /* Several ids name one communicator: the same on every rank. */
    ncclUniqueId ids[2];
    ncclComm_t scalable[2];
    CHECK(ncclGetUniqueId(&ids[0]));
    CHECK(ncclGetUniqueId(&ids[1]));
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) { CHECK(cudaSetDevice(d)); CHECK(ncclCommInitRankScalable(&scalable[d], 2, d, 2, ids, NULL)); }
    CHECK(ncclGroupEnd());
    CHECK(ncclGroupStart());
    for (int d = 0; d < 2; d++) CHECK(ncclAllGather(buf[d], buf[d], 4, ncclFloat32, scalable[d], NULL));
    CHECK(ncclGroupEnd());

    for (int d = 0; d < 2; d++) CHECK(ncclCommDestroy(scalable[d]));
    for (int r = 0; r < 4; r++) { CHECK(ncclCommDestroy(four[r])); CHECK(ncclCommDestroy(halves[r])); }
    for (int r = 0; r < 3; r++) CHECK(ncclCommDestroy(three[r]));
    for (int d = 0; d < 2; d++) { CHECK(ncclCommDestroy(comms[d])); CHECK(ncclCommDestroy(pair[d])); }
    CHECK(ncclCommDestroy(one));
    printf("ok\n");
    return 0;
}
