/* stats.c: where virtual GPU time went. REVATI_VGPU_STATS=path writes, at exit (and every few
 * seconds before), one CSV row
 * per (kind, name) with the launch count and total seconds ("%p" in the path becomes the process
 * id, so that every process of a deployment writes its own; also when a thread goes idle, at most
 * every STATS_IDLE_FLUSH_NS), kernels under their demangled names
 * (emulator/predictor/attribution.py sorts them into families); REVATI_VGPU_TRACE=path writes a
 * row per launch as it happens (tests and debugging: it is slow). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vgpu.h"

typedef struct total {
    vgpu_op_kind kind;
    const char *name;
    vgpu_function *function;
    uint64_t count;
    double seconds;
} total;
static total *totals;
static size_t totals_len, totals_cap;
static FILE *trace;
static char stats_path_buf[4096];
static const char *stats_path;
static int enabled = -1;
static int unwritten;               /* launches recorded since the last write */
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

/* A CSV field in quotes: demangled names hold commas. */
static void put_quoted(FILE *f, const char *text) {
    fputc('"', f);
    for (const char *p = text; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static const char *catch_up_names[VGPU_CATCH_UP_KINDS] = {"unseen_sleep", "unnamed_channel"};
static uint64_t catch_ups_written;      /* catch-ups counted when the file was last written */

static uint64_t catch_ups_so_far(void) {
    uint64_t total = 0;
    for (int kind = 0; kind < VGPU_CATCH_UP_KINDS; kind++) {
        uint64_t count;
        double seconds;
        vgpu_clock_catch_ups(kind, &count, &seconds);
        total += count;
    }
    return total;
}

/* Written to a temporary file renamed over the last one, so a reader never sees half a file. The
 * clock's catch-ups come last, as rows of kind catch_up (not GPU time: attribution.py). */
static void write_stats_locked(void) {
    if (!stats_path) return;
    __atomic_store_n(&unwritten, 0, __ATOMIC_RELAXED);
    char partial[sizeof stats_path_buf + 16];
    snprintf(partial, sizeof partial, "%s.partial", stats_path);
    FILE *f = fopen(partial, "w");
    if (!f) return;
    fprintf(f, "kind,name,count,seconds\n");
    for (size_t i = 0; i < totals_len; i++) {
        const total *t = &totals[i];
        fprintf(f, "%s,", vgpu_op_kind_name(t->kind));
        put_quoted(f, t->function ? vgpu_function_display_name(t->function) : t->name ? t->name : "");
        fprintf(f, ",%llu,%.9f\n", (unsigned long long)t->count, t->seconds);
    }
    catch_ups_written = catch_ups_so_far();
    for (int kind = 0; kind < VGPU_CATCH_UP_KINDS; kind++) {
        uint64_t count;
        double seconds;
        vgpu_clock_catch_ups(kind, &count, &seconds);
        if (count) fprintf(f, "catch_up,%s,%llu,%.9f\n", catch_up_names[kind], (unsigned long long)count, seconds);
    }
    fclose(f);
    rename(partial, stats_path);
}

static void write_stats_uncharged(void *unused) {
    (void)unused;
    write_stats_locked();
}

static void write_stats(void) {
    pthread_mutex_lock(&stats_lock);
    write_stats_locked();
    pthread_mutex_unlock(&stats_lock);
}

/* Also written every few wall seconds while launches happen, and when a thread goes idle after
 * launches: an engine process killed at shutdown (vLLM sends SIGTERM to workers slow to exit, then
 * SIGKILL) runs no exit handler. The writes are the library's work, not the program's: uncharged. */
#define STATS_FLUSH_EVERY_NS 5000000000LL
#define STATS_IDLE_FLUSH_NS 500000000LL
#define STATS_FLUSH_CHECK_EVERY 4096        /* launches between looks at the clock */
static uint64_t records_since_check;
static int64_t flushed_at_ns;

static void flush_if_older_than_locked(int64_t age_ns) {
    int64_t now = vgpu_host_clock_ns(CLOCK_MONOTONIC);
    if (now - flushed_at_ns < age_ns) return;
    flushed_at_ns = now;
    vgpu_clock_uncharged(write_stats_uncharged, NULL);
}

static void flush_now_and_then_locked(void) {
    if (++records_since_check < STATS_FLUSH_CHECK_EVERY) return;
    records_since_check = 0;
    flush_if_older_than_locked(STATS_FLUSH_EVERY_NS);
}

static void open_outputs(void) {
    const char *trace_path = getenv("REVATI_VGPU_TRACE");
    stats_path = getenv("REVATI_VGPU_STATS");
    const char *pid_at = stats_path ? strstr(stats_path, "%p") : NULL;
    if (pid_at) {
        snprintf(stats_path_buf, sizeof stats_path_buf, "%.*s%d%s", (int)(pid_at - stats_path), stats_path,
                 (int)getpid(), pid_at + 2);
        stats_path = stats_path_buf;
    }
    if (trace_path && *trace_path) {
        trace = fopen(trace_path, "a");
        if (trace) {
            setvbuf(trace, NULL, _IOLBF, 0);
            fprintf(trace, "kind,name,device,start,seconds,grid,block,shared_mem,m,n,k,batch,bytes,nranks\n");
        }
    }
    if (stats_path && *stats_path) atexit(write_stats);
    else stats_path = NULL;
    enabled = trace || stats_path;
}

/* A process that launches nothing (an API server) has only its catch-ups to write: it opens its
 * file when it first has some. */
void vgpu_stats_flush_when_idle(void) {
    if (enabled == 0 || (enabled > 0 && !stats_path)) return;
    if (!__atomic_load_n(&unwritten, __ATOMIC_RELAXED) && catch_ups_so_far() == catch_ups_written) return;
    if (pthread_mutex_trylock(&stats_lock) != 0) return;      /* another thread is recording: it is not idle */
    if (enabled < 0) open_outputs();
    if (stats_path) flush_if_older_than_locked(STATS_IDLE_FLUSH_NS);
    pthread_mutex_unlock(&stats_lock);
}

void vgpu_stats_write(void) { write_stats(); }

/* A forked child counts its own launches, into its own file (its pid): it starts afresh. */
static void after_fork_in_child(void) {
    totals_len = 0;
    catch_ups_written = 0;
    if (stats_path && strstr(getenv("REVATI_VGPU_STATS"), "%p")) enabled = -1;
}

__attribute__((constructor)) static void stats_start(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

void vgpu_stats_record(const vgpu_launch *l, double seconds, double start) {
    if (enabled < 0) {
        pthread_mutex_lock(&stats_lock);
        if (enabled < 0) open_outputs();
        pthread_mutex_unlock(&stats_lock);
    }
    if (!enabled) return;
    pthread_mutex_lock(&stats_lock);
    if (stats_path) {
        size_t i = 0;
        while (i < totals_len && !(totals[i].kind == l->kind && totals[i].name == l->name)) i++;
        if (i == totals_len) {
            if (totals_len == totals_cap) {
                totals_cap = totals_cap ? totals_cap * 2 : 64;
                totals = realloc(totals, totals_cap * sizeof *totals);
            }
            totals[totals_len++] = (total){l->kind, l->name, l->function, 0, 0};
        }
        totals[i].count++;
        totals[i].seconds += seconds;
        __atomic_store_n(&unwritten, 1, __ATOMIC_RELAXED);
        flush_now_and_then_locked();
    }
    if (trace) {
        long long m = 0, n = 0, k = 0, batch = 0, bytes = 0, nranks = 0;
        if (l->kind == VGPU_OP_GEMM) { m = l->u.gemm.m; n = l->u.gemm.n; k = l->u.gemm.k; batch = l->u.gemm.batch; }
        if (l->kind == VGPU_OP_COLLECTIVE) { bytes = l->u.coll.bytes; nranks = l->u.coll.nranks; }
        if (l->kind == VGPU_OP_COPY || l->kind == VGPU_OP_MEMSET) bytes = l->u.copy.bytes;
        if (l->kind == VGPU_OP_ATTENTION) {     /* m: query rows, n: keys, k: head dim, batch: batch x heads */
            m = (long long)l->u.attention.seqlen_q; n = (long long)l->u.attention.seqlen_k;
            k = (long long)l->u.attention.head_dim; batch = (long long)(l->u.attention.batch * l->u.attention.heads);
        }
        fprintf(trace, "%s,%s,%d,%.9f,%.9f,%ux%ux%u,%ux%ux%u,%zu,%lld,%lld,%lld,%lld,%lld,%lld\n",
                vgpu_op_kind_name(l->kind), l->name ? l->name : "", l->device, start, seconds,
                l->grid[0], l->grid[1], l->grid[2], l->block[0], l->block[1], l->block[2],
                l->shared_mem, m, n, k, batch, bytes, nranks);
    }
    pthread_mutex_unlock(&stats_lock);
}
