/*
 * nsn.h: the C ABI of the native inference library (CPU and CUDA backends).
 *
 * Rules of this ABI:
 *  - Every function that can fail returns an nsn_status; on failure nsn_last_error() gives a
 *    human-readable message (process-wide, thread-safe, valid until the next failing call).
 *  - The library never exits, aborts or prints. Every argument is validated here: null
 *    handles, wrong sizes, out-of-range ids and values return NSN_E_INVALID.
 *  - Calls on one engine must not run concurrently (the TS side keeps one step in flight);
 *    calls may come from any thread (Deno nonblocking FFI), so backends set their device
 *    in every entry point.
 *  - All structs contain only 4- and 8-byte scalars, laid out without padding surprises,
 *    so the TS side fills them with DataView (see ffi/structs.ts).
 */
#ifndef NSN_H
#define NSN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NSN_ABI_VERSION 2
#define NSN_WINDOW 64 /* tokens per KV window = per page */
#define NSN_MAX_TOP_N 20 /* max top-N logprobs per position */
#define NSN_MAX_STOP_IDS 8

typedef enum nsn_status {
  NSN_OK = 0,
  NSN_E_INVALID = 1,     /* bad argument */
  NSN_E_OOM = 2,         /* KV pool (or host/device memory) exhausted; the step did nothing */
  NSN_E_UNSUPPORTED = 3, /* valid but unsupported (e.g. head_dim 96, kv_bits 4) */
  NSN_E_BACKEND = 4,     /* CUDA / cuBLAS failure */
  NSN_E_NO_DEVICE = 5,   /* CUDA backend asked for, but no build support or no GPU */
  NSN_E_STATE = 6,       /* call not valid now (weights missing, engine not finalized...) */
  NSN_E_INTERNAL = 7,    /* invariant broken / injected fault */
} nsn_status;

typedef enum nsn_backend { NSN_BACKEND_AUTO = 0, NSN_BACKEND_CPU = 1, NSN_BACKEND_CUDA = 2 } nsn_backend;

typedef enum nsn_dtype { NSN_F32 = 0, NSN_F16 = 1, NSN_BF16 = 2 } nsn_dtype;

/* Weight slots. Shapes follow HF Linear layout [out][in], row-major. layer = -1 for globals. */
typedef enum nsn_weight_slot {
  NSN_W_EMBED = 0,      /* [vocab][hidden] */
  NSN_W_FINAL_NORM = 1, /* [hidden] */
  NSN_W_LM_HEAD = 2,    /* [vocab][hidden]; omit when tie_embeddings */
  NSN_W_ATTN_NORM = 3,  /* [hidden] */
  NSN_W_Q = 4,          /* [n_heads*head_dim][hidden] */
  NSN_W_K = 5,          /* [n_kv_heads*head_dim][hidden] */
  NSN_W_V = 6,          /* [n_kv_heads*head_dim][hidden] */
  NSN_W_O = 7,          /* [hidden][n_heads*head_dim] */
  NSN_W_Q_BIAS = 8,     /* [n_heads*head_dim]   only when qkv_bias */
  NSN_W_K_BIAS = 9,     /* [n_kv_heads*head_dim] */
  NSN_W_V_BIAS = 10,    /* [n_kv_heads*head_dim] */
  NSN_W_MLP_NORM = 11,  /* [hidden] */
  NSN_W_GATE = 12,      /* [intermediate][hidden] */
  NSN_W_UP = 13,        /* [intermediate][hidden] */
  NSN_W_DOWN = 14,      /* [hidden][intermediate] */
  NSN_W_COUNT = 15
} nsn_weight_slot;

typedef enum nsn_rope_scaling { NSN_ROPE_NONE = 0, NSN_ROPE_LLAMA3 = 1, NSN_ROPE_LINEAR = 2 } nsn_rope_scaling;

/* The model spec: filled from config.json by models/config.ts. 64 bytes of int32/float. */
typedef struct nsn_model_config {
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t intermediate_size;
  int32_t n_layers;
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t head_dim; /* 64, 128 or 256 */
  int32_t max_position;
  float rms_eps;
  float rope_theta;
  int32_t rope_scaling; /* nsn_rope_scaling */
  float rope_factor;
  float rope_low_freq_factor;
  float rope_high_freq_factor;
  int32_t rope_original_max_position;
  int32_t flags; /* bit0: tie_embeddings, bit1: qkv_bias */
} nsn_model_config;

