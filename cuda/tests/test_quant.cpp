// test_quant.cpp: unit tests of the CPU quantizer (cuda/src/quant/), linked without the engine.
//
//   g++ -std=c++17 -O2 -Wall -Wextra cuda/tests/test_quant.cpp cuda/src/quant/*.cpp
//       cuda/src/errors.cpp -o cuda/build/test_quant && cuda/build/test_quant
//
// tests/quant_test.ts builds and runs it. Prints the measured quality numbers; exit 1 on failure.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <vector>

#include "../include/nsn.h"
#include "../src/quant/quant_internal.h"
#include "../src/rope.h"

using namespace nsn;

namespace {

int g_failures = 0;

#define CHECK(cond, ...)                                    \
  do {                                                      \
    if (!(cond)) {                                          \
      g_failures++;                                         \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      printf(__VA_ARGS__);                                  \
      printf("\n");                                         \
    }                                                       \
  } while (0)

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return ((next() >> 11) + 0.5) / 9007199254740992.0; }
  float normal() { return (float)(sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform())); }
};

std::vector<float> gaussian(int n, int d, uint64_t seed) {
  Rng r(seed);
  std::vector<float> x((size_t)n * d);
  for (float& v : x) v = r.normal();
  return x;
}

// What real K/V look like: per-channel offsets (a few large "outlier" channels), per-channel
// spreads, and a per-token magnitude that varies.
std::vector<float> outlier_data(int n, int d, uint64_t seed) {
  Rng r(seed);
  std::vector<float> mu(d), sigma(d), x((size_t)n * d);
  for (int c = 0; c < d; c++) {
    const bool outlier = c % 16 == 3;
    mu[c] = outlier ? 8.0f * (r.uniform() < 0.5 ? -1.0f : 1.0f) : 0.7f * r.normal();
    sigma[c] = outlier ? 3.0f : (float)(0.3 + 1.2 * r.uniform());
  }
  for (int t = 0; t < n; t++) {
    const float mag = expf(0.3f * r.normal());
    for (int c = 0; c < d; c++) x[(size_t)t * d + c] = mag * (mu[c] + sigma[c] * r.normal());
  }
  return x;
}

std::vector<float> inv_freq(int d, float theta) {
  nsn_model_config cfg{};
  cfg.head_dim = d;
  cfg.rope_theta = theta;
  std::vector<float> f(d / 2);
  rope_inv_freq(cfg, f.data());
  return f;
}

void rope_rows(float* x, int n, int d, int pos0, const float* inv) {
  float cs[128], sn[128];
  for (int t = 0; t < n; t++) {
    rope_cos_sin(pos0 + t, inv, d, cs, sn);
    rope_apply(x + (size_t)t * d, d, cs, sn);
  }
}

struct Quality {
  double cos;  // mean over tokens of cos(x_t, x^_t)
  double rel;  // sum |x - x^|^2 / sum |x - window mean|^2: error against the part that varies
};

Quality quality(const std::vector<float>& ref, const std::vector<float>& rec, int n, int d) {
  double cs = 0.0, err = 0.0, var = 0.0;
  for (int w = 0; w < n / kWindow; w++) {
    std::vector<double> mean(d, 0.0);
    for (int t = w * kWindow; t < (w + 1) * kWindow; t++)
      for (int c = 0; c < d; c++) mean[c] += ref[(size_t)t * d + c] / kWindow;
    for (int t = w * kWindow; t < (w + 1) * kWindow; t++) {
      double xy = 0, xx = 0, yy = 0;
      for (int c = 0; c < d; c++) {
        const double a = ref[(size_t)t * d + c], b = rec[(size_t)t * d + c];
        xy += a * b;
        xx += a * a;
        yy += b * b;
        err += (a - b) * (a - b);
        var += (a - mean[c]) * (a - mean[c]);
      }
      cs += xy / sqrt(xx * yy + 1e-30);
    }
  }
  return Quality{cs / n, err / var};
}

Quality roundtrip(int bits, int method, int abl, int d, int is_key, const std::vector<float>& x,
                  int n) {
  std::vector<float> xh(x.size()), ref = x;
  const int pos0 = 640;
  const nsn_status st = nsn_quant_roundtrip(bits, method, abl, d, is_key, 10000.0f, pos0, x.data(), n, xh.data());
  CHECK(st == NSN_OK, "roundtrip status %d: %s", st, nsn_last_error());
  if (is_key) {
    const std::vector<float> inv = inv_freq(d, 10000.0f);
    rope_rows(ref.data(), n, d, pos0, inv.data());
  }
  return quality(ref, xh, n, d);
}

