// kernels.h: the CPU backend's dense math. Every output element is computed by one fixed
// sequence of operations whatever the batch size, thread count or tiling, so a token's results
// do not depend on which other tokens share its step (batch invariance, bitwise).
#pragma once
#include <stdint.h>

namespace nsn {

class ThreadPool;

// y[t][n] (+)= sum_k x[t][k] * w[n][k] for t < T, n < N: an HF Linear, w is [N][K] row-major.
// x has row stride ldx, y row stride ldy. accumulate: add to y (residual connections).
void matmul(ThreadPool& pool, const float* x, int64_t ldx, int T, int K, const float* w, int N,
            float* y, int64_t ldy, bool accumulate);

// y[t] = x[t] / rms(x[t]) * g for T rows of n elements (row strides ldx, ldy).
void rmsnorm(const float* x, int64_t ldx, const float* g, int n, float eps, int T, float* y,
             int64_t ldy);

// h[t][i] = silu(gu[t][i]) * gu[t][I + i]: SwiGLU over the fused gate|up projection.
void silu_mul(const float* gu, int T, int I, float* h);

// fp16 row <-> fp32 row.
void f16_to_f32_row(const uint16_t* src, int n, float* dst);
void f32_to_f16_row(const float* src, int n, uint16_t* dst);
// x[i] = the value x[i] keeps once stored as fp16.
void round_f16_row(float* x, int n);

}  // namespace nsn