#define NSN_MODEL_TIED 1
#define NSN_MODEL_QKV_BIAS 2

/* KV quantization method (engine-wide; kv_bits stays per sequence). */
#define NSN_QUANT_NSN 0
#define NSN_QUANT_RTN 1 /* KIVI-style round-to-nearest baseline: K per channel, V per token/32 */
/* NSN ablation flags */
#define NSN_ABL_NO_NORM1 1
#define NSN_ABL_NO_SHIFT 2
#define NSN_ABL_NO_HADAMARD 4
/* Fidelity ablations, CPU reference only (the CUDA backend rejects them; default bytes unchanged):
 * FP_S1: s1 in fp32 instead of 4 bits; FP_MEAN: the window mean in fp32 instead of 4 bits (both
 * kept beside the block, not in it);
 * NO_S2ADJ: store s2 instead of s2' = s2 |y|^2 / <y, y^>;
 * S2_LS: store the least-squares scale s2 <y, y^> / |y^|^2 instead of s2'. */
#define NSN_ABL_FP_S1 8
#define NSN_ABL_NO_S2ADJ 16
#define NSN_ABL_S2_LS 32
#define NSN_ABL_FP_MEAN 64
#define NSN_ABL_CPU_ONLY (NSN_ABL_FP_S1 | NSN_ABL_NO_S2ADJ | NSN_ABL_S2_LS | NSN_ABL_FP_MEAN)

typedef struct nsn_engine_options {
  int32_t backend;          /* nsn_backend */
  int32_t n_threads;        /* CPU threads; 0 = all cores */
  int32_t max_seqs;         /* sequence slots = rows one step may hold (0 = 16384) */
  int32_t max_step_tokens;  /* max tokens in one nsn_step (0 = 2048) */
  uint64_t kv_pool_bytes;   /* KV arena size (0 = backend default: CPU 256 MiB, CUDA 90% of free) */
  int32_t device;           /* CUDA ordinal */
  int32_t quant_method;     /* NSN_QUANT_* */
  int32_t ablation;         /* NSN_ABL_* bits (NSN method only) */
  int32_t debug_checks;     /* 1: verify the sequence slots after every step */
} nsn_engine_options;

typedef struct nsn_engine nsn_engine;

/*
 * The KV arena and its page ids. The arena is cut into n_slabs slabs of one fp16 page each; a
 * slab can hold pages_per_slab[k] pages of kind k. The caller (the TS scheduler) owns all page
 * bookkeeping: which slab serves which kind, which page belongs to whom, reference counts,
 * the prefix cache. Page id i of kind k lives at byte
 *   (i / pages_per_slab[k]) * page_bytes[0] + (i % pages_per_slab[k]) * page_bytes[k],
 * and ids of kind k range over [0, n_slabs * pages_per_slab[k]).
 * Index 0: kv_bits 16, 1: kv_bits 2, 2: kv_bits 1.
 */
typedef struct nsn_engine_info {
  int32_t backend;             /* resolved: NSN_BACKEND_CPU or NSN_BACKEND_CUDA */
  int32_t max_seqs;
  int32_t max_step_tokens;
  int32_t n_threads;
  uint64_t kv_pool_bytes;      /* arena size */
  uint64_t n_slabs;            /* floor(kv_pool_bytes / page_bytes[0]) */
  uint64_t page_bytes[3];      /* one page = 64 tokens x all layers x kv heads x (K,V) */
  uint64_t pages_per_slab[3];  /* floor(page_bytes[0] / page_bytes[k]) */
  uint64_t page_ids[3];        /* n_slabs * pages_per_slab[k]: ids of kind k are below this */
  uint64_t token_bytes[3];     /* exact bytes per token (all layers), metadata included */
  uint64_t weight_bytes;       /* resident weight memory */
  int32_t seqs_in_use;
  int32_t graph_steps;         /* CUDA backend: decode steps whose layer loop ran as a CUDA graph
                                  (saturates at INT32_MAX; 0 on the CPU backend or with graphs off) */
  char device_name[64];
} nsn_engine_info;