void test_packing() {
  Rng r(1);
  uint8_t bytes[64] = {0};
  int vals[128];
  for (int i = 0; i < 128; i++) put_nibble(bytes, i, vals[i] = (int)(r.next() & 15));
  for (int i = 0; i < 128; i++) put_nibble(bytes, i, vals[i]);  // overwrite keeps the other nibble
  bool ok = true;
  for (int i = 0; i < 128; i++) ok = ok && get_nibble(bytes, i) == vals[i];
  CHECK(ok, "4-bit nibbles do not round-trip");
  CHECK((bytes[0] & 15) == vals[0] && (bytes[0] >> 4) == vals[1], "element 0 must be the low nibble");
  // The uniform 4-bit quantizer: within half a step (+ fp16 rounding) of every input.
  float v[64];
  for (float& x : v) x = 3.0f + 2.0f * r.normal();
  float lo = v[0], hi = v[0];
  for (float x : v) lo = fminf(lo, x), hi = fmaxf(hi, x);
  const Uniform u = uniform_fit(lo, hi, 15);
  float worst = 0;
  for (float x : v) worst = fmaxf(worst, fabsf(uniform_value(u, uniform_code(u, x, 15)) - x));
  CHECK(worst <= 0.5f * u.step + 4e-3f * fabsf(hi), "4-bit error %g > step/2 %g", worst, 0.5f * u.step);
  const Uniform flat = uniform_fit(2.0f, 2.0f, 15);
  CHECK(uniform_code(flat, 2.0f, 15) == 0 && uniform_value(flat, 0) == 2.0f, "zero-range quantizer");
}

void test_fwht() {
  for (int d : {64, 128, 256}) {
    std::vector<float> x = gaussian(1, d, 7), y = x, ref(d, 0.0f);
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) ref[i] += (__builtin_popcount(i & j) & 1 ? -1.0f : 1.0f) * x[j] / sqrtf((float)d);
    fwht(y.data(), d);
    float e1 = 0, e2 = 0;
    for (int i = 0; i < d; i++) e1 = fmaxf(e1, fabsf(y[i] - ref[i]));
    fwht(y.data(), d);
    for (int i = 0; i < d; i++) e2 = fmaxf(e2, fabsf(y[i] - x[i]));
    CHECK(e1 < 1e-5f && e2 < 1e-5f, "fwht d=%d: vs matrix %g, H*H %g", d, e1, e2);
  }
}

void test_layout() {
  // Structure of an NSN block: metadata decodes to the quantities it claims to hold. Tokens are
  // (1 + t/16) (z + 2): s1 = RMS grows with t, x/s1 = (z + 2)/sqrt(5), so the window mean is
  // 2/sqrt(5) in every channel and the residual RMS s2 is 1/sqrt(5).
  // (s2' = s2 |y|^2/<y,y^> is larger: the codebook shrinks, <y,y^>/|y|^2 ~ 0.68 at 1 bit, 0.9 at 2.)
  const int d = 128;
  const std::vector<float> inv = inv_freq(d, 10000.0f);
  std::vector<float> x = gaussian(kWindow, d, 3);
  for (int t = 0; t < kWindow; t++)
    for (int c = 0; c < d; c++) x[(size_t)t * d + c] = (1.0f + t / 16.0f) * (x[(size_t)t * d + c] + 2.0f);
  for (int bits : {1, 2}) {
    const NsnBlockLayout L = nsn_block_layout(bits, d);
    std::vector<uint8_t> blk(L.bytes, 0xAB), blk2(L.bytes, 0xCD);
    const QuantParams p{bits, d, NSN_QUANT_NSN, 0, 0, inv.data()};
    quant_encode_block(p, x.data(), 0, blk.data());
    quant_encode_block(p, x.data(), 0, blk2.data());
    CHECK(blk == blk2, "encoding is not deterministic (bits %d)", bits);
    float s1[kWindow], s2[kWindow], o[256];
    nsn_read_scales(L, blk.data(), d, s1, s2, o);
    const float step = get_half(blk.data() + L.s1meta + 2);
    float worst_s1 = 0, worst_s2 = 0, worst_o = 0;
    for (int t = 0; t < kWindow; t++) {
      double ss = 0;
      for (int c = 0; c < d; c++) ss += (double)x[(size_t)t * d + c] * x[(size_t)t * d + c];
      worst_s1 = fmaxf(worst_s1, fabsf(s1[t] - (float)sqrt(ss / d)));
      // relative: s1^'s 4-bit error (up to ~13% here) moves s2 with it
      worst_s2 = fmaxf(worst_s2, fabsf(s2[t] / (0.4472f / (bits == 1 ? 0.68f : 0.9f)) - 1.0f));
    }
    for (int c = 0; c < d; c++) worst_o = fmaxf(worst_o, fabsf(o[c] - 0.8944f));
    CHECK(worst_s1 <= 0.51f * step, "s1 4-bit error %g > step/2 (%g)", worst_s1, step / 2);
    CHECK(worst_s2 < 0.25f, "s2' off its expected value by %g (relative)", worst_s2);
    CHECK(worst_o < 0.3f, "window mean off 2/sqrt(5) by %g", worst_o);
    CHECK(L.bytes * 8.0 / (kWindow * d) < bits + 0.3, "block of %u bytes too large", L.bytes);
  }
}

