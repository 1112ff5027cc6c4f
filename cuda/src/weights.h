// weights.h: the weight slots' shapes and which of them a model needs (nsn.h lists the slots).
// Shared by the engine core (validation) and the backends (storage).
#pragma once
#include <stdint.h>

#include "../include/nsn.h"

namespace nsn {

inline const char* slot_name(int slot) {
  static const char* const kNames[NSN_W_COUNT] = {
      "embed", "final_norm", "lm_head", "attn_norm", "q", "k", "v", "o",
      "q_bias", "k_bias", "v_bias", "mlp_norm", "gate", "up", "down"};
  return slot >= 0 && slot < NSN_W_COUNT ? kNames[slot] : "?";
}

// Global slots take layer = -1; the rest exist once per layer.
inline bool slot_is_global(int slot) {
  return slot == NSN_W_EMBED || slot == NSN_W_FINAL_NORM || slot == NSN_W_LM_HEAD;
}

inline bool slot_is_bias(int slot) {
  return slot == NSN_W_Q_BIAS || slot == NSN_W_K_BIAS || slot == NSN_W_V_BIAS;
}

// Whether the model has this slot at all (lm_head only untied, biases only with qkv_bias).
inline bool slot_in_model(const nsn_model_config& c, int slot) {
  if (slot == NSN_W_LM_HEAD) return !(c.flags & NSN_MODEL_TIED);
  if (slot_is_bias(slot)) return (c.flags & NSN_MODEL_QKV_BIAS) != 0;
  return slot >= 0 && slot < NSN_W_COUNT;
}

// Element count of one tensor of the slot.
inline uint64_t slot_elements(const nsn_model_config& c, int slot) {
  const uint64_t V = (uint64_t)c.vocab_size, H = (uint64_t)c.hidden_size,
                 I = (uint64_t)c.intermediate_size, Q = (uint64_t)c.n_heads * c.head_dim,
                 KV = (uint64_t)c.n_kv_heads * c.head_dim;
  switch (slot) {
    case NSN_W_EMBED:
    case NSN_W_LM_HEAD: return V * H;
    case NSN_W_FINAL_NORM:
    case NSN_W_ATTN_NORM:
    case NSN_W_MLP_NORM: return H;
    case NSN_W_Q:
    case NSN_W_O: return Q * H;
    case NSN_W_K:
    case NSN_W_V: return KV * H;
    case NSN_W_Q_BIAS: return Q;
    case NSN_W_K_BIAS:
    case NSN_W_V_BIAS: return KV;
    case NSN_W_GATE:
    case NSN_W_UP:
    case NSN_W_DOWN: return I * H;
    default: return 0;
  }
}

}  // namespace nsn
