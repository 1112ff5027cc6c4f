// random.h: counter-based random numbers, identical on host and device. Every value is a pure
// function of (seed, counters), so synthetic weights and sampled tokens do not depend on
// threading, batch composition or backend.
#pragma once
#include <math.h>
#include <stdint.h>

#include "nsn_hd.h"

namespace nsn {

NSN_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in fp32).
NSN_HD inline float uniform24(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

// The sampling uniform of the token drawn for position `pos` (sampling.h).
NSN_HD inline float sample_uniform(uint64_t seed, int64_t pos) {
  return uniform24(splitmix64(seed ^ splitmix64((uint64_t)pos)));
}

// Synthetic weight element `idx` of tensor (slot, layer): N(0, std^2) by Box-Muller on two
// 24-bit uniforms drawn from the counter hash. layer is -1 for global tensors.
NSN_HD inline float synthetic_normal(uint64_t seed, int slot, int layer, uint64_t idx, float std) {
  const uint64_t tensor = splitmix64(seed ^ splitmix64(((uint64_t)(uint32_t)slot << 32) |
                                                       (uint32_t)(layer + 1)));
  const uint64_t h = splitmix64(tensor ^ idx);
  const float u1 = ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);  // (0, 1): log is finite
  const float u2 = (float)((h >> 16) & 0xffffffu) * (1.0f / 16777216.0f);
  return std * sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958648f * u2);
}

}  // namespace nsn
