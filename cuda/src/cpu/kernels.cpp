// kernels.cpp: see kernels.h. The matmul's inner product keeps 8 partial sums (one AVX2
// register, or 8 scalars without AVX2) over k = 0, 8, 16, ..., folds them in a fixed order, then
// adds the k % 8 leftovers: the same arithmetic for every (t, n), whatever tile it falls in.
#include "kernels.h"

#include <math.h>

#include <algorithm>

#include "../half.h"
#include "thread_pool.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define NSN_AVX2 1
#define NSN_MADD(a, b, c) fmaf(a, b, c)  // one vfmadd instruction, as in the vector loop
#else
#define NSN_MADD(a, b, c) ((a) * (b) + (c))
#endif

namespace nsn {

namespace {

#ifdef NSN_AVX2
typedef __m256 Acc;
inline Acc acc_zero() { return _mm256_setzero_ps(); }
inline float acc_sum(Acc a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
struct Acc {
  float v[8];
};
inline Acc acc_zero() { return Acc{{0, 0, 0, 0, 0, 0, 0, 0}}; }
inline Acc acc_fma(Acc a, const float* x, const float* w) {
  for (int j = 0; j < 8; j++) a.v[j] = NSN_MADD(x[j], w[j], a.v[j]);
  return a;
}
inline float acc_sum(Acc a) {
  // The same folding order as the AVX2 path: lanes (j, j+4), then (j, j+2), then (0, 1).
  float s[4];
  for (int j = 0; j < 4; j++) s[j] = a.v[j] + a.v[j + 4];
  const float s0 = s[0] + s[2], s1 = s[1] + s[3];
  return s0 + s1;
}
#endif

// R weight rows x C tokens: R * C independent dot products sharing each load.
template <int R, int C>
inline void tile(const float* x, int64_t ldx, int K, const float* w, float* y, int64_t ldy,
                 bool accumulate) {
  Acc acc[R][C];
  for (int r = 0; r < R; r++) {
    for (int c = 0; c < C; c++) acc[r][c] = acc_zero();
  }
  const int K8 = K & ~7;
  for (int k = 0; k < K8; k += 8) {
#ifdef NSN_AVX2
    __m256 wv[R];
    for (int r = 0; r < R; r++) wv[r] = _mm256_loadu_ps(w + (int64_t)r * K + k);
    for (int c = 0; c < C; c++) {
      const __m256 xv = _mm256_loadu_ps(x + c * ldx + k);
      for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(xv, wv[r], acc[r][c]);
    }
#else
    for (int r = 0; r < R; r++) {
      for (int c = 0; c < C; c++) acc[r][c] = acc_fma(acc[r][c], x + c * ldx + k, w + (int64_t)r * K + k);
    }
#endif
  }
  for (int r = 0; r < R; r++) {
    for (int c = 0; c < C; c++) {
      float s = acc_sum(acc[r][c]);
      for (int k = K8; k < K; k++) s = NSN_MADD(x[c * ldx + k], w[(int64_t)r * K + k], s);
      float& out = y[c * ldy + r];
      out = accumulate ? out + s : s;
    }
  }
}

typedef void (*TileFn)(const float*, int64_t, int, const float*, float*, int64_t, bool);

// Rows per tile for C tokens: enough accumulators to hide FMA latency without spilling.
template <int C>
constexpr int rows_for() {
  return C <= 2 ? 4 : 2;
}

template <int C>
void row_range(const float* x, int64_t ldx, int K, const float* w, int n0, int n1, float* y,
               int64_t ldy, bool accumulate) {
  constexpr int R = rows_for<C>();
  int n = n0;
  for (; n + R <= n1; n += R) tile<R, C>(x, ldx, K, w + (int64_t)n * K, y + n, ldy, accumulate);
  for (; n < n1; n++) tile<1, C>(x, ldx, K, w + (int64_t)n * K, y + n, ldy, accumulate);
}

void rows_block(const float* x, int64_t ldx, int T, int K, const float* w, int n0, int n1,
                float* y, int64_t ldy, bool accumulate) {
  // Token blocks of 4 over a group of rows small enough to stay in L2 while x streams past.
  const int rows_per_group = std::max(4, (int)((96 * 1024) / ((int64_t)K * 4)) & ~3);
  for (int g0 = n0; g0 < n1; g0 += rows_per_group) {
    const int g1 = std::min(n1, g0 + rows_per_group);
    int t = 0;
    for (; t + 4 <= T; t += 4) row_range<4>(x + t * ldx, ldx, K, w, g0, g1, y + t * ldy, ldy, accumulate);
    const int left = T - t;
    const float* xt = x + t * ldx;
    float* yt = y + t * ldy;
    if (left == 3) row_range<3>(xt, ldx, K, w, g0, g1, yt, ldy, accumulate);
    if (left == 2) row_range<2>(xt, ldx, K, w, g0, g1, yt, ldy, accumulate);
    if (left == 1) row_range<1>(xt, ldx, K, w, g0, g1, yt, ldy, accumulate);
  }
}

}  // namespace

void matmul(ThreadPool& pool, const float* x, int64_t ldx, int T, int K, const float* w, int N,
            float* y, int64_t ldy, bool accumulate) {
  if (T <= 0 || N <= 0) return;
  // Split the output rows: each weight row is read by one thread only. A few tasks per
  // thread balance uneven progress; tiny matrices run on the caller.
  const int64_t work = (int64_t)T * N * K;
  const int tasks = work < (1 << 16) ? 1 : std::min(N / 4 > 0 ? N / 4 : 1, pool.size() * 4);
  const int per = ((N + tasks - 1) / tasks + 3) & ~3;
  pool.run(tasks, [&](int task, int) {
    const int n0 = task * per, n1 = std::min(N, n0 + per);
    if (n0 < n1) rows_block(x, ldx, T, K, w, n0, n1, y, ldy, accumulate);
  });
}

void rmsnorm(const float* x, int64_t ldx, const float* g, int n, float eps, int T, float* y,
             int64_t ldy) {
  for (int t = 0; t < T; t++) {
    const float* xr = x + t * ldx;
    float* yr = y + t * ldy;
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
    const float inv = (float)(1.0 / sqrt(ss / n + (double)eps));
    for (int i = 0; i < n; i++) yr[i] = xr[i] * inv * g[i];
  }
}

void silu_mul(const float* gu, int T, int I, float* h) {
  for (int t = 0; t < T; t++) {
    const float* g = gu + (int64_t)t * 2 * I;
    const float* u = g + I;
    float* o = h + (int64_t)t * I;
    for (int i = 0; i < I; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
  }
}

void f16_to_f32_row(const uint16_t* src, int n, float* dst) {
  int i = 0;
#ifdef NSN_AVX2
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + i))));
  }
#endif
  for (; i < n; i++) dst[i] = f16_to_f32(src[i]);
}

void f32_to_f16_row(const float* src, int n, uint16_t* dst) {
  int i = 0;
#ifdef NSN_AVX2
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128((__m128i*)(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

void round_f16_row(float* x, int n) {
  int i = 0;
#ifdef NSN_AVX2
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; i++) x[i] = round_f16(x[i]);
}

}  // namespace nsn
