// nsn_encode.cpp: NSNQuant encoder for one 64-token window of one K or V head
// (Normalize, Shift, Normalize, [RoPE], Hadamard, vector-quantize), and the method dispatch of
// quant_encode_block / quant_decode_block. The README's "NSNQuant" section is the narrative.
#include <math.h>
#include <string.h>

#include "../rope.h"
#include "quant_internal.h"

namespace nsn {

namespace {

// The codebooks transposed to [8][256] plus |c|^2, so the nearest search runs over all 256
// centroids at once (contiguous, vectorizes): dist_c = |c|^2 + sum_j (-2 y_j) c_j, which is the
// L2 distance minus |y|^2.
struct SearchTables {
  float t1[kSub][256], t2[kSub][256], n1[256], n2[256];
  SearchTables() {
    for (int c = 0; c < 256; c++) {
      float a = 0.0f, b = 0.0f;
      for (int j = 0; j < kSub; j++) {
        t1[j][c] = kCodebook1[c * kSub + j];
        t2[j][c] = kCodebook2[c * kSub + j];
        a += t1[j][c] * t1[j][c];
        b += t2[j][c] * t2[j][c];
      }
      n1[c] = a;
      n2[c] = b;
    }
  }
};

const SearchTables& search_tables() {
  static const SearchTables tables;  // thread-safe one-time init
  return tables;
}

// Nearest centroid by L2 distance; exact ties go to the lowest index.
int nearest(const float (*cbt)[256], const float* cnorm, const float* y) {
  float dist[256];
  for (int c = 0; c < 256; c++) dist[c] = cnorm[c];
  for (int j = 0; j < kSub; j++) {
    const float w = -2.0f * y[j];
    for (int c = 0; c < 256; c++) dist[c] += w * cbt[j][c];
  }
  int best = 0;
  float best_d = dist[0];
  for (int c = 1; c < 256; c++) {
    if (dist[c] < best_d) {
      best_d = dist[c];
      best = c;
    }
  }
  return best;
}

// Fits a 4-bit quantizer to vals [n] (stride 1), writes the nibbles from index `first` on, and
// returns the stored quantizer. Used for the 64 first scales and for each 32-channel mean group.
Uniform quant4(const float* vals, int n, uint8_t* nibbles, int first) {
  float lo = vals[0], hi = vals[0];
  for (int i = 1; i < n; i++) {
    lo = fminf(lo, vals[i]);
    hi = fmaxf(hi, vals[i]);
  }
  const Uniform u = uniform_fit(lo, hi, 15);
  for (int i = 0; i < n; i++) put_nibble(nibbles, first + i, uniform_code(u, vals[i], 15));
  return u;
}

}  // namespace

void nsn_encode_block(const QuantParams& p, const float* x, int32_t pos0, uint8_t* block) {
  const int d = p.head_dim;
  const NsnBlockLayout L = nsn_block_layout(p.kv_bits, d);
  memset(block, 0, L.bytes);  // padding bytes are zero, so equal inputs give equal blocks
  const float inv_sqrt_d = 1.0f / sqrtf((float)d);

  // 1. First Normalize: per-token RMS s1, quantized to 4 bits over the window.
  float s1[kWindow];
  for (int t = 0; t < kWindow; t++) {
    double ss = 0.0;
    for (int c = 0; c < d; c++) ss += (double)x[t * d + c] * x[t * d + c];
    s1[t] = (p.ablation & NSN_ABL_NO_NORM1) ? 1.0f : (float)sqrt(ss) * inv_sqrt_d;
  }
  const Uniform us1 = quant4(s1, kWindow, block + L.s1q, 0);
  put_half(block + L.s1meta, us1.min);
  put_half(block + L.s1meta + 2, us1.step);

  const bool fp_s1 = (p.ablation & NSN_ABL_FP_S1) != 0;
  const bool fp_mean = (p.ablation & NSN_ABL_FP_MEAN) != 0;
  float s1_used[kWindow];
  std::vector<float> x1((size_t)kWindow * d);
  for (int t = 0; t < kWindow; t++) {
    const float s = fmaxf(fp_s1 ? s1[t] : uniform_value(us1, get_nibble(block + L.s1q, t)), kS1Eps);
    s1_used[t] = s;
    for (int c = 0; c < d; c++) x1[t * d + c] = x[t * d + c] / s;
  }

  // 2. Shift: subtract the window's channel mean, stored at 4 bits per 32-channel group.
  float o[256] = {0}, o_hat[256] = {0};
  if (!(p.ablation & NSN_ABL_NO_SHIFT)) {
    for (int c = 0; c < d; c++) {
      double s = 0.0;
      for (int t = 0; t < kWindow; t++) s += x1[t * d + c];
      o[c] = (float)(s / kWindow);
    }
    const int groups = d / 32;
    for (int g = 0; g < groups; g++) {
      const Uniform u = quant4(o + g * 32, 32, block + L.oq, g * 32);
      put_half(block + L.ometa + 2 * g, u.min);
      put_half(block + L.ometa + 2 * (groups + g), u.step);
      for (int c = g * 32; c < g * 32 + 32; c++) o_hat[c] = uniform_value(u, get_nibble(block + L.oq, c));
    }
    if (fp_mean) memcpy(o_hat, o, sizeof(float) * d);
  }
  if (fp_s1 || fp_mean) fp_side_put(block, s1_used, o_hat, d);

  const SearchTables& cb = search_tables();
  float cs[128], sn[128], y[256], yq[256];
  for (int t = 0; t < kWindow; t++) {
    // 3. Second Normalize: the centred residual to unit RMS.
    double ss = 0.0;
    for (int c = 0; c < d; c++) {
      y[c] = x1[t * d + c] - o_hat[c];
      ss += (double)y[c] * y[c];
    }
    const float s2 = (float)sqrt(ss) * inv_sqrt_d;
    const float inv_s2 = s2 > 0.0f ? 1.0f / s2 : 0.0f;
    for (int c = 0; c < d; c++) y[c] *= inv_s2;
    // 4. Keys: RoPE on the residual only (the mean stays un-rotated in the block).
    if (p.is_key) {
      rope_cos_sin(pos0 + t, p.inv_freq, d, cs, sn);
      rope_apply(y, d, cs, sn);
    }
    // 5. Hadamard rotation, 6. vector quantization of each 8-element sub-vector.
    if (!(p.ablation & NSN_ABL_NO_HADAMARD)) fwht(y, d);
    uint8_t* codes = block + L.codes + t * (d / kSub);
    uint8_t* signs = block + L.signs + t * (d / kSub);
    for (int g = 0; g < d / kSub; g++) {
      const float* yg = y + g * kSub;
      if (p.kv_bits == 1) {
        codes[g] = (uint8_t)nearest(cb.t1, cb.n1, yg);
      } else {
        float a[kSub];
        uint8_t sb = 0;
        for (int j = 0; j < kSub; j++) {
          a[j] = fabsf(yg[j]);
          if (yg[j] < 0.0f) sb |= (uint8_t)(1u << j);
        }
        codes[g] = (uint8_t)nearest(cb.t2, cb.n2, a);
        signs[g] = sb;
      }
    }
    nsn_decode_codes(p.kv_bits, codes, signs, d, yq);
    // 7. s2' = s2 |y|^2 / <y, y^>: the reconstruction's component along y becomes exact.
    // (Ablations: NO_S2ADJ stores s2; S2_LS the least-squares s2 <y, y^> / |y^|^2.)
    double yy = 0.0, yyq = 0.0, yqyq = 0.0;
    for (int c = 0; c < d; c++) {
      yy += (double)y[c] * y[c];
      yyq += (double)y[c] * yq[c];
      yqyq += (double)yq[c] * yq[c];
    }
    float s2p = yyq > 0.0 ? (float)(s2 * (yy / yyq)) : s2;
    if (p.ablation & NSN_ABL_NO_S2ADJ) s2p = s2;
    if (p.ablation & NSN_ABL_S2_LS) s2p = yqyq > 0.0 ? (float)(s2 * (yyq / yqyq)) : s2;
    put_half(block + L.s2 + 2 * t, s2p);
  }
}

void quant_encode_block(const QuantParams& p, const float* x, int32_t pos0, uint8_t* block) {
  if (p.method == NSN_QUANT_RTN) {
    rtn_encode_block(p, x, pos0, block);
  } else {
    nsn_encode_block(p, x, pos0, block);
  }
}

void quant_decode_block(const QuantParams& p, const uint8_t* block, int32_t pos0, float* x_hat) {
  if (p.method == NSN_QUANT_RTN) {
    rtn_decode_block(p, block, x_hat);
  } else {
    nsn_decode_block(p, block, pos0, x_hat);
  }
}

}  // namespace nsn
