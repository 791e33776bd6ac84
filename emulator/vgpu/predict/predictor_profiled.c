/* predictor_profiled.c: launch durations from measurements on the real GPU.
 *
 * REVATI_PREDICTOR=profiled:<model file>. The model file is written by emulator/predictor/
 * modelfile.py from the tables measured on the target SKU (emulator/predictor/data/<sku>/) and
 * documented there; nothing in it is typed by hand. Per family:
 *   GEMMs (cuBLAS, cuBLASLt): each measured weight shape is a curve over the token count n,
 *     interpolated in log-log; a shape never measured takes the nearest measured one of its type,
 *     scaled by work; a type never measured, the roofline fallback of the file.
 *   Attention kernels: the batch composition is read from the kernel's own arguments (see
 *     flash_attention_batch) or, for kernels that keep it in device memory (FlashAttention 3,
 *     vLLM's), is the one the engine published (published_attention_seconds). FlashAttention 3,
 *     never measured here, has a model of its CTAs calibrated to published figures
 *     (flash_attention_3 record); the others are measured. A batch of like
 *     sequences (all decoding, or all prefilling) is interpolated among measured batches of its
 *     backend and head shape: per measured sequence count a curve over the context (decode) or
 *     prompt length (prefill), then across the sequence counts, all in log-log. Other batches,
 *     and head shapes never measured, use a linear model over the batch's work (bytes of K/V
 *     read, FLOPs, query bytes).
 *     cuDNN's SDPA with a mask read from memory (cudnn.c) is charged by its CTA waves, keys and
 *     head size (cudnn_attention records, measured on cudnn_graphs.csv); unmasked, as flash.
 *   Other kernels: a + b * threads, fitted per demangled name on measured kernels (the name is
 *     what profilers print, so the tables and the launches meet on it); names never measured
 *     take the default fitted over all of them.
 *   Copies and memsets: latency + bytes / bandwidth.
 *   Host work of replaced libraries (host_cost records): seconds per event, measured on the
 *     target's host (a cuDNN graph built for a new attention shape: probe_cudnn_graphs.py), of
 *     which a fixed part does not change with the host's speed and the rest scales with it.
 *   Collectives: per (op, ranks) measured on the SKU or published for it, a curve over the whole
 *     buffer's bytes, interpolated in log-log; otherwise latency + bus bytes / bandwidth (fitted or
 *     modelled). An engine's custom all-reduce kernel has curves of its own (custom_all_reduce).
 * Lookups on the launch path are a hash probe and a binary search, with per-function caching of
 * the kernel model, so predicting stays well under a microsecond.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

/* ---- the model ------------------------------------------------------------------------------ */

enum { DT_BF16, DT_FP16, DT_FP32, DT_TF32, DT_FP8_E4M3, DT_FP8_E5M2, DT_COUNT };
static const char *dtype_names[DT_COUNT] = {"bf16", "fp16", "fp32", "tf32", "fp8_e4m3", "fp8_e5m2"};
static const int dtype_bytes[DT_COUNT] = {2, 2, 4, 4, 1, 1};

typedef struct gemm_curve {
    int dtype;
    int64_t m, k, batch;
    int points;
    double *log_n, *log_s;      /* ascending n */
} gemm_curve;

typedef struct gemm_key { int dtype; int64_t m, k, batch; } gemm_key;
typedef struct gemm_slot { gemm_key key; const gemm_curve *curve; double scale; int used; } gemm_slot;

typedef struct rates { double latency, per_second; int present; } rates;

enum { ATT_SDPA_FLASH, ATT_VLLM_TRITON, ATT_BACKENDS };
static const char *attention_backends[ATT_BACKENDS] = {"sdpa_flash", "vllm_triton_unified"};
enum { PHASE_DECODE, PHASE_PREFILL, PHASES };
static const char *attention_phases[PHASES] = {"decode", "prefill"};

/* One measured sequence count of a table: seconds over y (context for decode, prompt for prefill). */
typedef struct attention_curve { double log_seqs; int points; double *log_y, *log_s; } attention_curve;
typedef struct attention_table {
    int backend, phase, heads, kv_heads, head_dim;
    int n_curves;
    attention_curve *curves;        /* ascending sequence count */
} attention_table;
/* seconds = a + b * threads, measured up to max_threads (the default model: unbounded). */
typedef struct kernel_model { double a, b, max_threads; } kernel_model;
/* An attention kernel's model for one head size. cuDNN's masked SDPA (cudnn_attention records), by
 * CTA waves: c0 + c1 * waves + (c2 + c3 * causal) * waves * keys * head_dim + c4 * bias bytes, CTAs
 * = ceil(queries / query_tile) x heads x batch, waves = ceil(CTAs / slots) (emulator/predictor/
 * models.py, efficient_attention_work with whole_waves). PyTorch's memory-efficient attention
 * (efficient_attention records, `schedule`): c0 + c1 * the makespan of its CTAs over `sms` SMs +
 * c2 * key blocks + c3 * bias bytes (models.EfficientAttentionCTAs; efficient_schedule_seconds). */
typedef struct efficient_model {
    int head_dim, query_tile, whole_waves, schedule, sms, resident;
    double slots, latency, mask_weight, causal_extra, c[5];
} efficient_model;
typedef struct efficient_models { efficient_model *m; size_t n; } efficient_models;
static const char *memory_classes[VGPU_MEMORY_CLASSES] = {"elementwise", "elementwise_strided", "cat", "cat_strided",
                                                           "gather", "gather_small"};
typedef struct named_kernel { char *name; kernel_model model; } named_kernel;
/* FlashAttention 3 (models.FlashAttention3): launch + the makespan of its CTAs over sms SMs, at
 * qo per Q/O element, mma (per head size, ascending head_dim) plus causal per MMA element and
 * masked per masked element; sms 0: no record. */
#define FA3_HEAD_SIZES 8
typedef struct fa3_model {
    int sms, points, head_dim[FA3_HEAD_SIZES];
    double launch, qo, causal, masked, mma[FA3_HEAD_SIZES];
} fa3_model;

enum { COPY_H2D, COPY_D2H, COPY_D2D, COPY_DIRECTIONS };
enum { COLL_ALL_REDUCE, COLL_ALL_GATHER, COLL_REDUCE_SCATTER, COLL_BROADCAST, COLL_SEND_RECV, COLL_CUSTOM_ALL_REDUCE,
       COLL_COUNT };
static const char *collective_names[COLL_COUNT] = {"all_reduce", "all_gather", "reduce_scatter", "broadcast",
                                                   "send_recv", "custom_all_reduce"};
/* A measured (op, ranks): seconds over the whole buffer's bytes (log_n holds log bytes). */
typedef struct collective_curve { int op, nranks; gemm_curve curve; } collective_curve;

static struct {
    gemm_curve *curves;
    size_t n_curves;
    gemm_slot *slots;           /* open addressing over gemm_key, grown under gemm_lock */
    size_t slot_cap, slot_len;
    rates gemm_fallback[DT_COUNT];      /* latency = floor, per_second = flops; bytes_per_s below */
    double gemm_fallback_bw[DT_COUNT];
    double attention[ATT_BACKENDS][5];  /* linear: const, seqs, kv bytes, flops, q bytes */
    int have_attention[ATT_BACKENDS];
    /* Batches that are neither all decodes nor one prompt length: SMs, programs resident per SM,
     * a lone program's time per KV tile, then coefficients of [1, the programs' makespan, tile
     * work, K/V bytes] (measured_published_seconds); SMs 0: none. */
    double makespan[ATT_BACKENDS][7];
    attention_table *tables;
    size_t n_tables;
    rates copy[COPY_DIRECTIONS][2];     /* [direction][pinned] */
    rates memset;
    rates collective[COLL_COUNT];
    collective_curve *collective_curves;
    size_t n_collective_curves;
    kernel_model kernel_default;
    named_kernel *kernels;
    size_t n_kernels;
    gemm_curve memory[VGPU_MEMORY_CLASSES];     /* seconds over bytes moved; points 0: not measured */
    efficient_models efficient, cudnn;      /* memory-efficient attention; cuDNN's masked SDPA */
    /* Seconds of host work at the committed host speed, and the part of it that does not scale
     * with the host's speed; 0: not measured. */
    double host_cost[VGPU_HOST_WORK_COUNT], host_fixed[VGPU_HOST_WORK_COUNT];
    fa3_model fa3;
    /* SDPA's FlashAttention 2 decode: SMs (0: none), coefficients for the split-KV kernel and
     * for the whole-KV one (flash_decode_seconds). */
    struct { int sms; double split[5], whole[5]; } flash_decode;
} model;