void test_roundtrip_gaussian() {
  printf("Gaussian N(0,1) data, mean per-token cosine (keys post-RoPE):\n");
  for (int d : {64, 128, 256}) {
    const int n = 256;
    const std::vector<float> x = gaussian(n, d, 100 + d);
    for (int bits : {1, 2}) {
      const Quality k = roundtrip(bits, NSN_QUANT_NSN, 0, d, 1, x, n);
      const Quality v = roundtrip(bits, NSN_QUANT_NSN, 0, d, 0, x, n);
      printf("  d=%3d %d-bit  K cos %.4f  V cos %.4f\n", d, bits, k.cos, v.cos);
      const double floor = bits == 1 ? 0.80 : 0.94;
      CHECK(k.cos > floor && v.cos > floor, "d=%d bits=%d cos K %.4f V %.4f < %.2f", d, bits, k.cos, v.cos, floor);
    }
  }
}

void test_roundtrip_outliers() {
  printf("Outlier-channel data (d=128), cos / error relative to the in-window variance:\n");
  const int d = 128, n = 512;
  const std::vector<float> x = outlier_data(n, d, 42);
  const char* names[] = {"NSN", "no-norm1", "no-shift", "no-hadamard", "RTN"};
  const int abl[] = {0, NSN_ABL_NO_NORM1, NSN_ABL_NO_SHIFT, NSN_ABL_NO_HADAMARD, 0};
  for (int bits : {1, 2}) {
    for (int is_key : {1, 0}) {
      Quality q[5];
      for (int m = 0; m < 5; m++) {
        q[m] = roundtrip(bits, m == 4 ? NSN_QUANT_RTN : NSN_QUANT_NSN, abl[m], d, is_key, x, n);
        printf("  %d-bit %s %-12s cos %.4f  rel.err %.4f\n", bits, is_key ? "K" : "V", names[m], q[m].cos, q[m].rel);
      }
      CHECK(q[0].rel * 2.0 < q[2].rel, "NSN should beat no-shift clearly: %.4f vs %.4f", q[0].rel, q[2].rel);
      CHECK(q[0].rel < q[1].rel, "NSN should beat no-norm1: %.4f vs %.4f", q[0].rel, q[1].rel);
      if (bits == 1) CHECK(q[0].rel * 2.0 < q[4].rel, "NSN 1-bit should beat RTN 1-bit clearly: %.4f vs %.4f", q[0].rel, q[4].rel);
    }
  }
}

// max |a - b| / max |b|
double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, n = 0;
  for (size_t i = 0; i < a.size(); i++) {
    e = fmax(e, fabs((double)a[i] - b[i]));
    n = fmax(n, fabs((double)b[i]));
  }
  return e / n;
}

