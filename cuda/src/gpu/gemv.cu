// gemv.cu: bf16 weight-streaming GEMV for decode batches (see gemv.cuh).
//
// One warp per pair of output rows (gemv_row_pair): lane i reads 16-byte chunks i, i+32, ... of w[n] with
// ld.global.nc.L1::no_allocate (the weights are read once per step; keep L1 for x), converts
// the 8 bf16 to fp32 and multiplies with the same chunk of each x row (read through L1, where
// every warp of the SM shares it). fp32 accumulation, a warp shuffle reduction, lane 0 stores.
//
// The fused batch-1 kernels (launch_gemv_rmsnorm, launch_gemv_rmsnorm_swiglu) are the same loop
// (stream_rows) with x taken from shared memory, where a prologue has written the normed row:
//  * block = dev::kRmsThreads (512) threads = 16 warps: the RMSNorm's reduction order depends on
//    the block size, and rmsnorm_kernel's is 512, so the normed bf16 values are bitwise equal.
//  * persistent-style grid: min(ceil(rows / 16), kNormBlocksPerSm * SMs) blocks, warp w of block
//    b takes rows b*16 + w, then + gridDim.x*16, ... The prologue (read 2 x K fp32 from L2,
//    a block reduction, K bf16 to shared memory) is paid by at most 2 blocks per SM instead of
//    once per 16 rows (QKV of Llama-3-8B: 264 prologues instead of 384; gate/up: 264 instead
//    of 896), and 2 x 16 warps per SM with 8 x 16-byte loads in flight per lane (128 KB per SM)
//    are well above what HBM needs to stay busy (Little's law, not measured: 4.8 TB/s x ~0.8 us
//    / 132 SMs, about 30 KB per SM on an H200). ptxas: 46 / 62 registers (no spills), so a
//    third 512-thread block would not fit an SM anyway.
//  * the prologue does not stream weights, so before it every warp prefetches the first
//    kPrefetchBytes of its first row(s) into L2 (prefetch.global.L2): HBM keeps working while
//    the block normalizes, and the first loop iterations hit L2.
//  * shared memory: 128 B (block_sum's 32 floats) + K * 2 B (the normed row), dynamic; the
//    attribute for > 48 KB is set when K needs it (K > 24512).
#include "gemv.cuh"

#include <stdint.h>
#include <string.h>

#include "../backend.h"
#include "layers_dev.cuh"
#include "sm_count.cuh"

namespace nsn {

namespace {

constexpr int kWarpsPerBlock = 8;                   // launch_gemv
constexpr int kNormWarps = dev::kRmsThreads / 32;   // the fused kernels: 16 warps
constexpr int kNormBlocksPerSm = 2;                 // resident blocks per SM (launch bound too)
constexpr int kRedBytes = 32 * sizeof(float);       // block_sum's buffer, before the normed row
constexpr int kPrefetchBytes = 2048;                // per weight row, before the prologue

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
#ifdef NSN_EMU
  return *p;
#else
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
#endif
}

__device__ __forceinline__ uint4 load_x_global(const uint4* p) {
#ifdef NSN_EMU
  return *p;
#else
  return __ldg(p);
#endif
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
#ifndef NSN_EMU
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}

__device__ __forceinline__ float bf16_bits_to_float(uint32_t u) {
#ifdef NSN_EMU
  float f;
  memcpy(&f, &u, 4);
  return f;
#else
  return __uint_as_float(u);
#endif
}

__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = bf16_bits_to_float(u[i] << 16);
    f[2 * i + 1] = bf16_bits_to_float(u[i] & 0xffff0000u);
  }
}

// The weight-streaming loop of every GEMV here: acc[r][m] += this lane's share of
// w_r . x_m, w_r = wr[r] (R weight rows of `chunks` 16-byte chunks), x_m's chunk c = xload(m, c).
// Lane L takes chunks L, L+32, ...; each accumulator sees its products in the same order
// whatever R, M and the x source, so every kernel's dot products are bitwise the same.
template <int R, int M, typename XLoad>
__device__ __forceinline__ void stream_rows(const uint4* const (&wr)[R], int chunks, int lane,
                                            XLoad xload, float (&acc)[R][M]) {
  constexpr int kUnroll = R == 1 ? 8 : 4;  // 8 loads in flight per lane either way
#pragma unroll kUnroll
  for (int c = lane; c < chunks; c += 32) {
    float wf[R][8];
#pragma unroll
    for (int r = 0; r < R; r++) unpack8(load_stream(wr[r] + c), wf[r]);
#pragma unroll
    for (int m = 0; m < M; m++) {
      float xf[8];
      unpack8(xload(m, c), xf);
#pragma unroll
      for (int r = 0; r < R; r++) {
#pragma unroll
        for (int i = 0; i < 8; i++) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
      }
    }
  }
}