static pthread_mutex_t gemm_lock = PTHREAD_MUTEX_INITIALIZER;
/* Counts model loads (from 1): predictions kept between launches are of the model they were made with. */
static unsigned model_loads;

static _Noreturn void bad_model(const char *path, int line, const char *why) {
    fprintf(stderr, "vgpu: predictor model %s, line %d: %s (rebuild it: revati-tune predictor fit)\n", path, line, why);
    exit(86);
}

static void add_efficient_model(efficient_models *models, efficient_model e) {
    models->m = realloc(models->m, (models->n + 1) * sizeof *models->m);
    models->m[models->n++] = e;
}

static int dtype_index(const char *name) {
    for (int i = 0; i < DT_COUNT; i++)
        if (strcmp(dtype_names[i], name) == 0) return i;
    return -1;
}

static int name_index(const char *const *names, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (strcmp(names[i], name) == 0) return i;
    return -1;
}

/* <points> pairs of x, seconds (x ascending) into c; -1 on a malformed list. */
static int parse_points(char *p, int points, gemm_curve *c) {
    int used;
    c->points = points;
    c->log_n = malloc(points * sizeof(double));
    c->log_s = malloc(points * sizeof(double));
    for (int i = 0; i < points; i++) {
        double x, sec;
        if (sscanf(p, " %lf %lf%n", &x, &sec, &used) != 2 || x <= 0 || sec <= 0) return -1;
        if (i && log(x) <= c->log_n[i - 1]) return -1;
        c->log_n[i] = log(x);
        c->log_s[i] = log(sec);
        p += used;
    }
    return 0;
}

static int parse_gemm(char *rest, gemm_curve *c) {
    int ta, tb, used, points;
    long long m, k, batch;
    char dtype[16];
    if (sscanf(rest, "%15s %d %d %lld %lld %lld %d%n", dtype, &ta, &tb, &m, &k, &batch, &points, &used) != 7 ||
        (c->dtype = dtype_index(dtype)) < 0 || points < 1)
        return -1;
    c->m = m, c->k = k, c->batch = batch;
    return parse_points(rest + used, points, c);
}

/* memory_curve <class> <points> bytes s ... */
static int parse_memory_curve(char *rest) {
    char name[64];
    int points, used, i;
    if (sscanf(rest, "%63s %d%n", name, &points, &used) != 2 || points < 1) return -1;
    if ((i = name_index(memory_classes, VGPU_MEMORY_CLASSES, name)) < 0) return 0;  /* a newer class */
    return parse_points(rest + used, points, &model.memory[i]);
}

/* collective_curve <op> <nranks> <points> bytes s ... (bytes ascending) */
static int parse_collective_curve(char *rest) {
    char name[64];
    int nranks, points, used, op;
    if (sscanf(rest, "%63s %d %d%n", name, &nranks, &points, &used) != 3 || points < 1 || nranks < 2 ||
        (op = name_index(collective_names, COLL_COUNT, name)) < 0)
        return -1;
    model.collective_curves = realloc(model.collective_curves,
                                      (model.n_collective_curves + 1) * sizeof *model.collective_curves);
    collective_curve *c = &model.collective_curves[model.n_collective_curves++];
    *c = (collective_curve){.op = op, .nranks = nranks};
    return parse_points(rest + used, points, &c->curve);
}

static attention_table *attention_table_for(int backend, int phase, int heads, int kv_heads, int head_dim) {
    for (size_t i = 0; i < model.n_tables; i++) {
        attention_table *t = &model.tables[i];
        if (t->backend == backend && t->phase == phase && t->heads == heads && t->kv_heads == kv_heads &&
            t->head_dim == head_dim)
            return t;
    }
    return NULL;
}

/* flash_attention_3 <sms> <launch_s> <qo_s> <causal_s> <masked_s> <points> head_dim mma_s ...
 * (head_dim ascending) */
static int parse_flash_attention_3(char *rest) {
    fa3_model m = {0};
    int used;
    if (sscanf(rest, "%d %lf %lf %lf %lf %d%n", &m.sms, &m.launch, &m.qo, &m.causal, &m.masked, &m.points, &used) != 6 ||
        m.sms < 1 || m.points < 1 || m.points > FA3_HEAD_SIZES)
        return -1;
    for (int i = 0, n; i < m.points; i++, used += n)
        if (sscanf(rest + used, " %d %lf%n", &m.head_dim[i], &m.mma[i], &n) != 2 ||
            (i && m.head_dim[i] <= m.head_dim[i - 1]))
            return -1;
    model.fa3 = m;
    return 0;
}

/* attention_curve <backend> <phase> <heads> <kv_heads> <head_dim> <num_seqs> <points> y s ...
 * Records of one table come in ascending num_seqs (modelfile.py writes them so). */
static int parse_attention_curve(char *rest) {
    char backend[64], phase[16];
    int heads, kv_heads, head_dim, seqs, points, used;
    if (sscanf(rest, "%63s %15s %d %d %d %d %d%n", backend, phase, &heads, &kv_heads, &head_dim, &seqs, &points,
               &used) != 7 || points < 1 || seqs < 1)
        return -1;
    int b = name_index(attention_backends, ATT_BACKENDS, backend), p = name_index(attention_phases, PHASES, phase);
    if (p < 0) return -1;
    if (b < 0) return 0;                /* a backend this build does not decode: not needed */
    attention_table *t = attention_table_for(b, p, heads, kv_heads, head_dim);
    if (!t) {
        model.tables = realloc(model.tables, (model.n_tables + 1) * sizeof *model.tables);
        t = &model.tables[model.n_tables++];
        *t = (attention_table){b, p, heads, kv_heads, head_dim, 0, NULL};
    }
    t->curves = realloc(t->curves, (t->n_curves + 1) * sizeof *t->curves);
    attention_curve *c = &t->curves[t->n_curves++];
    gemm_curve xy = {0};
    int bad = parse_points(rest + used, points, &xy);
    *c = (attention_curve){log(seqs), points, xy.log_n, xy.log_s};
    return bad || (t->n_curves > 1 && c->log_seqs <= c[-1].log_seqs) ? -1 : 0;
}

