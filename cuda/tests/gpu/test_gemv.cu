// test_gemv.cu: the batch-1 GEMVs with RMSNorm (and SwiGLU) fused in, against the unfused path
// the CUDA backend runs otherwise (gemv.cuh, layers.cuh):
//   gemv_rmsnorm:        launch_rmsnorm -> launch_gemv                      vs launch_gemv_rmsnorm
//   gemv_rmsnorm_swiglu: launch_rmsnorm -> launch_gemv (2I rows) -> launch_swiglu
//                                                                  vs launch_gemv_rmsnorm_swiglu
// Both paths share the RMSNorm, the weight-streaming loop and the SwiGLU (layers_dev.cuh,
// gemv.cu), so y and h must be bitwise identical; shapes (N, K) in {(64, 256), (96, 4096),
// (40, 14336)}, (I, K) in {(64, 256), (48, 4096)}, beta 0 and 1, the default grid and grids of
// 1 and 3 blocks (every warp loops over several rows). A double-precision CPU dot product of the
// normed row checks that both are also right. Then the launchers' argument checks.
// Exits 1 on any failure. --small: skips the 3-block grids. Build: tools/gpu_kernel_tests.sh,
// tools/emu_kernel_tests.sh (CPU emulator).
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "../../src/gpu/gemv.cuh"
#include "../../src/gpu/layers.cuh"
#include "check.h"

using namespace nsn;

static const char* grid_name(int max_blocks) {
  static char buf[32];
  if (max_blocks == 0) return "auto";
  snprintf(buf, sizeof buf, "%d block%s", max_blocks, max_blocks == 1 ? "" : "s");
  return buf;
}