/* Per-sequence sampling parameters (set once per sequence). */
typedef struct nsn_sampling {
  float temperature;        /* 0 = greedy */
  float top_p;              /* (0,1], 1 = off */
  float min_p;              /* [0,1], 0 = off */
  float presence_penalty;   /* [-2,2], output tokens */
  float frequency_penalty;  /* [-2,2], output tokens */
  float repetition_penalty; /* > 0, 1 = off; prompt + output tokens (vLLM semantics) */
  int32_t top_k;            /* 0 or -1 = off */
  int32_t n_prompt;         /* tokens fed at positions < n_prompt are the prompt */
  int32_t min_tokens;       /* stop_ids are banned until this many output tokens exist */
  int32_t n_stop_ids;       /* <= NSN_MAX_STOP_IDS */
  int32_t stop_ids[NSN_MAX_STOP_IDS];
  uint64_t seed;            /* sampling stream: token at position p uses hash(seed, p) */
} nsn_sampling;

/*
 * One row of a step: a sequence's chunk and its page table. With end = pos0 + n_tokens:
 *  - kv_bits 16: n_pages = ceil(end / 64) fp16 pages, page w holding window w;
 *  - kv_bits 1/2: n_pages = floor(end / 64) quantized pages, one per complete window, and
 *    tail_page, the fp16 page of the exact tokens of the incomplete window.
 * The step writes only the pages of windows that receive tokens in it (w >= pos0 / 64) and
 * the tail; earlier pages are read only, so they may be shared between rows and steps.
 */
typedef struct nsn_seq_input {
  int32_t seq;            /* slot from nsn_seq_create (kv_bits, sampling parameters) */
  int32_t pos0;           /* tokens already in the cache: the chunk takes positions pos0.. */
  int32_t n_tokens;       /* >= 1 */
  int32_t token_offset;   /* index of its first token in the step's tokens[] */
  int32_t sample;         /* 1: sample one token from the last position's distribution */
  int32_t want_logprobs;  /* 1: fill pos_logprob / pos_top_* for every position of this chunk */
  int32_t next_token;     /* with want_logprobs: the token that follows the chunk (-1 unknown) */
  int32_t page_offset;    /* its first page id in the step's pages[] */
  int32_t n_pages;        /* see above */
  int32_t tail_page;      /* kv_bits 1/2: fp16 page id of the tail; -1 for kv_bits 16 */
  int32_t history_offset; /* its pos0 earlier tokens in the step's history[], or -1 when its
                             sampling has no penalty (repetition/presence/frequency) */
  int32_t reserved;       /* must be 0 */
} nsn_seq_input;

/* One sequence's result of a step (when sample == 1). Logprobs are of the raw model
 * distribution (log_softmax of the logits, before temperature/penalties), like vLLM. */
typedef struct nsn_seq_output {
  int32_t token;   /* sampled id, or -1 */
  float logprob;   /* raw logprob of the sampled id */
  int32_t top_ids[NSN_MAX_TOP_N];
  float top_logprobs[NSN_MAX_TOP_N];
} nsn_seq_output;

const char* nsn_last_error(void);
int32_t nsn_abi_version(void);
/* 1 when the library was built with CUDA support and a CUDA device is visible. */
int32_t nsn_cuda_available(void);

nsn_status nsn_engine_create(const nsn_model_config* cfg, const nsn_engine_options* opts,
                             nsn_engine** out);
/* Copies one tensor (converted to the backend's precision). n_elements must match the slot. */
nsn_status nsn_engine_set_weight(nsn_engine* e, int32_t slot, int32_t layer, int32_t dtype,
                                 const void* data, uint64_t n_elements);
/* Fills every weight with deterministic random values (synthetic benchmark models). */
nsn_status nsn_engine_init_random(nsn_engine* e, uint64_t seed);
/* Checks that every required weight is present and allocates the KV arena. */
nsn_status nsn_engine_finalize(nsn_engine* e);
nsn_status nsn_engine_get_info(nsn_engine* e, nsn_engine_info* out);
void nsn_engine_destroy(nsn_engine* e); /* null is fine */

/* A sequence slot holds a row's kv_bits and sampling parameters; no pages, no tokens. */
nsn_status nsn_seq_create(nsn_engine* e, int32_t kv_bits, int32_t* seq_out);
nsn_status nsn_seq_free(nsn_engine* e, int32_t seq);
nsn_status nsn_seq_set_sampling(nsn_engine* e, int32_t seq, const nsn_sampling* params,
                                const int32_t* bias_ids, const float* bias_values, int32_t n_bias);