void vgpu_profiled_init(const char *path) {
    if (model.n_curves) return;         /* loaded already (one model a process) */
    __atomic_add_fetch(&model_loads, 1, __ATOMIC_ACQ_REL);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "vgpu: cannot open the predictor model %s (REVATI_PREDICTOR)\n", path);
        exit(86);
    }
    char *line = NULL;
    size_t cap = 0;
    int number = 0;
    while (getline(&line, &cap, f) > 0) {
        number++;
        line[strcspn(line, "\n")] = 0;
        char kind[32];
        int used;
        if (line[0] == '#' || sscanf(line, "%31s%n", kind, &used) != 1) continue;
        char *rest = line + used + (line[used] == ' ');
        char name[64];
        double a, b, c, d, e;
        int pinned, i;
        if (strcmp(kind, "sku") == 0) {
            continue;
        } else if (strcmp(kind, "gemm") == 0) {
            model.curves = realloc(model.curves, (model.n_curves + 1) * sizeof *model.curves);
            if (parse_gemm(rest, &model.curves[model.n_curves++]) != 0) bad_model(path, number, "bad gemm record");
        } else if (strcmp(kind, "gemm_fallback") == 0) {
            if (sscanf(rest, "%63s %lf %lf %lf", name, &a, &b, &c) != 4 || (i = dtype_index(name)) < 0)
                bad_model(path, number, "bad gemm_fallback record");
            model.gemm_fallback[i] = (rates){c, a, 1};
            model.gemm_fallback_bw[i] = b;
        } else if (strcmp(kind, "attention") == 0) {
            if (sscanf(rest, "%63s %lf %lf %lf %lf %lf", name, &a, &b, &c, &d, &e) != 6)
                bad_model(path, number, "bad attention record");
            if ((i = name_index(attention_backends, ATT_BACKENDS, name)) >= 0) {
                double coefficients[5] = {a, b, c, d, e};
                memcpy(model.attention[i], coefficients, sizeof coefficients);
                model.have_attention[i] = 1;
            }
        } else if (strcmp(kind, "flash_decode") == 0) {
            double *s = model.flash_decode.split, *w = model.flash_decode.whole;
            if (sscanf(rest, "%d %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf", &model.flash_decode.sms, &s[0], &s[1], &s[2],
                       &s[3], &s[4], &w[0], &w[1], &w[2], &w[3], &w[4]) != 11 || model.flash_decode.sms <= 0)
                bad_model(path, number, "bad flash_decode record");
        } else if (strcmp(kind, "attention_makespan") == 0) {
            int sms, resident;
            double latency, c0, c1, c2, c3;
            if (sscanf(rest, "%63s %d %d %lf %lf %lf %lf %lf", name, &sms, &resident, &latency, &c0, &c1, &c2, &c3) != 8 ||
                sms <= 0 || resident <= 0 || latency <= 0)
                bad_model(path, number, "bad attention_makespan record");
            if ((i = name_index(attention_backends, ATT_BACKENDS, name)) >= 0) {
                double values[7] = {sms, resident, latency, c0, c1, c2, c3};
                memcpy(model.makespan[i], values, sizeof values);
            }
        } else if (strcmp(kind, "attention_curve") == 0) {
            if (parse_attention_curve(rest) != 0) bad_model(path, number, "bad attention_curve record");
        } else if (strcmp(kind, "flash_attention_3") == 0) {
            if (parse_flash_attention_3(rest) != 0) bad_model(path, number, "bad flash_attention_3 record");
        } else if (strcmp(kind, "copy") == 0) {
            static const char *directions[COPY_DIRECTIONS] = {"H2D", "D2H", "D2D"};
            if (sscanf(rest, "%63s %d %lf %lf", name, &pinned, &a, &b) != 4 ||
                (i = name_index(directions, COPY_DIRECTIONS, name)) < 0 || pinned < 0 || pinned > 1)
                bad_model(path, number, "bad copy record");
            model.copy[i][pinned] = (rates){a, b, 1};
        } else if (strcmp(kind, "memset") == 0) {
            if (sscanf(rest, "%lf %lf", &a, &b) != 2) bad_model(path, number, "bad memset record");
            model.memset = (rates){a, b, 1};
        } else if (strcmp(kind, "collective") == 0) {
            if (sscanf(rest, "%63s %lf %lf", name, &a, &b) != 3 ||
                (i = name_index(collective_names, COLL_COUNT, name)) < 0)
                bad_model(path, number, "bad collective record");
            model.collective[i] = (rates){a, b, 1};
        } else if (strcmp(kind, "collective_curve") == 0) {
            if (parse_collective_curve(rest) != 0) bad_model(path, number, "bad collective_curve record");
        } else if (strcmp(kind, "memory_curve") == 0) {
            if (parse_memory_curve(rest) != 0) bad_model(path, number, "bad memory_curve record");
        } else if (strcmp(kind, "efficient_attention") == 0) {
            efficient_model e = {.schedule = 1};
            if (sscanf(rest, "%d %d %d %lf %lf %lf %lf %lf %lf %lf", &e.head_dim, &e.sms, &e.resident, &e.latency,
                       &e.mask_weight, &e.causal_extra, &e.c[0], &e.c[1], &e.c[2], &e.c[3]) != 10 || e.head_dim < 1 ||
                e.sms < 1 || e.resident < 1 || e.latency <= 0)
                bad_model(path, number, "bad efficient_attention record");
            add_efficient_model(&model.efficient, e);
        } else if (strcmp(kind, "cudnn_attention") == 0) {
            efficient_model e = {.whole_waves = 1};
            if (sscanf(rest, "%d %d %lf %lf %lf %lf %lf %lf", &e.head_dim, &e.query_tile, &e.slots, &e.c[0], &e.c[1],
                       &e.c[2], &e.c[3], &e.c[4]) != 8 || e.slots <= 0 || e.query_tile <= 0)
                bad_model(path, number, "bad cudnn_attention record");
            add_efficient_model(&model.cudnn, e);
        } else if (strcmp(kind, "host_cost") == 0) {
            int found = -1, fields = sscanf(rest, "%63s %lf %lf", name, &a, &b);
            if (fields == 2) b = 0;
            if (fields < 2 || a < 0 || b < 0 || b > a) bad_model(path, number, "bad host_cost record");
            for (int w = 0; w < VGPU_HOST_WORK_COUNT; w++)
                if (strcmp(vgpu_host_work_name(w), name) == 0) found = w;
            if (found >= 0) {
                model.host_cost[found] = a;
                model.host_fixed[found] = b;
            }
        } else if (strcmp(kind, "kernel_default") == 0) {
            if (sscanf(rest, "%lf %lf", &a, &b) != 2) bad_model(path, number, "bad kernel_default record");
            model.kernel_default = (kernel_model){a, b, INFINITY};
        } else if (strcmp(kind, "kernel") == 0) {
            double max_threads;
            if (sscanf(rest, "%lf %lf %lf %n", &a, &b, &max_threads, &used) != 3 || !rest[used])
                bad_model(path, number, "bad kernel record");
            model.kernels = realloc(model.kernels, (model.n_kernels + 1) * sizeof *model.kernels);
            model.kernels[model.n_kernels++] = (named_kernel){strdup(rest + used), {a, b, max_threads}};
        }
        /* Unknown kinds are newer families this build does not predict: skipped on purpose. */
    }
    free(line);
    fclose(f);
    if (!model.n_curves) bad_model(path, number, "no gemm records");
}

/* ---- GEMMs ---------------------------------------------------------------------------------- */

static uint64_t gemm_hash(gemm_key k) {
    uint64_t h = (uint64_t)k.dtype * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)k.m + 0x632be59bd9b4e019ULL + (h << 6) + (h >> 2);
    h ^= (uint64_t)k.k + 0x8cb92ba72f3d8dd7ULL + (h << 6) + (h >> 2);
    h ^= (uint64_t)k.batch + (h << 6) + (h >> 2);
    return h;
}

static int key_equal(gemm_key a, gemm_key b) {
    return a.dtype == b.dtype && a.m == b.m && a.k == b.k && a.batch == b.batch;
}

static gemm_slot *slot_for(gemm_slot *slots, size_t cap, gemm_key key) {
    size_t i = gemm_hash(key) & (cap - 1);
    while (slots[i].used && !key_equal(slots[i].key, key)) i = (i + 1) & (cap - 1);
    return &slots[i];
}

static void slot_put(gemm_key key, const gemm_curve *curve, double scale) {
    if (2 * (model.slot_len + 1) > model.slot_cap) {
        size_t cap = model.slot_cap ? 2 * model.slot_cap : 1024;
        gemm_slot *fresh = calloc(cap, sizeof *fresh);
        for (size_t i = 0; i < model.slot_cap; i++)
            if (model.slots[i].used) *slot_for(fresh, cap, model.slots[i].key) = model.slots[i];
        free(model.slots);
        model.slots = fresh;
        model.slot_cap = cap;
    }
    *slot_for(model.slots, model.slot_cap, key) = (gemm_slot){key, curve, scale, 1};
    model.slot_len++;
}

