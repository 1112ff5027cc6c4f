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
#include <math.h>

#include <vector>

#include "quant_internal.h"

namespace nsn {

namespace {

struct Scratch {
  std::vector<float> yk, yv, score, kdec, vdec;
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
  nsn_read_scales(L, kblock, d, ks1, ks2, ko);
  nsn_read_scales(L, vblock, d, vs1, vs2, vo);
  rotate_mean(ko, d, p.inv_freq, pos0, o_rot);
  const DeltaTable& tab = delta_table(d, p.inv_freq);
  const bool no_h = (p.ablation & NSN_ABL_NO_HADAMARD) != 0;
  const float* qb = no_h ? q : qh;  // the basis the key codes live in

  // Code vectors are decoded once per block and shared by all query heads.
  const bool use_lut = p.kv_bits == 1 && st.lut != nullptr;
  if (use_lut && !st.lut_ready) build_lut(st, qb);
  sc.yk.resize((size_t)kWindow * d);
  sc.yv.resize((size_t)kWindow * d);
  for (int t = 0; t < n; t++) {
    const size_t row = (size_t)t * groups;
    if (!use_lut) nsn_decode_codes(p.kv_bits, kblock + L.codes + row, kblock + L.signs + row, d, &sc.yk[t * d]);
    nsn_decode_codes(p.kv_bits, vblock + L.codes + row, vblock + L.signs + row, d, &sc.yv[t * d]);
  }

  sc.score.resize(kWindow);
  float* s = sc.score.data();
  float A[128], B[128];
  for (int i = 0; i < st.n_q; i++) {
    const float* qi = q + (size_t)i * d;
    const float* qbi = qb + (size_t)i * d;
    for (int j = 0; j < h; j++) {
      A[j] = qi[j] * o_rot[j] + qi[j + h] * o_rot[j + h];
      B[j] = qi[j + h] * o_rot[j] - qi[j] * o_rot[j + h];
    }
    for (int t = 0; t < n; t++) {
      const float* cs = tab.cs.data() + t * h;
      const float* sn = tab.sn.data() + t * h;
      float mean = 0.0f;
      for (int j = 0; j < h; j++) mean += A[j] * cs[j] + B[j] * sn[j];
      float code;
      if (use_lut) {
        const uint8_t* codes = kblock + L.codes + t * groups;
        const float* lut = st.lut + (size_t)i * groups * 256;
        code = 0.0f;
        for (int g = 0; g < groups; g++) code += lut[g * 256 + codes[g]];
      } else {
        code = dot(qbi, &sc.yk[t * d], d);
      }
      s[t] = scale * ks1[t] * (ks2[t] * code + mean);
    }
    softmax_update(st, i, s, n);
    float* acc = st.acc + (size_t)i * d;
    float* acc_code = no_h ? acc : st.acc_rot + (size_t)i * d;
    float w_mean = 0.0f;
    for (int t = 0; t < n; t++) {
      const float w = s[t] * vs1[t];
      w_mean += w;
      const float wc = w * vs2[t];
      const float* y = &sc.yv[t * d];
      for (int c = 0; c < d; c++) acc_code[c] += wc * y[c];
    }
    for (int c = 0; c < d; c++) acc[c] += w_mean * vo[c];
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
