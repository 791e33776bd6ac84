/* stream.c: streams, events and graphs in virtual time.
 *
 * Each stream has a ready_at: the virtual time its submitted work completes. A launch submitted
 * at virtual time t starts at max(t, ready_at) and moves ready_at by its predicted duration.
 * Events record a stream's ready_at; waiting on one (or on a stream, or the device) jumps the
 * virtual clock instead of sleeping. The legacy default stream orders itself with every blocking
 * stream of its device, as CUDA's does.
 *
 * Capture: a capturing stream appends launches to a graph with a cursor of its own; streams
 * that wait on an event recorded during the capture join it at that event's cursor, so a graph's
 * length is the critical path through its forks and joins. Replaying an instantiated graph
 * charges that length (and attributes it node by node), except for attention kernels whose work
 * is the engine's current batch (attention_batch.c): those are predicted again at each replay.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

#define STREAM_NON_BLOCKING 0x1     /* cudaStreamNonBlocking == CU_STREAM_NON_BLOCKING */
#define EVENT_DISABLE_TIMING 0x2    /* cudaEventDisableTiming == CU_EVENT_DISABLE_TIMING */

struct vgpu_graph {
    vgpu_launch *nodes;
    double *durations;
    double *starts;             /* node start within the graph, for attribution */
    size_t len, cap;
    double length;              /* critical path, seconds */
    unsigned long long capture_id;
    uint64_t replays;           /* instantiated graphs: launches so far */
    /* Instantiated graphs: the nodes predicted again at each replay, in capture order, and per
     * node how many of them were captured before it. */
    size_t *repredicted, n_repredicted;
    size_t *repredicted_before;
};

struct vgpu_stream {
    int device;
    unsigned flags;
    int priority;
    int is_default;
    double ready_at;
    vgpu_graph *capture;        /* graph being captured into, or NULL */
    double capture_cursor;
    vgpu_stream *next;          /* all streams, for default-stream ordering and capture ends */
};