__device__ __forceinline__ float warp_total(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ void store_y(float* dst, float v, float beta) {
  *dst = beta != 0.0f ? v + beta * *dst : v;
}

// Rows r0 and r0 + step (the second only when < N) of y = x . w^T for one x row: one warp streams
// both rows at once (twice the loads in flight, no pipeline drain between them), like the gate/up
// GEMV, which measured 3.6 TB/s against 2.3-2.9 for one row per warp. End to end it did not move
// the batch-1 step (5.07 ms before and after on the H200). Each row's dot product is bitwise the
// one-row result (stream_rows keeps the per-accumulator order).
template <typename XLoad>
__device__ __forceinline__ void gemv_row_pair(const __nv_bfloat16* w, int N, int K, int r0, int step,
                                              int lane, XLoad xload, float* y, float beta) {
  if (r0 + step < N) {
    const uint4* wr[2] = {(const uint4*)(w + (size_t)r0 * K), (const uint4*)(w + (size_t)(r0 + step) * K)};
    float acc[2][1] = {{0.0f}, {0.0f}};
    stream_rows<2, 1>(wr, K / 8, lane, xload, acc);
    const float v0 = warp_total(acc[0][0]), v1 = warp_total(acc[1][0]);
    if (lane == 0) {
      store_y(y + r0, v0, beta);
      store_y(y + r0 + step, v1, beta);
    }
  } else if (r0 < N) {
    const uint4* wr[1] = {(const uint4*)(w + (size_t)r0 * K)};
    float acc[1][1] = {{0.0f}};
    stream_rows<1, 1>(wr, K / 8, lane, xload, acc);
    const float v = warp_total(acc[0][0]);
    if (lane == 0) store_y(y + r0, v, beta);
  }
}

// One x row (kGemvMaxRows == 1): warp w of block b takes rows b*8 + w and that + gridDim.x*8.
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    gemv_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, int N, int K,
                float* __restrict__ y, float beta) {
  const int lane = threadIdx.x & 31;
  const int r0 = blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5);
  gemv_row_pair(w, N, K, r0, gridDim.x * kWarpsPerBlock, lane,
                [&](int, int c) { return load_x_global((const uint4*)x + c); }, y, beta);
}

// Prefetches the first kPrefetchBytes of row `row` (K bf16) into L2: lane L one 128-byte line.
__device__ __forceinline__ void prefetch_row(const __nv_bfloat16* w, size_t row, int K, int lane) {
  const int bytes = K * 2 < kPrefetchBytes ? K * 2 : kPrefetchBytes;
  if (lane * 128 < bytes) prefetch_l2((const uint8_t*)(w + row * K) + lane * 128);
}

// The fused kernels' prologue: the normed row xn (bf16 [K]) into shared memory, visible to the
// whole block on return.
__device__ __forceinline__ const uint4* norm_prologue(uint8_t* smem, const float* x,
                                                      const float* norm_w, int K, float eps) {
  float* red = (float*)smem;
  __nv_bfloat16* xs = (__nv_bfloat16*)(smem + kRedBytes);
  dev::rmsnorm_row(x, K, norm_w, eps, xs, red);
  __syncthreads();
  return (const uint4*)xs;
}

__global__ void __launch_bounds__(dev::kRmsThreads, kNormBlocksPerSm)
    gemv_rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ norm_w, float eps,
                        const __nv_bfloat16* __restrict__ w, int N, int K, float* __restrict__ y,
                        float beta) {
  NSN_DYNAMIC_SMEM(uint8_t, smem);
  const int lane = threadIdx.x & 31;
  const int n0 = blockIdx.x * kNormWarps + (threadIdx.x >> 5), stride = gridDim.x * kNormWarps;
  if (n0 < N) prefetch_row(w, n0, K, lane);
  const uint4* xs = norm_prologue(smem, x, norm_w, K, eps);
  for (int n = n0; n < N; n += 2 * stride)
    gemv_row_pair(w, N, K, n, stride, lane, [&](int, int c) { return xs[c]; }, y, beta);
}

