/* attention_batch.c: the batch that attention kernels work on, as the engine publishes it.
 *
 * Some attention kernels carry their batch in device memory only (FlashAttention 3 and
 * vllm_flash_attn's FlashAttention 2 read sequence lengths from device arrays; vLLM's Triton
 * unified attention too), so the predictor cannot see their work in their arguments. The engine
 * knows it on the host: emulator/engines/vllm_plugin/ wraps vLLM's attention metadata builders and
 * calls revati_attention_batch with every step's composition before the step's kernels launch
 * (or its CUDA graph replays). Kernels recognised here by name are then charged for that batch.
 *
 * Each process publishes its own (every tensor-parallel rank builds the same batch with its own
 * heads). The latest one stands until the next; a generation number lets the predictor keep one
 * prediction per batch instead of one per launch.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu.h"

/* vLLM's kernel_unified_attention (vllm/v1/attention/ops/triton_unified_attention.py): a program
 * per BLOCK_Q query tokens of a sequence and per KV head, BLOCK_M = 16 query rows (the heads that
 * share a KV head times BLOCK_Q; more heads: the next power of two) and KV tiles of 32 tokens,
 * each program going as far as its last query sees (causal). */
#define TRITON_TILE 32

static int triton_block_q(int heads, int kv_heads) {
    int per_kv = heads / (kv_heads > 0 ? kv_heads : 1), block_m = 16;
    while (block_m < per_kv) block_m *= 2;
    int block_q = block_m / (per_kv > 0 ? per_kv : 1);
    return block_q < 1 ? 1 : block_q;
}

