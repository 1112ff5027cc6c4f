// nsn_decode.cpp: reading an NSN block back: scales, window mean, codebook vectors, and the
// full reconstruction (what attention over dequantized K/V sees; the fast path in
// nsn_attend.cpp must agree with it to rounding).
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <unordered_map>

#include "../rope.h"
#include "quant_internal.h"

namespace nsn {

namespace {

struct FpSide {
  std::mutex mu;
  std::unordered_map<const uint8_t*, std::vector<float>> map;  // s1 [64] then o [d]
};

FpSide& fp_side() {
  static FpSide side;
  return side;
}

}  // namespace

void fp_side_put(const uint8_t* block, const float* s1, const float* o, int d) {
  FpSide& f = fp_side();
  std::lock_guard<std::mutex> lock(f.mu);
  std::vector<float>& v = f.map[block];
  v.assign(s1, s1 + kWindow);
  v.insert(v.end(), o, o + d);
}

bool fp_side_get(const uint8_t* block, float* s1, float* o, int d) {
  FpSide& f = fp_side();
  std::lock_guard<std::mutex> lock(f.mu);
  auto it = f.map.find(block);
  if (it == f.map.end() || it->second.size() != (size_t)(kWindow + d)) return false;
  memcpy(s1, it->second.data(), sizeof(float) * kWindow);
  memcpy(o, it->second.data() + kWindow, sizeof(float) * d);
  return true;
}

void nsn_read_scales(const NsnBlockLayout& L, const uint8_t* block, int d, float* s1, float* s2,
                     float* o, int32_t ablation) {
  const Uniform us1{get_half(block + L.s1meta), get_half(block + L.s1meta + 2)};
  for (int t = 0; t < kWindow; t++) {
    s1[t] = fmaxf(uniform_value(us1, get_nibble(block + L.s1q, t)), kS1Eps);
    s2[t] = get_half(block + L.s2 + 2 * t);
  }
  const int groups = d / 32;
  for (int g = 0; g < groups; g++) {
    const Uniform u{get_half(block + L.ometa + 2 * g), get_half(block + L.ometa + 2 * (groups + g))};
    for (int c = g * 32; c < g * 32 + 32; c++) o[c] = uniform_value(u, get_nibble(block + L.oq, c));
  }
  if (ablation & (NSN_ABL_FP_S1 | NSN_ABL_FP_MEAN)) {
    float fs1[kWindow], fo[256];
    // A block this process did not encode (no side entry) keeps its stored 4-bit values.
    if (fp_side_get(block, fs1, fo, d)) {
      if (ablation & NSN_ABL_FP_S1) memcpy(s1, fs1, sizeof(fs1));
      if (ablation & NSN_ABL_FP_MEAN) memcpy(o, fo, sizeof(float) * d);
    }
  }
}

namespace {

DeltaTable& delta_table_mut(int d, const float* inv_freq) {
  thread_local DeltaTable tab;
  if (tab.d != d || memcmp(tab.inv_freq.data(), inv_freq, sizeof(float) * (d / 2)) != 0) {
    tab.d = d;
    tab.inv_freq.assign(inv_freq, inv_freq + d / 2);
    tab.cs.resize((size_t)kWindow * (d / 2));
    tab.sn.resize((size_t)kWindow * (d / 2));
    for (int t = 0; t < kWindow; t++) {
      rope_cos_sin(t, inv_freq, d, tab.cs.data() + t * (d / 2), tab.sn.data() + t * (d / 2));
    }
    tab.start_cs.clear();
    tab.start_sn.clear();
    tab.start_ready.clear();
  }
  return tab;
}

}  // namespace

const DeltaTable& delta_table(int d, const float* inv_freq) { return delta_table_mut(d, inv_freq); }

void rotate_mean(const float* o, int d, const float* inv_freq, int32_t pos0, float* o_rot) {
  const int h = d / 2;
  float cs_local[128], sn_local[128];
  const float* cs = cs_local;
  const float* sn = sn_local;
  if (pos0 >= 0 && pos0 % kWindow == 0 && pos0 / kWindow < kMaxCachedWindows) {
    DeltaTable& tab = delta_table_mut(d, inv_freq);
    const size_t w = (size_t)(pos0 / kWindow);
    if (tab.start_ready.size() <= w) {
      tab.start_ready.resize(w + 1, 0);
      tab.start_cs.resize((w + 1) * h);
      tab.start_sn.resize((w + 1) * h);
    }
    if (!tab.start_ready[w]) {
      rope_cos_sin(pos0, inv_freq, d, &tab.start_cs[w * h], &tab.start_sn[w * h]);
      tab.start_ready[w] = 1;
    }
    cs = &tab.start_cs[w * h];
    sn = &tab.start_sn[w * h];
  } else {
    rope_cos_sin(pos0, inv_freq, d, cs_local, sn_local);
  }
  memcpy(o_rot, o, sizeof(float) * d);
  rope_apply(o_rot, d, cs, sn);
}

void nsn_decode_block(const QuantParams& p, const uint8_t* block, int32_t pos0, float* x_hat) {
  const int d = p.head_dim;
  const NsnBlockLayout L = nsn_block_layout(p.kv_bits, d);
  float s1[kWindow], s2[kWindow], o[256], o_rot[256], mean[256], y[256];
  nsn_read_scales(L, block, d, s1, s2, o, p.ablation);
  const DeltaTable* tab = nullptr;
  if (p.is_key) {
    rotate_mean(o, d, p.inv_freq, pos0, o_rot);
    tab = &delta_table(d, p.inv_freq);
  }
  for (int t = 0; t < kWindow; t++) {
    nsn_decode_codes(p.kv_bits, block + L.codes + t * (d / kSub), block + L.signs + t * (d / kSub),
                     d, y);
    if (!(p.ablation & NSN_ABL_NO_HADAMARD)) fwht(y, d);  // H^T = H
    if (p.is_key) {
      memcpy(mean, o_rot, sizeof(float) * d);
      rope_apply(mean, d, tab->cs.data() + t * (d / 2), tab->sn.data() + t * (d / 2));
    } else {
      memcpy(mean, o, sizeof(float) * d);
    }
    for (int c = 0; c < d; c++) x_hat[t * d + c] = s1[t] * (s2[t] * y[c] + mean[c]);
  }
}

}  // namespace nsn
