// abi_quant.cpp: the standalone quantizer entry points of nsn.h (tests and tools; no engine):
// nsn_quant_roundtrip, nsn_quant_attention, nsn_codebook. Every argument is checked here.
#include <math.h>
#include <string.h>

#include <vector>

#include "../backend.h"
#include "../rope.h"
#include "quant_internal.h"

using namespace nsn;

namespace {

constexpr int32_t kMaxTokens = 1 << 20;  // keeps every size below 2^31 elements

nsn_status check_head_dim(int32_t d) {
  if (d != 64 && d != 128 && d != 256) {
    return set_error(NSN_E_INVALID, "head_dim %d: must be 64, 128 or 256", d);
  }
  return NSN_OK;
}

nsn_status check_theta(float theta) {
  if (!(theta > 1.0f) || !isfinite(theta)) {
    return set_error(NSN_E_INVALID, "rope_theta %g: must be a finite number > 1", (double)theta);
  }
  return NSN_OK;
}

// Plain (unscaled) RoPE frequencies through the same function the engine uses.
std::vector<float> inv_freq_for(int32_t d, float theta) {
  nsn_model_config cfg{};
  cfg.head_dim = d;
  cfg.rope_theta = theta;
  cfg.rope_scaling = NSN_ROPE_NONE;
  std::vector<float> f(d / 2);
  rope_inv_freq(cfg, f.data());
  return f;
}

}  // namespace

extern "C" nsn_status nsn_quant_roundtrip(int32_t kv_bits, int32_t quant_method, int32_t ablation,
                                          int32_t head_dim, int32_t is_key, float rope_theta,
                                          int32_t pos0, const float* x, int32_t n_tokens,
                                          float* x_hat) {
  if (kv_bits != 1 && kv_bits != 2) return set_error(NSN_E_INVALID, "kv_bits %d: must be 1 or 2", kv_bits);
  if (quant_method != NSN_QUANT_NSN && quant_method != NSN_QUANT_RTN) {
    return set_error(NSN_E_INVALID, "quant_method %d: must be 0 (NSN) or 1 (RTN)", quant_method);
  }
  if (ablation < 0 || ablation > 7) return set_error(NSN_E_INVALID, "ablation %d: bits 0..7 only", ablation);
  if (ablation != 0 && quant_method != NSN_QUANT_NSN) {
    return set_error(NSN_E_INVALID, "ablation %d applies to the NSN method only", ablation);
  }
  if (nsn_status st = check_head_dim(head_dim)) return st;
  if (is_key != 0 && is_key != 1) return set_error(NSN_E_INVALID, "is_key %d: must be 0 or 1", is_key);
  if (is_key) {
    if (nsn_status st = check_theta(rope_theta)) return st;
  }
  if (!x || !x_hat) return set_error(NSN_E_INVALID, "x and x_hat must not be null");
  if (n_tokens <= 0 || n_tokens % kWindow != 0 || n_tokens > kMaxTokens) {
    return set_error(NSN_E_INVALID, "n_tokens %d: must be a positive multiple of 64 up to %d",
                     n_tokens, kMaxTokens);
  }
  if (pos0 < 0 || pos0 > INT32_MAX - n_tokens) {
    return set_error(NSN_E_INVALID, "pos0 %d: must be >= 0 and pos0 + n_tokens fit in int32", pos0);
  }
  const std::vector<float> inv_freq = inv_freq_for(head_dim, is_key ? rope_theta : 10000.0f);
  const QuantParams p{kv_bits, head_dim, quant_method, ablation, is_key, inv_freq.data()};
  const uint32_t bytes = block_bytes(kind_of_bits(kv_bits), head_dim, quant_method);
  std::vector<uint8_t> block(bytes);
  for (int32_t w = 0; w < n_tokens / kWindow; w++) {
    const size_t off = (size_t)w * kWindow * head_dim;
    quant_encode_block(p, x + off, pos0 + w * kWindow, block.data());
    quant_decode_block(p, block.data(), pos0 + w * kWindow, x_hat + off);
  }
  return NSN_OK;
}

