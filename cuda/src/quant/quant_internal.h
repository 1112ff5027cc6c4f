// quant_internal.h: helpers shared by the quantizer's files (not part of the contract).
#pragma once
#include <math.h>
#include <stdint.h>

#include <vector>

#include "../../include/nsn.h"
#include "../half.h"
#include "../kv_layout.h"
#include "nsn_quant.h"

namespace nsn {

// A tiny floor for the dequantized first scale s1^, so a token of zeros (or an fp16 min that
// underflowed to 0) never divides by zero; any positive value works because decode multiplies
// the same s1^ back.
constexpr float kS1Eps = 1e-6f;

// 4-bit codes, two per byte: element 2i in the low nibble, 2i+1 in the high nibble.
inline void put_nibble(uint8_t* bytes, int i, int v) {
  uint8_t& b = bytes[i >> 1];
  b = (i & 1) ? (uint8_t)((b & 0x0f) | (v << 4)) : (uint8_t)((b & 0xf0) | v);
}
inline int get_nibble(const uint8_t* bytes, int i) { return (bytes[i >> 1] >> ((i & 1) * 4)) & 15; }

// Reads/writes one fp16 at a byte address (blocks are byte arrays; fields are 2-aligned anyway).
inline void put_half(uint8_t* at, float v) {
  const uint16_t h = f32_to_f16(v);
  at[0] = (uint8_t)(h & 0xff);
  at[1] = (uint8_t)(h >> 8);
}
inline float get_half(const uint8_t* at) { return f16_to_f32((uint16_t)(at[0] | (at[1] << 8))); }

// Asymmetric uniform quantizer with `levels` = 2^b - 1 steps, as every scalar quantizer here
// uses it: min and step are rounded to fp16 FIRST and the codes are computed against those
// stored values, round-half-even (rintf, like the GPU's __float2int_rn). step 0 gives code 0.
struct Uniform {
  float min, step;  // as stored (fp16 values)
};
inline Uniform uniform_fit(float lo, float hi, int levels) {
  return Uniform{round_f16(lo), round_f16((hi - lo) / (float)levels)};
}
inline int uniform_code(const Uniform& u, float v, int levels) {
  if (!(u.step > 0.0f)) return 0;
  float c = rintf((v - u.min) / u.step);
  c = c < 0.0f ? 0.0f : c > (float)levels ? (float)levels : c;
  return (int)c;
}
// fmaf so the CPU reference and the CUDA kernels (which fuse by default) agree to the bit.
inline float uniform_value(const Uniform& u, int code) { return fmaf((float)code, u.step, u.min); }

// The first scales s1^ [64] and the window mean o^ [d] stored in an NSN block. With
// NSN_ABL_FP_S1 in `ablation`, s1 and the mean come from the fp32 side table instead.
void nsn_read_scales(const NsnBlockLayout& L, const uint8_t* block, int d, float* s1, float* s2,
                     float* o, int32_t ablation = 0);

// NSN_ABL_FP_S1 / NSN_ABL_FP_MEAN (fidelity ablations of the CPU reference only): the page format
// has no room for fp32 s1 and window mean, so the encoder keeps them in a process-wide table
// keyed by the block's address (one entry per address: bounded by the arena) and every reader
// of that block looks them up there. A block without an entry (one this process never encoded
// under the flag) keeps its stored 4-bit values: never a crash at the C ABI.
void fp_side_put(const uint8_t* block, const float* s1, const float* o, int d);
bool fp_side_get(const uint8_t* block, float* s1, float* o, int d);  // false: no entry

// +-1.0f for every bit j of a sign byte (bit set = negative): [256][8]. Multiplying by it is
// exact, so it flips signs like a negation does, without a branch per element.
struct SignTable {
  float v[256][8];
  constexpr SignTable() : v() {
    for (int s = 0; s < 256; s++) {
      for (int j = 0; j < 8; j++) v[s][j] = (s >> j) & 1 ? -1.0f : 1.0f;
    }
  }
};
inline constexpr SignTable kSignTable{};

// Codebook reconstruction y^ [d] of one token: 1-bit codes index C1; 2-bit codes index C2 and
// the sign byte flips elements. Branch-free loops of 8 contiguous floats (vectorized).
inline void nsn_decode_codes(int kv_bits, const uint8_t* codes, const uint8_t* signs, int d,
                             float* y) {
  const int groups = d / kSub;
  if (kv_bits == 1) {
    for (int g = 0; g < groups; g++) {
      const float* c = kCodebook1 + codes[g] * kSub;
      for (int j = 0; j < kSub; j++) y[g * kSub + j] = c[j];
    }
  } else {
    for (int g = 0; g < groups; g++) {
      const float* c = kCodebook2 + codes[g] * kSub;
      const float* sg = kSignTable.v[signs[g]];
      for (int j = 0; j < kSub; j++) y[g * kSub + j] = sg[j] * c[j];
    }
  }
}

// cos/sin(delta * inv_freq_i) for delta = 0..63, i < d/2 ([64][d/2] each), built once per thread
// for a given (d, inv_freq) and cached: the mean term of a key depends on the position only
// through this table.
struct DeltaTable {
  int d = 0;
  std::vector<float> inv_freq, cs, sn;
  // cos/sin(pos0 * inv_freq_i) of window starts pos0 = 64 w, w < kMaxCachedWindows, filled on
  // first use ([w][d/2] each; ready[w] says which): rotate_mean's rotation to pos0 is then a
  // table read instead of d/2 sincos calls per block.
  std::vector<float> start_cs, start_sn;
  std::vector<uint8_t> start_ready;
};
constexpr int kMaxCachedWindows = 2048;  // positions < 131072: at most 1 MiB per thread (d 128)
const DeltaTable& delta_table(int d, const float* inv_freq);

// o' = RoPE(o^, pos0): the window mean rotated once to the window's first position. The key at
// pos0 + delta then reconstructs its mean part as RoPE(o', delta) (rotation by the table above),
// in decode and in attention alike, so both read the same numbers.
void rotate_mean(const float* o, int d, const float* inv_freq, int32_t pos0, float* o_rot);

// RTN (KIVI-style) baseline, rtn.cpp.
void rtn_encode_block(const QuantParams& p, const float* x, int32_t pos0, uint8_t* block);
void rtn_decode_block(const QuantParams& p, const uint8_t* block, float* x_hat);

// NSN proper, nsn_encode.cpp / nsn_decode.cpp.
void nsn_encode_block(const QuantParams& p, const float* x, int32_t pos0, uint8_t* block);
void nsn_decode_block(const QuantParams& p, const uint8_t* block, int32_t pos0, float* x_hat);

}  // namespace nsn
