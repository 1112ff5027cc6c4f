// kv_block_dev.cuh: block-cooperative device routines that read one quantized K or V block
// (NSN or RTN, ../kv_layout.h) back to fp32 [64][d] in shared memory, the same numbers as the
// CPU's quant_decode_block. Used by launch_kv_dequant (kv_encode.cu) and by the reference
// decode-attention kernel (decode_attention_ref.cu). Every routine is called by all threads of
// a 256-thread block and ends with __syncthreads().
#pragma once
#include <stdint.h>

#include "../../include/nsn.h"
#include "../kv_layout.h"
#include "nsn_math.cuh"

namespace nsn {
namespace gpu {

constexpr int kBlockThreads = 256;
constexpr float kS1EpsDev = 1e-6f;  // == kS1Eps (quant/quant_internal.h)

// cos/sin as rope_cos_sin() computes them: the angle in fp32, its cosine in double.
__device__ __forceinline__ void rope_cs(int pos, float inv_freq, float& c, float& s) {
  const float angle = __fmul_rn((float)pos, inv_freq);
  double sd, cd;
  sincos((double)angle, &sd, &cd);
  c = (float)cd;
  s = (float)sd;
}

// The delta table of the CPU's DeltaTable: cs/sn [64][d/2] for delta = 0..63.
template <int D>
__device__ void build_delta_table(const float* inv_freq, float* dcs, float* dsn) {
  for (int idx = threadIdx.x; idx < kWindow * (D / 2); idx += kBlockThreads) {
    const int t = idx / (D / 2), i = idx % (D / 2);
    rope_cs(t, inv_freq[i], dcs[idx], dsn[idx]);
  }
  __syncthreads();
}

// Codebook [256][8] fp32 into shared memory.
__device__ __forceinline__ void load_codebook(const float* cb_global, float* cb) {
  for (int i = threadIdx.x; i < 256 * kSub; i += kBlockThreads) cb[i] = cb_global[i];
  __syncthreads();
}

// NSN block -> x [64][D] fp32 (keys post-RoPE). scratch: >= 2*64 + 2*D floats.
// cb: the block's codebook in shared memory; dcs/dsn: the delta table (keys only).
template <int D>
__device__ void decode_nsn_block(const uint8_t* blk, int kv_bits, bool is_key, bool hadamard,
                                 int pos0, const float* inv_freq, const float* cb,
                                 const float* dcs, const float* dsn, float* x, float* scratch) {
  constexpr int E = D / 32, H = D / 2, NS = D / kSub;
  const NsnBlockLayout L = nsn_block_layout(kv_bits, D);
  float* s1 = scratch;
  float* s2 = scratch + kWindow;
  float* o = scratch + 2 * kWindow;
  float* orot = o + D;
  const int tid = threadIdx.x, lane = tid & 31, warp = __shfl_sync(kFull, tid >> 5, 0);
  if (tid < kWindow) {
    const float mn = half_at(blk + L.s1meta), st = half_at(blk + L.s1meta + 2);
    const int code = (blk[L.s1q + (tid >> 1)] >> ((tid & 1) * 4)) & 15;
    s1[tid] = fmaxf(u4_value(mn, st, code), kS1EpsDev);
    s2[tid] = half_at(blk + L.s2 + 2 * tid);
  }
  for (int c = tid; c < D; c += kBlockThreads) {
    const int g = c / 32;
    const float mn = half_at(blk + L.ometa + 2 * g), st = half_at(blk + L.ometa + 2 * (D / 32 + g));
    const int code = (blk[L.oq + (c >> 1)] >> ((c & 1) * 4)) & 15;
    o[c] = u4_value(mn, st, code);
  }
  __syncthreads();
  if (is_key) {
    for (int i = tid; i < H; i += kBlockThreads) {
      float cs, sn;
      rope_cs(pos0, inv_freq[i], cs, sn);
      const float a = o[i], b = o[i + H];
      orot[i] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn));
      orot[i + H] = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    }
    __syncthreads();
  }
  for (int t = warp; t < kWindow; t += kBlockThreads / 32) {
    float y[E];
    const uint8_t* codes = blk + L.codes + t * NS;
    const uint8_t* signs = blk + L.signs + t * NS;
#pragma unroll
    for (int j = 0; j < E; j++) {
      const int c = lane * E + j, sub = c / kSub, k = c % kSub;
      float v = cb[codes[sub] * kSub + k];
      if (kv_bits == 2 && ((signs[sub] >> k) & 1)) v = -v;
      y[j] = v;
    }
    if (hadamard) warp_fwht<E>(y, lane);
#pragma unroll
    for (int j = 0; j < E; j++) {
      const int c = lane * E + j;
      float mean;
      if (is_key) {
        const int i = c & (H - 1);
        const float cs = dcs[t * H + i], sn = dsn[t * H + i];
        const float a = orot[i], b = orot[i + H];
        mean = c < H ? __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn))
                     : __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
      } else {
        mean = o[c];
      }
      x[t * D + c] = __fmul_rn(s1[t], __fadd_rn(__fmul_rn(s2[t], y[j]), mean));
    }
  }
  __syncthreads();
}

// RTN block (keys stored post-RoPE) -> x [64][D] fp32.
template <int D>
__device__ void decode_rtn_block(const uint8_t* blk, int kv_bits, bool is_key, float* x) {
  const RtnBlockLayout L = rtn_block_layout(kv_bits, D);
  const int row_bytes = D * kv_bits / 8, mask = (1 << kv_bits) - 1;
  for (int idx = threadIdx.x; idx < kWindow * D; idx += kBlockThreads) {
    const int t = idx / D, c = idx % D;
    float mn, st;
    if (is_key) {
      mn = half_at(blk + L.meta + 2 * c);
      st = half_at(blk + L.meta + 2 * (D + c));
    } else {
      const uint8_t* meta = blk + L.meta + 4 * (t * (D / 32) + c / 32);
      mn = half_at(meta);
      st = half_at(meta + 2);
    }
    const int bit = c * kv_bits;
    const int code = (blk[t * row_bytes + (bit >> 3)] >> (bit & 7)) & mask;
    x[idx] = u4_value(mn, st, code);
  }
  __syncthreads();
}

}  // namespace gpu
}  // namespace nsn
