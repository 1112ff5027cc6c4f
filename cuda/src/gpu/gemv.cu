// gemv.cu: bf16 weight-streaming GEMV for decode batches (see gemv.cuh).
//
// One warp per output row n: lane i reads 16-byte chunks i, i+32, ... of w[n] with
// ld.global.nc.L1::no_allocate (the weights are read once per step; keep L1 for x), converts
// the 8 bf16 to fp32 and multiplies with the same chunk of each x row (read through L1, where
// every warp of the SM shares it). fp32 accumulation, a warp shuffle reduction, lane 0 stores.
#include "gemv.cuh"

#include <stdint.h>

#include "../backend.h"

namespace nsn {

namespace {

constexpr int kWarpsPerBlock = 8;

__device__ inline uint4 load_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ inline void unpack8(const uint4& v, float* f) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

template <int M>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_kernel(const __nv_bfloat16* __restrict__ x, int ldx, const __nv_bfloat16* __restrict__ w,
                int N, int K, float* __restrict__ y, int ldy, float beta) {
  const int n = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (n >= N) return;
  const uint4* wr = (const uint4*)(w + (size_t)n * K);
  const int chunks = K / 8;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; m++) acc[m] = 0.0f;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    float wf[8];
    unpack8(load_stream(wr + c), wf);
#pragma unroll
    for (int m = 0; m < M; m++) {
      float xf[8];
      unpack8(__ldg((const uint4*)(x + (size_t)m * ldx) + c), xf);
#pragma unroll
      for (int i = 0; i < 8; i++) acc[m] = fmaf(wf[i], xf[i], acc[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; m++) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) {
      float* dst = y + (size_t)m * ldy + n;
      *dst = beta != 0.0f ? v + beta * *dst : v;
    }
  }
}

}  // namespace

bool gemv_supported(int M, int K, int ldx, const void* x, const void* w) {
  return M >= 1 && M <= kGemvMaxRows && K % 8 == 0 && ldx % 8 == 0 &&
         ((uintptr_t)x & 15) == 0 && ((uintptr_t)w & 15) == 0;
}

nsn_status launch_gemv(int M, int N, int K, const __nv_bfloat16* x, int ldx, const __nv_bfloat16* w,
                       float* y, int ldy, float beta, cudaStream_t stream) {
  if (!gemv_supported(M, K, ldx, x, w))
    return set_error(NSN_E_INTERNAL, "gemv: unsupported shape M=%d K=%d ldx=%d", M, K, ldx);
  if (N <= 0) return NSN_OK;
  const dim3 grid((N + kWarpsPerBlock - 1) / kWarpsPerBlock), block(kWarpsPerBlock * 32);
  static_assert(kGemvMaxRows == 1, "instantiate gemv_kernel for the admitted row counts");
  gemv_kernel<1><<<grid, block, 0, stream>>>(x, ldx, w, N, K, y, ldy, beta);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "gemv_kernel<%d> launch: %s", M, cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace nsn
