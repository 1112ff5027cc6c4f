// The one Deno.dlopen table of libnsn: mirrors cuda/include/nsn.h one to one, in header order.
// Structs travel as "buffer" (a Uint8Array filled by ffi/structs.ts); the opaque engine handle
// travels as "pointer". uint64_t maps to "u64" and is passed as a BigInt. Calls that can run
// for long (a forward step, weight conversion, KV arena allocation) are nonblocking so the
// event loop keeps serving HTTP; the caller keeps exactly one of them in flight per engine.

export const NSN_SYMBOLS = {
  // const char* nsn_last_error(void)
  nsn_last_error: { parameters: [], result: "pointer" },
  // int32_t nsn_abi_version(void)
  nsn_abi_version: { parameters: [], result: "i32" },
  // int32_t nsn_cuda_available(void)
  nsn_cuda_available: { parameters: [], result: "i32" },

  nsn_engine_create: {
    parameters: [
      "buffer", // const nsn_model_config* cfg
      "buffer", // const nsn_engine_options* opts
      "buffer", // nsn_engine** out (8 bytes)
    ],
    result: "i32", // nsn_status
  },
  nsn_engine_set_weight: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t slot (nsn_weight_slot)
      "i32", // int32_t layer (-1 for globals)
      "i32", // int32_t dtype (nsn_dtype)
      "buffer", // const void* data
      "u64", // uint64_t n_elements
    ],
    result: "i32",
    nonblocking: true,
  },
  nsn_engine_init_random: {
    parameters: [
      "pointer", // nsn_engine* e
      "u64", // uint64_t seed
    ],
    result: "i32",
    nonblocking: true,
  },
  nsn_engine_finalize: {
    parameters: ["pointer"], // nsn_engine* e
    result: "i32",
    nonblocking: true,
  },
  nsn_engine_get_info: {
    parameters: [
      "pointer", // nsn_engine* e
      "buffer", // nsn_engine_info* out
    ],
    result: "i32",
  },
  // void nsn_engine_destroy(nsn_engine* e)
  nsn_engine_destroy: { parameters: ["pointer"], result: "void" },

  nsn_seq_create: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t kv_bits
      "buffer", // int32_t* seq_out
    ],
    result: "i32",
  },
  nsn_seq_free: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t seq
    ],
    result: "i32",
  },
  nsn_seq_set_sampling: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t seq
      "buffer", // const nsn_sampling* params
      "buffer", // const int32_t* bias_ids [n_bias]
      "buffer", // const float* bias_values [n_bias]
      "i32", // int32_t n_bias
    ],
    result: "i32",
  },
  nsn_step: {
    parameters: [
      "pointer", // nsn_engine* e
      "buffer", // const nsn_seq_input* seqs [n_seqs]
      "i32", // int32_t n_seqs
      "buffer", // const int32_t* tokens [n_tokens]
      "i32", // int32_t n_tokens
      "buffer", // const int32_t* pages [n_pages]
      "i32", // int32_t n_pages
      "buffer", // const int32_t* history [n_history] or null
      "i32", // int32_t n_history
      "i32", // int32_t top_n
      "buffer", // nsn_seq_output* out [n_seqs] or null
      "buffer", // float* pos_logprob [n_tokens] or null
      "buffer", // int32_t* pos_top_ids [n_tokens][top_n] or null
      "buffer", // float* pos_top_logprobs [n_tokens][top_n] or null
      "buffer", // float* logits [n_tokens][vocab] or null
    ],
    result: "i32",
    nonblocking: true,
  },

  nsn_seq_read_kv: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t kv_bits
      "buffer", // const int32_t* pages [n_pages]
      "i32", // int32_t n_pages
      "i32", // int32_t tail_page
      "i32", // int32_t len
      "i32", // int32_t layer
      "i32", // int32_t kv_head
      "i32", // int32_t start
      "i32", // int32_t count
      "buffer", // float* k_out [count][head_dim]
      "buffer", // float* v_out [count][head_dim]
    ],
    result: "i32",
  },
  nsn_engine_check: {
    parameters: ["pointer"], // nsn_engine* e
    result: "i32",
  },
  nsn_engine_inject_fault: {
    parameters: [
      "pointer", // nsn_engine* e
      "i32", // int32_t n_steps
    ],
    result: "i32",
  },

  nsn_quant_roundtrip: {
    parameters: [
      "i32", // int32_t kv_bits
      "i32", // int32_t quant_method
      "i32", // int32_t ablation
      "i32", // int32_t head_dim
      "i32", // int32_t is_key
      "f32", // float rope_theta
      "i32", // int32_t pos0
      "buffer", // const float* x [n_tokens][head_dim]
      "i32", // int32_t n_tokens
      "buffer", // float* x_hat [n_tokens][head_dim]
    ],
    result: "i32",
  },
  nsn_quant_attention: {
    parameters: [
      "i32", // int32_t kv_bits
      "i32", // int32_t head_dim
      "f32", // float rope_theta
      "buffer", // const float* k [n_ctx][head_dim] (pre-RoPE)
      "buffer", // const float* v [n_ctx][head_dim]
      "i32", // int32_t n_ctx
      "buffer", // const float* q [n_q][head_dim] (post-RoPE)
      "i32", // int32_t n_q
      "i32", // int32_t mode
      "buffer", // float* out [n_q][head_dim]
    ],
    result: "i32",
    nonblocking: true,
  },
  nsn_codebook: {
    parameters: [
      "i32", // int32_t bits
      "buffer", // float* out_256x8
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

export type NsnLib = Deno.DynamicLibrary<typeof NSN_SYMBOLS>["symbols"];

/** nsn_status values (nsn.h). */
export const NSN_OK = 0;
export const NSN_ABI_VERSION = 2;
export const NSN_WINDOW = 64;
export const NSN_MAX_TOP_N = 20;
export const NSN_MAX_STOP_IDS = 8;

export const NsnBackend = { auto: 0, cpu: 1, cuda: 2 } as const;
export const NsnDtype = { F32: 0, F16: 1, BF16: 2 } as const;
export const NsnRopeScaling = { none: 0, llama3: 1, linear: 2 } as const;
export const NSN_MODEL_TIED = 1;
export const NSN_MODEL_QKV_BIAS = 2;
export const NSN_QUANT_NSN = 0;
export const NSN_QUANT_RTN = 1;

/** nsn_weight_slot. */
export const NsnSlot = {
  EMBED: 0,
  FINAL_NORM: 1,
  LM_HEAD: 2,
  ATTN_NORM: 3,
  Q: 4,
  K: 5,
  V: 6,
  O: 7,
  Q_BIAS: 8,
  K_BIAS: 9,
  V_BIAS: 10,
  MLP_NORM: 11,
  GATE: 12,
  UP: 13,
  DOWN: 14,
} as const;