/* The measured shape closest in work (m*k*batch), then in depth (k); NULL if none of this type. */
static const gemm_curve *nearest_curve(gemm_key key) {
    const gemm_curve *best = NULL;
    double best_work = 0, best_depth = 0;
    double work = log((double)key.m * key.k * key.batch), depth = log((double)key.k);
    for (size_t i = 0; i < model.n_curves; i++) {
        const gemm_curve *c = &model.curves[i];
        if (c->dtype != key.dtype) continue;
        double dw = fabs(log((double)c->m * c->k * c->batch) - work), dd = fabs(log((double)c->k) - depth);
        if (!best || dw < best_work || (dw == best_work && dd < best_depth)) best = c, best_work = dw, best_depth = dd;
    }
    return best;
}

static double curve_at(const gemm_curve *c, double n) {
    double x = log(n);
    int last = c->points - 1;
    if (x <= c->log_n[0]) return exp(c->log_s[0]);
    if (x >= c->log_n[last]) return exp(c->log_s[last]) * n / exp(c->log_n[last]);
    int lo = 0, hi = last;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (c->log_n[mid] <= x) lo = mid; else hi = mid;
    }
    double t = (x - c->log_n[lo]) / (c->log_n[hi] - c->log_n[lo]);
    return exp(c->log_s[lo] + t * (c->log_s[hi] - c->log_s[lo]));
}

static int gemm_dtype(const vgpu_launch *l) {
    switch (l->u.gemm.type_a) {
    case 14: return DT_BF16;        /* CUDA_R_16BF */
    case 2: return DT_FP16;         /* CUDA_R_16F */
    case 28: return DT_FP8_E4M3;    /* CUDA_R_8F_E4M3 */
    case 29: return DT_FP8_E5M2;    /* CUDA_R_8F_E5M2 */
    case 0:                         /* CUDA_R_32F: tensor cores only under the TF32 compute types */
        return l->u.gemm.compute_type == 74 || l->u.gemm.compute_type == 77 ? DT_TF32 : DT_FP32;
    default: return DT_FP32;        /* doubles, complex: rare, charged as fp32 */
    }
}

static double gemm_roofline(int dtype, const vgpu_launch *l) {
    const rates *r = &model.gemm_fallback[dtype];
    if (!r->present) r = &model.gemm_fallback[DT_BF16];
    double m = l->u.gemm.m, n = l->u.gemm.n, k = l->u.gemm.k, batch = l->u.gemm.batch;
    double flops = 2 * m * n * k * batch, bytes = (m * k + k * n + m * n) * dtype_bytes[dtype] * batch;
    double bw = model.gemm_fallback_bw[r == &model.gemm_fallback[dtype] ? dtype : DT_BF16];
    return fmax(flops / r->per_second, bytes / bw) + r->latency;
}

static double predict_gemm(const vgpu_launch *l) {
    int dtype = gemm_dtype(l);
    gemm_key key = {dtype, l->u.gemm.m, l->u.gemm.k, l->u.gemm.batch};
    pthread_mutex_lock(&gemm_lock);
    gemm_slot *slot = model.slot_cap ? slot_for(model.slots, model.slot_cap, key) : NULL;
    if (!slot || !slot->used) {
        const gemm_curve *exact = NULL, *near = NULL;
        for (size_t i = 0; i < model.n_curves && !exact; i++) {
            const gemm_curve *c = &model.curves[i];
            if (c->dtype == dtype && c->m == key.m && c->k == key.k && c->batch == key.batch) exact = c;
        }
        near = exact ? exact : nearest_curve(key);
        double scale = exact || !near ? 1 : ((double)key.m * key.k * key.batch) / ((double)near->m * near->k * near->batch);
        slot_put(key, near, scale);
        slot = slot_for(model.slots, model.slot_cap, key);
    }
    const gemm_curve *curve = slot->curve;
    double scale = slot->scale;
    pthread_mutex_unlock(&gemm_lock);
    return curve ? curve_at(curve, (double)l->u.gemm.n) * scale : gemm_roofline(dtype, l);
}

/* ---- attention ------------------------------------------------------------------------------ */

/* FlashAttention 2 as built into PyTorch (namespace pytorch_flash; SDPA's flash backend) takes
 * one Flash_fwd_params by value. Its leading fields have kept this layout since FA2 (Qkv_params:
 * 3 pointers, 9 int64 strides, then h, h_k; Flash_fwd_params: 3 pointers, 3 strides, 3 pointers,
 * then b, seqlen_q, seqlen_k, seqlen_knew, d). The values are checked for sense before use. */
typedef struct attention_batch { double seqs, seqlen_q, seqlen_k, heads, kv_heads, head_dim; int causal; } attention_batch;

static int flash_attention_batch(const vgpu_launch *l, attention_batch *out) {
    const char *name = vgpu_function_display_name(l->function);
    if (strncmp(name, "void pytorch_flash::flash_fwd_kernel<", 37) != 0 &&
        strncmp(name, "void pytorch_flash::flash_fwd_splitkv_kernel<", 45) != 0)
        return -1;
    if (!l->args || !l->args[0]) return -1;
    const unsigned char *p = l->args[0];
    int h, h_k, b, seqlen_q, seqlen_k, d;
    memcpy(&h, p + 96, 4);
    memcpy(&h_k, p + 100, 4);
    memcpy(&b, p + 176, 4);
    memcpy(&seqlen_q, p + 180, 4);
    memcpy(&seqlen_k, p + 184, 4);
    memcpy(&d, p + 192, 4);
    if (h <= 0 || h_k <= 0 || h % h_k || b <= 0 || seqlen_q <= 0 || seqlen_k <= 0 || d <= 0 || d > 512) return -1;
    int causal = seqlen_q > 1 && seqlen_q == seqlen_k;       /* a prefill, causal in a decoder */
    /* For one query token against grouped K/V heads, FlashAttention runs the query heads of each
     * KV head as a query block of their count (seqlenq_ngroups_swapped): a decode of h * seqlen_q
     * query heads, which is how it was measured. */
    if (h == h_k && seqlen_q > 1 && seqlen_q < seqlen_k && !causal) {
        h *= seqlen_q;
        seqlen_q = 1;
    }
    *out = (attention_batch){b, seqlen_q, seqlen_k, h, h_k, d, causal};
    return 0;
}

/* The linear model over a launch's features (emulator/predictor/models.py, attention_features). */
static double linear_in_work(int backend, double seqs, double kv_bytes, double flops, double q_bytes) {
    const double *c = model.attention[backend];
    return c[0] + c[1] * seqs + c[2] * kv_bytes + c[3] * flops + c[4] * q_bytes;
}

static double attention_linear(int backend, const attention_batch *a) {
    double context = a->causal ? a->seqlen_k - a->seqlen_q / 2 : a->seqlen_k;
    double kv_bytes = a->seqs * a->seqlen_k * a->kv_heads * a->head_dim * 2 * 2;
    double flops = 4 * a->seqs * a->seqlen_q * context * a->heads * a->head_dim;
    double q_bytes = a->seqs * a->seqlen_q * a->heads * a->head_dim * 2 * 2;
    return linear_in_work(backend, a->seqs, kv_bytes, flops, q_bytes);
}

/* Seconds at log y on one curve: log-log interpolation; below the curve flat, above it growing
 * as y (decode: K/V read grows with the context) or y squared (prefill: causal attention). */
