/* vgpu.h: the internals every API family of the vGPU library shares.
 *
 * The library implements the CUDA runtime, the driver API, NVML, NCCL and the cuBLAS/cuBLASLt and
 * cuDNN entry points that serving engines call, on top of four ideas kept here:
 *   - a device model (device.c): N devices of one SKU, read from the spec file that
 *     REVATI_VGPU_SPEC names (written by emulator/hardware.py from conf/hardware/<sku>.yaml);
 *   - split-state memory (memory.c): small allocations are host-backed, large ones are reserved
 *     address space that is never touched; accounting is exact;
 *   - virtual time (clock.c, stream.c): every launch is charged a predicted duration on its
 *     stream; synchronisation moves the process's virtual clock, never the host;
 *   - a predictor (predictor.c): maps a launch descriptor to seconds on the target SKU.
 * Each API family lives in its own file and translates its calls into these.
 *
 * Files are in folders by concern, lowest first; a file calls only into its own folder or lower
 * ones, and no files call each other in a circle (tests/test_vgpu_layers.py):
 *   base/     diagnostics, the host's real libc entry points, kernel identity, names of op kinds
 *   predict/  the predictor and what it reads from launches (memory-bound bytes, attention batch)
 *   time/     the virtual clock, interposed time calls, channels, the Timekeeper client, stats
 *   gpu/      the device model, memory, streams and events, custom all-reduce meetings
 *   api/      the CUDA runtime and driver (sharing launch.c), cuBLAS, cuDNN, NCCL, NVML, CuTe DSL
 */
#ifndef REVATI_VGPU_H
#define REVATI_VGPU_H

#include <pthread.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#define VGPU_MAX_DEVICES 16
#define VGPU_EXPORT __attribute__((visibility("default")))