extern "C" nsn_status nsn_quant_attention(int32_t kv_bits, int32_t head_dim, float rope_theta,
                                          const float* k, const float* v, int32_t n_ctx,
                                          const float* q, int32_t n_q, int32_t mode, float* out) {
  if (kv_bits != 1 && kv_bits != 2 && kv_bits != 16) {
    return set_error(NSN_E_INVALID, "kv_bits %d: must be 16, 2 or 1", kv_bits);
  }
  if (nsn_status st = check_head_dim(head_dim)) return st;
  if (nsn_status st = check_theta(rope_theta)) return st;
  if (!k || !v || !q || !out) return set_error(NSN_E_INVALID, "k, v, q and out must not be null");
  if (n_ctx < 1 || n_ctx > kMaxTokens) {
    return set_error(NSN_E_INVALID, "n_ctx %d: must be in 1..%d", n_ctx, kMaxTokens);
  }
  if (n_q < 1 || n_q > 64) return set_error(NSN_E_INVALID, "n_q %d: must be in 1..64", n_q);
  if (mode != 0 && mode != 1) return set_error(NSN_E_INVALID, "mode %d: must be 0 (codes) or 1 (dequantized)", mode);

  const int d = head_dim;
  const std::vector<float> inv_freq = inv_freq_for(d, rope_theta);
  std::vector<float> m(n_q), l(n_q), acc((size_t)n_q * d), acc_rot((size_t)n_q * d), qh(q, q + (size_t)n_q * d);
  std::vector<float> lut((size_t)n_q * (d / kSub) * 256);
  AttnState st{n_q, d, m.data(), l.data(), acc.data(), acc_rot.data()};
  st.lut = lut.data();
  attn_init(st);
  for (int i = 0; i < n_q; i++) fwht(qh.data() + (size_t)i * d, d);
  const float scale = 1.0f / sqrtf((float)d);

  // Complete windows are quantized (kv_bits 1/2); the remainder stays exact, like the cache's tail.
  const int n_full = kv_bits == 16 ? 0 : n_ctx / kWindow;
  if (n_full > 0) {
    const QuantParams pk{kv_bits, d, NSN_QUANT_NSN, 0, 1, inv_freq.data()};
    const QuantParams pv{kv_bits, d, NSN_QUANT_NSN, 0, 0, inv_freq.data()};
    const uint32_t bytes = block_bytes(kind_of_bits(kv_bits), d, NSN_QUANT_NSN);
    std::vector<uint8_t> kb(bytes), vb(bytes);
    std::vector<float> kd((size_t)kWindow * d), vd((size_t)kWindow * d);
    for (int w = 0; w < n_full; w++) {
      const size_t off = (size_t)w * kWindow * d;
      quant_encode_block(pk, k + off, w * kWindow, kb.data());
      quant_encode_block(pv, v + off, w * kWindow, vb.data());
      if (mode == 0) {
        quant_attend_block(pk, kb.data(), vb.data(), w * kWindow, kWindow, q, qh.data(), scale, st);
      } else {
        quant_decode_block(pk, kb.data(), w * kWindow, kd.data());
        quant_decode_block(pv, vb.data(), w * kWindow, vd.data());
        attend_exact(kd.data(), vd.data(), kWindow, q, scale, st);
      }
    }
  }
  const int first = n_full * kWindow, n_rest = n_ctx - first;
  if (n_rest > 0) {
    std::vector<float> kr(k + (size_t)first * d, k + (size_t)n_ctx * d);
    float cs[128], sn[128];
    for (int t = 0; t < n_rest; t++) {
      rope_cos_sin(first + t, inv_freq.data(), d, cs, sn);
      rope_apply(kr.data() + (size_t)t * d, d, cs, sn);
    }
    attend_exact(kr.data(), v + (size_t)first * d, n_rest, q, scale, st);
  }
  attn_finish(st, out);
  return NSN_OK;
}

extern "C" nsn_status nsn_codebook(int32_t bits, float* out_256x8) {
  if (bits != 1 && bits != 2) return set_error(NSN_E_INVALID, "codebook bits %d: must be 1 or 2", bits);
  if (!out_256x8) return set_error(NSN_E_INVALID, "out_256x8 must not be null");
  memcpy(out_256x8, bits == 1 ? kCodebook1 : kCodebook2, sizeof(float) * 256 * kSub);
  return NSN_OK;
}