static double curve_log_seconds(const attention_curve *c, int phase, double log_y) {
    int last = c->points - 1;
    if (log_y <= c->log_y[0]) return c->log_s[0];
    if (log_y >= c->log_y[last]) return c->log_s[last] + (phase == PHASE_PREFILL ? 2 : 1) * (log_y - c->log_y[last]);
    int lo = 0, hi = last;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (c->log_y[mid] <= log_y) lo = mid; else hi = mid;
    }
    double t = (log_y - c->log_y[lo]) / (c->log_y[hi] - c->log_y[lo]);
    return c->log_s[lo] + t * (c->log_s[hi] - c->log_s[lo]);
}

/* Between the two measured sequence counts around it, log-log; past the largest, in proportion. */
static double table_seconds(const attention_table *t, double seqs, double y) {
    double log_seqs = log(seqs), log_y = log(y);
    const attention_curve *c = t->curves;
    int last = t->n_curves - 1;
    if (log_seqs <= c[0].log_seqs) return exp(curve_log_seconds(&c[0], t->phase, log_y));
    if (log_seqs >= c[last].log_seqs)
        return exp(curve_log_seconds(&c[last], t->phase, log_y) + log_seqs - c[last].log_seqs);
    int i = 0;
    while (c[i + 1].log_seqs < log_seqs) i++;
    double f = (log_seqs - c[i].log_seqs) / (c[i + 1].log_seqs - c[i].log_seqs);
    return exp((1 - f) * curve_log_seconds(&c[i], t->phase, log_y) + f * curve_log_seconds(&c[i + 1], t->phase, log_y));
}

/* SDPA's FlashAttention 2 over a decode batch (models.py, flash_decode_launch and FlashDecodeModel:
 * the reference): its CTAs as FA2 launches them, splitting the keys when the query blocks fill
 * less than 80% of two CTAs per SM, in waves of concurrent CTAs. */
static double flash_decode_seconds(const attention_batch *a) {
    int seqs = (int)a->seqs, heads = (int)a->heads, kv_heads = (int)a->kv_heads, head_dim = (int)a->head_dim;
    int sms = model.flash_decode.sms;
    int groups = kv_heads > 0 && heads % kv_heads == 0 ? heads / kv_heads : 1;
    int query_heads = groups > 1 ? kv_heads : heads, query_rows = groups > 1 ? groups : 1;
    int block_n = head_dim <= 64 ? 256 : head_dim <= 128 ? 128 : 64;
    int blocks = ((int)a->seqlen_k + block_n - 1) / block_n;
    double query_blocks = (double)seqs * query_heads * ((query_rows + 63) / 64);
    int room = 2 * sms, splits = 1;
    if (query_blocks < 0.8 * room) {
        int most = blocks < room ? blocks : room;
        if (most > 128) most = 128;
        double best = 0, efficiency[129];
        for (int n = 1; n <= most; n++) {
            int eligible = n == 1 || (blocks + n - 1) / n != (blocks + n - 2) / (n - 1);
            double waves = query_blocks * n / room;
            efficiency[n] = eligible ? waves / ceil(waves) : 0;
            if (efficiency[n] > best) best = efficiency[n];
        }
        for (int n = 1; n <= most; n++)
            if (efficiency[n] > 0 && efficiency[n] >= 0.85 * best) { splits = n; break; }
    }
    double ctas = query_blocks * splits, per_cta = (blocks + splits - 1) / splits;
    double waves = ceil(ctas / (splits > 1 ? room : sms));
    const double *c = splits > 1 ? model.flash_decode.split : model.flash_decode.whole;
    return c[0] + c[1] * waves * per_cta + c[2] * waves + c[3] * (double)seqs * heads * head_dim * splits + c[4] * splits;
}

static double predict_attention(int backend, const attention_batch *a) {
    int phase = a->seqlen_q == 1 ? PHASE_DECODE : a->causal ? PHASE_PREFILL : -1;
    if (backend == ATT_SDPA_FLASH && phase == PHASE_DECODE && model.flash_decode.sms) return flash_decode_seconds(a);
    const attention_table *t =
        phase < 0 ? NULL : attention_table_for(backend, phase, (int)a->heads, (int)a->kv_heads, (int)a->head_dim);
    if (t) return table_seconds(t, a->seqs, phase == PHASE_DECODE ? a->seqlen_k : a->seqlen_q);
    return attention_linear(backend, a);
}

/* What the published-batch predictions return when a newer batch was published while they worked
 * (they are worked out again on that one). */
#define STALE_BATCH (-2.0)

/* What vLLM's Triton unified attention measured for a published batch: what it and the
 * FlashAttention 2 of vllm_flash_attn are charged (FlashAttention 3 too where the model file has
 * no model of it), carried to other SKUs as the Triton tables are (the model file's roofline
 * transfer). A batch of like sequences is interpolated in the
 * measured tables: all decoding at their mean context (a decode's time follows the K/V it reads,
 * the sum of the contexts), or all prefilling one prompt length. Other batches (decodes mixed with
 * prefills, chunks of prompts, prompts of several lengths) and 8-bit KV caches (the tables are
 * bf16) take the schedule of the Triton kernel's programs sharing the SMs over their KV tiles
 * (vgpu_attention_batch_triton_makespan; the linear model over the batch's work where the model
 * file has none). -1 when nothing is measured, STALE_BATCH when b is no longer the latest. */
static double measured_published_seconds(const vgpu_attention_batch *b) {
    if (!model.have_attention[ATT_VLLM_TRITON]) return -1;
    int phase = b->kv_element_bytes != 2 ? -1 : b->all_decode ? PHASE_DECODE : b->uniform_prefill ? PHASE_PREFILL : -1;
    const attention_table *t =
        phase < 0 ? NULL : attention_table_for(ATT_VLLM_TRITON, phase, b->heads, b->kv_heads, b->head_dim);
    if (t) return table_seconds(t, b->seqs, (phase == PHASE_DECODE ? b->context_tokens : b->query_tokens) / b->seqs);
    double kv_bytes = b->context_tokens * b->kv_heads * b->head_dim * 2 * b->kv_element_bytes;
    double flops = 4 * b->causal_pairs * b->heads * b->head_dim;
    double q_bytes = b->query_tokens * b->heads * b->head_dim * 2 * 2;
    const double *m = model.makespan[ATT_VLLM_TRITON];
    if (m[0] <= 0) return linear_in_work(ATT_VLLM_TRITON, b->seqs, kv_bytes, flops, q_bytes);
    double span = vgpu_attention_batch_triton_makespan(b->generation, (int)m[0], (int)m[1], m[2]);
    return span < 0 ? STALE_BATCH : m[3] + m[4] * span + m[5] * b->tile_work + m[6] * kv_bytes;
}

static double memory_seconds(vgpu_memory_class cls, double bytes);

/* FlashAttention 3 on a published batch (models.FittedModels.flash_attention_3_seconds). Never
 * measured (it cannot run on the lent GPUs): its CTAs' costs are calibrated to the FA3 paper's H100
 * figures and carried to other SKUs by the roofline. The launch and the makespan of its CTAs as
 * vLLM launches it (attention_batch.c works them out), or the time its bytes take on the memory
 * curve (K/V read once, Q read and O written), whichever is longer: decodes are the latter.
 * Between calibrated head sizes the per-element MMA time is linear in the head size, beyond them
 * the nearest's. STALE_BATCH if b is no longer the latest batch. */
static double fa3_published_seconds(const vgpu_attention_batch *b) {
    const fa3_model *m = &model.fa3;
    double d = b->head_dim, mma = m->mma[m->points - 1];
    if (d <= m->head_dim[0]) mma = m->mma[0];
    for (int j = 0; j + 1 < m->points; j++)
        if (m->head_dim[j] <= d && d < m->head_dim[j + 1])
            mma = m->mma[j] + (m->mma[j + 1] - m->mma[j]) * (d - m->head_dim[j]) / (m->head_dim[j + 1] - m->head_dim[j]);
    double makespan = vgpu_attention_batch_fa3_makespan(b->generation, m->sms, m->qo, mma + m->causal, m->masked);
    if (makespan < 0) return STALE_BATCH;
    double bytes = b->context_tokens * b->kv_heads * b->head_dim * 2 * b->kv_element_bytes +
                   b->query_tokens * b->heads * b->head_dim * 2 * 2;
    return fmax(m->launch + makespan, memory_seconds(VGPU_MEMORY_ELEMENTWISE, bytes));
}