struct vgpu_event {
    unsigned flags;
    int recorded;
    double time;
    unsigned long long capture_id;  /* recorded during a capture: a point inside that capture */
    double capture_time;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static vgpu_stream default_streams[VGPU_MAX_DEVICES];
static vgpu_stream *all_streams;
static unsigned long long next_capture_id = 1;

vgpu_stream *vgpu_stream_resolve(void *handle) {
    /* 0, cudaStreamLegacy (0x1) and cudaStreamPerThread (0x2) all mean the device's default. */
    if ((uintptr_t)handle <= 2) {
        int dev = vgpu_current_device();
        vgpu_stream *s = &default_streams[dev];
        s->device = dev;
        s->is_default = 1;
        return s;
    }
    return handle;
}

vgpu_stream *vgpu_stream_create(int dev, unsigned flags, int priority) {
    vgpu_stream *s = calloc(1, sizeof *s);
    s->device = dev;
    s->flags = flags;
    s->priority = priority;
    pthread_mutex_lock(&lock);
    s->next = all_streams;
    all_streams = s;
    pthread_mutex_unlock(&lock);
    return s;
}

void vgpu_stream_destroy(vgpu_stream *s) {
    if (!s || s->is_default) return;
    pthread_mutex_lock(&lock);
    for (vgpu_stream **p = &all_streams; *p; p = &(*p)->next)
        if (*p == s) { *p = s->next; break; }
    pthread_mutex_unlock(&lock);
    free(s);
}

int vgpu_stream_device(const vgpu_stream *s) { return s->device; }
int vgpu_stream_priority(const vgpu_stream *s) { return s->priority; }
unsigned vgpu_stream_flags(const vgpu_stream *s) { return s->flags; }

/* Earliest virtual time new work on s may start, by stream order alone (lock held). */
static double ordered_after(vgpu_stream *s) {
    double t = s->ready_at;
    if (s->is_default) {
        for (vgpu_stream *o = all_streams; o; o = o->next)
            if (o->device == s->device && !(o->flags & STREAM_NON_BLOCKING) && o->ready_at > t) t = o->ready_at;
    } else if (!(s->flags & STREAM_NON_BLOCKING)) {
        double d = default_streams[s->device].ready_at;
        if (d > t) t = d;
    }
    return t;
}

static void graph_append(vgpu_graph *g, const vgpu_launch *l, double start, double seconds) {
    if (g->len == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 64;
        g->nodes = realloc(g->nodes, g->cap * sizeof *g->nodes);
        g->durations = realloc(g->durations, g->cap * sizeof *g->durations);
        g->starts = realloc(g->starts, g->cap * sizeof *g->starts);
    }
    g->nodes[g->len] = *l;
    g->nodes[g->len].args = NULL;   /* the launch's argument array is gone once the launch returns */
    g->durations[g->len] = seconds;
    g->starts[g->len] = start;
    g->len++;
    if (start + seconds > g->length) g->length = start + seconds;
}

/* A collective across processes completes when the last rank has arrived, plus its length: the
 * Timekeeper knows when that is. Returns the completion time. */
static double resolve_collective(const vgpu_launch *l, uint64_t seq, double arrival, double seconds) {
    int64_t done = vgpu_collective_arrive(l->u.coll.comm_id, seq, l->u.coll.rank, l->u.coll.nranks,
                                          (int64_t)(arrival * 1e9), (int64_t)(seconds * 1e9), l->name);
    return done * 1e-9;
}

/* comm_id 0: a collective whose communicator could not be named (custom_collectives.c). */
static int crosses_processes(const vgpu_launch *l) {
    return l->kind == VGPU_OP_COLLECTIVE && l->u.coll.nranks > 1 && l->u.coll.comm_id && vgpu_timekeeper_connected();
}

/* The CUDA runtime's CPU work to queue one launch of work on the GPU, which the library replaces
 * with far less of its own: charged to the launching thread. A captured launch is queued by its
 * graph's launch; host functions and event records are not work the GPU runs. */
static void charge_launch(const vgpu_launch *l) {
    static double seconds = -1;
    if (l->kind == VGPU_OP_GRAPH || l->kind == VGPU_OP_HOST_FN || l->kind == VGPU_OP_EVENT_RECORD) return;
    if (seconds < 0) seconds = vgpu_predict_host(VGPU_HOST_LAUNCH);
    vgpu_clock_charge_host(seconds);
}

double vgpu_submit(vgpu_stream *s, const vgpu_launch *launch) {
    double seconds = vgpu_predict(launch);
    if (!s->capture) charge_launch(launch);
    double now = vgpu_now();
    pthread_mutex_lock(&lock);
    if (s->capture) {
        graph_append(s->capture, launch, s->capture_cursor, seconds);
        s->capture_cursor += seconds;
        pthread_mutex_unlock(&lock);
        return seconds;
    }
    double start = ordered_after(s);
    if (now > start) start = now;
    s->ready_at = start + seconds;
    pthread_mutex_unlock(&lock);
    if (crosses_processes(launch)) {
        double done = resolve_collective(launch, launch->u.coll.seq, start, seconds);
        vgpu_stream_wait_until(s, done);
        seconds = done - start;
    }
    vgpu_stats_record(launch, seconds, start);
    return seconds;
}

double vgpu_stream_ready_at(vgpu_stream *s) {
    pthread_mutex_lock(&lock);
    double t = ordered_after(s);
    pthread_mutex_unlock(&lock);
    return t;
}

void vgpu_stream_wait_until(vgpu_stream *s, double t) {
    pthread_mutex_lock(&lock);
    if (t > s->ready_at) s->ready_at = t;
    pthread_mutex_unlock(&lock);
}

/* When the work already submitted to s completes. A blocking stream's own ready_at already
 * includes the legacy-stream work it was ordered after; later legacy work is not its business.
 * Waiting on the legacy stream itself covers every blocking stream, as CUDA's implicit
 * synchronisation does. */
static double completion(vgpu_stream *s) {
    pthread_mutex_lock(&lock);
    double t = s->is_default ? ordered_after(s) : s->ready_at;
    pthread_mutex_unlock(&lock);
    return t;
}

int vgpu_stream_query(vgpu_stream *s) { return completion(s) <= vgpu_now(); }

void vgpu_stream_synchronize(vgpu_stream *s) { vgpu_wait_until(completion(s)); }

void vgpu_stream_host_fn(vgpu_stream *s, void (*fn)(void *), void *data) {
    vgpu_launch l = {.kind = VGPU_OP_HOST_FN, .device = s->device, .name = "cudaLaunchHostFunc"};
    l.u.host.fn = fn;
    l.u.host.data = data;
    pthread_mutex_lock(&lock);
    int capturing = s->capture != NULL;
    if (capturing) graph_append(s->capture, &l, s->capture_cursor, 0);
    pthread_mutex_unlock(&lock);
    if (capturing) return;
    vgpu_stream_synchronize(s);
    fn(data);
}

void vgpu_device_synchronize(int dev) {
    pthread_mutex_lock(&lock);
    double t = default_streams[dev].ready_at;
    for (vgpu_stream *o = all_streams; o; o = o->next)
        if (o->device == dev && o->ready_at > t) t = o->ready_at;
    pthread_mutex_unlock(&lock);
    vgpu_wait_until(t);
}

/* ---- events ----------------------------------------------------------------------------- */

vgpu_event *vgpu_event_create(unsigned flags) {
    vgpu_event *e = calloc(1, sizeof *e);
    e->flags = flags;
    return e;
}

void vgpu_event_destroy(vgpu_event *e) { free(e); }

void vgpu_event_record(vgpu_event *e, vgpu_stream *s, int external) {
    double now = vgpu_now();
    pthread_mutex_lock(&lock);
    if (s->capture && external) {
        vgpu_launch l = {.kind = VGPU_OP_EVENT_RECORD, .device = s->device, .name = "cudaEventRecordWithFlags"};
        l.u.record.event = e;
        graph_append(s->capture, &l, s->capture_cursor, 0);
    } else if (s->capture) {
        e->capture_id = s->capture->capture_id;
        e->capture_time = s->capture_cursor;
    } else {
        double t = ordered_after(s);
        e->time = t > now ? t : now;    /* an idle stream completes the record right away */
        e->capture_id = 0;
        e->recorded = 1;
    }
    pthread_mutex_unlock(&lock);
}

int vgpu_event_query(vgpu_event *e) { return !e->recorded || e->time <= vgpu_now(); }

void vgpu_event_synchronize(vgpu_event *e) { if (e->recorded) vgpu_wait_until(e->time); }

/* The graph of a capture still in progress, by its id (lock held). Ids are never reused, so an
 * event from a finished capture finds nothing, even if its graph's memory was reused. */
static vgpu_graph *live_capture(unsigned long long id) {
    for (vgpu_stream *o = all_streams; o; o = o->next)
        if (o->capture && o->capture->capture_id == id) return o->capture;
    for (int d = 0; d < VGPU_MAX_DEVICES; d++)
        if (default_streams[d].capture && default_streams[d].capture->capture_id == id)
            return default_streams[d].capture;
    return NULL;
}

int vgpu_stream_wait_event(vgpu_stream *s, vgpu_event *e) {
    int rc = 0;
    pthread_mutex_lock(&lock);
    if (e->capture_id) {
        /* Joining a capture: s now records into the same graph, after the event's point. */
        vgpu_graph *g = live_capture(e->capture_id);
        if (!g) {
            rc = -1;
        } else if (s->capture != g) {
            s->capture = g;
            s->capture_cursor = e->capture_time;
        } else if (e->capture_time > s->capture_cursor) {
            s->capture_cursor = e->capture_time;
        }
    } else if (e->recorded && e->time > s->ready_at) {
        s->ready_at = e->time;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

int vgpu_event_elapsed_ms(vgpu_event *start, vgpu_event *end, float *ms) {
    if (!start->recorded || !end->recorded) return -1;
    if ((start->flags | end->flags) & EVENT_DISABLE_TIMING) return -1;
    double now = vgpu_now();
    if (start->time > now || end->time > now) return -2;
    *ms = (float)((end->time - start->time) * 1e3);
    return 0;
}

/* ---- graphs ------------------------------------------------------------------------------ */

vgpu_graph *vgpu_graph_create(void) { return calloc(1, sizeof(vgpu_graph)); }

void vgpu_graph_destroy(vgpu_graph *g) {
    if (!g) return;
    free(g->nodes);
    free(g->durations);
    free(g->starts);
    free(g->repredicted);
    free(g->repredicted_before);
    free(g);
}

size_t vgpu_graph_node_count(const vgpu_graph *g) { return g->len; }

double vgpu_graph_length(const vgpu_graph *g) { return g->length; }

void vgpu_graph_add(vgpu_graph *g, const vgpu_launch *launch) {
    /* Nodes added by hand carry no dependency information we track: treat them as sequential. */
    pthread_mutex_lock(&lock);
    graph_append(g, launch, g->length, vgpu_predict(launch));
    pthread_mutex_unlock(&lock);
}

static int repredicted_at_replay(const vgpu_launch *node) {
    return node->kind == VGPU_OP_KERNEL && node->function && vgpu_function_reads_attention_batch(node->function);
}

vgpu_graph *vgpu_graph_instantiate(const vgpu_graph *g) {
    vgpu_graph *exec = vgpu_graph_create();
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < g->len; i++) graph_append(exec, &g->nodes[i], g->starts[i], g->durations[i]);
    exec->length = g->length;
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; i < exec->len; i++) {
        if (exec->repredicted_before) exec->repredicted_before[i] = exec->n_repredicted;
        if (!repredicted_at_replay(&exec->nodes[i])) continue;
        if (!exec->repredicted_before) exec->repredicted_before = calloc(exec->len, sizeof(size_t));
        exec->repredicted = realloc(exec->repredicted, (exec->n_repredicted + 1) * sizeof(size_t));
        exec->repredicted[exec->n_repredicted++] = i;
    }
    return exec;
}

/* A replay with the current attention batch: fresh[k] is the k-th re-predicted node's duration
 * now, shift[k] the sum of the changes of the first k (so shift has n_repredicted + 1 entries).
 * A node starts later than captured by the changes of the re-predicted nodes captured before it:
 * exact for a graph captured on one stream, as vLLM captures its steps; on a forked graph every
 * branch is taken to follow them. Returns the replay's length. */
static double replan(const vgpu_graph *exec, double *fresh, double *shift) {
    shift[0] = 0;
    for (size_t k = 0; k < exec->n_repredicted; k++) {
        size_t i = exec->repredicted[k];
        fresh[k] = vgpu_predict(&exec->nodes[i]);
        shift[k + 1] = shift[k] + fresh[k] - exec->durations[i];
    }
    double length = 0;
    for (size_t i = 0, k = 0; i < exec->len; i++) {
        int again = k < exec->n_repredicted && exec->repredicted[k] == i;
        double end = exec->starts[i] + shift[exec->repredicted_before[i]] + (again ? fresh[k++] : exec->durations[i]);
        if (end > length) length = end;
    }
    return length;
}

/* Each replay's collectives are new collectives: their sequence numbers say which replay (the
 * same on every rank, as every rank replays its graphs in the same order) and which capture. */
static uint64_t replay_seq(const vgpu_graph *exec, uint64_t captured_seq) {
    return 1ULL << 63 | exec->replays << 32 | (captured_seq & 0xffffffffULL);
}

void vgpu_graph_launch(vgpu_graph *exec, vgpu_stream *s) {
    vgpu_launch whole = {.kind = VGPU_OP_GRAPH, .device = s->device, .name = "cudaGraphLaunch"};
    whole.u.graph.seconds = exec->length;
    /* Scratch of this replay (fresh durations, then shifts), only for graphs that need it. */
    size_t n = exec->n_repredicted;
    double *fresh = n ? malloc((2 * n + 1) * sizeof(double)) : NULL, *shift = fresh ? fresh + n : NULL;
    double length = n ? replan(exec, fresh, shift) : exec->length;
    double now = vgpu_now();
    pthread_mutex_lock(&lock);
    if (s->capture) {           /* a graph launched inside a capture becomes one node */
        graph_append(s->capture, &whole, s->capture_cursor, exec->length);
        s->capture_cursor += exec->length;
        pthread_mutex_unlock(&lock);
        free(fresh);
        return;
    }
    double start = ordered_after(s);
    if (now > start) start = now;
    s->ready_at = start + length;
    exec->replays++;
    pthread_mutex_unlock(&lock);
    /* Walk the nodes in capture order. A collective that waits for a slower rank delays what
     * follows it: `late` carries that delay down the graph. */
    double late = 0;
    for (size_t i = 0, k = 0; i < exec->len; i++) {
        const vgpu_launch *node = &exec->nodes[i];
        double at = start + exec->starts[i] + (n ? shift[exec->repredicted_before[i]] : 0) + late;
        int again = k < n && exec->repredicted[k] == i;
        if (node->kind == VGPU_OP_EVENT_RECORD) {
            pthread_mutex_lock(&lock);
            node->u.record.event->time = at;
            node->u.record.event->recorded = 1;
            node->u.record.event->capture_id = 0;
            pthread_mutex_unlock(&lock);
            continue;
        }
        if (node->kind == VGPU_OP_HOST_FN) {
            /* Host nodes run when the replay reaches them: the clock moves there first. */
            vgpu_wait_until(at);
            node->u.host.fn(node->u.host.data);
            continue;
        }
        double seconds = again ? fresh[k++] : exec->durations[i];
        if (crosses_processes(node)) {
            double done = resolve_collective(node, replay_seq(exec, node->u.coll.seq), at, seconds);
            if (done - at - seconds > 0) late += done - at - seconds;
            seconds = done - at;
        }
        vgpu_stats_record(node, seconds, at);
    }
    if (late > 0) vgpu_stream_wait_until(s, start + length + late);
    free(fresh);
}

int vgpu_capture_begin(vgpu_stream *s, int mode) {
    (void)mode;     /* global/thread-local/relaxed modes only differ in which calls are legal */
    pthread_mutex_lock(&lock);
    int busy = s->capture != NULL;
    if (!busy) {
        s->capture = vgpu_graph_create();
        s->capture_cursor = 0;
        s->capture->capture_id = next_capture_id++;
    }
    pthread_mutex_unlock(&lock);
    return busy ? -1 : 0;
}

int vgpu_capture_end(vgpu_stream *s, vgpu_graph **out) {
    pthread_mutex_lock(&lock);
    vgpu_graph *g = s->capture;
    if (g) {
        for (vgpu_stream *o = all_streams; o; o = o->next)
            if (o->capture == g) o->capture = NULL;
        for (int d = 0; d < VGPU_MAX_DEVICES; d++)
            if (default_streams[d].capture == g) default_streams[d].capture = NULL;
    }
    pthread_mutex_unlock(&lock);
    if (!g) return -1;
    *out = g;
    return 0;
}

int vgpu_capture_status(vgpu_stream *s, unsigned long long *id, vgpu_graph **graph) {
    pthread_mutex_lock(&lock);
    int capturing = s->capture != NULL;
    if (id) *id = capturing ? s->capture->capture_id : 0;
    if (graph) *graph = s->capture;
    pthread_mutex_unlock(&lock);
    return capturing;
}