/*
 * One forward step over a batch: each row appends its tokens (a prefill chunk or one decode
 * token; rows of different kv_bits mix freely) to the pages its table names, then sampled
 * tokens and logprobs come back. Page ids are checked against the arena (and no page may be
 * written by two rows); NSN_E_INVALID leaves every page untouched.
 * Attention: a token at position p reads the encoded pages of the complete windows
 * w < (p + 1) / 64 (kv_bits 1/2) and exact fp16 K/V for the rest of its own window, however the
 * sequence was split into chunks; at kv_bits 16 everything is exact.
 *   seqs      [n_seqs]
 *   tokens    [n_tokens]                    all chunks, concatenated
 *   pages     [n_pages]                     every row's page table, at its page_offset
 *   history   [n_history]                   earlier tokens of the rows that need them
 *   out       [n_seqs]                      may be null when no seq samples
 *   pos_logprob      [n_tokens]             logprob of the following token per position, or null
 *   pos_top_ids      [n_tokens][top_n]      or null
 *   pos_top_logprobs [n_tokens][top_n]      or null
 *   logits    [n_tokens][vocab] float32     full logits of every position (tests), or null
 */
nsn_status nsn_step(nsn_engine* e, const nsn_seq_input* seqs, int32_t n_seqs,
                    const int32_t* tokens, int32_t n_tokens, const int32_t* pages,
                    int32_t n_pages, const int32_t* history, int32_t n_history,
                    int32_t top_n, nsn_seq_output* out,
                    float* pos_logprob, int32_t* pos_top_ids, float* pos_top_logprobs,
                    float* logits);

/* ---- test and debug entry points ---- */

/* K/V of tokens [start, start+count) of one layer/kv head of a cache of len tokens whose page
 * table is pages[n_pages] (+ tail_page), as nsn_seq_input describes it: dequantized for
 * encoded windows, exact for the fp16 tail; keys post-RoPE. [count][head_dim] */
nsn_status nsn_seq_read_kv(nsn_engine* e, int32_t kv_bits, const int32_t* pages, int32_t n_pages,
                           int32_t tail_page, int32_t len, int32_t layer, int32_t kv_head,
                           int32_t start, int32_t count, float* k_out, float* v_out);
/* Verifies the sequence slots; NSN_E_INTERNAL with a message if not. */
nsn_status nsn_engine_check(nsn_engine* e);
/* Makes the next nsn_step fail with NSN_E_INTERNAL before touching anything (fault tests). */
nsn_status nsn_engine_inject_fault(nsn_engine* e, int32_t n_steps);

/*
 * Standalone quantizer, for tests and tools (CPU reference code, no engine):
 * Encodes x [n_tokens][head_dim] (keys pre-RoPE when is_key) with NSN (or RTN) at kv_bits 1/2,
 * window by window (n_tokens a multiple of 64; token t has position pos0 + t), and writes the
 * reconstruction (keys post-RoPE) to x_hat [n_tokens][head_dim].
 */
nsn_status nsn_quant_roundtrip(int32_t kv_bits, int32_t quant_method, int32_t ablation,
                               int32_t head_dim, int32_t is_key, float rope_theta, int32_t pos0,
                               const float* x, int32_t n_tokens, float* x_hat);
/*
 * Single-query-group attention over a cache built from K (pre-RoPE) / V [n_ctx][head_dim]:
 * complete windows quantized at kv_bits, the rest exact. q [n_q][head_dim] (post-RoPE, the GQA
 * heads sharing this KV head, all at position n_ctx-1). mode 0: the fast path that reads the
 * codes directly; mode 1: attention over explicitly dequantized K/V. out [n_q][head_dim].
 */
nsn_status nsn_quant_attention(int32_t kv_bits, int32_t head_dim, float rope_theta,
                               const float* k, const float* v, int32_t n_ctx, const float* q,
                               int32_t n_q, int32_t mode, float* out);
/* The compiled-in codebook: bits 1 -> 256x8 N(0,1) centroids, 2 -> 256x8 |N(0,1)| centroids. */
nsn_status nsn_codebook(int32_t bits, float* out_256x8);

#ifdef __cplusplus
}
#endif
#endif /* NSN_H */
