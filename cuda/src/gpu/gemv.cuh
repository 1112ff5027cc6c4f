// gemv.cuh: the decode-time linear layer for one row, y[n] (+)= x . w[n][:]. At batch 1 a
// linear layer only streams its weights, and a warp per output row with 16-byte non-caching
// loads beats cuBLAS's small-M kernels: synthetic Llama-3-8B decode on the H200, 5.28 ms/step
// against 5.71 ms (tests/gpu/decode_speed_test.ts). At 4 rows it lost (6.48 against 5.83 ms:
// every warp re-reads the x rows through L1), so batches of 2+ rows go to cuBLAS.
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

}  // namespace nsn
