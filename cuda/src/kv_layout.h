// kv_layout.h: the byte layout of KV pages, shared by the CPU and CUDA backends.
//
// One page holds one 64-token window of one sequence for every layer:
//   page = [n_layers][n_kv_heads][part: 0 = K, 1 = V] blocks, each block_bytes(kind) long.
// Pages live in one arena; a page is addressed by its byte offset in the arena.
//
// Block formats (d = head_dim, W = 64 tokens, all offsets 16-byte aligned):
//   KV_F16 : half [W][d]                         keys post-RoPE, values as is
//   KV_NSN2/KV_NSN1 (NSNQuant, see quant/nsn.h):
//     codes   uint8 [W][d/8]      codebook index per 8-element sub-vector
//     signs   uint8 [W][d/8]      NSN2 only: bit j set = element 8g+j negative
//     s2      half  [W]           adjusted second scale s2'
//     s1q     uint8 [W/2]         4-bit first scales, token 2i in the low nibble
//     s1meta  half  [2]           min, step of the s1 quantizer
//     oq      uint8 [d/2]         4-bit window mean, channel 2c in the low nibble
//     ometa   half  [2][d/32]     min[g] then step[g] per 32-channel group
//   RTN (KIVI-style baseline, method NSN_QUANT_RTN), b = kv_bits:
//     codes   uint8 [W][d*b/8]    element i of a token at bits (i*b)%8.. of byte i*b/8
//     K meta  half  [2][d]        per channel over the window: min[c], then step[c]
//     V meta  half  [W][d/32][2]  per token and 32-channel group: min, step
//     (block size is the larger of the K and V formats so every block has one size)
#pragma once
#include <stdint.h>

#include "nsn_hd.h"

namespace nsn {

constexpr int kWindow = 64;
constexpr int kSub = 8;  // sub-vector length of the vector quantizer

enum KvKind : int32_t { KV_F16 = 0, KV_Q2 = 1, KV_Q1 = 2 };  // == nsn_engine_info index

NSN_HD constexpr int kind_of_bits(int kv_bits) { return kv_bits == 16 ? KV_F16 : kv_bits == 2 ? KV_Q2 : KV_Q1; }
NSN_HD constexpr int bits_of_kind(int kind) { return kind == KV_F16 ? 16 : kind == KV_Q2 ? 2 : 1; }
NSN_HD constexpr uint32_t align16(uint32_t x) { return (x + 15u) & ~15u; }

struct NsnBlockLayout {
  uint32_t codes, signs, s2, s1q, s1meta, oq, ometa, bytes;
};

NSN_HD constexpr NsnBlockLayout nsn_block_layout(int kv_bits, int d) {
  NsnBlockLayout L{};
  uint32_t off = 0;
  L.codes = off;
  off = align16(off + kWindow * (d / kSub));
  L.signs = off;
  if (kv_bits == 2) off = align16(off + kWindow * (d / kSub));
  L.s2 = off;
  off = align16(off + kWindow * 2);
  L.s1q = off;
  off = align16(off + kWindow / 2);
  L.s1meta = off;
  off = align16(off + 4);
  L.oq = off;
  off = align16(off + d / 2);
  L.ometa = off;
  off = align16(off + 2 * (d / 32) * 2);
  L.bytes = off;
  return L;
}

struct RtnBlockLayout {
  uint32_t codes, meta, bytes;
};

NSN_HD constexpr RtnBlockLayout rtn_block_layout(int kv_bits, int d) {
  RtnBlockLayout L{};
  L.codes = 0;
  L.meta = align16(kWindow * d * kv_bits / 8);
  uint32_t k_meta = 2 * d * 2, v_meta = kWindow * (d / 32) * 2 * 2;
  L.bytes = align16(L.meta + (k_meta > v_meta ? k_meta : v_meta));
  return L;
}

// Bytes of one K or V block of one layer and kv head.
NSN_HD constexpr uint32_t block_bytes(int kind, int d, int quant_method) {
  return kind == KV_F16 ? kWindow * d * 2
         : quant_method == 1 ? rtn_block_layout(bits_of_kind(kind), d).bytes
                             : nsn_block_layout(bits_of_kind(kind), d).bytes;
}

// Offset of (layer, kv_head, part) inside a page.
NSN_HD constexpr uint64_t block_offset(int kind, int d, int quant_method, int n_kv_heads, int layer,
                                       int kv_head, int part) {
  return (uint64_t)((layer * n_kv_heads + kv_head) * 2 + part) * block_bytes(kind, d, quant_method);
}

NSN_HD constexpr uint64_t page_bytes(int kind, int d, int quant_method, int n_layers, int n_kv_heads) {
  return (uint64_t)n_layers * n_kv_heads * 2 * block_bytes(kind, d, quant_method);
}

}  // namespace nsn