/* What a kernel reading the engine's published batch (attention_batch.c; reader: its
 * VGPU_BATCH_READER_*) is charged for it. One prediction per published batch and model: a step's
 * launches of every layer share it. -1 when nothing is published or nothing measured. */
static double published_attention_seconds(int reader) {
    static __thread uint64_t cached_generation[2];
    static __thread double cached_seconds[2];
    int fa3 = reader == VGPU_BATCH_READER_FLASH_ATTENTION_3 && model.fa3.sms > 0;
    if (cached_generation[fa3] && vgpu_attention_batch_generation() == cached_generation[fa3]) return cached_seconds[fa3];
    vgpu_attention_batch b;
    double seconds;
    do {    /* CTAs and programs are worked out on the latest batch: one published meanwhile is charged */
        if (!vgpu_attention_batch_current(&b)) return -1;
        seconds = fa3 ? fa3_published_seconds(&b) : measured_published_seconds(&b);
    } while (seconds == STALE_BATCH);
    if (seconds < 0) return -1;
    cached_generation[fa3] = b.generation;
    cached_seconds[fa3] = seconds;
    return seconds;
}

static void forget_model(void) {
    for (size_t i = 0; i < model.n_curves; i++) free(model.curves[i].log_n), free(model.curves[i].log_s);
    for (size_t i = 0; i < model.n_tables; i++) {
        for (int j = 0; j < model.tables[i].n_curves; j++)
            free(model.tables[i].curves[j].log_y), free(model.tables[i].curves[j].log_s);
        free(model.tables[i].curves);
    }
    for (size_t i = 0; i < model.n_kernels; i++) free(model.kernels[i].name);
    for (size_t i = 0; i < model.n_collective_curves; i++)
        free(model.collective_curves[i].curve.log_n), free(model.collective_curves[i].curve.log_s);
    for (int i = 0; i < VGPU_MEMORY_CLASSES; i++) free(model.memory[i].log_n), free(model.memory[i].log_s);
    free(model.curves), free(model.slots), free(model.tables), free(model.kernels), free(model.collective_curves);
    free(model.efficient.m), free(model.cudnn.m);
    memset(&model, 0, sizeof model);
}

/* For emulator/predictor (accuracy, parity tests), in a process that launches nothing: load a
 * model file (replacing any loaded one), and the attention model for a batch of like sequences. */
/* For accuracy.py and the parity tests: what vLLM's Triton attention is charged for the latest
 * published batch (-1: none), and what FlashAttention 3's forward kernel is. */
VGPU_EXPORT double revati_predict_published_attention(void) {
    return published_attention_seconds(VGPU_BATCH_READER_MEASURED);
}

VGPU_EXPORT double revati_predict_published_flash_attention_3(void) {
    return published_attention_seconds(VGPU_BATCH_READER_FLASH_ATTENTION_3);
}

VGPU_EXPORT void revati_predictor_load(const char *model_path) {
    forget_model();
    vgpu_profiled_init(model_path);
}

VGPU_EXPORT double revati_predict_attention(const char *backend, double seqs, double query_len, double context_len,
                                            double heads, double kv_heads, double head_dim) {
    int b = name_index(attention_backends, ATT_BACKENDS, backend);
    if (b < 0) return -1;
    attention_batch a = {seqs, query_len, context_len, heads, kv_heads, head_dim,
                         query_len > 1 && query_len == context_len};
    return predict_attention(b, &a);
}

/* ---- other kernels --------------------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp(((const named_kernel *)a)->name, ((const named_kernel *)b)->name);
}

static void sort_kernels(void) { qsort(model.kernels, model.n_kernels, sizeof *model.kernels, by_name); }

/* Found by name once per function, then kept on the function itself. */
static const kernel_model *kernel_model_for(vgpu_function *fn) {
    const kernel_model *cached = __atomic_load_n((const kernel_model **)&fn->predictor_data, __ATOMIC_ACQUIRE);
    if (cached) return cached;
    static pthread_once_t sorted = PTHREAD_ONCE_INIT;
    pthread_once(&sorted, sort_kernels);
    named_kernel probe = {(char *)vgpu_function_display_name(fn), {0, 0, 0}};
    const named_kernel *found = bsearch(&probe, model.kernels, model.n_kernels, sizeof *model.kernels, by_name);
    const kernel_model *m = found ? &found->model : &model.kernel_default;
    __atomic_store_n((const kernel_model **)&fn->predictor_data, m, __ATOMIC_RELEASE);
    return m;
}

static double over(const rates *r, double bytes) { return r->present ? r->latency + bytes / r->per_second : 0; }

/* A memory-bound kernel moving `bytes` (read plus written): the curve measured for its class
 * (memory.csv), else the elementwise one, else the generic kernels' fitted floor plus the bytes at
 * the device-to-device copy rate (which counts each byte once: a copy reads and writes it). The
 * copy's own latency is not a kernel's: cudaMemcpy adds driver work a kernel launch does not. */
static double memory_seconds(vgpu_memory_class cls, double bytes) {
    const gemm_curve *c = model.memory[cls].points ? &model.memory[cls]
                        : model.memory[VGPU_MEMORY_ELEMENTWISE].points ? &model.memory[VGPU_MEMORY_ELEMENTWISE] : NULL;
    if (c) return curve_at(c, fmax(bytes, 1));
    const rates *d2d = &model.copy[COPY_D2D][0];
    return model.kernel_default.a + (d2d->present ? bytes / 2 / d2d->per_second : 0);
}

/* PyTorch's memory-efficient attention (fmha_cutlassF_*, from xFormers' AttentionKernel) takes
 * one Params by value: 7 pointers (query, key, value, attn_bias, seqstart_q, seqstart_k,
 * seqlen_k), a uint32, 3 output pointers, then (in newer PyTorch) an int32 window size, then the
 * float scale, head_dim, head_dim_value, num_queries, num_keys, num_keys_absolute and the uint8
 * custom mask type. Which of the two layouts a build has is told by the values: the head sizes
 * agree, and the scale is the softmax scale. Its grid is (query blocks, heads, batch). */
typedef struct efficient_batch { double batch, heads, queries, keys, head_dim, bias_bytes; int causal; } efficient_batch;

/* Whether fn is an fmha_cutlassF kernel: the name is searched once, then the answer is kept on fn
 * (a search of a demangled torch name at every launch costs more than the prediction). */
static int is_efficient_attention(vgpu_function *fn) {
    int known = __atomic_load_n(&fn->efficient_attention, __ATOMIC_ACQUIRE);
    if (!known) {
        known = strstr(vgpu_function_display_name(fn), "fmha_cutlassF") ? 1 : -1;
        __atomic_store_n(&fn->efficient_attention, known, __ATOMIC_RELEASE);
    }
    return known > 0;
}

static int efficient_attention_batch(const vgpu_launch *l, efficient_batch *out) {
    if (!l->function || !l->args || !l->args[0] || !is_efficient_attention(l->function)) return -1;
    const unsigned char *p = l->args[0];
    static const int head_dim_offsets[] = {96, 92};
    for (size_t i = 0; i < sizeof head_dim_offsets / sizeof *head_dim_offsets; i++) {
        int o = head_dim_offsets[i], d, dv, q, k;
        float scale;
        unsigned char mask;
        const void *bias;
        memcpy(&scale, p + o - 4, 4);
        memcpy(&d, p + o, 4), memcpy(&dv, p + o + 4, 4), memcpy(&q, p + o + 8, 4), memcpy(&k, p + o + 12, 4);
        memcpy(&mask, p + o + 20, 1);
        memcpy(&bias, p + 24, sizeof bias);
        if (d < 8 || d > 512 || dv != d || q < 1 || k < 1 || !(scale > 0 && scale <= 1)) continue;
        *out = (efficient_batch){l->grid[2], l->grid[1], q, k, d, bias ? 2.0 * q * k : 0, mask != 0};
        return 0;
    }
    return -1;
}

