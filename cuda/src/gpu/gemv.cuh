// gemv.cuh: the decode-time linear layer for one row, y[n] (+)= x . w[n][:]. At batch 1 a
// linear layer only streams its weights, and a warp per output row with 16-byte non-caching
// loads beats cuBLAS's small-M kernels: synthetic Llama-3-8B decode on the H200, 5.28 ms/step
// against 5.71 ms (tests/gpu/decode_speed_test.ts). At 4 rows it lost (6.48 against 5.83 ms:
// every warp re-reads the x rows through L1), so batches of 2+ rows go to cuBLAS. At batch 1
// the RMSNorm before the QKV and gate/up projections, and the SwiGLU after gate/up, are fused
// into the GEMV (launch_gemv_rmsnorm, launch_gemv_rmsnorm_swiglu), bitwise equal to the unfused
// kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../../include/nsn.h"

namespace nsn {

constexpr int kGemvMaxRows = 1;

// Whether the GEMV takes this shape: M == 1 (kGemvMaxRows), K and ldx multiples of 8 (16-byte
// rows), 16-byte aligned x and w.
bool gemv_supported(int M, int K, int ldx, const void* x, const void* w);

// y fp32 [M][ldy]: y = x . w^T + beta * y (beta 0 or 1: the residual add). x bf16 [M][ldx],
// w bf16 [N][K] (HF Linear layout). The kernel is written for up to 4 rows (measured correct
// at 3 against the CPU backend); only the rows gemv_supported admits are launched.
nsn_status launch_gemv(int M, int N, int K, const __nv_bfloat16* x, int ldx, const __nv_bfloat16* w,
                       float* y, int ldy, float beta, cudaStream_t stream);

// ---- Batch 1 with the RMSNorm (and the SwiGLU) fused in ----------------------------------
// Each block first normalizes the fp32 residual row x into shared memory (bf16, K * 2 bytes),
// with dev::rmsnorm_row (layers_dev.cuh) and rmsnorm_kernel's block size, so the normed values are
// bitwise those of launch_rmsnorm; then its warps stream weight rows with the same loop as
// launch_gemv. Results equal launch_rmsnorm + launch_gemv (+ launch_swiglu) exactly.

// Largest K of the fused kernels (2 blocks of K * 2 bytes of shared memory per SM).
constexpr int kGemvNormMaxK = 32768;

// Whether the fused kernels take this shape: 0 < K <= kGemvNormMaxK, K % 8 == 0, w 16-byte
// aligned, x and norm_w 4-byte aligned.
bool gemv_rmsnorm_supported(int K, const float* x, const float* norm_w, const void* w);

// y fp32 [N] = beta * y + w . xn, xn[k] = bf16(x[k] * inv * norm_w[k]), inv = 1 / sqrt(mean(x^2)
// + eps) as launch_rmsnorm computes it. x fp32 [K] (the residual row), norm_w fp32 [K], w bf16
// [N][K]. beta 0 or 1 (with 0, y is not read). max_blocks: 0 = the default grid (tests pass a
// small count to make every warp loop over several rows).
nsn_status launch_gemv_rmsnorm(int N, int K, const float* x, const float* norm_w, float eps,
                               const __nv_bfloat16* w, float* y, float beta, cudaStream_t stream,
                               int max_blocks = 0);

// h bf16 [I] = bf16(silu(g) * u), g = w_gu[0:I] . xn, u = w_gu[I:2I] . xn, xn as above: the gate/up
// projection, which launch_gemv would write as fp32 [2I], and launch_swiglu in one kernel.
// w_gu bf16 [2I][K], gate rows then up rows.
nsn_status launch_gemv_rmsnorm_swiglu(int I, int K, const float* x, const float* norm_w, float eps,
                                      const __nv_bfloat16* w_gu, __nv_bfloat16* h,
                                      cudaStream_t stream, int max_blocks = 0);

}  // namespace nsn
