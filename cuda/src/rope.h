// rope.h: rotary position embedding as HF Llama does it ("rotate_half": element i pairs with
// i + d/2, inv_freq_i = theta^(-2i/d)), with the "llama3" and "linear" rope_scaling variants.
// One place computes inv_freq from the model config; the CPU backend, the quantizer and the
// CUDA kernels all take that table, so every RoPE in the project agrees.
#pragma once
#include <math.h>
#include <stdint.h>

#include "../include/nsn.h"

#include "nsn_hd.h"

namespace nsn {

// inv_freq [head_dim/2] for the config, in fp32 like HF (llama3 smoothing included).
inline void rope_inv_freq(const nsn_model_config& c, float* inv_freq) {
  const int d = c.head_dim;
  const double pi = 3.14159265358979323846;
  for (int i = 0; i < d / 2; i++) {
    const float expo = (float)(2 * i) / (float)d;
    float f = (float)(1.0 / pow((double)c.rope_theta, (double)expo));
    if (c.rope_scaling == NSN_ROPE_LINEAR) {
      f = f / c.rope_factor;
    } else if (c.rope_scaling == NSN_ROPE_LLAMA3) {
      // Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
      const double old_ctx = c.rope_original_max_position;
      const double low_wavelen = old_ctx / c.rope_low_freq_factor;
      const double high_wavelen = old_ctx / c.rope_high_freq_factor;
      const double wavelen = 2.0 * pi / f;
      if (wavelen > low_wavelen) {
        f = f / c.rope_factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - c.rope_low_freq_factor) /
                              (c.rope_high_freq_factor - c.rope_low_freq_factor);
        f = (float)((1.0 - smooth) * f / c.rope_factor + smooth * f);
      }
    }
    inv_freq[i] = f;
  }
}

// cos/sin [d/2] of position pos. The angle is formed in fp32 (as HF does: pos * inv_freq),
// its cosine and sine are then taken accurately.
inline void rope_cos_sin(int32_t pos, const float* inv_freq, int d, float* cs, float* sn) {
  for (int i = 0; i < d / 2; i++) {
    const float angle = (float)pos * inv_freq[i];
    cs[i] = (float)cos((double)angle);
    sn[i] = (float)sin((double)angle);
  }
}

// x [d] rotated in place: (x_i, x_{i+d/2}) -> (x_i c - x_{i+d/2} s, x_{i+d/2} c + x_i s).
NSN_HD inline void rope_apply(float* x, int d, const float* cs, const float* sn) {
  const int h = d / 2;
  for (int i = 0; i < h; i++) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cs[i] - b * sn[i];
    x[i + h] = b * cs[i] + a * sn[i];
  }
}

// The inverse rotation (a rotation by -angle), used to recover pre-RoPE keys.
NSN_HD inline void rope_unapply(float* x, int d, const float* cs, const float* sn) {
  const int h = d / 2;
  for (int i = 0; i < h; i++) {
    const float a = x[i], b = x[i + h];
    x[i] = a * cs[i] + b * sn[i];
    x[i + h] = b * cs[i] - a * sn[i];
  }
}

}  // namespace nsn