static int ceil_div_int(int a, int b) { return (a + b - 1) / b; }

/* The memory-efficient kernel's CTAs at head size d (models.efficient_ctas: its grid (query blocks,
 * heads, batch), x fastest, a causal CTA's key blocks ending at its last query's diagonal) sharing
 * the SMs (vgpu_runs_makespan). Its work terms grow with d past the model's own size. */
static double efficient_schedule_seconds(const efficient_model *m, const efficient_batch *a, double d) {
    int q_block = d <= 128 ? 64 : 32, k_block = d <= 64 ? 64 : 128;
    int q = (int)a->queries, kv = (int)a->keys, blocks = ceil_div_int(q, q_block), cta_heads = (int)(a->heads * a->batch);
    double weight = 1 + m->mask_weight * (a->bias_bytes > 0), extra = a->causal ? m->causal_extra : 0, total = 0;
    vgpu_run *runs = malloc((a->causal ? blocks : 1) * sizeof *runs);
    size_t n_runs = 0;
    if (!a->causal) {
        runs[n_runs++] = (vgpu_run){ceil_div_int(kv, k_block) * weight, blocks * cta_heads};
        total = (double)ceil_div_int(kv, k_block) * blocks * cta_heads;
    } else {
        int last = -1;
        for (int i = 0; i < blocks; i++) {
            int keys = (i + 1) * q_block + kv - q, n;
            keys = keys < kv ? keys : kv;
            n = ceil_div_int(keys > 1 ? keys : 1, k_block);
            if (n == last) runs[n_runs - 1].programs++;
            else runs[n_runs++] = (vgpu_run){n * weight + extra, 1};
            last = n;
            total += (double)n * cta_heads;
        }
    }
    double span = vgpu_runs_makespan(runs, n_runs, a->causal ? cta_heads : 1, m->sms, m->resident, m->latency);
    free(runs);
    return m->c[0] + (m->c[1] * span + m->c[2] * total) * d / m->head_dim + m->c[3] * a->bias_bytes;
}

/* One head size's model at head size d (its own, or another's scaled: the work terms grow with d). */
static double efficient_seconds(const efficient_model *m, const efficient_batch *a, double ctas, double d) {
    if (m->schedule) return efficient_schedule_seconds(m, a, d);
    if (m->query_tile) ctas = ceil(a->queries / m->query_tile) * a->heads * a->batch;
    /* A causal CTA stops at its diagonal: on average half its queries' block fewer keys. */
    double keys = a->causal ? fmax(a->keys - a->queries / 2, 1) : a->keys;
    double waves = fmax(m->whole_waves ? ceil(ctas / m->slots) : ctas / m->slots, 1);
    return m->c[0] + m->c[1] * waves + (m->c[2] + m->c[3] * a->causal) * waves * keys * d + m->c[4] * a->bias_bytes;
}

/* ctas: the launch's (unused by models that count their own, query_tile > 0 or schedule). */
static double predict_efficient_attention_uncached(const efficient_models *models, const efficient_batch *a,
                                                   double ctas) {
    /* The measured head sizes on either side of this one. Between two, the line between their
     * times (each model at its own size: the kernel's tiles change with it, so one size's model
     * says little of another's); past the measured ones, the nearest's model at this size. */
    const efficient_model *below = NULL, *above = NULL;
    for (size_t i = 0; i < models->n; i++) {
        const efficient_model *m = &models->m[i];
        if (m->head_dim <= a->head_dim && (!below || m->head_dim > below->head_dim)) below = m;
        if (m->head_dim >= a->head_dim && (!above || m->head_dim < above->head_dim)) above = m;
    }
    if (below && above && below != above) {
        double lo = efficient_seconds(below, a, ctas, below->head_dim), hi = efficient_seconds(above, a, ctas, above->head_dim);
        return lo + (hi - lo) * (a->head_dim - below->head_dim) / (above->head_dim - below->head_dim);
    }
    if (below || above) return efficient_seconds(below ? below : above, a, ctas, a->head_dim);
    /* Not measured at all: the flash kernel's time for the same work, plus the bias read at copy
     * speed. */
    attention_batch f = {a->batch, a->queries, a->keys, a->heads, a->heads, a->head_dim, a->causal};
    return predict_attention(ATT_SDPA_FLASH, &f) + memory_seconds(VGPU_MEMORY_ELEMENTWISE, a->bias_bytes);
}

/* The layers of a step launch one shape after another: the last prediction per thread is kept. */
static double predict_efficient_attention(const efficient_models *models, const efficient_batch *a, double ctas) {
    static __thread struct { const efficient_models *models; unsigned loads; efficient_batch a; double ctas, seconds; } last;
    unsigned loads = __atomic_load_n(&model_loads, __ATOMIC_ACQUIRE);
    if (last.loads == loads && last.models == models && last.ctas == ctas && last.a.batch == a->batch &&
        last.a.heads == a->heads && last.a.queries == a->queries && last.a.keys == a->keys &&
        last.a.head_dim == a->head_dim && last.a.bias_bytes == a->bias_bytes && last.a.causal == a->causal)
        return last.seconds;
    double seconds = predict_efficient_attention_uncached(models, a, ctas);
    last.models = models, last.loads = loads, last.a = *a, last.ctas = ctas, last.seconds = seconds;
    return seconds;
}

/* For accuracy.py: what a kernel of the class moving `bytes` is charged (-1: no such class). */
VGPU_EXPORT double revati_predict_memory(const char *cls, double bytes) {
    int i = name_index(memory_classes, VGPU_MEMORY_CLASSES, cls);
    return i < 0 ? -1 : memory_seconds((vgpu_memory_class)i, bytes);
}

/* For accuracy.py: one fmha_cutlassF launch of grid (query_blocks, heads, batch); mask: an
 * additive bf16 bias over queries x keys. */
VGPU_EXPORT double revati_predict_efficient_attention(double batch, double heads, double queries, double keys,
                                                      double head_dim, double mask, double causal,
                                                      double query_blocks) {
    efficient_batch a = {batch, heads, queries, keys, head_dim, mask != 0 ? 2.0 * queries * keys : 0, causal != 0};
    return predict_efficient_attention(&model.efficient, &a, query_blocks * heads * batch);
}

static double predict_kernel(const vgpu_launch *l) {
    attention_batch batch;
    efficient_batch efficient;
    vgpu_memory_class cls;
    double bytes;
    if (model.have_attention[ATT_SDPA_FLASH] && flash_attention_batch(l, &batch) == 0)
        return predict_attention(ATT_SDPA_FLASH, &batch);
    /* Its time is in the measured call, charged at the split kernel. */
    if (model.have_attention[ATT_SDPA_FLASH] && l->function &&
        strncmp(vgpu_function_display_name(l->function), "void pytorch_flash::flash_fwd_splitkv_combine_kernel<", 53) == 0)
        return 0;
    if (efficient_attention_batch(l, &efficient) == 0)
        return predict_efficient_attention(&model.efficient, &efficient, (double)l->grid[0] * l->grid[1] * l->grid[2]);
    int reader = l->function ? vgpu_function_reads_attention_batch(l->function) : 0;
    if (reader) {
        double seconds = published_attention_seconds(reader);
        if (seconds >= 0) return seconds;
    }
    /* Copies and gathers cap their grids, so only their bytes tell their time. An elementwise
     * kernel's grid grows with its elements: one measured by name keeps its own fitted line (it
     * knows the kernel's real traffic, fp32 intermediates included) over the launches it was
     * measured at; past them, the line's end plus the added bytes on the memory curve (a line
     * fitted where its intercept rules says little of the slope at gigabytes). Others go by bytes. */
    const kernel_model *m = l->function ? kernel_model_for(l->function) : &model.kernel_default;
    double threads = (double)l->grid[0] * l->grid[1] * l->grid[2] * l->block[0] * l->block[1] * l->block[2];
    if ((bytes = vgpu_kernel_memory_bytes(l, &cls)) >= 0) {
        int elementwise = cls == VGPU_MEMORY_ELEMENTWISE || cls == VGPU_MEMORY_ELEMENTWISE_STRIDED;
        if (!elementwise || m == &model.kernel_default) return memory_seconds(cls, bytes);
        if (threads > m->max_threads)
            return m->a + m->b * m->max_threads + memory_seconds(cls, bytes) -
                   memory_seconds(cls, bytes * m->max_threads / threads);
    }
    return m->a + m->b * threads;
}