static void add_triton_tiles(vgpu_attention_batch *b, int q, int ctx) {
    int block_q = triton_block_q(b->heads, b->kv_heads);
    for (int first = 0; first < q; first += block_q) {
        int last = first + block_q < q ? first + block_q : q;
        double tiles = ceil((double)(ctx - q + last) / TRITON_TILE);
        b->tile_work += tiles * b->kv_heads;
        if (tiles > b->longest_tiles) b->longest_tiles = tiles;
    }
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static vgpu_attention_batch current;
static uint64_t generation;     /* current.generation, readable without the lock */
/* current's sequences with work, for FlashAttention 3's CTAs (worked out only if one launches). */
typedef struct sequence { int q, ctx; } sequence;
static sequence *sequences;
static int n_sequences, sequences_cap;

/* query_start_loc[num_seqs + 1] (cumulative query tokens, as vLLM keeps them) and
 * seq_lens[num_seqs] (tokens in each sequence's context, its query included). Rows without query
 * tokens or context are CUDA-graph padding: they cost a real kernel next to nothing, so they are
 * dropped. kv_element_bytes is the KV cache's element size (2 for bf16/fp16, 1 for fp8). */
VGPU_EXPORT void revati_attention_batch(int num_seqs, const int32_t *query_start_loc, const int32_t *seq_lens,
                                        int heads, int kv_heads, int head_dim, int kv_element_bytes) {
    vgpu_attention_batch b = {.heads = heads, .kv_heads = kv_heads, .head_dim = head_dim,
                              .kv_element_bytes = kv_element_bytes, .all_decode = 1, .uniform_prefill = 1};
    int prompt = -1;
    for (int i = 0; i < num_seqs; i++) {
        int q = query_start_loc[i + 1] - query_start_loc[i], ctx = seq_lens[i];
        if (q <= 0 || ctx <= 0) continue;
        b.seqs++;
        b.query_tokens += q;
        b.context_tokens += ctx;
        b.causal_pairs += q * (ctx - q / 2.0);
        add_triton_tiles(&b, q, ctx);
        if (q != 1) b.all_decode = 0;
        if (q != ctx || (prompt >= 0 && q != prompt)) b.uniform_prefill = 0;
        prompt = q;
    }
    pthread_mutex_lock(&lock);
    if (num_seqs > sequences_cap) {
        sequences_cap = num_seqs;
        sequences = realloc(sequences, sequences_cap * sizeof *sequences);
    }
    n_sequences = 0;
    for (int i = 0; i < num_seqs; i++) {
        int q = query_start_loc[i + 1] - query_start_loc[i], ctx = seq_lens[i];
        if (q > 0 && ctx > 0) sequences[n_sequences++] = (sequence){q, ctx};
    }
    b.generation = current.generation + 1;
    current = b;
    __atomic_store_n(&generation, b.generation, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&lock);
}

uint64_t vgpu_attention_batch_generation(void) { return __atomic_load_n(&generation, __ATOMIC_ACQUIRE); }

int vgpu_attention_batch_current(vgpu_attention_batch *out) {
    pthread_mutex_lock(&lock);
    *out = current;
    pthread_mutex_unlock(&lock);
    return out->generation != 0 && out->seqs > 0;
}

/* Forward kernels only: FlashAttention's split-KV combine kernels (FlashAttnFwdCombine,
 * flash_fwd_splitkv_combine_kernel) and the Triton path's reduce_segments do work of their own
 * size and keep the per-kernel model. */
static const struct { const char *prefix; int reader; } batch_kernels[] = {
    {"void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<",
     VGPU_BATCH_READER_FLASH_ATTENTION_3},
    {"void flash::flash_fwd_kernel<", VGPU_BATCH_READER_MEASURED},                          /* FA2 */
    {"void flash::flash_fwd_splitkv_kernel<", VGPU_BATCH_READER_MEASURED},
    {"kernel_unified_attention", VGPU_BATCH_READER_MEASURED},           /* vLLM's Triton attention */
};

int vgpu_function_reads_attention_batch(vgpu_function *fn) {
    int known = __atomic_load_n(&fn->attention_batch, __ATOMIC_ACQUIRE);
    if (known) return known > 0 ? known : 0;
    const char *name = vgpu_function_display_name(fn);
    known = -1;
    for (size_t i = 0; i < sizeof batch_kernels / sizeof *batch_kernels; i++)
        if (strncmp(name, batch_kernels[i].prefix, strlen(batch_kernels[i].prefix)) == 0) known = batch_kernels[i].reader;
    __atomic_store_n(&fn->attention_batch, known, __ATOMIC_RELEASE);
    return known > 0 ? known : 0;
}

/* ---- FlashAttention 3's CTAs (emulator/predictor/models.py, fa3_ctas: the reference) ---------- */

/* Query rows and keys of a CTA's tile, and the head size of the kernel, as vLLM launches FA3 on
 * Hopper: bf16, causal, a paged KV cache of pages too small for TMA (models.fa3_tile). */
typedef struct fa3_tile { int rows, keys, dim; } fa3_tile;

static fa3_tile fa3_tile_for(int head_dim) {
    if (head_dim <= 64) return (fa3_tile){192, 128, 64};
    if (head_dim <= 96) return (fa3_tile){192, 128, 96};
    if (head_dim <= 128) return (fa3_tile){128, 128, 128};
    if (head_dim <= 192) return (fa3_tile){128, 96, 192};
    return (fa3_tile){128, 80, 256};
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* FA3's split-KV count for a causal launch (models.fa3_num_splits, hopper/heuristics.h). */
static int fa3_num_splits(int total_m_blocks, int sms, int kv_blocks) {
    if (total_m_blocks >= 0.8 * sms || kv_blocks <= 4) return 1;
    int most = kv_blocks < sms ? kv_blocks : sms;
    if (most > 128) most = 128;
    double best = 0;
    for (int s = 1; s <= most; s++) {
        double waves = (double)total_m_blocks * s / sms;
        if (waves / ceil(waves) > best) best = waves / ceil(waves);
    }
    for (int s = 1; s <= most; s++) {
        double waves = (double)total_m_blocks * s / sms;
        if (waves / ceil(waves) >= 0.85 * best) return s;
    }
    return 1;
}

/* A min-heap of the SMs' busy times: the root is the SM that frees first. */
static void load_root(double *heap, int n, double load) {
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && heap[child + 1] < heap[child]) child++;
        if (heap[child] >= load) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = load;
}

typedef struct fa3_order { int index, splits, key; } fa3_order;

/* Longest first (keys per split less queries, in whole tiles), then as published. */
static int longest_first(const void *a, const void *b) {
    const fa3_order *x = a, *y = b;
    return x->key != y->key ? (x->key < y->key ? 1 : -1) : x->index - y->index;
}

/* FA3 splits K/V per sequence for at most this many: the one CTA that prepares its schedule
 * handles that many (hopper/flash_prepare_scheduler.cu); more get no splits. */
#define FA3_DYNAMIC_SPLIT_SEQS 992

double vgpu_attention_batch_fa3_makespan(uint64_t generation_wanted, int sms, double qo_s, double mma_s,
                                         double masked_s) {
    pthread_mutex_lock(&lock);
    if (current.generation != generation_wanted || sms < 1 || n_sequences < 1) {
        pthread_mutex_unlock(&lock);
        return -1;
    }
    fa3_tile t = fa3_tile_for(current.head_dim);
    int kv_heads = current.kv_heads > 0 ? current.kv_heads : 1, per_kv = current.heads / kv_heads;
    if (per_kv < 1) per_kv = 1;
    int max_q = 0, max_ctx = 0;
    double total_blocks = 0;
    for (int i = 0; i < n_sequences; i++) {
        if (sequences[i].q > max_q) max_q = sequences[i].q;
        if (sequences[i].ctx > max_ctx) max_ctx = sequences[i].ctx;
        total_blocks += (double)ceil_div(sequences[i].q * per_kv, t.rows) * ceil_div(sequences[i].ctx, t.keys);
    }
    int most = fa3_num_splits(kv_heads * ceil_div(max_q * per_kv, t.rows), sms, ceil_div(max_ctx, t.keys));
    double per_sm = ceil(total_blocks * 1.1 * kv_heads / sms);
    fa3_order *order = malloc(n_sequences * sizeof *order);
    for (int i = 0; i < n_sequences; i++) {
        int m_blocks = ceil_div(sequences[i].q * per_kv, t.rows), kv_blocks = ceil_div(sequences[i].ctx, t.keys);
        int splits = 1;
        if (most > 1 && n_sequences <= FA3_DYNAMIC_SPLIT_SEQS) {
            splits = (int)ceil(kv_blocks / per_sm);
            splits = splits > most ? most : splits < 1 ? 1 : splits;
        }
        order[i] = (fa3_order){i, splits, ceil_div(kv_blocks, splits) * t.keys - m_blocks * t.rows};
    }
    qsort(order, n_sequences, sizeof *order, longest_first);
    /* Each sequence's query blocks last (longest) first, then its KV heads, then its splits, each
     * CTA to the SM that frees first. */
    double *free_at = calloc(sms, sizeof *free_at);
    double per_cta = qo_s * t.rows * t.dim, per_block = mma_s * t.rows * t.keys * t.dim;
    double per_masked = masked_s * t.rows * t.keys;
    for (int o = 0; o < n_sequences; o++) {
        const sequence *s = &sequences[order[o].index];
        int rows = s->q * per_kv, cached = s->ctx - s->q, kv_blocks = ceil_div(s->ctx, t.keys);
        for (int first = (rows - 1) / t.rows * t.rows; first >= 0; first -= t.rows) {
            int last = (first + t.rows < rows ? first + t.rows : rows) - 1;
            int end = ceil_div(cached + last / per_kv + 1, t.keys), mask_from = (cached + first / per_kv) / t.keys;
            if (end > kv_blocks) end = kv_blocks;
            int per_split = ceil_div(end, order[o].splits);
            for (int h = 0; h < kv_heads; h++)
                for (int split = 0; split < order[o].splits; split++) {
                    int lo = split * per_split, hi = lo + per_split < end ? lo + per_split : end;
                    int blocks = hi > lo ? hi - lo : 0, masked = hi - (lo > mask_from ? lo : mask_from);
                    load_root(free_at, sms, free_at[0] + per_cta + per_block * blocks + per_masked * (masked > 0 ? masked : 0));
                }
        }
    }
    pthread_mutex_unlock(&lock);
    double makespan = 0;
    for (int i = 0; i < sms; i++) makespan = fmax(makespan, free_at[i]);
    free(free_at);
    free(order);
    return makespan;
}

/* ---- programs sharing the SMs (emulator/predictor/models.py, triton_schedule and triton_makespan:
 * the reference) ----------------------------------------------------------------------------- */

/* In the heap: programs started together, ending when `ends` of work has been served to every
 * running program. */
typedef struct running_group { double ends; int programs; } running_group;

static void running_push(running_group *heap, int *n, running_group r) {
    int i = (*n)++;
    while (i > 0 && heap[(i - 1) / 2].ends > r.ends) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = r;
}

static running_group running_pop(running_group *heap, int *n) {
    running_group top = heap[0], last = heap[--*n];
    int i = 0;
    for (;;) {
        int child = 2 * i + 1;
        if (child >= *n) break;
        if (child + 1 < *n && heap[child + 1].ends < heap[child].ends) child++;
        if (heap[child].ends >= last.ends) break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n) heap[i] = last;
    return top;
}

double vgpu_runs_makespan(const vgpu_run *runs, size_t n_runs, int repeats, int sms, int resident, double latency) {
    if (n_runs < 1 || repeats < 1 || sms < 1 || resident < 1) return 0;
    /* Programs start in order while fewer than `resident` per SM run; running programs advance
     * alike, a unit of work per `latency` while few run, sharing one unit per SM per unit of time
     * when more than `latency` per SM do. */
    int capacity = sms * resident, active = 0, n_heap = 0, round = 0;
    running_group *heap = malloc((capacity + 1) * sizeof *heap);
    size_t r = 0;
    int left = runs[0].programs;
    double served = 0, makespan = 0;
    for (;;) {
        while (active < capacity && left) {
            int start = left < capacity - active ? left : capacity - active;
            running_push(heap, &n_heap, (running_group){served + runs[r].work, start});
            active += start;
            left -= start;
            while (!left) {
                if (++r == n_runs) r = 0, round++;
                if (round == repeats) break;
                left = runs[r].programs;
            }
        }
        if (!n_heap) break;
        running_group done = running_pop(heap, &n_heap);
        makespan += (done.ends - served) * fmax(latency, (double)active / sms);
        served = done.ends;
        active -= done.programs;
    }
    free(heap);
    return makespan;
}

/* ---- vLLM's Triton attention: its programs sharing the SMs (models.py, triton_programs) ------ */

double vgpu_attention_batch_triton_makespan(uint64_t generation_wanted, int sms, int resident, double latency) {
    pthread_mutex_lock(&lock);
    if (current.generation != generation_wanted || sms < 1 || resident < 1 || n_sequences < 1) {
        pthread_mutex_unlock(&lock);
        return -1;
    }
    /* One KV head's programs in grid order (x fastest: each sequence's query blocks in turn), as
     * runs of programs reading as many KV tiles; the grid's y repeats them for every KV head. */
    int kv_heads = current.kv_heads > 0 ? current.kv_heads : 1, block_q = triton_block_q(current.heads, kv_heads);
    size_t most = 0, n_runs = 0;
    for (int i = 0; i < n_sequences; i++) most += ceil_div(sequences[i].q, block_q);
    vgpu_run *runs = malloc(most * sizeof *runs);
    for (int i = 0; i < n_sequences; i++) {
        int q = sequences[i].q, ctx = sequences[i].ctx;
        for (int first = 0, own = 0; first < q; first += block_q, own = 1) {
            double tiles = ceil_div(ctx - q + (first + block_q < q ? first + block_q : q), TRITON_TILE);
            if (own && runs[n_runs - 1].work == tiles) runs[n_runs - 1].programs++;
            else runs[n_runs++] = (vgpu_run){tiles, 1};
        }
    }
    pthread_mutex_unlock(&lock);
    double makespan = vgpu_runs_makespan(runs, n_runs, kv_heads, sms, resident, latency);
    free(runs);
    return makespan;
}
