// kv_kernels.cuh: the KV-cache kernels' launchers (NSN encode/dequant, decode attention over
// fp16 / NSN-2 / NSN-1 pages). Implemented in kv_encode.cu and decode_attention*.cu; called by
// the CUDA backend (backend_cuda*.cu). Page layouts: ../kv_layout.h. Math: ../quant/nsn_quant.h
// (the CPU reference these kernels must match).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../../include/nsn.h"

namespace nsn {

// Model-wide constants every KV kernel needs (device pointers where noted).
struct KvGeometry {
  int32_t n_layers, n_heads, n_kv_heads, head_dim;
  int32_t quant_method;      // NSN_QUANT_NSN / NSN_QUANT_RTN
  int32_t ablation;          // NSN_ABL_* bits
  const float* inv_freq;     // device [head_dim/2] (llama3 scaling applied)
  const float* codebook1;    // device [256][8]
  const float* codebook2;    // device [256][8]
  const uint8_t* attn_tables;  // device, optional: decode attention's constant shared-memory
                               // tables (launch_decode_attention_tables); null: every thread
                               // block of the attention kernel builds them itself
};

// Bytes of the decode-attention tables for head_dim (0 when unsupported): the fp16 codebooks in
// the kernel's bank-conflict-free layout and the cos/sin(delta theta) fragments of the mean term.
size_t decode_attention_tables_bytes(int head_dim);
// Fills dst (device, 16-byte aligned, decode_attention_tables_bytes long) from g's codebooks
// and inv_freq. Set g.attn_tables = dst afterwards; the attention result is the same.
nsn_status launch_decode_attention_tables(const KvGeometry& g, uint8_t* dst, cudaStream_t stream);

// Encode one completed window: src is an fp16 page (format KV_F16, keys post-RoPE) of which
// the given layer's blocks are read; dst is the quantized page. Keys are un-rotated to
// pre-RoPE inside the kernel, exactly as the CPU does. For launch_kv_encode, a job with
// kv_bits 0 is a no-op (its pages are not touched): the CUDA backend's graph steps pad their
// encode list to a fixed length with such jobs.
struct EncodeJob {
  const uint8_t* src_page;   // device
  uint8_t* dst_page;         // device
  int32_t kv_bits;           // 1 or 2 (0: no-op, launch_kv_encode only)
  int32_t pos0;              // position of the window's first token
};
// jobs: device array [n_jobs]. Encodes the blocks of `layer` (all kv heads, K and V).
nsn_status launch_kv_encode(const KvGeometry& g, const EncodeJob* jobs, int n_jobs, int layer,
                            cudaStream_t stream);
// Inverse: writes the fp16 reconstruction (keys post-RoPE) of one layer of quantized pages
// into fp16-format pages (used by prefill attention over earlier quantized windows).
nsn_status launch_kv_dequant(const KvGeometry& g, const EncodeJob* jobs, int n_jobs, int layer,
                             cudaStream_t stream);

// One decoding query row (one sequence's new token) for decode attention.
struct DecodeSeq {
  int32_t kv_bits;           // 16, 2, 1
  int32_t n_ctx;             // tokens to attend (>= 1), the new one included (already appended/encoded)
  int32_t q_row;             // row in q / out
  int32_t n_windows;         // ceil(n_ctx / 64)
  const int64_t* page_off;   // device [n_windows] arena offsets. Window w is quantized iff
                             // kv_bits != 16 && (w+1)*64 <= n_ctx; else an fp16 page (the tail)
};

struct DecodeAttnArgs {
  KvGeometry g;
  const uint8_t* arena;      // device KV arena
  int32_t layer;
  const float* q;            // device [rows][n_heads][head_dim], post-RoPE
  __nv_bfloat16* out;        // device [rows][n_heads*head_dim]
  const DecodeSeq* seqs;     // device [n_seqs]
  int32_t n_seqs;
  int32_t max_ctx;           // max n_ctx over seqs (host value; informational)
  float scale;               // 1/sqrt(head_dim)
  float* workspace;          // device scratch (the launch's work plan, split-KV partials):
                             // zero-filled once after allocation (the kernels leave their
                             // counters at zero)
  size_t workspace_bytes;
  int32_t reuse_plan;        // 1: the workspace already holds the work plan for these seqs (an
                             // earlier layer of the same step, same seqs and n_seqs): no planning
};
// Bytes of workspace decode attention needs for n_seqs rows (any context length: the size
// depends on n_seqs and the device's SM count only, so a CUDA graph's workspace stays valid).
size_t decode_attention_workspace(const KvGeometry& g, int n_seqs, int max_ctx);
nsn_status launch_decode_attention(const DecodeAttnArgs& a, cudaStream_t stream);

}  // namespace nsn
