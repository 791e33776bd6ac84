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
#include <string.h>

#include "vgpu.h"

/* vLLM's kernel_unified_attention (vllm/v1/attention/ops/triton_unified_attention.py): a program
 * per BLOCK_Q query tokens of a sequence and per KV head, BLOCK_M = 16 query rows (the heads that
 * share a KV head times BLOCK_Q; more heads: the next power of two) and KV tiles of 32 tokens,
 * each program going as far as its last query sees (causal). */
#define TRITON_TILE 32

static void add_triton_tiles(vgpu_attention_batch *b, int q, int ctx) {
    int per_kv = b->heads / (b->kv_heads > 0 ? b->kv_heads : 1), block_m = 16;
    while (block_m < per_kv) block_m *= 2;
    int block_q = block_m / (per_kv > 0 ? per_kv : 1);
    if (block_q < 1) block_q = 1;
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
static const char *const batch_kernels[] = {
    "void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<",    /* FA3 */
    "void flash::flash_fwd_kernel<",                                                         /* FA2 */
    "void flash::flash_fwd_splitkv_kernel<",
    "kernel_unified_attention",                                         /* vLLM's Triton attention */
};

int vgpu_function_reads_attention_batch(vgpu_function *fn) {
    int known = __atomic_load_n(&fn->attention_batch, __ATOMIC_ACQUIRE);
    if (known) return known > 0;
    const char *name = vgpu_function_display_name(fn);
    known = -1;
    for (size_t i = 0; i < sizeof batch_kernels / sizeof *batch_kernels; i++)
        if (strncmp(name, batch_kernels[i], strlen(batch_kernels[i])) == 0) known = 1;
    __atomic_store_n(&fn->attention_batch, known, __ATOMIC_RELEASE);
    return known > 0;
}