static float bf(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
static T* to_dev(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
static std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// A residual row (Gaussian with a few outlier channels), RMSNorm weights around 1, and bf16
// weights [rows][K].
struct Inputs {
  std::vector<float> x, nw;
  std::vector<__nv_bfloat16> w;
  Inputs(Rng& r, int rows, int K) : x(K), nw(K), w((size_t)rows * K) {
    const float scale = 0.3f + 3.0f * r.uniform();
    for (int k = 0; k < K; k++) {
      x[k] = scale * r.normal() * (r.uniform() < 0.01f ? 20.0f : 1.0f);
      nw[k] = 1.0f + 0.2f * r.normal();
    }
    for (auto& v : w) v = __float2bfloat16_rn(0.04f * r.normal());
  }
};

// sum_k xn[k] w[row][k] in double, and sum_k |xn[k] w[row][k]| (the scale of its rounding error).
static void dot_ref(const std::vector<__nv_bfloat16>& xn, const std::vector<__nv_bfloat16>& w,
                    int row, int K, double* dot, double* mag) {
  double s = 0.0, a = 0.0;
  for (int k = 0; k < K; k++) {
    const double p = (double)bf(xn[k]) * bf(w[(size_t)row * K + k]);
    s += p;
    a += fabs(p);
  }
  *dot = s;
  *mag = a;
}

// The device's normed row against the CPU in double: bf16 rounding of nearly the same value
// (inv differs by fp32 rounding), so within 2 bf16 ulps (2^-6 relative).
static int xn_off(const std::vector<float>& x, const std::vector<float>& nw,
                                   const std::vector<__nv_bfloat16>& xn, float eps) {
  const int K = (int)x.size();
  double ss = 0.0;
  for (float v : x) ss += (double)v * v;
  const double inv = 1.0 / sqrt(ss / K + eps);
  int bad = 0;
  for (int k = 0; k < K; k++) {
    const double want = x[k] * inv * nw[k];
    if (fabs(bf(xn[k]) - want) > fabs(want) * (1.0 / 64) + 1e-30) bad++;
  }
  return bad;
}

static void test_rmsnorm_gemv(int N, int K, float beta, int max_blocks, Rng& r) {
  const float eps = 1e-5f;
  Inputs in(r, N, K);
  std::vector<float> y0(N);
  for (auto& v : y0) v = r.normal();
  float *d_x = to_dev(in.x), *d_nw = to_dev(in.nw), *d_yref = to_dev(y0), *d_yf = to_dev(y0);
  __nv_bfloat16* d_w = to_dev(in.w);
  __nv_bfloat16* d_xn = nullptr;
  CK(cudaMalloc(&d_xn, (size_t)K * 2));

  NK(launch_rmsnorm(d_x, nullptr, 1, K, d_nw, eps, d_xn, 0));
  NK(launch_gemv(1, N, K, d_xn, K, d_w, d_yref, N, beta, 0));
  NK(launch_gemv_rmsnorm(N, K, d_x, d_nw, eps, d_w, d_yf, beta, 0, max_blocks));
  CK(cudaDeviceSynchronize());
  const std::vector<float> yref = to_host(d_yref, N), yf = to_host(d_yf, N);
  const std::vector<__nv_bfloat16> xn = to_host(d_xn, K);

  int diff = 0;
  double worst = 0.0;
  for (int n = 0; n < N; n++) {
    if (memcmp(&yref[n], &yf[n], 4) != 0) diff++;
    double dot, mag;
    dot_ref(xn, in.w, n, K, &dot, &mag);
    const double want = beta * (double)y0[n] + dot;
    worst = fmax(worst, fabs(yf[n] - want) / (mag + fabs(beta * y0[n]) + 1e-30));
  }
  const int bad_xn = xn_off(in.x, in.nw, xn, eps);
  check(diff == 0 && worst < 1e-5 && bad_xn == 0,
        "gemv_rmsnorm N=%-3d K=%-5d beta=%g grid=%s: %d/%d differ from unfused, err vs double "
        "%.2e (of sum|p|), normed row off double: %d",
        N, K, beta, grid_name(max_blocks), diff, N, worst, bad_xn);
  cudaFree(d_x);
  cudaFree(d_nw);
  cudaFree(d_yref);
  cudaFree(d_yf);
  cudaFree(d_w);
  cudaFree(d_xn);
}

static void test_rmsnorm_swiglu(int I, int K, int max_blocks, Rng& r) {
  const float eps = 1e-5f;
  Inputs in(r, 2 * I, K);
  float *d_x = to_dev(in.x), *d_nw = to_dev(in.nw), *d_gu = nullptr;
  __nv_bfloat16* d_w = to_dev(in.w);
  __nv_bfloat16 *d_xn = nullptr, *d_href = nullptr, *d_hf = nullptr;
  CK(cudaMalloc(&d_xn, (size_t)K * 2));
  CK(cudaMalloc(&d_gu, (size_t)2 * I * 4));
  CK(cudaMalloc(&d_href, (size_t)I * 2));
  CK(cudaMalloc(&d_hf, (size_t)I * 2));

  NK(launch_rmsnorm(d_x, nullptr, 1, K, d_nw, eps, d_xn, 0));
  NK(launch_gemv(1, 2 * I, K, d_xn, K, d_w, d_gu, 2 * I, 0.0f, 0));
  NK(launch_swiglu(d_gu, 1, I, d_href, 0));
  NK(launch_gemv_rmsnorm_swiglu(I, K, d_x, d_nw, eps, d_w, d_hf, 0, max_blocks));
  CK(cudaDeviceSynchronize());
  const std::vector<__nv_bfloat16> href = to_host(d_href, I), hf = to_host(d_hf, I),
                                   xn = to_host(d_xn, K);

  int diff = 0, bad = 0;
  for (int n = 0; n < I; n++) {
    if (memcmp(&href[n], &hf[n], 2) != 0) diff++;
    double g, gm, u, um;
    dot_ref(xn, in.w, n, K, &g, &gm);
    dot_ref(xn, in.w, n + I, K, &u, &um);
    const double want = g / (1.0 + exp(-g)) * u;
    // bf16 rounding of h (2^-8 relative) plus the fp32 dot products' error, propagated
    const double tol = fabs(want) / 128 + 1e-5 * (gm * fabs(u) + um * fabs(g)) + 1e-30;
    if (fabs(bf(hf[n]) - want) > tol) bad++;
  }
  check(diff == 0 && bad == 0,
        "gemv_rmsnorm_swiglu I=%-3d K=%-5d grid=%s: %d/%d h differ from unfused, %d off the "
        "double reference",
        I, K, grid_name(max_blocks), diff, I, bad);
  cudaFree(d_x);
  cudaFree(d_nw);
  cudaFree(d_gu);
  cudaFree(d_w);
  cudaFree(d_xn);
  cudaFree(d_href);
  cudaFree(d_hf);
}

// A 1-ulp change of the RMSNorm scale inv flips a normed bf16 value only when x * inv * w sits
// within a few fp32 ulps of a bf16 rounding midpoint, so random rows rarely expose a reduction
// that differs from rmsnorm_kernel's. Here the norm weights put every x[k] * inv * w[k] on a
// midpoint (inv in double): which way each value rounds then depends on the last bits of the
// fp32 inv, and any change of it changes y (N = 8 weight rows).
static void test_midpoint_rows(int trials, int K, Rng& r) {
  const int N = 8;
  const float eps = 1e-5f;
  Inputs in(r, N, K);
  float *d_nw = nullptr, *d_yref = nullptr, *d_yf = nullptr, *d_x = nullptr;
  __nv_bfloat16* d_w = to_dev(in.w);
  __nv_bfloat16* d_xn = nullptr;
  CK(cudaMalloc(&d_x, (size_t)K * 4));
  CK(cudaMalloc(&d_nw, (size_t)K * 4));
  CK(cudaMalloc(&d_xn, (size_t)K * 2));
  CK(cudaMalloc(&d_yref, (size_t)N * 4));
  CK(cudaMalloc(&d_yf, (size_t)N * 4));
  int diff_rows = 0;
  std::vector<float> x(K), nw(K);
  for (int t = 0; t < trials; t++) {
    const float scale = 0.01f + 10.0f * r.uniform();
    double ss = 0.0;
    for (auto& v : x) {
      v = scale * r.normal();
      ss += (double)v * v;
    }
    const double inv = 1.0 / sqrt(ss / K + eps);
    for (int k = 0; k < K; k++) {
      const float v = (float)(x[k] * inv * (1.0 + 0.2 * r.normal()));
      uint32_t u;
      memcpy(&u, &v, 4);
      u &= 0xffff0000u;  // v truncated to bf16, and the next bf16 away from zero
      const uint32_t u1 = u + 0x10000u;
      float lo, hi;
      memcpy(&lo, &u, 4);
      memcpy(&hi, &u1, 4);
      nw[k] = (float)((0.5 * lo + 0.5 * hi) / (x[k] * inv));
    }
    CK(cudaMemcpy(d_x, x.data(), (size_t)K * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_nw, nw.data(), (size_t)K * 4, cudaMemcpyHostToDevice));
    NK(launch_rmsnorm(d_x, nullptr, 1, K, d_nw, eps, d_xn, 0));
    NK(launch_gemv(1, N, K, d_xn, K, d_w, d_yref, N, 0.0f, 0));
    NK(launch_gemv_rmsnorm(N, K, d_x, d_nw, eps, d_w, d_yf, 0.0f, 0));
    CK(cudaDeviceSynchronize());
    const std::vector<float> yref = to_host(d_yref, N), yf = to_host(d_yf, N);
    diff_rows += memcmp(yref.data(), yf.data(), (size_t)N * 4) != 0;
  }
  check(diff_rows == 0, "gemv_rmsnorm, %d residual rows of K=%d on bf16 midpoints: %d give a different y",
        trials, K, diff_rows);
  cudaFree(d_x);
  cudaFree(d_nw);
  cudaFree(d_yref);
  cudaFree(d_yf);
  cudaFree(d_w);
  cudaFree(d_xn);
}

static void test_arguments() {
  const int K = 256;
  float *d_x = nullptr, *d_y = nullptr;
  __nv_bfloat16 *d_w = nullptr, *d_h = nullptr;
  CK(cudaMalloc(&d_x, 2 * K * 4));
  CK(cudaMalloc(&d_y, 64 * 4));
  CK(cudaMalloc(&d_w, 64 * K * 2 + 16));
  CK(cudaMalloc(&d_h, 64 * 2));
  const float* nw = d_x + K;
  struct Case {
    const char* what;
    nsn_status got, want;
  } cases[] = {
      {"null x", launch_gemv_rmsnorm(8, K, nullptr, nw, 1e-5f, d_w, d_y, 0, 0), NSN_E_INVALID},
      {"null norm_w", launch_gemv_rmsnorm(8, K, d_x, nullptr, 1e-5f, d_w, d_y, 0, 0), NSN_E_INVALID},
      {"null w", launch_gemv_rmsnorm(8, K, d_x, nw, 1e-5f, nullptr, d_y, 0, 0), NSN_E_INVALID},
      {"null y", launch_gemv_rmsnorm(8, K, d_x, nw, 1e-5f, d_w, nullptr, 0, 0), NSN_E_INVALID},
      {"N = 0", launch_gemv_rmsnorm(0, K, d_x, nw, 1e-5f, d_w, d_y, 0, 0), NSN_E_INVALID},
      {"K = 0", launch_gemv_rmsnorm(8, 0, d_x, nw, 1e-5f, d_w, d_y, 0, 0), NSN_E_INVALID},
      {"K % 8", launch_gemv_rmsnorm(8, K - 4, d_x, nw, 1e-5f, d_w, d_y, 0, 0), NSN_E_INTERNAL},
      {"K too big", launch_gemv_rmsnorm(1, kGemvNormMaxK + 8, d_x, nw, 1e-5f, d_w, d_y, 0, 0),
       NSN_E_INTERNAL},
      {"w misaligned", launch_gemv_rmsnorm(8, K, d_x, nw, 1e-5f, d_w + 4, d_y, 0, 0), NSN_E_INTERNAL},
      {"x misaligned",
       launch_gemv_rmsnorm(8, K, (const float*)((const char*)d_x + 2), nw, 1e-5f, d_w, d_y, 0, 0),
       NSN_E_INTERNAL},
      {"max_blocks < 0", launch_gemv_rmsnorm(8, K, d_x, nw, 1e-5f, d_w, d_y, 0, 0, -1), NSN_E_INVALID},
      {"swiglu null h", launch_gemv_rmsnorm_swiglu(8, K, d_x, nw, 1e-5f, d_w, nullptr, 0), NSN_E_INVALID},
      {"swiglu null w", launch_gemv_rmsnorm_swiglu(8, K, d_x, nw, 1e-5f, nullptr, d_h, 0), NSN_E_INVALID},
      {"swiglu I = 0", launch_gemv_rmsnorm_swiglu(0, K, d_x, nw, 1e-5f, d_w, d_h, 0), NSN_E_INVALID},
      {"swiglu K % 8", launch_gemv_rmsnorm_swiglu(8, 12, d_x, nw, 1e-5f, d_w, d_h, 0), NSN_E_INTERNAL},
      {"swiglu h misaligned",
       launch_gemv_rmsnorm_swiglu(8, K, d_x, nw, 1e-5f, d_w, (__nv_bfloat16*)((char*)d_h + 1), 0),
       NSN_E_INTERNAL},
  };
  int bad = 0;
  for (const Case& c : cases) {
    if (c.got != c.want) {
      printf("    %s: status %d, want %d\n", c.what, (int)c.got, (int)c.want);
      bad++;
    }
  }
  CK(cudaDeviceSynchronize());
  check(bad == 0, "argument checks: %d/%d cases return the expected status",
        (int)(sizeof cases / sizeof cases[0]) - bad, (int)(sizeof cases / sizeof cases[0]));
  cudaFree(d_x);
  cudaFree(d_y);
  cudaFree(d_w);
  cudaFree(d_h);
}

int main(int argc, char** argv) {
  const bool small = argc > 1 && !strcmp(argv[1], "--small");
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (%d SMs)%s\n", prop.name, prop.multiProcessorCount, small ? "  [--small]" : "");
  Rng rng(2024);
  std::vector<int> grids = {0, 1};
  if (!small) grids.push_back(3);

  printf("== gemv_rmsnorm vs rmsnorm + gemv ==\n");
  const int nk[][2] = {{64, 256}, {96, 4096}, {40, 14336}};
  for (const auto& s : nk) {
    for (float beta : {0.0f, 1.0f}) {
      for (int g : grids) test_rmsnorm_gemv(s[0], s[1], beta, g, rng);
    }
  }
  printf("== gemv_rmsnorm_swiglu vs rmsnorm + gemv + swiglu ==\n");
  const int ik[][2] = {{64, 256}, {48, 4096}};
  for (const auto& s : ik) {
    for (int g : grids) test_rmsnorm_swiglu(s[0], s[1], g, rng);
  }
  printf("== rows on bf16 rounding midpoints (the RMSNorm scale bitwise) ==\n");
  test_midpoint_rows(small ? 24 : 64, 4096, rng);
  printf("== launcher argument checks ==\n");
  test_arguments();
  printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "PASSED", g_fail);
  return g_fail ? 1 : 0;
}
