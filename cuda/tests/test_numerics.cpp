// test_numerics.cpp: fp16/bf16 conversions and RoPE frequency tables.
#include "../src/half.h"
#include "../src/rope.h"
#include "test_util.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

void test_numerics() {
  // Every finite half survives half -> float -> half; NaNs stay NaN.
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    const float f = nsn::f16_to_f32((uint16_t)h);
    if (std::isnan(f)) {
      bad += !std::isnan(nsn::f16_to_f32(nsn::f32_to_f16(f)));
      continue;
    }
    bad += nsn::f32_to_f16(f) != h;
  }
  CHECK(bad == 0, "%d halves do not round-trip", bad);
  // Round to nearest even on ties, overflow to inf, subnormals.
  CHECK(nsn::f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "tie rounds down to even");
  CHECK(nsn::f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "tie rounds up to even");
  CHECK(nsn::f32_to_f16(65520.0f) == 0x7c00 && nsn::f32_to_f16(65519.0f) == 0x7bff, "overflow");
  CHECK(nsn::f32_to_f16(5.9604645e-8f) == 1 && nsn::f32_to_f16(2.9802322e-8f) == 0, "subnormals");
  CHECK(nsn::f32_to_f16(-0.0f) == 0x8000, "signed zero");
#if defined(__F16C__)
  // The hardware converter (used on the hot path) agrees with the portable one.
  uint32_t x = 12345;
  int mismatches = 0;
  for (int i = 0; i < 2000000; i++) {
    x = x * 1664525u + 1013904223u;
    float f;
    memcpy(&f, &x, 4);
    if (std::isnan(f)) continue;
    mismatches += (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT) != nsn::f32_to_f16(f);
  }
  CHECK(mismatches == 0, "%d conversions differ from F16C", mismatches);
#endif
  CHECK(nsn::f32_to_bf16(1.0f + 1.0f / 256) == 0x3f80 && nsn::f32_to_bf16(1.0f + 3.0f / 256) == 0x3f82,
        "bf16 ties to even");
  CHECK(nsn::bf16_to_f32(0x3f80) == 1.0f, "bf16 1.0");

  // RoPE tables: plain theta^(-2i/d); llama3 keeps high frequencies, divides low ones by
  // factor, and blends between; linear divides all.
  nsn_model_config c{};
  c.head_dim = 128;
  c.rope_theta = 500000;
  float plain[64], l3[64], lin[64];
  nsn::rope_inv_freq(c, plain);
  c.rope_scaling = NSN_ROPE_LLAMA3;
  c.rope_factor = 8;
  c.rope_low_freq_factor = 1;
  c.rope_high_freq_factor = 4;
  c.rope_original_max_position = 8192;
  nsn::rope_inv_freq(c, l3);
  c.rope_scaling = NSN_ROPE_LINEAR;
  c.rope_factor = 2;
  nsn::rope_inv_freq(c, lin);
  CHECK(plain[0] == 1.0f && fabsf(plain[1] - powf(500000, -2.0f / 128)) < 1e-9f, "plain inv_freq");
  int kept = 0, divided = 0, blended = 0;
  for (int i = 0; i < 64; i++) {
    const float wavelen = 6.2831853f / plain[i];
    if (wavelen < 8192 / 4.0f) kept += l3[i] == plain[i];
    else if (wavelen > 8192) divided += fabsf(l3[i] - plain[i] / 8) <= 1e-6f * plain[i];
    else blended += l3[i] < plain[i] && l3[i] > plain[i] / 8;
    CHECK(lin[i] == plain[i] / 2, "linear scaling");
  }
  CHECK(kept + divided + blended == 64 && kept > 0 && divided > 0 && blended > 0,
        "llama3 bands: %d kept, %d divided, %d blended", kept, divided, blended);
  // rope_unapply inverts rope_apply.
  float v[128], w[128], cs[64], sn[64];
  for (int i = 0; i < 128; i++) v[i] = w[i] = sinf(i * 0.37f);
  nsn::rope_cos_sin(1234, plain, 128, cs, sn);
  nsn::rope_apply(w, 128, cs, sn);
  nsn::rope_unapply(w, 128, cs, sn);
  float err = 0;
  for (int i = 0; i < 128; i++) err = fmaxf(err, fabsf(w[i] - v[i]));
  CHECK(err < 1e-5f, "unrotate: %g", err);
}