void test_attention() {
  printf("Attention: codes (mode 0) vs dequantized (mode 1) max|diff|/max|out|; vs exact fp32 rel. L2:\n");
  for (int d : {64, 128, 256}) {
    for (int n_ctx : {64, 100, 192, 1000}) {
      for (int n_q : {1, 4}) {
        const std::vector<float> k = outlier_data(n_ctx, d, 5 + n_ctx), v = outlier_data(n_ctx, d, 6 + n_ctx);
        std::vector<float> q = gaussian(n_q, d, 7 + n_q);
        for (float& x : q) x *= 0.5f;
        std::vector<float> exact((size_t)n_q * d), o0(exact.size()), o1(exact.size());
        CHECK(nsn_quant_attention(16, d, 10000.0f, k.data(), v.data(), n_ctx, q.data(), n_q, 0, exact.data()) == NSN_OK, "%s", nsn_last_error());
        for (int bits : {1, 2}) {
          CHECK(nsn_quant_attention(bits, d, 10000.0f, k.data(), v.data(), n_ctx, q.data(), n_q, 0, o0.data()) == NSN_OK, "%s", nsn_last_error());
          CHECK(nsn_quant_attention(bits, d, 10000.0f, k.data(), v.data(), n_ctx, q.data(), n_q, 1, o1.data()) == NSN_OK, "%s", nsn_last_error());
          const double fast = rel_diff(o0, o1);
          double e = 0, nn = 0;
          for (size_t i = 0; i < o0.size(); i++) e += (o0[i] - exact[i]) * (o0[i] - exact[i]), nn += exact[i] * exact[i];
          if (n_q == 4) printf("  d=%3d ctx=%4d %d-bit  codes-vs-dequant %.2e  vs-exact %.4f\n", d, n_ctx, bits, fast, sqrt(e / nn));
          CHECK(fast < 1e-4, "d=%d ctx=%d n_q=%d bits=%d: codes vs dequantized %.3e", d, n_ctx, n_q, bits, fast);
        }
      }
    }
  }
}

// quant_attend_block over one block vs attend_exact over the same block decoded, n_valid tokens.
double block_vs_decoded(const QuantParams& pk, const QuantParams& pv, const uint8_t* kb, const uint8_t* vb,
                        int pos0, int n_valid, bool lut, const std::vector<float>& q, int n_q) {
  const int d = pk.head_dim;
  const float scale = 1.0f / sqrtf((float)d);
  std::vector<float> qh = q, kd((size_t)kWindow * d), vd(kd.size());
  for (int i = 0; i < n_q; i++) fwht(&qh[(size_t)i * d], d);
  quant_decode_block(pk, kb, pos0, kd.data());
  quant_decode_block(pv, vb, pos0, vd.data());
  std::vector<float> outs[2];
  for (int path = 0; path < 2; path++) {
    std::vector<float> m(n_q), l(n_q), acc((size_t)n_q * d), rot(acc.size()), table((size_t)n_q * (d / 8) * 256);
    AttnState st{n_q, d, m.data(), l.data(), acc.data(), rot.data()};
    if (lut) st.lut = table.data();
    attn_init(st);
    if (path == 0) {
      quant_attend_block(pk, kb, vb, pos0, n_valid, q.data(), qh.data(), scale, st);
    } else {
      attend_exact(kd.data(), vd.data(), n_valid, q.data(), scale, st);
    }
    outs[path].resize(acc.size());
    attn_finish(st, outs[path].data());
  }
  return rel_diff(outs[0], outs[1]);
}

// The block-level API directly: the LUT and decode paths agree, the ablations and RTN run
// through quant_attend_block and match attention over their own decoded blocks, for a full and
// a partial window, at a large position with llama-3's theta.
void test_attend_paths() {
  const int d = 128, n_q = 3, pos0 = 4096;
  const std::vector<float> inv = inv_freq(d, 500000.0f);
  const std::vector<float> k = outlier_data(kWindow, d, 11), v = outlier_data(kWindow, d, 12);
  const std::vector<float> q = gaussian(n_q, d, 13);
  struct Case {
    int bits, method, abl;
    bool lut;
  } cases[] = {{1, NSN_QUANT_NSN, 0, true}, {1, NSN_QUANT_NSN, 0, false}, {2, NSN_QUANT_NSN, 0, false},
               {1, NSN_QUANT_NSN, NSN_ABL_NO_HADAMARD, true}, {2, NSN_QUANT_NSN, 7, false},
               {1, NSN_QUANT_RTN, 0, false}, {2, NSN_QUANT_RTN, 0, false}};
  for (const Case& c : cases) {
    const QuantParams pk{c.bits, d, c.method, c.abl, 1, inv.data()}, pv{c.bits, d, c.method, c.abl, 0, inv.data()};
    const uint32_t bytes = block_bytes(kind_of_bits(c.bits), d, c.method);
    std::vector<uint8_t> kb(bytes), vb(bytes);
    quant_encode_block(pk, k.data(), pos0, kb.data());
    quant_encode_block(pv, v.data(), pos0, vb.data());
    for (int n_valid : {kWindow, 37}) {
      const double diff = block_vs_decoded(pk, pv, kb.data(), vb.data(), pos0, n_valid, c.lut, q, n_q);
      CHECK(diff < 1e-4, "bits %d method %d abl %d lut %d n_valid %d: block path vs decoded %.3e", c.bits,
            c.method, c.abl, c.lut, n_valid, diff);
    }
  }
}

