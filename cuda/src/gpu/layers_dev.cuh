// layers_dev.cuh: device helpers shared by layers.cu (the RMSNorm and SwiGLU kernels) and
// gemv.cu (the batch-1 GEMVs with RMSNorm / SwiGLU fused in), so the fused and unfused paths
// run the same float operations in the same order and give bitwise-identical results.
// No kernels live here.
#pragma once
#include <cuda_bf16.h>
#include <math.h>

#include "nsn_math.cuh"  // NSN_DYNAMIC_SMEM, NSN_LAUNCH (and the emulator hooks)

namespace nsn {
namespace dev {

// blockDim.x of every kernel that computes an RMSNorm scale (rmsnorm_kernel, the fused GEMVs):
// the sum of squares' reduction order, hence inv and every normed bf16 value, depends on it.
constexpr int kRmsThreads = 512;

// Sum of v over the block (blockDim.x threads, a multiple of 32); every thread gets the total.
// red: >= 32 floats of shared memory (may be reused by the next call).
__device__ inline float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  const int n_warps = (blockDim.x + 31) >> 5;
  float t = 0.0f;
  for (int w = 0; w < n_warps; w++) t += red[w];
  return t;
}

// One row of RMSNorm by the whole block: dst[c] = bf16(src[c] * inv * w[c]) with
// inv = 1 / sqrt(mean(src^2) + eps). dst may be global or shared memory; the caller syncs before
// other threads read it. Launch with blockDim.x == kRmsThreads.
__device__ inline void rmsnorm_row(const float* __restrict__ src, int hidden,
                                   const float* __restrict__ w, float eps,
                                   __nv_bfloat16* __restrict__ dst, float* red) {
  float ss = 0.0f;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) ss += src[c] * src[c];
  ss = block_sum(ss, red);
  const float inv = 1.0f / sqrtf(ss / (float)hidden + eps);
  for (int c = threadIdx.x; c < hidden; c += blockDim.x)
    dst[c] = __float2bfloat16_rn(src[c] * inv * w[c]);
}

// SwiGLU of one element: bf16(silu(g) * u).
__device__ inline __nv_bfloat16 swiglu(float g, float u) {
  return __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
}

}  // namespace dev
}  // namespace nsn
