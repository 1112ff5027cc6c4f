// prefill_attention.cuh: causal attention for prefill chunks (n_new > 1) over fp16-format
// pages, with nsn.h's rule for kv_bits 1/2: a query at position p reads window w dequantized
// when w < (p + 1) / 64 (every complete window before it, and its own when p completes it) and
// exact K/V only for the rest of its own window, however the prompt was chunked. So each
// window has two pages: `pages` (exact: fp16 pages, the tail, or staging pages the append wrote)
// and `deq_pages` (quantized windows dequantized into staging pages; for kv_bits 16 the same
// as `pages`). Tensor cores (WMMA, fp16 in, fp32 accumulate), online softmax in fp32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../../include/nsn.h"

namespace nsn {

// One window's fp16-format page (see layers.cuh f16_block for `layered`).
struct PageRef {
  uint64_t page;
  int32_t layered;
  int32_t pad;
};

struct PrefillSeq {
  int32_t q_row0;            // row of the chunk's first token in q / out
  int32_t n_new;             // chunk length (query rows)
  int32_t pos0;              // position of the chunk's first token
  int32_t n_windows;         // ceil((pos0 + n_new) / 64)
  int32_t quant;             // 1: kv_bits 1/2 (the rule above); 0: kv_bits 16, all exact
  int32_t pad;
  const PageRef* pages;      // device [n_windows]: exact K/V of window w (positions 64w..64w+63)
  const PageRef* deq_pages;  // device [n_windows]: window w as encoded (dequantized)
};

// 64 query rows [i0, i0 + 64) of one sequence (the last tile of a chunk may be partial).
struct PrefillTile {
  int32_t seq;
  int32_t i0;
};

struct PrefillAttnArgs {
  const float* q;             // device [rows][n_heads][head_dim], post-RoPE
  __nv_bfloat16* out;         // device [rows][n_heads * head_dim]
  const PrefillSeq* seqs;     // device
  const PrefillTile* tiles;   // device [n_tiles]
  int32_t n_tiles;
  int32_t n_heads, n_kv_heads, head_dim, layer;
  float scale;                // 1/sqrt(head_dim)
};

nsn_status launch_prefill_attention(const PrefillAttnArgs& a, cudaStream_t stream);

}  // namespace nsn
