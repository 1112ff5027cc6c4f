// half.h: fp16 / bf16 <-> fp32 conversions, round-to-nearest-even, usable from host and device.
// Written out in integer arithmetic so the CPU reference and the CUDA kernels (which may use
// these or the hardware intrinsics: both round to nearest even) store identical bytes.
#pragma once
#include <stdint.h>
#include <string.h>

#include "nsn_hd.h"

namespace nsn {

NSN_HD inline uint32_t f32_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
#endif
}

NSN_HD inline float f32_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

// fp32 -> IEEE binary16, round to nearest even; overflow gives inf, NaN stays a quiet NaN.
NSN_HD inline uint16_t f32_to_f16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (a >= 0x47800000u) return sign | 0x7c00u;  // |f| >= 2^16 (or inf): inf
  const int e = (int)(a >> 23) - 127;           // unbiased exponent of f
  if (e >= -14) {                               // normal half: keep 10 of 23 mantissa bits
    uint32_t h = ((uint32_t)(e + 15) << 10) | ((a >> 13) & 0x3ffu);
    const uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;  // a carry may reach inf: correct
    return sign | (uint16_t)h;
  }
  if (e < -25) return sign;  // below half the smallest subnormal (2^-24): signed zero
  // Subnormal half: count units of 2^-24 in the 24-bit significand m * 2^(e-23).
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const int shift = -e - 1;  // 14..24
  uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (q & 1u))) q++;  // may become the smallest normal
  return sign | (uint16_t)q;
}

NSN_HD inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    // Subnormal (or zero): exact in fp32 as m * 2^-24.
    const float v = (float)m * 5.9604644775390625e-8f;
    return f32_from_bits(sign | f32_bits(v));
  }
  if (e == 31) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

// fp32 -> bfloat16, round to nearest even; NaN stays a quiet NaN.
NSN_HD inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

NSN_HD inline float bf16_to_f32(uint16_t b) { return f32_from_bits((uint32_t)b << 16); }

// The value an fp32 takes once stored as fp16 (what every later reader of the cache sees).
NSN_HD inline float round_f16(float f) { return f16_to_f32(f32_to_f16(f)); }

}  // namespace nsn