/* ---- diagnostics (log.c) ---------------------------------------------------------------- */
/* An entry point the library does not implement: one line naming it on stderr, once. */
int vgpu_unimplemented(const char *name, int error_code);
/* Debug logging, printed only when REVATI_VGPU_LOG=1. */
void vgpu_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A fact worth one line on stderr, printed once per distinct message. */
void vgpu_warn_once(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the device model (device.c) ------------------------------------------------------- */
typedef struct vgpu_model {
    int count;                  /* number of virtual devices */
    char name[256];             /* e.g. "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor;
    int sm_count;
    uint64_t total_memory;      /* bytes, as cuDeviceTotalMem reports */
    uint64_t context_memory;    /* bytes a CUDA context takes on first use */
    uint64_t nvml_reserved;     /* memory NVML counts in its total but CUDA never sees */
    char driver_version[32];    /* NVML/nvidia-smi driver string, e.g. "580.159.04" */
    int cuda_driver_version;    /* e.g. 13000 */
    char uuid_seed[64];         /* UUIDs are derived from this and the device index */
    int pci_bus_base;           /* device i sits on bus pci_bus_base + i */
    double nvlink_bandwidth;    /* bytes/s per direction between two devices; 0 = no NVLink */
    int attributes[256];        /* CUdevice_attribute -> value, as measured on the real SKU */
    unsigned char has_attribute[256];
} vgpu_model;

const vgpu_model *vgpu_model_get(void);     /* loads the spec on first use; aborts clearly if bad */
int vgpu_device_count(void);
int vgpu_device_valid(int dev);
/* 16 raw bytes of device dev's UUID, and its "GPU-xxxxxxxx-xxxx-..." text form. */
void vgpu_device_uuid(int dev, unsigned char out[16]);
void vgpu_device_uuid_string(int dev, char *out, size_t len);
/* Value of a CUdevice_attribute for dev; returns 0 if known, -1 if the model lacks it. */
int vgpu_device_attribute(int attribute, int dev, int *value);

/* The calling thread's current device (runtime: cudaSetDevice; driver: current context). */
int vgpu_current_device(void);
void vgpu_set_current_device(int dev);

/* ---- memory (memory.c) ----------------------------------------------------------------- */
typedef enum {
    VGPU_MEM_HOST_BACKED = 1,   /* readable host memory stands behind the device address */
    VGPU_MEM_RESERVED = 2,      /* address space only; contents are never materialised */
} vgpu_mem_state;

typedef enum {
    VGPU_ALLOC_DEVICE = 1,      /* cudaMalloc / cuMemAlloc: counts against device memory */
    VGPU_ALLOC_HOST = 2,        /* cudaHostAlloc / cudaMallocHost: pinned host memory */
    VGPU_ALLOC_MANAGED = 3,
    VGPU_ALLOC_VMM_RANGE = 4,   /* cuMemAddressReserve: a range, memory comes from mappings */
    VGPU_ALLOC_VMM_MAPPING = 5, /* cuMemMap of a physical handle into a reserved range */
    VGPU_ALLOC_IPC = 6,         /* another process's allocation opened here: charged to its owner */
} vgpu_alloc_kind;

typedef struct vgpu_alloc {
    uintptr_t base;
    size_t size;
    int device;                 /* -1 for host allocations */
    vgpu_alloc_kind kind;
    vgpu_mem_state state;
    int owner_pid;              /* VGPU_ALLOC_IPC: the owning process and its address of the base */
    uintptr_t owner_base;
} vgpu_alloc;

/* Device memory: charges the device (fails with -1 when it would not fit, like a real GPU).
 * Allocations up to the host-backed limit (REVATI_VGPU_HOST_BACKED_MAX, default 32 MiB) are
 * host-backed, larger ones reserved. */
int vgpu_mem_alloc_device(int dev, size_t size, void **out);
/* Space standing for another process's allocation (cudaIpcOpenMemHandle): same size and state,
 * not charged here; released with vgpu_mem_free. The bytes are not shared with the owner, whose
 * pid and base address the record keeps. */
int vgpu_mem_open_ipc(int dev, size_t size, int owner_pid, uintptr_t owner_base, void **out);
/* Pinned host memory, registered so that copies know it is host memory. */
int vgpu_mem_alloc_host(size_t size, void **out);
/* Frees what either allocator returned; -1 if ptr is not the base of a live allocation. */
int vgpu_mem_free(void *ptr);
/* The allocation containing ptr, or NULL if ptr is plain (pageable) host memory. Copies the
 * record to *out so callers never hold a pointer into the table. */
int vgpu_mem_lookup(const void *ptr, vgpu_alloc *out);
/* Device memory accounting: free and total bytes as cudaMemGetInfo reports them. */
void vgpu_mem_info(int dev, size_t *free_bytes, size_t *total_bytes);
/* Charge or release device memory without an address (VMM physical handles). */
int vgpu_mem_charge(int dev, size_t size);
void vgpu_mem_release(int dev, size_t size);
size_t vgpu_mem_host_backed_max(void);

/* The driver's virtual-memory API: a reserved range, into which mappings are placed. */
int vgpu_vmm_reserve(size_t size, size_t alignment, uintptr_t fixed_addr, void **out);
int vgpu_vmm_free(void *ptr, size_t size);
/* Map size bytes at ptr: host-backed when size is within the host-backed limit. */
int vgpu_vmm_map(void *ptr, size_t size, int dev);
int vgpu_vmm_unmap(void *ptr, size_t size);

/* Data movement with split-state semantics: bytes move only where both sides are readable;
 * reading reserved memory yields zeros. */
void vgpu_copy_bytes(void *dst, const void *src, size_t n);
void vgpu_set_bytes(void *dst, int value, size_t n);

/* ---- launches and prediction (predictor.c) -------------------------------------------- */
typedef enum {
    VGPU_OP_KERNEL = 0,         /* a kernel, known by name and launch geometry */
    VGPU_OP_GEMM,               /* cuBLAS/cuBLASLt matrix product */
    VGPU_OP_COLLECTIVE,         /* NCCL collective or point-to-point */
    VGPU_OP_COPY,               /* memcpy of any direction */
    VGPU_OP_MEMSET,
    VGPU_OP_GRAPH,              /* replay of an instantiated CUDA graph (duration precomputed) */
    VGPU_OP_HOST_FN,            /* cudaLaunchHostFunc: runs on the host when the stream reaches it */
    VGPU_OP_EVENT_RECORD,       /* an external event record captured into a graph: each replay records it */
    VGPU_OP_ATTENTION,          /* a fused attention kernel of known shape (cuDNN's SDPA: cudnn.c) */
    VGPU_OP_HOST_WORK,          /* host time charged for a replaced library's own CPU work (stats only) */
    VGPU_OP_KIND_COUNT
} vgpu_op_kind;

typedef enum {
    VGPU_COPY_H2D = 1, VGPU_COPY_D2H = 2, VGPU_COPY_D2D = 3, VGPU_COPY_H2H = 4, VGPU_COPY_P2P = 5,
} vgpu_copy_direction;

typedef enum {
    VGPU_COLL_ALL_REDUCE = 0, VGPU_COLL_ALL_GATHER, VGPU_COLL_REDUCE_SCATTER, VGPU_COLL_BROADCAST,
    VGPU_COLL_REDUCE, VGPU_COLL_SEND, VGPU_COLL_RECV, VGPU_COLL_ALL_TO_ALL,
    VGPU_COLL_CUSTOM_ALL_REDUCE,        /* an engine's own all-reduce kernel (custom_collectives.c) */
} vgpu_collective_op;

typedef struct vgpu_function vgpu_function;

typedef struct vgpu_launch {
    vgpu_op_kind kind;
    int device;
    const char *name;           /* kernel name (mangled as registered), or the API's name */
    vgpu_function *function;    /* kernels: the launched function */
    void **args;                /* kernels: the argument array the launch was given (may be NULL) */
    unsigned grid[3], block[3];
    size_t shared_mem;
    union {
        struct {                /* GEMM: C[m,n] = op(A)[m,k] op(B)[k,n], batch times */
            int64_t m, n, k, batch;
            int trans_a, trans_b;       /* 0 = N, 1 = T, 2 = C */
            int type_a, type_b, type_c; /* cudaDataType values */
            int compute_type;           /* cublasComputeType_t value */
        } gemm;
        struct {
            vgpu_collective_op op;
            size_t bytes;               /* bytes of the send buffer on this rank */
            int nranks, rank;
            int datatype;               /* ncclDataType_t */
            uint64_t comm_id;           /* identifies the communicator across processes */
            uint64_t seq;               /* per-communicator sequence number */
            int peer;                   /* send/recv peer, broadcast/reduce root; -1 otherwise */
        } coll;
        struct {
            size_t bytes;
            vgpu_copy_direction direction;
            int pinned;                 /* the host side is page-locked (cudaHostAlloc) */
        } copy;
        struct {
            double seconds;             /* a replayed graph's length */
        } graph;
        struct {
            void (*fn)(void *);
            void *data;
        } host;
        struct {
            struct vgpu_event *event;
        } record;
        struct {                /* softmax(Q K^T) V over batch x heads, Q: seqlen_q rows, K/V: seqlen_k */
            double batch, seqlen_q, seqlen_k, heads, kv_heads, head_dim;
            int causal;                 /* masked causally (a prefill of a decoder) */
            int masked;                 /* adds a mask read from memory to the scores (cuDNN: a bias) */
        } attention;
    } u;
} vgpu_launch;

/* A kernel launch of an engine's own collective (vLLM's custom all-reduce) rewritten in place
 * into a VGPU_OP_COLLECTIVE; 0 (untouched) for any other kernel. */
int vgpu_custom_collective(vgpu_launch *launch);

/* Predicted duration of a launch on the target SKU, in seconds. */
double vgpu_predict(const vgpu_launch *launch);

/* Host CPU work that a replaced library does on the calling thread and this library does not
 * (building a cuDNN graph: heuristics, plan finalization, kernel compilation), as measured on the
 * target server's host. */
typedef enum {
    VGPU_HOST_CUDNN_ATTENTION_FIRST,    /* the first graph of an attention signature in a process */
    VGPU_HOST_CUDNN_ATTENTION,          /* another graph of a signature met before (a new shape) */
    VGPU_HOST_LAUNCH,                   /* the CUDA runtime's own work to queue one launch */
    VGPU_HOST_WORK_COUNT
} vgpu_host_work;
/* Seconds of host time for `work` on the target (the model file's host_cost records) at the
 * host speed REVATI_HOST_WORK_SCALE says; 0 where it was not measured. */
double vgpu_predict_host(vgpu_host_work work);
const char *vgpu_host_work_name(vgpu_host_work work);

/* The profiled predictor (predictor_profiled.c): a model file written from measured tables. */
void vgpu_profiled_init(const char *model_path);
double vgpu_profiled_predict(const vgpu_launch *launch);
double vgpu_profiled_predict_host(vgpu_host_work work, double host_scale);
const char *vgpu_op_kind_name(vgpu_op_kind kind);

/* ---- virtual time (clock.c) ------------------------------------------------------------ */
/* This thread's virtual time, in seconds and in nanoseconds since the deployment started (or,
 * without a Timekeeper, since this process loaded the library). */
double vgpu_now(void);
int64_t vgpu_now_ns(void);
/* Block (in virtual time) until the virtual clock reaches t; a no-op if it already has. */
void vgpu_wait_until(double t);
/* 1 under a Timekeeper: time functions, sleeps and timeouts are then virtual. */
int vgpu_virtual_time_active(void);
/* What CLOCK_REALTIME and CLOCK_MONOTONIC read when the deployment's clock was zero. */
int64_t vgpu_realtime_base_ns(void);
int64_t vgpu_monotonic_base_ns(void);
/* The host's own clocks, bypassing this library's interposition. */
int64_t vgpu_host_clock_ns(int clock_id);
/* Messages between threads (clock.c): before a send on `channel` (one that may reach another
 * process wakes spin-waiting threads); after a receive on it (catches up with its latest send);
 * after a granted virtual deadline (the thread is then at least there). */
void vgpu_clock_sending(uint64_t channel, int wakes_yielders);
void vgpu_clock_received(uint64_t channel);
/* The latest send on `channel` (INT64_MIN for VGPU_CHANNEL_NONE or without a Timekeeper), and
 * catching up with a time so read; returns the thread's time after it. */
int64_t vgpu_clock_channel_sent_ns(uint64_t channel);
int64_t vgpu_clock_received_at(int64_t sent_ns);
/* This process's id, kept from its start or its fork (getpid without the system call). */
pid_t vgpu_own_pid(void);
/* Data came into this process through a descriptor on `channel` (a spin-wait's catch-up uses it). */
void vgpu_clock_inbound(uint64_t channel);
void vgpu_clock_resumed(int64_t deadline_ns);
/* sched_yield under a Timekeeper: sleep until the next send or jump (a spin-wait's partner
 * writes), then catch up like a receive. */
void vgpu_clock_yield(void);
/* Charge `seconds` of host work to the calling thread on top of its own CPU time: work measured
 * on the target's host that a replaced library would have done here (not scaled by cpu_scale). */
void vgpu_clock_charge_host(double seconds);
/* Run work(arg) as the library's own business, which the emulated program would not do (writing
 * statistics, meeting the other ranks of a collective through the Timekeeper): its CPU time is
 * not charged to the calling thread, nor does blocking in it make the thread catch up with the
 * latest send, as an unseen sleep would. */
void vgpu_clock_uncharged(void (*work)(void *), void *arg);
/* The calling thread is the library's own: its signals and posts are not the deployment's sends. */
void vgpu_clock_untimed_thread(void);
/* Counts a message to the Timekeeper on the clock page, before it is written (see protocol.py). */
void vgpu_clock_message_sent(void);
/* Catch-ups with the latest send anywhere (clock.c), this process's so far: how many moved a
 * thread's clock, and by how much in all. */
typedef enum { VGPU_CATCH_UP_UNSEEN_SLEEP, VGPU_CATCH_UP_UNNAMED_CHANNEL, VGPU_CATCH_UP_KINDS } vgpu_catch_up;
void vgpu_clock_catch_ups(vgpu_catch_up kind, uint64_t *count, double *seconds);

/* ---- message channels (channels.c) ---------------------------------------------------- */
/* A channel no file can name: its receivers catch up with the latest send anywhere. */
#define VGPU_CHANNEL_ANY 0ULL
/* Not a channel (a regular file, a device): reading or writing it is no message. */
#define VGPU_CHANNEL_NONE (~0ULL)
enum { VGPU_SEND = 0, VGPU_RECEIVE = 1 };
/* The channel of what is sent (VGPU_SEND) or received (VGPU_RECEIVE) through descriptor fd. */
uint64_t vgpu_channel_of_fd(int fd, int direction);
/* The channel of a condition variable or semaphore: VGPU_CHANNEL_ANY if process-shared. */
uint64_t vgpu_channel_of_sync(const void *object, int process_shared);
/* epoll_ctl's registrations (ADD, MOD), and the receiving channel of an event epoll_wait returned;
 * *level_triggered says whether the kernel reports the event again while it holds (no EPOLLET or
 * EPOLLONESHOT; 0 when the registration is unknown). */
void vgpu_channel_epoll_registered(int epfd, uint64_t data, int fd, int level_triggered);
uint64_t vgpu_channel_of_epoll_event(int epfd, uint64_t data, int *level_triggered);

/* ---- the Timekeeper connection (timekeeper.c) ------------------------------------------ */
/* A virtual-time wait that a thread can combine with real events. Begin returns NULL when the
 * deadline has already passed; otherwise the wait's eventfd (vgpu_wait_fd) becomes readable once
 * the Timekeeper has moved the clock to the deadline. End reports 1 if the deadline was reached,
 * 0 if the wait was cancelled first (the thread's real event came first: a receive on `channel`),
 * and frees the wait. */
typedef struct vgpu_wait vgpu_wait;
vgpu_wait *vgpu_wait_begin(int64_t deadline_ns, uint64_t channel, const char *call);
/* The same, for a thread about to sleep in pthread_cond_wait(cond, mutex) (holding mutex) or
 * sem_wait(sem): when the deadline is reached the condition is broadcast or the semaphore
 * posted, so the real untimed wait returns. */
vgpu_wait *vgpu_wait_begin_cond(int64_t deadline_ns, pthread_cond_t *cond, pthread_mutex_t *mutex,
                                uint64_t channel, const char *call);
vgpu_wait *vgpu_wait_begin_sem(int64_t deadline_ns, sem_t *sem, uint64_t channel, const char *call);
int vgpu_wait_fd(const vgpu_wait *w);
/* A cond wait must be ended with its mutex released: the waker locks it to broadcast. */
int vgpu_wait_end(vgpu_wait *w);
/* Block until the deadline (a time jump). */
void vgpu_sleep_until_ns(int64_t deadline_ns, const char *call);
int vgpu_timekeeper_connected(void);
/* A rank reaching a collective: blocks until every rank has, returns the completion time. */
int64_t vgpu_collective_arrive(uint64_t comm, uint64_t seq, int rank, int nranks, int64_t arrival_ns,
                               int64_t duration_ns, const char *call);

/* ---- streams, events, graphs (stream.c) ------------------------------------------------ */
typedef struct vgpu_stream vgpu_stream;
typedef struct vgpu_event vgpu_event;
typedef struct vgpu_graph vgpu_graph;

/* The stream a runtime/driver handle means: NULL/legacy/per-thread handles resolve to the
 * current device's default stream. */
vgpu_stream *vgpu_stream_resolve(void *handle);
vgpu_stream *vgpu_stream_create(int dev, unsigned flags, int priority);
void vgpu_stream_destroy(vgpu_stream *s);
int vgpu_stream_device(const vgpu_stream *s);
int vgpu_stream_priority(const vgpu_stream *s);
unsigned vgpu_stream_flags(const vgpu_stream *s);
/* Charge a launch to a stream (or record it into the graph the stream is capturing).
 * Returns the predicted duration in seconds. */
double vgpu_submit(vgpu_stream *s, const vgpu_launch *launch);
/* Virtual time at which all work submitted to s so far completes. */
double vgpu_stream_ready_at(vgpu_stream *s);
/* Order s after time t (cross-stream waits, collectives resolved elsewhere). */
void vgpu_stream_wait_until(vgpu_stream *s, double t);
int vgpu_stream_query(vgpu_stream *s);          /* 1 = idle in virtual time, 0 = busy */
/* Run a host function in stream order: now (after the stream's work) or, while capturing, at
 * each replay of the graph. */
void vgpu_stream_host_fn(vgpu_stream *s, void (*fn)(void *), void *data);
void vgpu_stream_synchronize(vgpu_stream *s);
void vgpu_device_synchronize(int dev);

vgpu_event *vgpu_event_create(unsigned flags);
void vgpu_event_destroy(vgpu_event *e);
/* external (cudaEventRecordExternal): recorded during a capture, the event becomes a node of the
 * graph that every replay records, instead of a point inside the capture for other streams to join. */
void vgpu_event_record(vgpu_event *e, vgpu_stream *s, int external);
int vgpu_event_query(vgpu_event *e);            /* 1 = complete */
void vgpu_event_synchronize(vgpu_event *e);
/* -1 if e was recorded in a capture that has ended (CUDA rejects such a wait). */
int vgpu_stream_wait_event(vgpu_stream *s, vgpu_event *e);
/* Milliseconds between two recorded events; -1 if either is unrecorded or not timed, -2 if
 * either has not completed yet in virtual time. */
int vgpu_event_elapsed_ms(vgpu_event *start, vgpu_event *end, float *ms);

/* Graph capture: while a stream captures, launches on it (and on streams that join the capture
 * through events) become graph nodes instead of running. */
int vgpu_capture_begin(vgpu_stream *s, int mode);
int vgpu_capture_end(vgpu_stream *s, vgpu_graph **out);
int vgpu_capture_status(vgpu_stream *s, unsigned long long *id, vgpu_graph **graph);
vgpu_graph *vgpu_graph_create(void);
void vgpu_graph_destroy(vgpu_graph *g);
size_t vgpu_graph_node_count(const vgpu_graph *g);
double vgpu_graph_length(const vgpu_graph *g);
/* Append a node outside of capture (cudaGraphAddKernelNode and friends). */
void vgpu_graph_add(vgpu_graph *g, const vgpu_launch *launch);
/* Instantiated graphs are graphs too: a copy frozen at instantiation. */
vgpu_graph *vgpu_graph_instantiate(const vgpu_graph *g);
void vgpu_graph_launch(vgpu_graph *exec, vgpu_stream *s);

/* ---- kernel identity (kernels.c) ------------------------------------------------------- */
/* A kernel known to the library: from __cudaRegisterFunction (keyed by its host stub) or
 * created for cuModuleGetFunction / cuLibraryGetKernel (keyed by its own address). */
struct vgpu_function {
    uint32_t magic;
    const char *name;
    const char *display_name;   /* demangled, made on first use (vgpu_function_display_name) */
    const void *predictor_data; /* the active predictor's model for this function, found once */
    const void *module;
    int max_dynamic_shared;     /* cuFuncSetAttribute bookkeeping */
    int attention_batch;        /* 0 not yet known, -1 its work is not the published attention batch, else
                                 * which kernel reads it (VGPU_BATCH_READER_*) */
    const void *memory_shape;   /* kernel_bytes.c's reading of the name, made on first use */
    int efficient_attention;    /* 0 not yet known, 1 PyTorch's memory-efficient attention, -1 not */
    int custom_collective;      /* custom_collectives.c's reading of the name: 0 not yet known, -1 none */
};

vgpu_function *vgpu_function_register(const void *key, const char *name, const void *module);
/* The name as profilers print it: demangled C++ (void ns::kernel<T>(args)), or the name itself. */
const char *vgpu_function_display_name(vgpu_function *fn);
/* The function a launch handle denotes (host stub, CUfunction, cudaKernel_t), or NULL. */
vgpu_function *vgpu_function_lookup(const void *key);

/* ---- memory-bound kernels (kernel_bytes.c) ---------------------------------------------- */
/* Contiguous and strided variants move bytes at different rates: a copy through torch's strided
 * elementwise kernel (elementwise_kernel, offsets computed per element) and the non-vectorized
 * cat run at a quarter to a half of the vectorized kernels' bandwidth on an H100. index_select's
 * small-index kernel (at most 16 indices) loops over its indices one after another. */
typedef enum {
    VGPU_MEMORY_ELEMENTWISE = 0, VGPU_MEMORY_ELEMENTWISE_STRIDED, VGPU_MEMORY_CAT, VGPU_MEMORY_CAT_STRIDED,
    VGPU_MEMORY_GATHER, VGPU_MEMORY_GATHER_SMALL, VGPU_MEMORY_CLASSES
} vgpu_memory_class;
/* Bytes read plus written by a PyTorch copy, gather or elementwise kernel, decoded from its
 * arguments, with its class; -1 for kernels it does not know. */
double vgpu_kernel_memory_bytes(const vgpu_launch *launch, vgpu_memory_class *cls);

/* ---- the engine's attention batch (attention_batch.c) ----------------------------------- */
/* The composition the engine last published (revati_attention_batch), summarised for the
 * predictor. Sums run over sequences with work; a causal query of q tokens over a context of
 * ctx tokens (its own included) attends to q * (ctx - q/2) pairs on average. */
typedef struct vgpu_attention_batch {
    uint64_t generation;        /* counts publications; 0 = none yet */
    int seqs;
    double query_tokens, context_tokens, causal_pairs;
    int all_decode;             /* every sequence has one query token */
    int uniform_prefill;        /* every sequence prefills from scratch, all of one length */
    int heads, kv_heads, head_dim, kv_element_bytes;     /* of this rank */
    /* The work of vLLM's Triton unified attention (its 2D kernel, which runs every batch that is
     * not all decodes) in KV tiles: over all its programs, and the longest program's (its
     * programs' schedule: vgpu_attention_batch_triton_makespan). */
    double tile_work, longest_tiles;
} vgpu_attention_batch;

/* 1 and the batch in *out if one with work has been published; 0 otherwise. */
int vgpu_attention_batch_current(vgpu_attention_batch *out);
/* The generation of the latest batch, without copying it (predictions made for it can be reused). */
uint64_t vgpu_attention_batch_generation(void);
/* The kernels whose work is the published batch: FlashAttention 3, modelled (predictor_profiled.c),
 * and those charged what vLLM's Triton attention measured (itself, vllm_flash_attn's FA2). */
enum { VGPU_BATCH_READER_FLASH_ATTENTION_3 = 1, VGPU_BATCH_READER_MEASURED = 2 };
/* Whether fn is an attention kernel whose work is the published batch, not its arguments: 0 if
 * not, else its VGPU_BATCH_READER_* (decided by name on first use, then kept on the function). */
int vgpu_function_reads_attention_batch(vgpu_function *fn);
/* FlashAttention 3 over batch `generation` as vLLM launches it, on `sms` SMs: the makespan of its
 * CTAs, each costing qo_s per element of its Q and O tiles, mma_s per MMA element (query rows x
 * keys x head size) of its KV blocks and masked_s per row and key of its causally masked blocks
 * (emulator/predictor/models.py, fa3_ctas and FlashAttention3). -1 if that batch is no longer the
 * latest. */
double vgpu_attention_batch_fa3_makespan(uint64_t generation, int sms, double qo_s, double mma_s, double masked_s);
/* Programs (CTAs) of one launch sharing `sms` SMs, in the order they start: runs of `programs` in a
 * row with `work` each (KV tiles, key blocks), the whole list `repeats` times (the grid's next
 * dimension). At most `resident` run per SM; a program alone does a unit of work per `latency`,
 * more than `latency` per SM share one unit per SM per unit of time. Returns the schedule's length
 * in those units (emulator/predictor/models.py, triton_schedule and triton_makespan). */
typedef struct vgpu_run { double work; int programs; } vgpu_run;
double vgpu_runs_makespan(const vgpu_run *runs, size_t n_runs, int repeats, int sms, int resident, double latency);
/* vLLM's Triton attention over batch `generation` on `sms` SMs: the length, in an SM's time per KV
 * tile, of its programs' schedule when at most `resident` run per SM and a lone program takes
 * `latency` of those per tile (emulator/predictor/models.py, triton_schedule and triton_makespan).
 * -1 if that batch is no longer the latest. */
double vgpu_attention_batch_triton_makespan(uint64_t generation, int sms, int resident, double latency);

/* ---- the driver's entry-point table (driver.c) ------------------------------------------ */
/* The driver function implementing a cuGetProcAddress name ("cuMemAlloc" -> cuMemAlloc_v2),
 * or NULL. */
void *vgpu_driver_entry_point(const char *name);

/* ---- statistics (stats.c) -------------------------------------------------------------- */
/* Every charged launch is counted by kind and name; REVATI_VGPU_STATS=path writes them as CSV
 * at exit, and REVATI_VGPU_TRACE=path writes one line per launch (for tests and attribution). */
void vgpu_stats_record(const vgpu_launch *launch, double seconds, double start);
/* Write the totals now (at exit, also when the process ends with _exit: interpose_exit.c). */
void vgpu_stats_write(void);
/* A thread of this process is going idle (timekeeper.c): write the totals if launches came since
 * the last write and STATS_IDLE_FLUSH_NS have passed, so that a process killed at shutdown (vLLM
 * kills workers slow to exit, and its grace periods run in virtual time) leaves its work counted. */
void vgpu_stats_flush_when_idle(void);

#endif
