// nsn_attend.cpp: online-softmax attention for the n_q query heads that share one KV head, over
// quantized windows read from their codes (quant_attend_block) and over exact K/V (attend_exact).
//
// Score of query q against the key at window position delta (p = pos0 + delta):
//   <q, k^> = s1^ * ( s2' * <Hq, y^> + <q, RoPE(o', delta)> ),   o' = RoPE(o^, pos0)
// The mean term, per rotary pair i (a = i, b = i + d/2; c = cos(delta th_i), s = sin(delta th_i)):
//   q_a (o'_a c - o'_b s) + q_b (o'_b c + o'_a s) = A_i c + B_i s,
//   A_i = q_a o'_a + q_b o'_b,  B_i = q_b o'_a - q_a o'_b
// so one [d/2] x [64] product against a fixed cos/sin table replaces a per-token RoPE of o^.
// Values: acc_rot += a s1^ s2' y^ (Hadamard basis) and acc += (sum_t a s1^) o^; attn_finish
// applies H once to acc_rot.
// CPU speed: each key's and value's code vector is decoded once per token (branch-free) into a
// small buffer shared by the n_q heads, and the dot products keep 8 partial sums so the compiler
// vectorizes them; results differ from a plain loop only in float summation order.
#include <math.h>

#include <vector>

#include "quant_internal.h"

namespace nsn {

namespace {

struct Scratch {
  std::vector<float> score, wmean, kdec, vdec;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

float dot(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int c = 0; c < d; c++) s += a[c] * b[c];
  return s;
}

// The same dot product with 8 independent partial sums (one AVX register; the compiler
// vectorizes the inner loop), combined pairwise at the end. d is a multiple of 8.
inline float hsum8(const float* a) {
  return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}
float dot8(const float* a, const float* b, int d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int c = 0; c < d; c += 8) {
    for (int j = 0; j < 8; j++) acc[j] += a[c + j] * b[c + j];
  }
  return hsum8(acc);
}
// <a, b> + <c, e> in one pass (the mean term: A . cos + B . sin).
float dot8_pair(const float* a, const float* b, const float* c, const float* e, int d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int k = 0; k < d; k += 8) {
    for (int j = 0; j < 8; j++) acc[j] += a[k + j] * b[k + j] + c[k + j] * e[k + j];
  }
  return hsum8(acc);
}

// Folds n scaled scores s [n] of query i into the running max/sum and turns s into the
// unnormalized weights exp(s - m). Earlier accumulators are rescaled to the new max.
void softmax_update(AttnState& st, int i, float* s, int n) {
  float mx = st.m[i];
  for (int t = 0; t < n; t++) mx = fmaxf(mx, s[t]);
  const float alpha = expf(st.m[i] - mx);  // m = -inf at the start: alpha = 0
  if (alpha != 1.0f) {
    st.l[i] *= alpha;
    float* acc = st.acc + (size_t)i * st.d;
    float* acc_rot = st.acc_rot + (size_t)i * st.d;
    for (int c = 0; c < st.d; c++) {
      acc[c] *= alpha;
      acc_rot[c] *= alpha;
    }
  }
  st.m[i] = mx;
  float sum = 0.0f;
  for (int t = 0; t < n; t++) {
    s[t] = expf(s[t] - mx);
    sum += s[t];
  }
  st.l[i] += sum;
}

// lut [n_q][d/8][256] = <qb_i[8g..8g+8), C1[c]>.
void build_lut(AttnState& st, const float* qb) {
  const int d = st.d, groups = d / kSub;
  for (int i = 0; i < st.n_q; i++) {
    for (int g = 0; g < groups; g++) {
      const float* qg = qb + (size_t)i * d + g * kSub;
      float* row = st.lut + ((size_t)i * groups + g) * 256;
      for (int c = 0; c < 256; c++) row[c] = dot(qg, kCodebook1 + c * kSub, kSub);
    }
  }
  st.lut_ready = 1;
}

}  // namespace

void attn_init(AttnState& st) {
  for (int i = 0; i < st.n_q; i++) {
    st.m[i] = -INFINITY;
    st.l[i] = 0.0f;
  }
  for (size_t j = 0; j < (size_t)st.n_q * st.d; j++) st.acc[j] = st.acc_rot[j] = 0.0f;
  st.lut_ready = 0;
}

void attend_exact(const float* k, const float* v, int32_t n, const float* q, float scale,
                  AttnState& st) {
  const int d = st.d;
  std::vector<float>& s = scratch().score;
  s.resize(kWindow);
  for (int start = 0; start < n; start += kWindow) {
    const int nc = n - start < kWindow ? n - start : kWindow;
    for (int i = 0; i < st.n_q; i++) {
      const float* qi = q + (size_t)i * d;
      for (int t = 0; t < nc; t++) s[t] = scale * dot(qi, k + (size_t)(start + t) * d, d);
      softmax_update(st, i, s.data(), nc);
      float* acc = st.acc + (size_t)i * d;
      for (int t = 0; t < nc; t++) {
        const float* vt = v + (size_t)(start + t) * d;
        for (int c = 0; c < d; c++) acc[c] += s[t] * vt[c];
      }
    }
  }
}

