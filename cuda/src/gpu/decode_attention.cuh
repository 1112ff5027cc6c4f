// decode_attention.cuh: internals shared by decode_attention.cu (the fast kernel, split
// planning, the split-KV reduce) and decode_attention_ref.cu (the plain reference kernel used
// for the RTN baseline and as a cross-check in tests). Not a public contract.
#pragma once
#include "kv_kernels.cuh"

namespace nsn {
namespace gpu {

// Query heads per thread block: one mma n-tile. A KV head with more query heads is split into
// ceil(group / 8) head groups (its pages are then read once per group).
constexpr int kHeadsPerCta = 8;

// Run-time selectable kernel variants of the fast kernel (decode_attention.cu, `Var`): v0 the
// run-2 kernel, v1 512 threads + fragments in shared memory, v2 two windows per warp step,
// v3 both, v4 = v1 with a 4 x 32 KB ring (fp16 pages: 3 windows in flight), v5 = v1 with 384
// threads (no register spills), v6 = v5 with the Hq fragments in registers. The launcher reads NSN_ATTN_VARIANT once ("v1" or "1"); tests and the benchmark
// override it with set_decode_attention_variant (-1: back to env / default). head_dim 256 always
// runs v0. Every variant computes the same result (up to float summation order).
constexpr int kDecodeVariants = 7;
// Defaults from the H200 variant table at 32K x 16 (KERNELS.md): v6 is within ~7% of the best
// variant on every page kind (fp16 510 us, NSN-2 384, NSN-1 285); v0 is the fastest on fp16
// pages (505 us) and on NSN-1 (267), but 7% slower than v6 on NSN-2.
constexpr int kDecodeVariantDefault = 6;
// Default for launches whose rows are all fp16.
constexpr int kDecodeVariantFp16 = 0;
int decode_attention_variant(bool all_fp16 = false);  // the variant a launch would run
void set_decode_attention_variant(int v);
const char* decode_attention_variant_name(int v);

// Split-KV plan for a launch: every sequence is cut into n_splits window ranges.
struct DecodePlan {
  int group;     // query heads per KV head
  int hgroups;   // ceil(group / 8)
  int n_splits;  // 1: the attention kernel writes `out` itself
};

// Chooses n_splits from n_seqs * n_kv_heads * hgroups against the SM count (wave model).
DecodePlan plan_decode(const KvGeometry& g, int n_seqs, int max_ctx);

// Workspace layout for n_splits > 1 (floats): acc [n_seqs][n_heads][n_splits][d], then
// ml [n_seqs][n_heads][n_splits][2] = (running max in log2 units, sum of exp2), then int
// counters [n_seqs][n_kv_heads * hgroups] (the fast kernel's fused reduce: the last split block
// of a head group combines the partials and resets its counter to 0; so they must be zero
// when the workspace is first used, see kv_kernels.cuh).
inline size_t ws_acc_floats(const KvGeometry& g, int n_seqs, int n_splits) {
  return (size_t)n_seqs * g.n_heads * n_splits * g.head_dim;
}

// Kernel arguments shared by the fast and the reference kernel (passed by value).
struct AttnKernelArgs {
  const uint8_t* arena;
  const DecodeSeq* seqs;
  const float* q;
  __nv_bfloat16* out;
  float* ws_acc;  // split partials (null with one split), layout above
  float* ws_ml;
  int* ws_cnt;    // per (sequence, head group): split blocks done (fused reduce; zero between launches)
  const float* inv_freq;
  const float* cb1;
  const float* cb2;
  const uint8_t* tables;  // precomputed shared-memory tables (null: built per block)
  int n_heads, n_kv_heads, group, hgroups, layer, n_splits, method, ablation;
  float scale_log2;  // softmax scale in log2 units
};

inline AttnKernelArgs attn_kernel_args(const DecodeAttnArgs& a, const DecodePlan& p) {
  AttnKernelArgs k{};
  k.arena = a.arena;
  k.seqs = a.seqs;
  k.q = a.q;
  k.out = a.out;
  k.ws_acc = a.workspace;
  k.ws_ml = a.workspace ? a.workspace + ws_acc_floats(a.g, a.n_seqs, p.n_splits) : nullptr;
  k.ws_cnt = a.workspace ? reinterpret_cast<int*>(k.ws_ml + (size_t)a.n_seqs * a.g.n_heads * p.n_splits * 2) : nullptr;
  k.inv_freq = a.g.inv_freq;
  k.cb1 = a.g.codebook1;
  k.cb2 = a.g.codebook2;
  k.tables = a.g.attn_tables;
  k.n_heads = a.g.n_heads;
  k.n_kv_heads = a.g.n_kv_heads;
  k.group = p.group;
  k.hgroups = p.hgroups;
  k.layer = a.layer;
  k.n_splits = p.n_splits;
  k.method = a.g.quant_method;
  k.ablation = a.g.ablation;
  k.scale_log2 = a.scale * 1.4426950408889634f;
  return k;
}

// Validates the arguments shared by both kernels; fills the plan.
nsn_status check_decode_args(const DecodeAttnArgs& a, DecodePlan* plan);
// Combines the split partials into `out` (bf16): the reference kernel's combine (the fast kernel
// combines in its last split block, finish_split in decode_attention.cu).
nsn_status launch_attn_reduce(const DecodeAttnArgs& a, const DecodePlan& plan, cudaStream_t stream);
// The reference kernel: decodes every window to fp32 in shared memory, then plain attention.
// Handles every format (fp16, NSN with any ablation, RTN).
nsn_status launch_decode_attention_ref(const DecodeAttnArgs& a, cudaStream_t stream);

}  // namespace gpu
}  // namespace nsn