__global__ void __launch_bounds__(dev::kRmsThreads, kNormBlocksPerSm)
    gemv_rmsnorm_swiglu_kernel(const float* __restrict__ x, const float* __restrict__ norm_w,
                               float eps, const __nv_bfloat16* __restrict__ w_gu, int I, int K,
                               __nv_bfloat16* __restrict__ h) {
  NSN_DYNAMIC_SMEM(uint8_t, smem);
  const int lane = threadIdx.x & 31;
  const int n0 = blockIdx.x * kNormWarps + (threadIdx.x >> 5), stride = gridDim.x * kNormWarps;
  if (n0 < I) {
    prefetch_row(w_gu, n0, K, lane);
    prefetch_row(w_gu, (size_t)n0 + I, K, lane);
  }
  const uint4* xs = norm_prologue(smem, x, norm_w, K, eps);
  for (int n = n0; n < I; n += stride) {
    const uint4* wr[2] = {(const uint4*)(w_gu + (size_t)n * K),
                          (const uint4*)(w_gu + ((size_t)n + I) * K)};
    float acc[2][1] = {{0.0f}, {0.0f}};
    stream_rows<2, 1>(wr, K / 8, lane, [&](int, int c) { return xs[c]; }, acc);
    const float g = warp_total(acc[0][0]);
    const float u = warp_total(acc[1][0]);
    if (lane == 0) h[n] = dev::swiglu(g, u);
  }
}

// Checks the fused launchers' common arguments; picks the grid and sets the shared-memory
// attribute when needed.
template <typename Kernel>
nsn_status norm_launch_setup(const char* what, Kernel kernel, int rows, int K, const float* x,
                             const float* norm_w, const void* w, const void* out, size_t out_align,
                             int max_blocks, int* grid, size_t* smem) {
  if (!x || !norm_w || !w || !out) return set_error(NSN_E_INVALID, "%s: null pointer argument", what);
  if (rows <= 0 || K <= 0) return set_error(NSN_E_INVALID, "%s: bad shape rows=%d K=%d", what, rows, K);
  if (max_blocks < 0) return set_error(NSN_E_INVALID, "%s: max_blocks %d", what, max_blocks);
  if (!gemv_rmsnorm_supported(K, x, norm_w, w) || ((uintptr_t)out % out_align) != 0)
    return set_error(NSN_E_INTERNAL, "%s: unsupported shape or alignment K=%d", what, K);
  const int sms = gpu::sm_count();
  if (sms <= 0) return set_error(NSN_E_BACKEND, "%s: the device's SM count cannot be queried", what);
  const int cap = max_blocks > 0 ? max_blocks : kNormBlocksPerSm * sms;
  const int need = (rows + kNormWarps - 1) / kNormWarps;
  *grid = need < cap ? need : cap;
  *smem = kRedBytes + (size_t)K * 2;
  if (*smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)*smem);
    if (e != cudaSuccess)
      return set_error(NSN_E_BACKEND, "%s: smem attribute (%zu B): %s", what, *smem, cudaGetErrorString(e));
  }
  return NSN_OK;
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
  // two rows per warp (gemv_row_pair)
  const dim3 grid((N + 2 * kWarpsPerBlock - 1) / (2 * kWarpsPerBlock)), block(kWarpsPerBlock * 32);
  static_assert(kGemvMaxRows == 1, "gemv_kernel takes one x row");
  NSN_LAUNCH(gemv_kernel, grid, block, 0, stream, x, w, N, K, y, beta);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "gemv_kernel launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

bool gemv_rmsnorm_supported(int K, const float* x, const float* norm_w, const void* w) {
  return K > 0 && K <= kGemvNormMaxK && K % 8 == 0 && ((uintptr_t)w & 15) == 0 &&
         ((uintptr_t)x & 3) == 0 && ((uintptr_t)norm_w & 3) == 0;
}

nsn_status launch_gemv_rmsnorm(int N, int K, const float* x, const float* norm_w, float eps,
                               const __nv_bfloat16* w, float* y, float beta, cudaStream_t stream,
                               int max_blocks) {
  int grid = 0;
  size_t smem = 0;
  const nsn_status st = norm_launch_setup("gemv_rmsnorm", gemv_rmsnorm_kernel, N, K, x, norm_w, w,
                                          y, sizeof(float), max_blocks, &grid, &smem);
  if (st != NSN_OK) return st;
  NSN_LAUNCH(gemv_rmsnorm_kernel, grid, dev::kRmsThreads, smem, stream, x, norm_w, eps, w, N, K, y,
             beta);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "gemv_rmsnorm_kernel launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

nsn_status launch_gemv_rmsnorm_swiglu(int I, int K, const float* x, const float* norm_w, float eps,
                                      const __nv_bfloat16* w_gu, __nv_bfloat16* h,
                                      cudaStream_t stream, int max_blocks) {
  int grid = 0;
  size_t smem = 0;
  const nsn_status st =
      norm_launch_setup("gemv_rmsnorm_swiglu", gemv_rmsnorm_swiglu_kernel, I, K, x, norm_w, w_gu,
                        h, sizeof(__nv_bfloat16), max_blocks, &grid, &smem);
  if (st != NSN_OK) return st;
  NSN_LAUNCH(gemv_rmsnorm_swiglu_kernel, grid, dev::kRmsThreads, smem, stream, x, norm_w, eps, w_gu,
             I, K, h);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "gemv_rmsnorm_swiglu_kernel launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace nsn
