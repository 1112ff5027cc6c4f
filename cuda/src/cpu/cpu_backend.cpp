// cpu_backend.cpp: weights, the KV arena and read_kv of the CPU backend.
#include "cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#include <algorithm>

#include "../half.h"
#include "../kv_layout.h"
#include "../random.h"
#include "../rope.h"
#include "../weights.h"
#include "kernels.h"

namespace nsn {

std::unique_ptr<Backend> make_cpu_backend(const EngineSpec& spec) {
  return std::make_unique<CpuBackend>(spec);
}

CpuBackend::CpuBackend(const EngineSpec& spec)
    : spec_(spec),
      c_(spec.cfg),
      q_dim_(spec.cfg.n_heads * spec.cfg.head_dim),
      kv_dim_(spec.cfg.n_kv_heads * spec.cfg.head_dim),
      qkv_dim_(q_dim_ + 2 * kv_dim_),
      pool_(spec.opts.n_threads),
      layers_(spec.cfg.n_layers),
      present_((size_t)(spec.cfg.n_layers + 1) * NSN_W_COUNT, 0),
      inv_freq_(spec.cfg.head_dim / 2),
      scratch_(pool_.size()) {
  rope_inv_freq(c_, inv_freq_.data());
}

CpuBackend::~CpuBackend() { free(arena_); }

std::string CpuBackend::device_name() const {
  return "cpu (" + std::to_string(pool_.size()) + " threads)";
}

// Where a slot's elements live (allocated on first use), n_out = its element count.
float* CpuBackend::tensor(int slot, int layer, uint64_t* n_out) {
  const uint64_t n = slot_elements(c_, slot);
  *n_out = n;
  const uint64_t H = c_.hidden_size, I = c_.intermediate_size;
  auto sized = [](std::vector<float>& v, uint64_t size) {
    if (v.size() != size) v.assign(size, 0.0f);
    return v.data();
  };
  if (slot == NSN_W_EMBED) return sized(embed_, n);
  if (slot == NSN_W_FINAL_NORM) return sized(final_norm_, n);
  if (slot == NSN_W_LM_HEAD) return sized(lm_head_, n);
  Layer& L = layers_[layer];
  switch (slot) {
    case NSN_W_ATTN_NORM: return sized(L.attn_norm, n);
    case NSN_W_MLP_NORM: return sized(L.mlp_norm, n);
    case NSN_W_Q: return sized(L.wqkv, (uint64_t)qkv_dim_ * H);
    case NSN_W_K: return sized(L.wqkv, (uint64_t)qkv_dim_ * H) + (uint64_t)q_dim_ * H;
    case NSN_W_V: return sized(L.wqkv, (uint64_t)qkv_dim_ * H) + (uint64_t)(q_dim_ + kv_dim_) * H;
    case NSN_W_Q_BIAS: return sized(L.bqkv, qkv_dim_);
    case NSN_W_K_BIAS: return sized(L.bqkv, qkv_dim_) + q_dim_;
    case NSN_W_V_BIAS: return sized(L.bqkv, qkv_dim_) + q_dim_ + kv_dim_;
    case NSN_W_O: return sized(L.wo, n);
    case NSN_W_GATE: return sized(L.wgu, 2 * I * H);
    case NSN_W_UP: return sized(L.wgu, 2 * I * H) + I * H;
    case NSN_W_DOWN: return sized(L.wdown, n);
    default: return nullptr;
  }
}

nsn_status CpuBackend::set_weight(int slot, int layer, int dtype, const void* data, uint64_t n) {
  uint64_t want;
  float* dst = tensor(slot, layer, &want);
  if (!dst || want != n) return set_error(NSN_E_INTERNAL, "cpu: unexpected weight slot %d", slot);
  if (dtype == NSN_F32) {
    memcpy(dst, data, n * sizeof(float));
  } else if (dtype == NSN_F16) {
    const uint16_t* src = (const uint16_t*)data;
    for (uint64_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
  } else {
    const uint16_t* src = (const uint16_t*)data;
    for (uint64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
  }
  present_[(size_t)(slot_is_global(slot) ? c_.n_layers : layer) * NSN_W_COUNT + slot] = 1;
  return NSN_OK;
}

nsn_status CpuBackend::init_random(uint64_t seed) {
  // Values are rounded to bf16, the precision a GPU backend keeps, so that every backend
  // holds the same synthetic model.
  const float kStd = 0.02f;
  for (int slot = 0; slot < NSN_W_COUNT; slot++) {
    if (!slot_in_model(c_, slot)) continue;
    const bool global = slot_is_global(slot);
    for (int l = 0; l < (global ? 1 : c_.n_layers); l++) {
      const int layer = global ? -1 : l;
      uint64_t n;
      float* dst = tensor(slot, global ? 0 : l, &n);
      const bool norm = slot == NSN_W_FINAL_NORM || slot == NSN_W_ATTN_NORM || slot == NSN_W_MLP_NORM;
      const uint64_t chunk = 1 << 16;
      pool_.run((int)((n + chunk - 1) / chunk), [&](int task, int) {
        const uint64_t i0 = (uint64_t)task * chunk, i1 = std::min(n, i0 + chunk);
        for (uint64_t i = i0; i < i1; i++) {
          dst[i] = norm ? 1.0f : bf16_to_f32(f32_to_bf16(synthetic_normal(seed, slot, layer, i, kStd)));
        }
      });
      present_[(size_t)(global ? c_.n_layers : l) * NSN_W_COUNT + slot] = 1;
    }
  }
  return NSN_OK;
}

bool CpuBackend::has_weight(int slot, int layer) const {
  return present_[(size_t)(layer < 0 ? c_.n_layers : layer) * NSN_W_COUNT + slot] != 0;
}

uint64_t CpuBackend::weight_bytes() const {
  uint64_t n = embed_.size() + final_norm_.size() + lm_head_.size();
  for (const Layer& L : layers_) {
    n += L.attn_norm.size() + L.mlp_norm.size() + L.wqkv.size() + L.bqkv.size() + L.wo.size() +
         L.wgu.size() + L.wdown.size();
  }
  return n * sizeof(float);
}

nsn_status CpuBackend::alloc_arena(uint64_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, bytes) != 0) {
    return set_error(NSN_E_OOM, "cpu: cannot allocate a KV arena of %llu bytes",
                     (unsigned long long)bytes);
  }
  // Touched now, as a GPU's KV memory is reserved at start: the pool is resident from the
  // first request (RSS then says what the server holds, and flat RSS means no leak), a host
  // that cannot back it fails here rather than mid-serve, and no step pays page faults. With
  // prefix caching the pool hands out untouched pages before evicting cached ones, so lazily
  // backed memory grew by a few MiB a round until the whole pool had been used.
  memset(p, 0, bytes);
  free(arena_);
  arena_ = (uint8_t*)p;
  arena_bytes_ = bytes;
  // Per-thread buffers at their full size now, so that a step allocates nothing once it has
  // started writing the cache.
  const size_t d = c_.head_dim, G = c_.n_heads / c_.n_kv_heads, V = c_.vocab_size;
  for (Scratch& s : scratch_) {
    s.k.assign(kWindow * d, 0.0f);
    s.v.assign(kWindow * d, 0.0f);
    s.cs.assign(d / 2, 0.0f);
    s.sn.assign(d / 2, 0.0f);
    s.qh.reserve(kQueryBlock * G * d);
    s.m.reserve(kQueryBlock * G);
    s.l.reserve(kQueryBlock * G);
    s.acc.reserve(kQueryBlock * G * d);
    s.acc_rot.reserve(kQueryBlock * G * d);
    s.st.reserve(kQueryBlock);
    s.lut.reserve(kQueryBlock * G * (d / kSub) * 256);
    s.sample.z.reserve(V);
    s.sample.order.reserve(V);
    s.sample.seen.assign(V, 0);
    s.sample.out_count.assign(V, 0);
    s.sample.touched.reserve(V);
    s.sample.kept.assign(V, 0);
  }
  return NSN_OK;
}

QuantParams CpuBackend::quant_params(int kv_bits, bool is_key) const {
  QuantParams p{};
  p.kv_bits = kv_bits;
  p.head_dim = c_.head_dim;
  p.method = spec_.opts.quant_method;
  p.ablation = spec_.opts.ablation;
  p.is_key = is_key ? 1 : 0;
  p.inv_freq = inv_freq_.data();
  return p;
}

uint8_t* CpuBackend::block(int64_t page, int kind, int layer, int kv_head, int part) const {
  return arena_ + page +
         block_offset(kind, c_.head_dim, spec_.opts.quant_method, c_.n_kv_heads, layer, kv_head, part);
}

nsn_status CpuBackend::read_kv(const SeqStep& s, int layer, int kv_head, int start, int count,
                               float* k_out, float* v_out) {
  const int d = c_.head_dim;
  const int n_quant = s.kv_bits == 16 ? 0 : s.pos0 / kWindow;  // windows stored quantized
  std::vector<float> kw((size_t)kWindow * d), vw((size_t)kWindow * d);
  for (int w = start / kWindow; w * kWindow < start + count; w++) {
    const int lo = std::max(start, w * kWindow), hi = std::min(start + count, (w + 1) * kWindow);
    float* k = k_out + (size_t)(lo - start) * d;
    float* v = v_out + (size_t)(lo - start) * d;
    if (w < n_quant) {
      const int kind = kind_of_bits(s.kv_bits);
      quant_decode_block(quant_params(s.kv_bits, true), block(s.page_off[w], kind, layer, kv_head, 0),
                         w * kWindow, kw.data());
      quant_decode_block(quant_params(s.kv_bits, false), block(s.page_off[w], kind, layer, kv_head, 1),
                         w * kWindow, vw.data());
      memcpy(k, &kw[(size_t)(lo - w * kWindow) * d], (size_t)(hi - lo) * d * sizeof(float));
      memcpy(v, &vw[(size_t)(lo - w * kWindow) * d], (size_t)(hi - lo) * d * sizeof(float));
    } else {
      const int64_t page = s.kv_bits == 16 ? s.page_off[w] : s.tail_off;
      const size_t first = (size_t)(lo - w * kWindow) * d;
      f16_to_f32_row((const uint16_t*)block(page, KV_F16, layer, kv_head, 0) + first, (hi - lo) * d, k);
      f16_to_f32_row((const uint16_t*)block(page, KV_F16, layer, kv_head, 1) + first, (hi - lo) * d, v);
    }
  }
  return NSN_OK;
}

}  // namespace nsn