void test_validation() {
  std::vector<float> x(64 * 128), y(x.size()), cb(256 * 8);
  const float* X = x.data();
  float* Y = y.data();
  CHECK(nsn_quant_roundtrip(3, 0, 0, 128, 0, 1e4f, 0, X, 64, Y) == NSN_E_INVALID, "kv_bits 3");
  CHECK(nsn_quant_roundtrip(2, 2, 0, 128, 0, 1e4f, 0, X, 64, Y) == NSN_E_INVALID, "method 2");
  CHECK(nsn_quant_roundtrip(2, 1, 1, 128, 0, 1e4f, 0, X, 64, Y) == NSN_E_INVALID, "RTN + ablation");
  CHECK(nsn_quant_roundtrip(2, 0, 8, 128, 0, 1e4f, 0, X, 64, Y) == NSN_E_INVALID, "ablation 8");
  CHECK(nsn_quant_roundtrip(2, 0, 0, 96, 0, 1e4f, 0, X, 64, Y) == NSN_E_INVALID, "head_dim 96");
  CHECK(nsn_quant_roundtrip(2, 0, 0, 128, 1, 0.0f, 0, X, 64, Y) == NSN_E_INVALID, "theta 0");
  CHECK(nsn_quant_roundtrip(2, 0, 0, 128, 0, 1e4f, 0, X, 63, Y) == NSN_E_INVALID, "63 tokens");
  CHECK(nsn_quant_roundtrip(2, 0, 0, 128, 0, 1e4f, -1, X, 64, Y) == NSN_E_INVALID, "pos0 -1");
  CHECK(nsn_quant_roundtrip(2, 0, 0, 128, 0, 1e4f, 0, nullptr, 64, Y) == NSN_E_INVALID, "null x");
  CHECK(strstr(nsn_last_error(), "null") != nullptr, "message: %s", nsn_last_error());
  CHECK(nsn_quant_attention(4, 128, 1e4f, X, X, 64, X, 1, 0, Y) == NSN_E_INVALID, "attn kv_bits 4");
  CHECK(nsn_quant_attention(2, 128, 1e4f, X, X, 64, X, 65, 0, Y) == NSN_E_INVALID, "n_q 65");
  CHECK(nsn_quant_attention(2, 128, 1e4f, X, X, 0, X, 1, 0, Y) == NSN_E_INVALID, "n_ctx 0");
  CHECK(nsn_quant_attention(2, 128, 1e4f, X, X, 64, X, 1, 2, Y) == NSN_E_INVALID, "mode 2");
  CHECK(nsn_quant_attention(2, 128, 1e4f, X, nullptr, 64, X, 1, 0, Y) == NSN_E_INVALID, "null v");
  CHECK(nsn_codebook(3, cb.data()) == NSN_E_INVALID, "codebook bits 3");
  CHECK(nsn_codebook(1, cb.data()) == NSN_OK && cb[5] == kCodebook1[5], "codebook 1");
}

void print_bits_per_element() {
  printf("Bits per element (block bytes * 8 / (64 * d)):\n");
  for (int d : {64, 128, 256}) {
    printf("  d=%3d  NSN-2 %.4f  NSN-1 %.4f  RTN-2 %.4f  RTN-1 %.4f  fp16 16\n", d,
           block_bytes(KV_Q2, d, 0) * 8.0 / (64 * d), block_bytes(KV_Q1, d, 0) * 8.0 / (64 * d),
           block_bytes(KV_Q2, d, 1) * 8.0 / (64 * d), block_bytes(KV_Q1, d, 1) * 8.0 / (64 * d));
  }
}

}  // namespace

int main() {
  test_packing();
  test_fwht();
  test_layout();
  test_validation();
  test_attend_paths();
  print_bits_per_element();
  test_roundtrip_gaussian();
  test_roundtrip_outliers();
  test_attention();
  printf(g_failures ? "%d FAILED\n" : "all passed\n", g_failures);
  return g_failures ? 1 : 0;
}
