// backend.h: what the engine core (engine.cpp: ABI validation of sequences and page tables,
// step planning) asks of a backend (cpu/ or gpu/). The pages' bookkeeping is the caller's (the
// TS scheduler's); a backend owns weights, the KV arena's memory, scratch buffers, and runs the
// forward pass + sampling.
#pragma once
#include <stdint.h>

#include <memory>
#include <string>

#include "../include/nsn.h"

namespace nsn {

// One sequence's work in a step, planned by the core. Pages are arena byte offsets.
struct SeqStep {
  int32_t seq;
  int32_t kv_bits;      // 16, 2 or 1
  int32_t pos0;         // tokens cached before this step (= position of the first new token)
  int32_t n_new;        // tokens appended this step (1 = decode semantics, see below)
  int32_t tok_offset;   // first token in StepPlan::tokens
  int32_t sample;       // sample a token after the last position -> StepPlan::out[i]
  int32_t want_logprobs;
  int32_t next_token;   // token after the chunk, for want_logprobs (-1 = unknown)
  int32_t n_windows;    // ceil((pos0 + n_new) / 64): windows that exist after the step
  const int64_t* page_off;  // [n_windows] page of window w; kv_bits 16: fp16 pages. kv_bits 1/2:
                            // quantized pages for complete windows; the partial last window
                            // (if any) maps to tail_off
  int64_t tail_off;     // kv_bits 1/2: the fp16 tail page (current window's exact tokens); -1 for 16
  const nsn_sampling* sampling;
  const int32_t* bias_ids;
  const float* bias_values;
  int32_t n_bias;
  const int32_t* history;  // [history_len] every token fed before this step (penalties)
  int32_t history_len;
};

// Attention semantics (the same in every backend, nsn.h's rule): a token at position p reads
// kv_bits 16: exact K/V of positions <= p; kv_bits 1/2: the encoded pages of windows
// w < (p + 1) / 64 (every complete window before its own, and its own when p completes it)
// and exact K/V for the rest of its own window. It does not depend on how the sequence is cut
// into chunks, so a backend encodes the windows a chunk completes before the chunk attends
// (the CPU backend is the reference). A step writes the pages of windows >= pos0 / 64 and the
// tail only: earlier pages may be shared with other rows and steps.
struct StepPlan {
  const SeqStep* seqs;
  int32_t n_seqs;
  const int32_t* tokens;
  int32_t n_tokens;
  int32_t top_n;
  nsn_seq_output* out;       // [n_seqs] or null
  float* pos_logprob;        // [n_tokens] or null
  int32_t* pos_top_ids;      // [n_tokens][top_n] or null
  float* pos_top_logprobs;   // [n_tokens][top_n] or null
  float* logits;             // [n_tokens][vocab] or null
  // Planned by the core, the same for every backend: the token rows that need logits (every
  // row, in order, when logits is set; else, sequence by sequence, the rows of chunks that want
  // logprobs and the last row of each sampling sequence) and the plan seq of each. The outputs
  // arrive preset to "nothing" (token -1, logprobs NaN, top ids -1): a backend writes only
  // what it computes.
  const int32_t* logit_rows;  // [n_logit_rows]
  const int32_t* logit_seq;   // [n_logit_rows]
  int32_t n_logit_rows;
};

struct EngineSpec {
  nsn_model_config cfg;
  nsn_engine_options opts;  // resolved: no zeros left where a default applies
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual std::string device_name() const = 0;
  // data: [n] elements of dtype, shape given by the slot (see nsn.h); checked by the core.
  virtual nsn_status set_weight(int slot, int layer, int dtype, const void* data, uint64_t n) = 0;
  virtual nsn_status init_random(uint64_t seed) = 0;
  virtual bool has_weight(int slot, int layer) const = 0;
  virtual uint64_t weight_bytes() const = 0;
  // KV arena size when the options leave kv_pool_bytes at 0 (asked at finalize, after the
  // weights are in: the CUDA backend answers 90% of the free device memory).
  virtual uint64_t default_arena_bytes() const { return 256ull << 20; }
  // Allocates the KV arena (bytes) and scratch for max_step_tokens / max_seqs.
  virtual nsn_status alloc_arena(uint64_t bytes) = 0;
  virtual nsn_status step(const StepPlan& plan) = 0;
  // Steps whose layer loop ran as a CUDA graph so far (the CUDA backend; nsn_engine_info).
  virtual int64_t graph_steps() const { return 0; }
  // Dequantized/exact K (post-RoPE) and V of tokens [start, start+count) of one sequence.
  virtual nsn_status read_kv(const SeqStep& seq_pages, int layer, int kv_head, int start, int count,
                             float* k_out, float* v_out) = 0;
};

// Sets the message returned by nsn_last_error() and returns st.
nsn_status set_error(nsn_status st, const char* fmt, ...);

std::unique_ptr<Backend> make_cpu_backend(const EngineSpec& spec);
// Returns null and sets the error when CUDA is not built in or no device is present.
std::unique_ptr<Backend> make_cuda_backend(const EngineSpec& spec, nsn_status* st);
bool cuda_backend_available();

}  // namespace nsn
