// rtn.cpp: the KIVI-style round-to-nearest baseline at 1 or 2 bits, for quality comparisons.
// Keys are quantized per channel over the window AFTER RoPE (channel outliers are what make keys
// hard, and a per-channel range absorbs them); values per token in groups of 32 channels.
// 2^b uniform levels between the min and max of each group; min and step stored as fp16.
#include <string.h>

#include "../rope.h"
#include "quant_internal.h"

namespace nsn {

namespace {

// Element i of a token's row sits at bits (i*b) % 8 .. of byte i*b / 8.
void put_code(uint8_t* row, int i, int b, int v) {
  const int bit = i * b;
  row[bit >> 3] |= (uint8_t)(v << (bit & 7));
}
int get_code(const uint8_t* row, int i, int b) {
  const int bit = i * b;
  return (row[bit >> 3] >> (bit & 7)) & ((1 << b) - 1);
}

}  // namespace

void rtn_encode_block(const QuantParams& p, const float* x, int32_t pos0, uint8_t* block) {
  const int d = p.head_dim, b = p.kv_bits, levels = (1 << b) - 1;
  const RtnBlockLayout L = rtn_block_layout(b, d);
  memset(block, 0, L.bytes);
  const int row_bytes = d * b / 8;
  std::vector<float> xr(x, x + (size_t)kWindow * d);
  if (p.is_key) {
    float cs[128], sn[128];
    for (int t = 0; t < kWindow; t++) {
      rope_cos_sin(pos0 + t, p.inv_freq, d, cs, sn);
      rope_apply(xr.data() + t * d, d, cs, sn);
    }
    for (int c = 0; c < d; c++) {
      float lo = xr[c], hi = xr[c];
      for (int t = 1; t < kWindow; t++) {
        lo = fminf(lo, xr[t * d + c]);
        hi = fmaxf(hi, xr[t * d + c]);
      }
      const Uniform u = uniform_fit(lo, hi, levels);
      put_half(block + L.meta + 2 * c, u.min);
      put_half(block + L.meta + 2 * (d + c), u.step);
      for (int t = 0; t < kWindow; t++) {
        put_code(block + t * row_bytes, c, b, uniform_code(u, xr[t * d + c], levels));
      }
    }
    return;
  }
  for (int t = 0; t < kWindow; t++) {
    for (int g = 0; g < d / 32; g++) {
      const float* v = xr.data() + t * d + g * 32;
      float lo = v[0], hi = v[0];
      for (int j = 1; j < 32; j++) {
        lo = fminf(lo, v[j]);
        hi = fmaxf(hi, v[j]);
      }
      const Uniform u = uniform_fit(lo, hi, levels);
      uint8_t* meta = block + L.meta + 4 * (t * (d / 32) + g);
      put_half(meta, u.min);
      put_half(meta + 2, u.step);
      for (int j = 0; j < 32; j++) {
        put_code(block + t * row_bytes, g * 32 + j, b, uniform_code(u, v[j], levels));
      }
    }
  }
}

void rtn_decode_block(const QuantParams& p, const uint8_t* block, float* x_hat) {
  const int d = p.head_dim, b = p.kv_bits;
  const RtnBlockLayout L = rtn_block_layout(b, d);
  const int row_bytes = d * b / 8;
  for (int t = 0; t < kWindow; t++) {
    for (int c = 0; c < d; c++) {
      Uniform u;
      if (p.is_key) {
        u = Uniform{get_half(block + L.meta + 2 * c), get_half(block + L.meta + 2 * (d + c))};
      } else {
        const uint8_t* meta = block + L.meta + 4 * (t * (d / 32) + c / 32);
        u = Uniform{get_half(meta), get_half(meta + 2)};
      }
      x_hat[t * d + c] = uniform_value(u, get_code(block + t * row_bytes, c, b));
    }
  }
}

}  // namespace nsn
