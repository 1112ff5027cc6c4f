// layers.cuh: the CUDA backend's per-token layer kernels (everything around the GEMMs and the
// attention): embedding gather, RMSNorm, bias + RoPE + KV append, SwiGLU, weight conversion and
// synthetic weights. Each launcher checks its arguments, launches on the given stream and
// checks the launch; errors come back as NSN_E_BACKEND naming the kernel.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../../include/nsn.h"

namespace nsn {

// Where one new token's K and V go, and where its position comes from (built by the host each
// step, uploaded with the plan).
struct TokenKv {
  uint64_t page;    // device address of the fp16-format page (arena page or staging page)
  int32_t layered;  // 1: an arena page holding every layer (block_offset of the layer is added);
                    // 0: a single-layer staging page ([n_kv_heads][K,V][64][d] halves)
  int32_t slot;     // token index inside the window, 0..63
  int32_t pos;      // absolute position (RoPE)
  int32_t pad;
};

// Address of the fp16 block (layer, kv_head, part) of a page described by (page, layered).
__host__ __device__ inline uint8_t* f16_block(uint64_t page, int layered, int layer, int n_kv_heads,
                                              int head_dim, int kv_head, int part) {
  const uint64_t bb = (uint64_t)64 * head_dim * 2;
  const uint64_t layer_off = layered ? (uint64_t)layer * n_kv_heads * 2 * bb : 0;
  return (uint8_t*)(page + layer_off + (uint64_t)(kv_head * 2 + part) * bb);
}

// out[n][hidden] (fp32 residual stream) = table[tokens[i]] (bf16).
nsn_status launch_embed(const __nv_bfloat16* table, const int32_t* tokens, int n, int hidden,
                        float* out, cudaStream_t stream);

// out[i] = bf16( x[rows ? rows[i] : i] / sqrt(mean(x^2) + eps) * w ), x fp32 [*][hidden],
// w fp32 [hidden].
nsn_status launch_rmsnorm(const float* x, const int32_t* rows, int n, int hidden, const float* w,
                          float eps, __nv_bfloat16* out, cudaStream_t stream);

// qkv fp32 [n][(n_heads + 2 n_kv_heads) d] straight from the fused QKV GEMM. Adds the bias
// (fp32 [same width], or null), rotates q and k (inv_freq [d/2] device), writes q fp32
// [n][n_heads][d] and stores k (post-RoPE) and v as fp16 into the token's page slot (tok[i]).
struct QkvRopeArgs {
  const float* qkv;
  const float* bias;
  const TokenKv* tok;
  const float* inv_freq;
  float* q;
  int n, n_heads, n_kv_heads, head_dim, layer;
};
nsn_status launch_qkv_rope_append(const QkvRopeArgs& a, cudaStream_t stream);

// Copies n_tokens token slots [0, n) of one layer's K and V blocks (every kv head) from page
// src to page dst (fp16 format). Jobs on the device.
struct KvCopyJob {
  uint64_t src, dst;
  int32_t src_layered, dst_layered;
  int32_t n_tokens;
  int32_t pad;
};
nsn_status launch_kv_copy(const KvCopyJob* jobs, int n_jobs, int layer, int n_kv_heads,
                          int head_dim, cudaStream_t stream);

// gu fp32 [n][2*inter] (gate then up, from the fused GEMM) -> h bf16 [n][inter] = silu(g) * u.
nsn_status launch_swiglu(const float* gu, int n, int inter, __nv_bfloat16* h, cudaStream_t stream);

// dst bf16 [n] from src of dtype (NSN_F32 / NSN_F16 / NSN_BF16), both on the device.
nsn_status launch_to_bf16(const void* src, int dtype, uint64_t n, __nv_bfloat16* dst,
                          cudaStream_t stream);

// dst f32 [n] from src of dtype (norm weights and biases stay fp32 on the device).
nsn_status launch_to_f32(const void* src, int dtype, uint64_t n, float* dst, cudaStream_t stream);

// Synthetic weights, element i = bf16(synthetic_normal(seed, slot, layer, i, std)) (random.h:
// the counter hash the CPU backend uses, so both hold the same model up to libm ulps), stored
// to exactly one of dst_bf16 / dst_f32.
nsn_status launch_synthetic(uint64_t seed, int slot, int layer, float std, uint64_t n,
                            __nv_bfloat16* dst_bf16, float* dst_f32, cudaStream_t stream);
// dst f32 [n] = value.
nsn_status launch_fill(float* dst, uint64_t n, float value, cudaStream_t stream);

}  // namespace nsn