void quant_attend_block(const QuantParams& p, const uint8_t* kblock, const uint8_t* vblock,
                        int32_t pos0, int32_t n_valid, const float* q, const float* qh, float scale,
                        AttnState& st) {
  const int d = p.head_dim, groups = d / kSub, h = d / 2;
  const int n = n_valid < kWindow ? n_valid : kWindow;
  if (n <= 0) return;
  Scratch& sc = scratch();
  if (p.method == NSN_QUANT_RTN) {  // baseline only: decode, then exact attention
    sc.kdec.resize((size_t)kWindow * d);
    sc.vdec.resize((size_t)kWindow * d);
    QuantParams pk = p, pv = p;
    pk.is_key = 1;
    pv.is_key = 0;
    quant_decode_block(pk, kblock, pos0, sc.kdec.data());
    quant_decode_block(pv, vblock, pos0, sc.vdec.data());
    attend_exact(sc.kdec.data(), sc.vdec.data(), n, q, scale, st);
    return;
  }

  const NsnBlockLayout L = nsn_block_layout(p.kv_bits, d);
  float ks1[kWindow], ks2[kWindow], ko[256], vs1[kWindow], vs2[kWindow], vo[256], o_rot[256];
  nsn_read_scales(L, kblock, d, ks1, ks2, ko, p.ablation);
  nsn_read_scales(L, vblock, d, vs1, vs2, vo, p.ablation);
  rotate_mean(ko, d, p.inv_freq, pos0, o_rot);
  const DeltaTable& tab = delta_table(d, p.inv_freq);
  const bool no_h = (p.ablation & NSN_ABL_NO_HADAMARD) != 0;
  const float* qb = no_h ? q : qh;  // the basis the key codes live in
  const int nq = st.n_q;
  const bool use_lut = p.kv_bits == 1 && st.lut != nullptr;
  if (use_lut && !st.lut_ready) build_lut(st, qb);

  // Scores s [n_q][64]. Mean term first: A, B per head, then an 8-lane dot per token.
  sc.score.resize((size_t)nq * kWindow);
  float* s = sc.score.data();
  for (int i = 0; i < nq; i++) {
    const float* qi = q + (size_t)i * d;
    float A[128], B[128];
    for (int j = 0; j < h; j++) {
      A[j] = qi[j] * o_rot[j] + qi[j + h] * o_rot[j + h];
      B[j] = qi[j + h] * o_rot[j] - qi[j] * o_rot[j + h];
    }
    float* si = s + (size_t)i * kWindow;
    for (int t = 0; t < n; t++) {
      si[t] = dot8_pair(A, tab.cs.data() + t * h, B, tab.sn.data() + t * h, h);
    }
  }
  // Code term. Each key's code vector is decoded once into a small buffer (L1-resident) and
  // shared by the n_q query heads; with the 1-bit table, no decoding at all.
  float y[256];
  for (int t = 0; t < n; t++) {
    const uint8_t* codes = kblock + L.codes + t * groups;
    if (!use_lut) nsn_decode_codes(p.kv_bits, codes, kblock + L.signs + t * groups, d, y);
    for (int i = 0; i < nq; i++) {
      float code;
      if (use_lut) {
        const float* lut = st.lut + (size_t)i * groups * 256;
        code = 0.0f;
        for (int g = 0; g < groups; g++) code += lut[g * 256 + codes[g]];
      } else {
        code = dot8(qb + (size_t)i * d, y, d);
      }
      float& st_t = s[(size_t)i * kWindow + t];
      st_t = scale * ks1[t] * (ks2[t] * code + st_t);
    }
  }
  for (int i = 0; i < nq; i++) softmax_update(st, i, s + (size_t)i * kWindow, n);

  // Values: acc_code_i += (a_it s1^_t s2'_t) y^_t with y^_t decoded once per token for all heads;
  // the mean part collapses to (sum_t a_it s1^_t) o^ per head.
  sc.wmean.assign(nq, 0.0f);
  float* w_mean = sc.wmean.data();
  for (int t = 0; t < n; t++) {
    const size_t row = (size_t)t * groups;
    nsn_decode_codes(p.kv_bits, vblock + L.codes + row, vblock + L.signs + row, d, y);
    for (int i = 0; i < nq; i++) {
      const float w = s[(size_t)i * kWindow + t] * vs1[t];
      w_mean[i] += w;
      const float wc = w * vs2[t];
      float* acc_code = (no_h ? st.acc : st.acc_rot) + (size_t)i * d;
      for (int c = 0; c < d; c++) acc_code[c] += wc * y[c];
    }
  }
  for (int i = 0; i < nq; i++) {
    float* acc = st.acc + (size_t)i * d;
    for (int c = 0; c < d; c++) acc[c] += w_mean[i] * vo[c];
  }
}

void attn_finish(const AttnState& st, float* out) {
  const int d = st.d;
  float rot[256];
  for (int i = 0; i < st.n_q; i++) {
    const float* acc = st.acc + (size_t)i * d;
    for (int c = 0; c < d; c++) rot[c] = st.acc_rot[(size_t)i * d + c];
    fwht(rot, d);
    const float inv_l = st.l[i] > 0.0f ? 1.0f / st.l[i] : 0.0f;
    for (int c = 0; c < d; c++) out[(size_t)i * d + c] = (acc[c] + rot[c]) * inv_l;
  }
}

}  // namespace nsn