/* ---- data movement and collectives ------------------------------------------------------------ */

static double predict_copy(const vgpu_launch *l) {
    int pinned = l->u.copy.pinned;
    switch (l->u.copy.direction) {
    case VGPU_COPY_H2D: return over(&model.copy[COPY_H2D][pinned], l->u.copy.bytes);
    case VGPU_COPY_D2H: return over(&model.copy[COPY_D2H][pinned], l->u.copy.bytes);
    case VGPU_COPY_H2H: return over(&model.copy[COPY_D2H][0], l->u.copy.bytes);    /* host memcpy: staged speed */
    default: return over(&model.copy[COPY_D2D][0], l->u.copy.bytes);              /* D2D, P2P */
    }
}

/* For accuracy.py: what a device-to-device memcpy of `bytes` is charged. */
VGPU_EXPORT double revati_predict_d2d_copy(double bytes) {
    vgpu_launch l = {.kind = VGPU_OP_COPY};
    l.u.copy.direction = VGPU_COPY_D2D;
    l.u.copy.bytes = (size_t)bytes;
    return predict_copy(&l);
}

/* The measured curve of (op, nranks), if any; send/recv's (two ranks) serves any communicator. */
static const gemm_curve *collective_curve_for(int op, int nranks) {
    if (op == COLL_SEND_RECV) nranks = 2;
    for (size_t i = 0; i < model.n_collective_curves; i++)
        if (model.collective_curves[i].op == op && model.collective_curves[i].nranks == nranks)
            return &model.collective_curves[i].curve;
    return NULL;
}

static double predict_collective(const vgpu_launch *l) {
    double n = l->u.coll.nranks, bytes = l->u.coll.bytes, bus, whole = bytes;   /* whole: the full buffer */
    int op;
    switch (l->u.coll.op) {
    case VGPU_COLL_ALL_REDUCE: op = COLL_ALL_REDUCE; bus = bytes * 2 * (n - 1) / n; break;
    case VGPU_COLL_CUSTOM_ALL_REDUCE: op = COLL_CUSTOM_ALL_REDUCE; bus = bytes * 2 * (n - 1) / n; break;
    case VGPU_COLL_ALL_GATHER: op = COLL_ALL_GATHER; bus = bytes * (n - 1); whole = bytes * n; break;  /* bytes: one rank's part */
    case VGPU_COLL_ALL_TO_ALL: op = COLL_ALL_GATHER; bus = bytes * (n - 1) / n; break;
    case VGPU_COLL_REDUCE_SCATTER: op = COLL_REDUCE_SCATTER; bus = bytes * (n - 1) / n; break;
    case VGPU_COLL_BROADCAST: case VGPU_COLL_REDUCE: op = COLL_BROADCAST; bus = bytes; break;
    default: op = COLL_SEND_RECV; bus = bytes; break;
    }
    const gemm_curve *c = n > 1 ? collective_curve_for(op, (int)n) : NULL;
    if (c) return curve_at(c, whole);
    const rates *r = &model.collective[op];
    if (!r->present) return 0;
    return n <= 1 ? r->latency : r->latency + bus / r->per_second;
}

/* For emulator/predictor (accuracy, parity tests): a collective by the model file's op name over
 * `whole` bytes (the full buffer), charged as the launch NCCL's interception would make. */
VGPU_EXPORT double revati_predict_collective(const char *op, double whole, double nranks) {
    static const vgpu_collective_op ops[COLL_COUNT] = {VGPU_COLL_ALL_REDUCE, VGPU_COLL_ALL_GATHER,
                                                       VGPU_COLL_REDUCE_SCATTER, VGPU_COLL_BROADCAST, VGPU_COLL_SEND,
                                                       VGPU_COLL_CUSTOM_ALL_REDUCE};
    int i = name_index(collective_names, COLL_COUNT, op);
    if (i < 0 || nranks < 1) return -1;
    vgpu_launch l = {.kind = VGPU_OP_COLLECTIVE};
    l.u.coll.op = ops[i];
    l.u.coll.nranks = (int)nranks;
    l.u.coll.bytes = (size_t)(ops[i] == VGPU_COLL_ALL_GATHER ? whole / nranks : whole);   /* one rank's part */
    return predict_collective(&l);
}

/* A fused attention kernel of known shape (cuDNN's SDPA, cudnn.c). One that reads a mask from
 * memory by cuDNN's own kernel time where the model has it (cudnn_attention records: one CTA per
 * query tile and head, each over every key, in whole waves); otherwise a flash-style kernel,
 * charged what SDPA's FlashAttention 2 measured for the same batch (unmasked cuDNN kernels were
 * too short to measure: cudnn_graphs.csv). */
static double predict_fused_attention(const vgpu_launch *l) {
    double q = l->u.attention.seqlen_q, k = l->u.attention.seqlen_k;
    if (l->u.attention.masked && model.cudnn.n) {
        efficient_batch a = {l->u.attention.batch, l->u.attention.heads, q, k, l->u.attention.head_dim, 2.0 * q * k,
                             l->u.attention.causal};
        return predict_efficient_attention(&model.cudnn, &a, 0);
    }
    attention_batch batch = {l->u.attention.batch, q, k, l->u.attention.heads, l->u.attention.kv_heads,
                             l->u.attention.head_dim, l->u.attention.causal};
    return predict_attention(ATT_SDPA_FLASH, &batch);
}

/* For accuracy.py and the parity tests: one cuDNN SDPA forward launch as cudnn.c makes it. */
VGPU_EXPORT double revati_predict_cudnn_attention(double batch, double heads, double kv_heads, double queries,
                                                  double keys, double head_dim, double causal, double masked) {
    vgpu_launch l = {.kind = VGPU_OP_ATTENTION};
    l.u.attention.batch = batch, l.u.attention.heads = heads, l.u.attention.kv_heads = kv_heads;
    l.u.attention.seqlen_q = queries, l.u.attention.seqlen_k = keys, l.u.attention.head_dim = head_dim;
    l.u.attention.causal = causal != 0, l.u.attention.masked = masked != 0;
    return predict_fused_attention(&l);
}

double vgpu_profiled_predict(const vgpu_launch *l) {
    switch (l->kind) {
    case VGPU_OP_GEMM: return predict_gemm(l);
    case VGPU_OP_KERNEL: return predict_kernel(l);
    case VGPU_OP_COPY: return predict_copy(l);
    case VGPU_OP_MEMSET: return over(&model.memset, l->u.copy.bytes);
    case VGPU_OP_COLLECTIVE: return predict_collective(l);
    case VGPU_OP_ATTENTION: return predict_fused_attention(l);
    default: return 0;
    }
}

/* ---- host work of replaced libraries ---------------------------------------------------------- */

double vgpu_profiled_predict_host(vgpu_host_work work, double host_scale) {
    return model.host_fixed[work] + (model.host_cost[work] - model.host_fixed[work]) * host_scale;
}
