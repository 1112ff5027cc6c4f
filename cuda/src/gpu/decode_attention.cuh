// decode_attention.cuh: internals shared by decode_attention.cu (the persistent fast kernel and
// its planner) and decode_attention_ref.cu (the plain reference kernel used for the RTN baseline,
// head_dim 256, and as a cross-check in tests). Not a public contract.
#pragma once
#include <type_traits>

#include "../backend.h"
#include "kv_kernels.cuh"

namespace nsn {
namespace gpu {

// Query heads per work unit: one mma n-tile. A KV head with more query heads is split into
// ceil(group / 8) head groups (its pages are then read once per group).
constexpr int kHeadsPerCta = 8;

// The one CUDA error check of the attention launchers: the launch's (or call's) status as an
// nsn_status naming what failed.
inline nsn_status cuda_status(cudaError_t e, const char* what) {
  return e == cudaSuccess ? NSN_OK : set_error(NSN_E_BACKEND, "decode_attention: %s: %s", what, cudaGetErrorString(e));
}

// The one head_dim dispatch: calls f(std::integral_constant<int, D>{}) for D = 64, 128, 256.
template <typename F>
nsn_status with_head_dim(int d, const char* who, F&& f) {
  switch (d) {
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    case 256:
      return f(std::integral_constant<int, 256>{});
    default:
      return set_error(NSN_E_UNSUPPORTED, "%s: head_dim %d (supported: 64, 128, 256)", who, d);
  }
}

// Work of a launch, planned on the device (FlashInfer-style plan/run; KERNELS.md "Plan"): a
// work unit is (sequence, KV head, head group); the units' windows (plus kItemCost per unit)
// are laid end to end and cut into gridDim.x equal ranges, one per CTA. A unit that crosses a
// cut is split: its pieces write partials to slots of the workspace and the last piece to
// finish combines them. One CTA runs its items one after another.
struct AttnItem {
  int32_t seq, unit, w0, w1;          // unit = kv head * hgroups + head group; windows [w0, w1)
  int32_t kv_bits, n_ctx, q_row, slot;  // slot: this piece's partial (-1: unit not split)
  int32_t slot0, npieces;             // the unit's first partial slot and its piece count
  const int64_t* page_off;
};
static_assert(sizeof(AttnItem) == 48, "AttnItem layout");
constexpr int kItemCost = 1;       // fixed cost of a work item, in windows (planning only)
constexpr int kMaxCtas = 1024;     // grid size cap (the planner's per-CTA table)

// Group and head-group count of a geometry, and the grid the fast kernel runs with.
struct DecodePlan {
  int group;    // query heads per KV head
  int hgroups;  // ceil(group / 8)
  int units;    // n_kv_heads * hgroups per sequence
  int ctas;     // persistent grid (SM count, one CTA per SM); 0 for the reference kernel
};
DecodePlan plan_decode(const KvGeometry& g);
// Tests and benchmarks: run the fast kernel on n CTAs (0: the SM count).
void set_decode_attention_ctas(int n);

// Workspace layout (bytes, every section 16-byte aligned), sized by n_seqs and the grid only:
// int begin[ctas + 1] (CTA c runs items [begin[c], begin[c+1])), AttnItem items[n_seqs * units +
// ctas], int counters[2 * ctas] (per split unit, at its slot0; zero between launches), float
// ml[2 * ctas][8][2], float acc[2 * ctas][8][d] (the split partials).
struct WsLayout {
  size_t begin, items, cnt, ml, acc, bytes;
};
inline WsLayout ws_layout(const KvGeometry& g, const DecodePlan& p, int n_seqs) {
  auto al = [](size_t x) { return (x + 15) & ~(size_t)15; };
  WsLayout w{};
  const size_t slots = 2 * (size_t)p.ctas;
  w.begin = 0;
  w.items = al(w.begin + 4 * ((size_t)p.ctas + 1));
  w.cnt = al(w.items + sizeof(AttnItem) * ((size_t)n_seqs * p.units + p.ctas));
  w.ml = al(w.cnt + 4 * slots);
  w.acc = al(w.ml + 4 * slots * kHeadsPerCta * 2);
  w.bytes = al(w.acc + 4 * slots * kHeadsPerCta * g.head_dim);
  return w;
}

// Validates the arguments shared by both kernels; fills the plan.
nsn_status check_decode_args(const DecodeAttnArgs& a, DecodePlan* plan);
// The reference kernel: decodes every window to fp32 in shared memory, then plain attention,
// one block per (head group, sequence), no split. Handles every format (fp16, NSN with any
// ablation, RTN) and head_dim.
nsn_status launch_decode_attention_ref(const DecodeAttnArgs& a, cudaStream_t stream);

}  // namespace gpu
}  // namespace nsn
