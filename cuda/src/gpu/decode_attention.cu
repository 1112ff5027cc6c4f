// decode_attention.cu: paged decode attention (one query row per sequence) over fp16, NSN-2 and
// NSN-1 pages in one launch, with split-KV and a reduce kernel. See KERNELS.md for the design
// and the measurements behind it; quant/nsn_attend.cpp is the CPU reference of the math.
//
// Grid (split, kv head x head group, sequence); 256 threads = 2 window groups x 4 token slices.
// A thread block owns a range of windows of one sequence and KV head and the (up to 8) query
// heads that share it, so the pages are read once. Pages stream through a cp.async ring of
// shared-memory stages (one fp16 window, or up to 12 quantized windows, per stage). Warp (G, s)
// handles tokens [16s, 16s+16) of the stage's windows G, G+2, ... with its own online-softmax
// state; warps are merged at the end. All products run on tensor cores (mma.m16n8k16):
//   scores^T[16 tok x 8 heads] = Y^[tok x d] (codes) . (Hq)^T  +  T[tok x d] . AB[d x heads]
//   out^T  [16 ch x 8 heads]  += Y^T[ch x tok] . (p s1 s2')^T[tok x heads]
// The code rows Y^ come straight from the codebook in shared memory: ldmatrix takes one row
// address per lane, so each lane points at C[code] (8 copies of the codebook, one per bank
// group, make the gather conflict-free); 2-bit signs are XORed into the fragments. T is the
// fixed cos/sin(delta theta) table (registers) and AB the per-window mean coefficients
// (A_i, B_i of nsn_attend.cpp), so the RoPE'd window mean costs one extra mma per k-step.
// The value mean adds (sum_t p s1) o^V per window into a second accumulator in the original
// basis; the code-part accumulator stays in the Hadamard basis and is rotated back once, at the
// end (warp-level FWHT over the fragment layout), where the two are summed.
#include <math.h>

#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <type_traits>

#include "../backend.h"
#include "../kv_layout.h"
#include "decode_attention.cuh"
#include "nsn_math.cuh"
#include "sm_count.cuh"

namespace nsn {
namespace gpu {

namespace {

constexpr float kS1EpsDev = 1e-6f;  // == kS1Eps (quant/quant_internal.h)

// Run-time selectable variants (decode_attention.cuh: kDecodeVariants, set_decode_attention_variant).
//   v0: the run-2 kernel: 256 threads (2 window groups x 4 token slices), T / Hq fragments in
//       registers (244 regs), 4-stage ring of 32 KB.
//   v1: 512 threads (4 window groups x 4 slices, 16 warps per SM), T / Hq fragments in shared
//       memory (<= 128 registers), 3-stage ring of 36 KB (8 NSN-2 windows per stage).
//   v2: 256 threads, fragments in shared memory, two windows per warp step (both QK chains
//       interleaved, one online-softmax step per 32 tokens), 3-stage ring of 36 KB.
//   v3: v1 + v2: 512 threads and two windows per warp step.
//   v4: v1 with a 4-stage ring of 32 KB (3 fp16 windows in flight, as v0) and at most 8
//       quantized windows per stage (the prep records must fit next to the bigger ring).
//   v5: v1 with 384 threads (3 window groups, 12 warps per SM): up to 168 registers, no spills.
//   v6: v5 with the Hq fragments in registers (one shared-memory load less per k-step).
// head_dim 256 always runs v0 (its accumulators alone take 128 registers).
template <int D, int VAR>
struct Var {
  static constexpr bool V0 = VAR == 0 || D > 128;
  static constexpr bool T384 = !V0 && (VAR == 5 || VAR == 6);  // 3 window groups, <= 168 registers
  static constexpr int NT = T384 ? 384 : !V0 && (VAR == 1 || VAR == 3 || VAR == 4) ? 512 : 256;  // threads
  static constexpr int NWARP = NT / 32;
  static constexpr int NG = NT / 128;  // window groups
  static constexpr bool FSM = !V0;     // T fragments in shared memory
  static constexpr bool HQ_SM = FSM && VAR != 6;  // Hq fragments in shared memory (v6: registers)
  static constexpr bool PAIR = !V0 && (VAR == 2 || VAR == 3);
  static constexpr int NSTAGE = V0 ? (D <= 128 ? 4 : 2) : VAR == 4 ? 4 : 3;
  static constexpr int STAGE_MIN = V0 || VAR == 4 ? 32768 : 36864;
  static constexpr int NWQ_CAP = V0 ? (D <= 128 ? 12 : 6) : VAR == 4 ? 8 : 12;  // quantized windows per stage
};

template <int D, int VAR>
struct Cfg {
  using V = Var<D, VAR>;
  static constexpr int NT = V::NT, NWARP = V::NWARP, NG = V::NG;
  static constexpr int KS = D / 16;  // k-steps over channels (QK) = m-tiles over channels (PV)
  static constexpr int NS = D / kSub;
  static constexpr int H = D / 2;
  static constexpr int E = D / 32;
  static constexpr int STAGE = 2 * kWindow * D * 2 > V::STAGE_MIN ? 2 * kWindow * D * 2 : V::STAGE_MIN;
  static constexpr int NSTAGE = V::NSTAGE;  // fp16: NSTAGE - 1 windows in flight per SM
  static constexpr int NWQ_CAP = V::NWQ_CAP;
  static constexpr int ABW = D / 8 + 4;  // words per (head, lane%4) row of AB / QW (+4: no bank conflicts)
  static constexpr int AB_WORDS = kHeadsPerCta * 4 * ABW;
  // per-window prep record (bytes): (s1, s1*s2') per token for K and V, o^V (permuted), AB
  static constexpr int P_S1K = 0, P_S1V = 512, P_OV = 1024, P_AB = 1024 + 4 * D;
  static constexpr int PREP = P_AB + 4 * AB_WORDS;
  // shared memory map (bytes)
  static constexpr int CB = 0;  // fp16 codebook x 8 copies: [256][8 copies][8]
  static constexpr int RING = 32768;
  static constexpr int PREPS = RING + NSTAGE * STAGE;
  static constexpr int QF = PREPS + NWQ_CAP * PREP;  // fp32 q [8][D]
  static constexpr int QW = QF + kHeadsPerCta * D * 4;  // fp16 q B-fragments [2 (hi, lo)][8][4][ABW]
  static constexpr int WML = QW + 2 * AB_WORDS * 4;     // per-warp (m, l) [2][NWARP][8 heads]
  static constexpr int TF = WML + 2 * NWARP * kHeadsPerCta * 4;  // (FSM) T fragments [4 sl][KS][32 lanes] x 16 B
  static constexpr int HQF = TF + (V::FSM ? 4 * KS * 32 * 16 : 0);  // (FSM) Hq fragments [KS][32 lanes] x 8 B
  static constexpr int PT = HQF + (V::HQ_SM ? KS * 32 * 8 : 0);  // page-table cache (int64)
  // the block's page offsets when it has at most PT_CAP windows (else read from global memory)
  static constexpr int PT_CAP = (232448 - PT) / 8 < 1024 ? (232448 - PT) / 8 : 1024;
  static constexpr int TOTAL = PT + PT_CAP * 8;
  static_assert(PT_CAP >= 256 && TOTAL <= 232448, "shared memory");
  static_assert(NT % H == 0, "prep: one rotary pair per thread");
  static_assert(NWARP * kHeadsPerCta * D * 4 <= NSTAGE * STAGE, "final merge lives in the ring");
  static_assert(PREP % 16 == 0 && (ABW * 4) % 16 == 0, "alignment");
};

struct FastArgs : AttnKernelArgs {
  int hadamard;  // 0 under the NO_HADAMARD ablation
};

// 2-bit signs. A fragment register holds two fp16 values; their sign bits are bits 15 and 31.
// The sign words are prepared so that byte k (sub-vector 4u + k of the word) carries the
// register's two sign bits in its bits 0 and 1 and nothing else (K: the row's byte shifted by
// the lane's channel pair and masked; V: the two tokens' bits merged). Then one PRMT, one IMAD
// and the XOR: b * 0x40008000 puts bit 0 at 15 (and 30) and bit 1 at 31 (and 16), and the
// mask keeps 15 and 31.
__device__ __forceinline__ uint32_t sign_mask(uint32_t w, int k) {
  return (byte_of(w, k) * 0x40008000u) & 0x80008000u;
}
// K fragment: rows = tokens, k = channels 2tq, 2tq+1 of each sub-vector: bits 2tq, 2tq+1.
__device__ __forceinline__ uint32_t sign_word_k(uint32_t w, int tq) { return (w >> (2 * tq)) & 0x03030303u; }
// Transposed V fragment: channel gr of each sub-vector for tokens t0 (w0, bit 0) and t0+1 (w1, bit 1).
__device__ __forceinline__ uint32_t sign_word_v(uint32_t w0, uint32_t w1, int gr) {
  return ((w0 >> gr) & 0x01010101u) | (((w1 >> gr) & 0x01010101u) << 1);
}

template <int D>
__device__ __forceinline__ void load_row_words(const uint8_t* p, uint32_t (&w)[D / 32]) {
  // D/8 bytes = D/32 words, 16-byte aligned when D >= 128
  if constexpr (D >= 128) {
#pragma unroll
    for (int i = 0; i < D / 128; i++) {
      const uint4 u = reinterpret_cast<const uint4*>(p)[i];
      w[4 * i] = u.x;
      w[4 * i + 1] = u.y;
      w[4 * i + 2] = u.z;
      w[4 * i + 3] = u.w;
    }
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    w[0] = u.x;
    w[1] = u.y;
  }
}

// Rotates the warp's accumulators (C fragments, channel 16m + 8(e>>1) + lane/4) from the
// Hadamard basis back to the original one: out = H acc.
template <int D>
__device__ __forceinline__ void acc_fwht(float (&acc)[D / 16][4], int lane) {
  constexpr int KS = D / 16;
#pragma unroll
  for (int sh = 4; sh <= 16; sh <<= 1) {
    const bool lower = !(lane & sh);
#pragma unroll
    for (int m = 0; m < KS; m++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float o = __shfl_xor_sync(kFull, acc[m][e], sh);
        acc[m][e] = lower ? acc[m][e] + o : o - acc[m][e];
      }
    }
  }
#pragma unroll
  for (int m = 0; m < KS; m++) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const float a = acc[m][e], b = acc[m][e + 2];
      acc[m][e] = a + b;
      acc[m][e + 2] = a - b;
    }
  }
#pragma unroll
  for (int h = 1; h < KS; h <<= 1) {
#pragma unroll
    for (int m = 0; m < KS; m++) {
      if (!(m & h)) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const float a = acc[m][e], b = acc[m + h][e];
          acc[m][e] = a + b;
          acc[m + h][e] = a - b;
        }
      }
    }
  }
  const float norm = rsqrtf((float)D);
#pragma unroll
  for (int m = 0; m < KS; m++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[m][e] *= norm;
}

// Online-softmax step for P 16-token x 8-head score tiles held in C-fragment layout
// (s[p][0]: token gr / head 2tq, [1]: gr / 2tq+1, [2]: gr+8 / 2tq, [3]: gr+8 / 2tq+1).
// Turns s into probabilities, rescales acc and l when the running max moves.
template <int D, int P>
__device__ __forceinline__ void softmax_step(float (&s)[P][4], float (&m)[2], float (&l)[2],
                                             float (&acc)[D / 16][4]) {
  float mx0 = fmaxf(s[0][0], s[0][2]), mx1 = fmaxf(s[0][1], s[0][3]);
#pragma unroll
  for (int p = 1; p < P; p++) {
    mx0 = fmaxf(mx0, fmaxf(s[p][0], s[p][2]));
    mx1 = fmaxf(mx1, fmaxf(s[p][1], s[p][3]));
  }
#pragma unroll
  for (int o = 4; o <= 16; o <<= 1) {
    mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, o));
    mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, o));
  }
  const float n0 = fmaxf(m[0], mx0), n1 = fmaxf(m[1], mx1);
  // n0, n1 are finite: every step has a finite score per head column (quantized windows have
  // no masked tokens and unused head columns score 0; an fp16 slice starts with a valid token;
  // the second window slot of a pair is -inf only next to a real first one). The first step's
  // m = -inf gives a = 2^-inf = 0 (acc and l are still zero).
  const float a0 = fast_exp2(m[0] - n0), a1 = fast_exp2(m[1] - n1);
#pragma unroll
  for (int p = 0; p < P; p++) {
    s[p][0] = fast_exp2(s[p][0] - n0);
    s[p][2] = fast_exp2(s[p][2] - n0);
    s[p][1] = fast_exp2(s[p][1] - n1);
    s[p][3] = fast_exp2(s[p][3] - n1);
  }
  if (__any_sync(kFull, a0 != 1.0f || a1 != 1.0f)) {
#pragma unroll
    for (int k = 0; k < D / 16; k++) {
      acc[k][0] *= a0;
      acc[k][1] *= a1;
      acc[k][2] *= a0;
      acc[k][3] *= a1;
    }
    l[0] *= a0;
    l[1] *= a1;
  }
  m[0] = n0;
  m[1] = n1;
#pragma unroll
  for (int p = 0; p < P; p++) {
    l[0] += s[p][0] + s[p][2];
    l[1] += s[p][1] + s[p][3];
  }
}

// Chunk e (= code * 8 + copy) of the fp16 codebook in the kernel's shared-memory layout
// [256 codes][8 copies][8 halves]: the 8 copies (one per bank group) make ldmatrix's gather of
// code rows conflict-free.
__device__ __forceinline__ uint4 codebook_chunk(const float* cb, int e) {
  const int c = e >> 3;
  const float4 u = reinterpret_cast<const float4*>(cb + c * kSub)[0];
  const float4 v = reinterpret_cast<const float4*>(cb + c * kSub)[1];
  return make_uint4(pack_half2(u.x, u.y), pack_half2(u.z, u.w), pack_half2(v.x, v.y), pack_half2(v.z, v.w));
}
// Word idx of the T fragments [4 slices][KS k-steps][32 lanes][4 registers]: register r of lane
// ln holds (cos, sin)(delta theta_i) for token delta of the slice and rotary pair i.
template <int KS>
__device__ __forceinline__ uint32_t t_fragment_word(const float* inv_freq, int idx) {
  const int r = idx & 3, ln = (idx >> 2) & 31, s = (idx >> 7) % KS, sl4 = idx / (128 * KS);
  const int delta = 16 * sl4 + (ln >> 2) + 8 * (r & 1), i = 8 * s + (ln & 3) + 4 * (r >> 1);
  float sn, cs;
  sincosf(__fmul_rn((float)delta, inv_freq[i]), &sn, &cs);
  return pack_half2(cs, sn);
}
constexpr int kCbChunks = 256 * 8;  // 16-byte chunks of one codebook's shared-memory copies

// Channel c of one output row from its n_splits partials at rows r0.. of the workspace:
// sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). L1-bypassing loads (other blocks wrote them).
__device__ __forceinline__ float combine_splits(const float* ws_acc, const float* ws_ml, size_t r0, int n_splits,
                                                int c, int d) {
  float M = -INFINITY;
  for (int s = 0; s < n_splits; s++) M = fmaxf(M, load_cg(ws_ml + 2 * (r0 + s)));
  float Ls = 0.0f, A = 0.0f;
  for (int s = 0; s < n_splits; s++) {
    const float ms = load_cg(ws_ml + 2 * (r0 + s));
    const float f = ms == -INFINITY ? 0.0f : exp2f(ms - M);
    Ls += load_cg(ws_ml + 2 * (r0 + s) + 1) * f;
    A += load_cg(ws_acc + (r0 + s) * d + c) * f;
  }
  return Ls > 0.0f ? A / Ls : 0.0f;
}

// Split-KV without a reduce launch: after a block has written its partial, the last of the
// n_splits blocks of its (sequence, head group) to finish (a counter in the workspace) combines
// all partials into out and resets the counter. flag: one int of shared memory.
__device__ __forceinline__ void finish_split(const AttnKernelArgs& a, int seq, int head0, int nh, int q_row,
                                             int d, int* flag) {
  thread_fence();  // this block's partial is visible before the counter moves
  __syncthreads();
  int* cnt = a.ws_cnt + (size_t)seq * gridDim.y + blockIdx.y;
  if (threadIdx.x == 0) *flag = atomic_add_int(cnt, 1) == a.n_splits - 1;
  __syncthreads();
  if (!*flag) return;
  thread_fence();
  for (int idx = threadIdx.x; idx < nh * d; idx += blockDim.x) {
    const int n = idx / d, c = idx % d;
    const size_t r0 = ((size_t)seq * a.n_heads + head0 + n) * a.n_splits;
    a.out[((size_t)q_row * a.n_heads + head0 + n) * d + c] =
        __float2bfloat16(combine_splits(a.ws_acc, a.ws_ml, r0, a.n_splits, c, d));
  }
  if (threadIdx.x == 0) *cnt = 0;
}

template <int D, int VAR>
__global__ void __launch_bounds__(Var<D, VAR>::NT, 1) decode_attn_kernel(FastArgs a) {
  using C = Cfg<D, VAR>;
  using V = Var<D, VAR>;
  constexpr int kThreads = C::NT, NG = C::NG, NWARP = C::NWARP;
  constexpr int KS = C::KS, NS = C::NS, H = C::H, E = C::E;
  NSN_DYNAMIC_SMEM(uint8_t, smem);
  // Scalars that are uniform across the warp go through __shfl_sync(.., 0) so the compiler can
  // prove it: otherwise every shuffle below becomes a divergence-safe (collective) loop.
  const int tid = threadIdx.x, lane = tid & 31, warp = __shfl_sync(kFull, tid >> 5, 0);
  const int gr = lane >> 2, tq = lane & 3;  // mma fragment row group / column pair
  const int grp = warp >> 2, sl = warp & 3;  // window group (0 .. NG-1), 16-token slice

  const int seq = blockIdx.z, split = blockIdx.x;
  const DecodeSeq sq = a.seqs[seq];
  const int kv_bits = __shfl_sync(kFull, sq.kv_bits, 0);
  const int n_ctx = __shfl_sync(kFull, sq.n_ctx, 0);
  const int q_row = __shfl_sync(kFull, sq.q_row, 0);
  const int kvh = blockIdx.y / a.hgroups, hg = blockIdx.y % a.hgroups;
  const int head0 = kvh * a.group + hg * kHeadsPerCta;
  const int nh = min(kHeadsPerCta, a.group - hg * kHeadsPerCta);
  const int n_windows = (n_ctx + kWindow - 1) / kWindow;
  const bool quant = kv_bits != 16;
  const int kind = kind_of_bits(kv_bits);
  const int nq = quant ? n_ctx / kWindow : 0;
  const int per = (n_windows + a.n_splits - 1) / a.n_splits;
  const int w0 = split * per, w1 = min(n_windows, w0 + per);

  if (w0 >= w1) {  // nothing in this range (only with n_splits > 1): an empty partial
    for (int idx = tid; idx < nh * D; idx += kThreads) {
      const size_t r = ((size_t)seq * a.n_heads + head0 + idx / D) * a.n_splits + split;
      a.ws_acc[r * D + idx % D] = 0.0f;
      if (idx % D == 0) {
        a.ws_ml[2 * r] = -INFINITY;
        a.ws_ml[2 * r + 1] = 0.0f;
      }
    }
    finish_split(a, seq, head0, nh, q_row, D, reinterpret_cast<int*>(smem + C::PT));
    return;
  }

  const NsnBlockLayout L = nsn_block_layout(quant ? kv_bits : 1, D);
  const uint32_t bb = quant ? L.bytes : 0;                 // bytes of one K (or V) block
  const int nwq = quant ? min(C::NWQ_CAP, C::STAGE / (int)(2 * bb)) : 1;
  const uint64_t blk_off =
      block_offset(kind, D, NSN_QUANT_NSN, a.n_kv_heads, a.layer, kvh, 0);  // K block; V follows
  const uint64_t f16_off = block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, kvh, 0);
  const int chunks = (int)(2 * bb / 16);       // 16-byte chunks of one quantized window (K + V)
  const uint32_t chunk_magic = quant ? (uint32_t)((0x100000000ull + chunks - 1) / chunks) : 0u;
  const int nqs = max(0, min(w1, nq) - w0);  // quantized windows in range
  const int n_qst = (nqs + nwq - 1) / nwq;
  const int n_st = n_qst + (w1 - w0 - nqs);

  float* qf = reinterpret_cast<float*>(smem + C::QF);
  uint32_t* qw = reinterpret_cast<uint32_t*>(smem + C::QW);
  float* wm = reinterpret_cast<float*>(smem + C::WML);
  float* wl = wm + NWARP * kHeadsPerCta;

  // ---- setup: page table, q, H q, codebook copies, fragments ----
  int64_t* pt_s = reinterpret_cast<int64_t*>(smem + C::PT);
  const bool pt_cached = w1 - w0 <= C::PT_CAP;
  if (pt_cached)
    for (int idx = tid; idx < w1 - w0; idx += kThreads) pt_s[idx] = sq.page_off[w0 + idx];
  // arena offset of window w's page (w0 <= w < w1)
  auto page_of = [&](int w) -> int64_t { return pt_cached ? pt_s[w - w0] : sq.page_off[w]; };
  for (int idx = tid; idx < kHeadsPerCta * D; idx += kThreads) {
    const int n = idx / D;
    qf[idx] = n < nh ? a.q[((size_t)q_row * a.n_heads + head0 + n) * D + idx % D] : 0.0f;
  }
  if (quant) {
    // AB of heads >= nh stays zero in every prep record (prep writes heads < nh only), so the
    // unused score columns are finite (zero) rather than masked.
    for (int idx = tid; idx < C::NWQ_CAP * C::AB_WORDS; idx += kThreads)
      reinterpret_cast<uint32_t*>(smem + C::PREPS + (idx / C::AB_WORDS) * C::PREP + C::P_AB)[idx % C::AB_WORDS] = 0u;
    if (a.tables) {  // precomputed (launch_decode_attention_tables): plain copies
      const uint8_t* src = a.tables + (kv_bits == 1 ? 0 : kCbChunks * 16);
      for (int e = tid; e < kCbChunks; e += kThreads) cp_async16(smem_addr(smem + C::CB + e * 16), src + e * 16);
      if constexpr (V::FSM) {
        src = a.tables + 2 * kCbChunks * 16;
        for (int e = tid; e < 4 * KS * 32; e += kThreads) cp_async16(smem_addr(smem + C::TF + e * 16), src + e * 16);
      }
      cp_async_commit();
      cp_async_wait<0>();
    } else {
      const float* cbg = kv_bits == 1 ? a.cb1 : a.cb2;
      for (int e = tid; e < kCbChunks; e += kThreads)
        *reinterpret_cast<uint4*>(smem + C::CB + e * 16) = codebook_chunk(cbg, e);
    }
  }
  __syncthreads();
  float* qh = reinterpret_cast<float*>(smem + C::RING);  // scratch until the ring starts
  for (int idx = tid; idx < kHeadsPerCta * 4 * KS * 2; idx += kThreads) {
    const int n = idx / (4 * KS * 2), t4 = (idx / (KS * 2)) % 4, s = (idx >> 1) % KS, r = idx & 1;
    const int c = 16 * s + 2 * t4 + 8 * r;
    // q = hi + lo in fp16: fp16 keys then see q to ~fp32 accuracy (two mma per k-step)
    const float a0 = qf[n * D + c], a1 = qf[n * D + c + 1];
    const float h0 = __half2float(__float2half_rn(a0)), h1 = __half2float(__float2half_rn(a1));
    qw[(n * 4 + t4) * C::ABW + 2 * s + r] = pack_half2(h0, h1);
    qw[C::AB_WORDS + (n * 4 + t4) * C::ABW + 2 * s + r] = pack_half2(a0 - h0, a1 - h1);
  }
  if (warp < kHeadsPerCta) {
    float v[E];
#pragma unroll
    for (int j = 0; j < E; j++) v[j] = qf[warp * D + lane * E + j];
    if (a.hadamard) warp_fwht<E>(v, lane);
#pragma unroll
    for (int j = 0; j < E; j++) qh[warp * D + lane * E + j] = v[j];
  }
  __syncthreads();
  // V::FSM: the fragments live in shared memory (TF, HQF) and are loaded per k-step; the
  // register arrays are then dead (the compiler drops them).
  uint32_t qhf[KS][2], tf[KS][4];
  uint4* tf_s = reinterpret_cast<uint4*>(smem + C::TF);
  uint2* hq_s = reinterpret_cast<uint2*>(smem + C::HQF);
  // acc: the output accumulator. During quantized stages it is in the Hadamard basis (codes and
  // the value means, the latter transformed in the prep); before the first fp16 stage (or at the
  // end) it is rotated back once (acc_fwht), and fp16 windows add in the original basis.
  // out = acc / l.
  float acc[KS][4];
  bool rotated = !(quant && a.hadamard);  // acc in the original basis (block-uniform)
#pragma unroll
  for (int s = 0; s < KS; s++) {
#pragma unroll
    for (int e = 0; e < 4; e++) acc[s][e] = 0.0f;
  }
  if constexpr (V::FSM) {
    if (quant && V::HQ_SM) {
      for (int idx = tid; idx < KS * 32; idx += kThreads) {
        const int s = idx >> 5, ln = idx & 31, g = ln >> 2, t = ln & 3, c = 16 * s + 2 * t;
        hq_s[idx] = make_uint2(pack_half2(qh[g * D + c], qh[g * D + c + 1]), pack_half2(qh[g * D + c + 8], qh[g * D + c + 9]));
      }
    }
    if (quant && !a.tables) {
      for (int idx = tid; idx < 4 * KS * 32 * 4; idx += kThreads)
        reinterpret_cast<uint32_t*>(tf_s)[idx] = t_fragment_word<KS>(a.inv_freq, idx);
    }
  }
  if constexpr (!V::HQ_SM) {
#pragma unroll
    for (int s = 0; s < KS; s++) {
      const int c = 16 * s + 2 * tq;
      qhf[s][0] = pack_half2(qh[gr * D + c], qh[gr * D + c + 1]);
      qhf[s][1] = pack_half2(qh[gr * D + c + 8], qh[gr * D + c + 9]);
    }
  }
  if (!V::FSM && quant) {  // this lane's T fragments (slice sl), as t_fragment_word lays them out
#pragma unroll
    for (int s = 0; s < KS; s++) {
#pragma unroll
      for (int r = 0; r < 4; r++) tf[s][r] = t_fragment_word<KS>(a.inv_freq, ((sl * KS + s) * 32 + lane) * 4 + r);
    }
  }
  __syncthreads();  // qh scratch is dead from here

  float step_c = 1.0f, step_s = 0.0f;  // rotation by (kThreads / H) windows for pair tid % H
  if (quant) sincosf((float)(kThreads / H * kWindow) * a.inv_freq[tid % H], &step_s, &step_c);
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};

  auto issue = [&](int i) {
    if (i < n_st) {
      uint8_t* buf = smem + C::RING + (i % C::NSTAGE) * C::STAGE;
      if (i < n_qst) {
        const int ws = w0 + i * nwq, nw = min(nwq, nqs - i * nwq);
        // 16-byte chunks of the stage's windows (K and V blocks are contiguous in a page),
        // flattened over windows so every thread issues ~equally many; wi = idx / chunks by a
        // multiply-high (exact for idx < 2^32 / chunks). Unrolled so the page-table loads of
        // several chunks are in flight together.
        const uint32_t dst0 = smem_addr(buf);
        const int total = nw * chunks;
#pragma unroll 4
        for (int idx = tid; idx < total; idx += kThreads) {
          const int wi = (int)mul_hi((uint32_t)idx, chunk_magic);
          const int ch = idx - wi * chunks;
          cp_async16(dst0 + wi * 2 * bb + ch * 16, a.arena + page_of(ws + wi) + blk_off + ch * 16);
        }
      } else {
        const int w = w0 + nqs + (i - n_qst);
        const int n_valid = min(kWindow, n_ctx - w * kWindow);
        const uint8_t* page = a.arena + page_of(w) + f16_off;
        constexpr int CH = D / 8;  // 16-byte chunks per row
        for (int idx = tid; idx < 2 * kWindow * CH; idx += kThreads) {
          const int part = idx / (kWindow * CH), t = (idx / CH) % kWindow, ch = idx % CH;
          const bool valid = t < n_valid;
          const uint8_t* src = page + (size_t)part * kWindow * D * 2 + (valid ? t * D * 2 + ch * 16 : 0);
          cp_async16(smem_addr(buf + part * kWindow * D * 2 + t * D * 2 + ((ch ^ (t & 7)) << 4)), src, valid);
        }
      }
    }
    cp_async_commit();
  };

#pragma unroll 1
  for (int i = 0; i < C::NSTAGE - 1; i++) issue(i);

  const uint32_t cb_lane = smem_addr(smem + C::CB) + (lane & 7) * 16;
#pragma unroll 1
  for (int i = 0; i < n_st; i++) {
    cp_async_wait<C::NSTAGE - 2>();
    __syncthreads();
    issue(i + C::NSTAGE - 1);
    uint8_t* buf = smem + C::RING + (i % C::NSTAGE) * C::STAGE;
    if (i < n_qst) {
      // ---------------- quantized windows ----------------
      const int ws = w0 + i * nwq, nw = min(nwq, nqs - i * nwq);
      // prep (one pass, one barrier): per token (s1, s1*s2') of K and V; per window and rotary
      // pair the mean coefficients A_i, B_i of every head (o' = RoPE(o^K, pos0)); o^V.
      // Keys' (s1, s1 s2') carry the softmax scale (log2 units) already.
      for (int idx = tid; idx < nw * kWindow; idx += kThreads) {  // (window, K|V, token pair)
        const int wi = idx >> 6, part = (idx >> 5) & 1, tp = idx & 31;
        const uint8_t* blk = buf + wi * 2 * bb + part * bb;
        const float2 meta = unpack_half2(*reinterpret_cast<const uint32_t*>(blk + L.s1meta));  // min, step
        const float2 s2 = unpack_half2(*reinterpret_cast<const uint32_t*>(blk + L.s2 + 4 * tp));
        const int codes = blk[L.s1q + tp];
        const float f = part ? 1.0f : a.scale_log2;
        const float s1a = fmaxf(u4_value(meta.x, meta.y, codes & 15), kS1EpsDev);
        const float s1b = fmaxf(u4_value(meta.x, meta.y, codes >> 4), kS1EpsDev);
        reinterpret_cast<float4*>(smem + C::PREPS + wi * C::PREP + (part ? C::P_S1V : C::P_S1K))[tp] =
            make_float4(s1a * f, s1a * s2.x * f, s1b * f, s1b * s2.y * f);
      }
      // This thread's rotary pair ii is fixed (kThreads % H == 0); its windows are kThreads/H
      // apart, so after one sincosf the rotation to each next window start is a complex product.
      float rc = 1.0f, rs = 0.0f;
      for (int idx = tid; idx < nw * H; idx += kThreads) {
        const int wi = idx / H, ii = idx % H;
        uint8_t* rec = smem + C::PREPS + wi * C::PREP;
        const uint8_t* kb = buf + wi * 2 * bb;
        const int g32 = ii / 32;  // ii and ii + H: groups g32 and g32 + H/32
        const float oa = u4_value(half_at(kb + L.ometa + 2 * g32), half_at(kb + L.ometa + 2 * (D / 32 + g32)),
                                  (kb[L.oq + (ii >> 1)] >> ((ii & 1) * 4)) & 15);
        const int gb = g32 + H / 32, ib = ii + H;
        const float ob = u4_value(half_at(kb + L.ometa + 2 * gb), half_at(kb + L.ometa + 2 * (D / 32 + gb)),
                                  (kb[L.oq + (ib >> 1)] >> ((ib & 1) * 4)) & 15);
        if (idx == tid) {
          sincosf(__fmul_rn((float)((ws + wi) * kWindow), a.inv_freq[ii]), &rs, &rc);
        } else {
          const float c2 = rc * step_c - rs * step_s;
          rs = rs * step_c + rc * step_s;
          rc = c2;
        }
        const float cs = rc, sn = rs;
        const float ra = oa * cs - ob * sn, rb = ob * cs + oa * sn;
        uint32_t* ab = reinterpret_cast<uint32_t*>(rec + C::P_AB) + ((ii & 3) * C::ABW + 2 * (ii >> 3) + ((ii >> 2) & 1));
        for (int n = 0; n < nh; n++) {
          const float qa = qf[n * D + ii], qb = qf[n * D + ii + H];
          ab[n * 4 * C::ABW] = pack_half2(qa * ra + qb * rb, qb * ra - qa * rb);
        }
      }
      for (int wi = warp; wi < nw; wi += NWARP) {
        uint8_t* rec = smem + C::PREPS + wi * C::PREP;
        const uint8_t* vb = buf + wi * 2 * bb + bb;
        float v[E];
#pragma unroll
        for (int j = 0; j < E; j++) {
          const int c = lane * E + j, g32 = c / 32;
          v[j] = u4_value(half_at(vb + L.ometa + 2 * g32), half_at(vb + L.ometa + 2 * (D / 32 + g32)),
                          (vb[L.oq + (c >> 1)] >> ((c & 1) * 4)) & 15);
        }
        if (a.hadamard) warp_fwht<E>(v, lane);  // H o^V: added to acc in the Hadamard basis
        float* ov = reinterpret_cast<float*>(rec + C::P_OV);  // permuted to the C-fragment order
#pragma unroll
        for (int j = 0; j < E; j++) {
          const int c = lane * E + j;
          ov[((c & 7) * KS + (c >> 4)) * 2 + ((c >> 3) & 1)] = v[j];
        }
      }
      __syncthreads();

      // main: this warp's 16 tokens of windows grp, grp+NG, ...
      const int tA = 16 * sl + gr, tB = tA + 8;
      const int tokK = 16 * sl + (lane & 7) + 8 * ((lane >> 3) & 1), pK = lane >> 4;
      const int tokV = 16 * sl + 8 * (lane >> 4) + (lane & 7), pV = (lane >> 3) & 1;
      // byte selectors (PRMT) of this lane's code in a code word: even / odd sub-vector pair
      const uint32_t selK[2] = {byte_selector(pK), byte_selector(2 + pK)};
      const uint32_t selV[2] = {byte_selector(pV), byte_selector(2 + pV)};
      // The window loop is compiled once per code width (TWO: 2-bit, with signs), so that each
      // k-loop below is straight-line code the scheduler can interleave (a run-time kv_bits
      // test per k-step split it into 20 basic blocks).
      auto windows = [&](auto two_bits) {
        constexpr bool TWO = decltype(two_bits)::value;
        // scores (log2 units) of window wi's 16 tokens x 8 heads
        auto qk = [&](int wi, float (&sc)[4]) {
          const uint8_t* kb = buf + wi * 2 * bb;
          const uint8_t* rec = smem + C::PREPS + wi * C::PREP;
          // two accumulator chains each for the code and the mean part (shorter latency)
          float xc[2][4] = {}, yc[2][4] = {};
          {
            uint32_t cw[E];
            load_row_words<D>(kb + L.codes + tokK * NS, cw);
            uint32_t sa[E], sb[E];
            if constexpr (TWO) {
              load_row_words<D>(kb + L.signs + tA * NS, sa);
              load_row_words<D>(kb + L.signs + tB * NS, sb);
  #pragma unroll
              for (int k = 0; k < E; k++) {
                sa[k] = sign_word_k(sa[k], tq);
                sb[k] = sign_word_k(sb[k], tq);
              }
            }
            const uint32_t* abr = reinterpret_cast<const uint32_t*>(rec + C::P_AB) + (gr * 4 + tq) * C::ABW;
  #pragma unroll
            for (int s = 0; s < KS; s++) {
              uint32_t fa[4];
              ldmatrix_x4(fa, cb_lane + byte_sel(cw[s >> 1], selK[s & 1]) * 128);
              if constexpr (TWO) {
                fa[0] ^= sign_mask(sa[s >> 1], 2 * (s & 1));
                fa[1] ^= sign_mask(sb[s >> 1], 2 * (s & 1));
                fa[2] ^= sign_mask(sa[s >> 1], 2 * (s & 1) + 1);
                fa[3] ^= sign_mask(sb[s >> 1], 2 * (s & 1) + 1);
              }
              const uint2 abw = *reinterpret_cast<const uint2*>(abr + 2 * s);
              if constexpr (V::FSM) {
                const uint4 t4 = tf_s[(sl * KS + s) * 32 + lane];
                const uint32_t tt[4] = {t4.x, t4.y, t4.z, t4.w};
                if constexpr (V::HQ_SM) {
                  const uint2 hq = hq_s[s * 32 + lane];
                  mma_16816(xc[s & 1], fa, hq.x, hq.y);
                } else {
                  mma_16816(xc[s & 1], fa, qhf[s][0], qhf[s][1]);
                }
                mma_16816(yc[s & 1], tt, abw.x, abw.y);
              } else {
                mma_16816(xc[s & 1], fa, qhf[s][0], qhf[s][1]);
                mma_16816(yc[s & 1], tf[s], abw.x, abw.y);
              }
            }
          }
          const float2* s1k = reinterpret_cast<const float2*>(rec + C::P_S1K);
          const float2 kA = s1k[tA], kB = s1k[tB];  // (s1, s1 s2')
          // Head columns >= nh hold zeros (q and AB are zero there): finite scores, never written.
          sc[0] = kA.y * (xc[0][0] + xc[1][0]) + kA.x * (yc[0][0] + yc[1][0]);
          sc[1] = kA.y * (xc[0][1] + xc[1][1]) + kA.x * (yc[0][1] + yc[1][1]);
          sc[2] = kB.y * (xc[0][2] + xc[1][2]) + kB.x * (yc[0][2] + yc[1][2]);
          sc[3] = kB.y * (xc[0][3] + xc[1][3]) + kB.x * (yc[0][3] + yc[1][3]);
        };
        // values of window wi with probabilities sc: code part on tensor cores (Hadamard basis),
        // mean part (sum p s1) H o^V (the prep transformed o^V; acc is in the Hadamard basis)
        auto pv = [&](int wi, const float (&sc)[4]) {
          const uint8_t* vb = buf + wi * 2 * bb + bb;
          const uint8_t* rec = smem + C::PREPS + wi * C::PREP;
          const float2* s1v = reinterpret_cast<const float2*>(rec + C::P_S1V);
          const float2 vA = s1v[tA], vB = s1v[tB];
          const uint32_t pb0 = movmatrix_trans(pack_half2(sc[0] * vA.y, sc[1] * vA.y));
          const uint32_t pb1 = movmatrix_trans(pack_half2(sc[2] * vB.y, sc[3] * vB.y));
          float mw0 = sc[0] * vA.x + sc[2] * vB.x, mw1 = sc[1] * vA.x + sc[3] * vB.x;
  #pragma unroll
          for (int o = 4; o <= 16; o <<= 1) {
            mw0 += __shfl_xor_sync(kFull, mw0, o);
            mw1 += __shfl_xor_sync(kFull, mw1, o);
          }
          uint32_t cw[E];
          load_row_words<D>(vb + L.codes + tokV * NS, cw);
          uint32_t r01[E], r23[E];  // tokens 2tq / 2tq+1 and 2tq+8 / 2tq+9 of the slice
          if constexpr (TWO) {
            const uint8_t* sg = vb + L.signs + (16 * sl + 2 * tq) * NS;
            uint32_t r0[E], r1[E], r2[E], r3[E];
            load_row_words<D>(sg, r0);
            load_row_words<D>(sg + NS, r1);
            load_row_words<D>(sg + 8 * NS, r2);
            load_row_words<D>(sg + 9 * NS, r3);
  #pragma unroll
            for (int k = 0; k < E; k++) {
              r01[k] = sign_word_v(r0[k], r1[k], gr);
              r23[k] = sign_word_v(r2[k], r3[k], gr);
            }
          }
          const float* ov = reinterpret_cast<const float*>(rec + C::P_OV) + gr * KS * 2;
  #pragma unroll
          for (int m = 0; m < KS; m++) {
            uint32_t fa[4];
            ldmatrix_x4_trans(fa, cb_lane + byte_sel(cw[m >> 1], selV[m & 1]) * 128);
            if constexpr (TWO) {
              const int b0 = 2 * (m & 1);  // byte of sub-vector 2m in its word; 2m+1 is b0+1
              fa[0] ^= sign_mask(r01[m >> 1], b0);
              fa[1] ^= sign_mask(r01[m >> 1], b0 + 1);
              fa[2] ^= sign_mask(r23[m >> 1], b0);
              fa[3] ^= sign_mask(r23[m >> 1], b0 + 1);
            }
            mma_16816(acc[m], fa, pb0, pb1);
            const float2 h = *reinterpret_cast<const float2*>(ov + 2 * m);
            acc[m][0] += mw0 * h.x;
            acc[m][1] += mw1 * h.x;
            acc[m][2] += mw0 * h.y;
            acc[m][3] += mw1 * h.y;
          }
        };
        if constexpr (V::PAIR) {
          // two windows per step: both QK chains are independent (the scheduler interleaves
          // them), one softmax step for 32 tokens. An odd last window is computed twice and
          // masked out of the second slot.
  #pragma unroll 1
          for (int wi = grp; wi < nw; wi += 2 * NG) {
            const bool two = wi + NG < nw;
            const int wj = two ? wi + NG : wi;
            float sc[2][4];
            qk(wi, sc[0]);
            qk(wj, sc[1]);
            if (!two) sc[1][0] = sc[1][1] = sc[1][2] = sc[1][3] = -INFINITY;
            softmax_step<D, 2>(sc, m_run, l_run, acc);
            pv(wi, sc[0]);
            if (two) pv(wj, sc[1]);
          }
        } else {
  #pragma unroll 1
          for (int wi = grp; wi < nw; wi += NG) {
            float sc[1][4];
            qk(wi, sc[0]);
            softmax_step<D, 1>(sc, m_run, l_run, acc);
            pv(wi, sc[0]);
          }
        }
      };
      if (kv_bits == 2) {
        windows(std::true_type{});
      } else {
        windows(std::false_type{});
      }
    } else {
      // ---------------- one fp16 window (the tail, or a kv_bits 16 page) ----------------
      if (!rotated) {  // leave the Hadamard basis before adding fp16 values
        acc_fwht<D>(acc, lane);
        rotated = true;
      }
      const int w = w0 + nqs + (i - n_qst);
      const int n_valid = min(kWindow, n_ctx - w * kWindow);
      if (grp == 0 && 16 * sl < n_valid) {
        const uint32_t kbase = smem_addr(buf), vbase = kbase + kWindow * D * 2;
        const int tokK = 16 * sl + (lane & 7) + 8 * ((lane >> 3) & 1), pK = lane >> 4;
        const int tokV = 16 * sl + 8 * (lane >> 4) + (lane & 7), pV = (lane >> 3) & 1;
        const uint32_t* qwr = qw + (gr * 4 + tq) * C::ABW;
        // four independent accumulator chains (q hi / lo x even / odd k-steps): the mma latency
        // chain per window is KS/2 deep instead of 2*KS
        float xc[4][4] = {};
#pragma unroll
        for (int s = 0; s < KS; s++) {
          uint32_t fa[4];
          ldmatrix_x4(fa, kbase + tokK * D * 2 + (((2 * s + pK) ^ (tokK & 7)) << 4));
          const uint2 b = *reinterpret_cast<const uint2*>(qwr + 2 * s);
          const uint2 bl = *reinterpret_cast<const uint2*>(qwr + C::AB_WORDS + 2 * s);
          mma_16816(xc[2 * (s & 1)], fa, b.x, b.y);
          mma_16816(xc[2 * (s & 1) + 1], fa, bl.x, bl.y);
        }
        const int tA = 16 * sl + gr, tB = tA + 8;
        float sc[1][4];
#pragma unroll
        for (int e = 0; e < 4; e++) sc[0][e] = ((xc[0][e] + xc[2][e]) + (xc[1][e] + xc[3][e])) * a.scale_log2;
        if (tA >= n_valid) sc[0][0] = sc[0][1] = -INFINITY;
        if (tB >= n_valid) sc[0][2] = sc[0][3] = -INFINITY;
        softmax_step<D, 1>(sc, m_run, l_run, acc);
        const uint32_t pb0 = movmatrix_trans(pack_half2(sc[0][0], sc[0][1]));
        const uint32_t pb1 = movmatrix_trans(pack_half2(sc[0][2], sc[0][3]));
#pragma unroll
        for (int m = 0; m < KS; m++) {
          uint32_t fa[4];
          ldmatrix_x4_trans(fa, vbase + tokV * D * 2 + (((2 * m + pV) ^ (tokV & 7)) << 4));
          mma_16816(acc[m], fa, pb0, pb1);
        }
      }
    }
  }
  cp_async_wait<0>();
  if (!rotated) acc_fwht<D>(acc, lane);

  // ---- merge the NWARP warps, then write the result (or this split's partial) ----
#pragma unroll
  for (int o = 4; o <= 16; o <<= 1) {
    l_run[0] += __shfl_xor_sync(kFull, l_run[0], o);
    l_run[1] += __shfl_xor_sync(kFull, l_run[1], o);
  }
  __syncthreads();  // the ring is free
  float* wacc = reinterpret_cast<float*>(smem + C::RING);  // [NWARP][8 heads][D]
#pragma unroll
  for (int m = 0; m < KS; m++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      wacc[(warp * kHeadsPerCta + 2 * tq + (e & 1)) * D + 16 * m + 8 * (e >> 1) + gr] = acc[m][e];
    }
  }
  if (gr == 0) {
    wm[warp * kHeadsPerCta + 2 * tq] = m_run[0];
    wm[warp * kHeadsPerCta + 2 * tq + 1] = m_run[1];
    wl[warp * kHeadsPerCta + 2 * tq] = l_run[0];
    wl[warp * kHeadsPerCta + 2 * tq + 1] = l_run[1];
  }
  __syncthreads();
  for (int idx = tid; idx < nh * D; idx += kThreads) {
    const int n = idx / D, c = idx % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < NWARP; w++) M = fmaxf(M, wm[w * kHeadsPerCta + n]);
    float Ls = 0.0f, A = 0.0f;
#pragma unroll
    for (int w = 0; w < NWARP; w++) {
      const float mw = wm[w * kHeadsPerCta + n];
      const float f = mw == -INFINITY ? 0.0f : exp2f(mw - M);
      Ls += wl[w * kHeadsPerCta + n] * f;
      A += wacc[(w * kHeadsPerCta + n) * D + c] * f;
    }
    if (a.n_splits == 1) {
      a.out[((size_t)q_row * a.n_heads + head0 + n) * D + c] = __float2bfloat16(Ls > 0.0f ? A / Ls : 0.0f);
    } else {
      const size_t r = ((size_t)seq * a.n_heads + head0 + n) * a.n_splits + split;
      a.ws_acc[r * D + c] = A;
      if (c == 0) {
        a.ws_ml[2 * r] = M;
        a.ws_ml[2 * r + 1] = Ls;
      }
    }
  }
  if (a.n_splits > 1) finish_split(a, seq, head0, nh, q_row, D, reinterpret_cast<int*>(smem + C::PT));
}

// The precomputed tables (decode_attention_tables_bytes): both codebooks' shared-memory copies,
// then the T fragments, built with the same functions as the kernel's own fallback.
template <int D>
__global__ void attn_tables_kernel(const float* cb1, const float* cb2, const float* inv_freq, uint8_t* dst) {
  constexpr int KS = D / 16;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  uint4* chunks = reinterpret_cast<uint4*>(dst);
  if (i < 2 * kCbChunks) chunks[i] = codebook_chunk(i < kCbChunks ? cb1 : cb2, i % kCbChunks);
  if (i < 4 * KS * 32 * 4) reinterpret_cast<uint32_t*>(dst + 2 * kCbChunks * 16)[i] = t_fragment_word<KS>(inv_freq, i);
}

// One block per (head, sequence): the split-KV combine of the reference kernel (the fast kernel
// combines in its last split block, finish_split).
__global__ void attn_reduce_kernel(const DecodeSeq* seqs, const float* ws_acc, const float* ws_ml,
                                   int n_heads, int n_splits, int d, __nv_bfloat16* out) {
  const int h = blockIdx.x, seq = blockIdx.y;
  const size_t r0 = ((size_t)seq * n_heads + h) * n_splits;
  const int q_row = seqs[seq].q_row;
  for (int c = threadIdx.x; c < d; c += blockDim.x)
    out[((size_t)q_row * n_heads + h) * d + c] = __float2bfloat16(combine_splits(ws_acc, ws_ml, r0, n_splits, c, d));
}

template <int D, int VAR>
nsn_status launch_fast(const DecodeAttnArgs& a, const DecodePlan& p, cudaStream_t stream) {
  using C = Cfg<D, VAR>;
  static std::once_flag once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(once, [] {
    attr_err = cudaFuncSetAttribute(decode_attn_kernel<D, VAR>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::TOTAL);
  });
  if (attr_err != cudaSuccess) {
    return set_error(NSN_E_BACKEND, "decode_attention: smem attribute (%d B): %s", C::TOTAL, cudaGetErrorString(attr_err));
  }
  FastArgs f{attn_kernel_args(a, p), (a.g.ablation & NSN_ABL_NO_HADAMARD) ? 0 : 1};
  NSN_LAUNCH((decode_attn_kernel<D, VAR>), dim3(p.n_splits, a.g.n_kv_heads * p.hgroups, a.n_seqs), C::NT, C::TOTAL, stream, f);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "decode_attention launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

// Variant in force: set_decode_attention_variant() if called with v >= 0, else the env var
// NSN_ATTN_VARIANT (read once; "v6" or "6"), else the default: kDecodeVariantFp16 for launches
// whose rows are all fp16, kDecodeVariantDefault otherwise.
std::atomic<int> g_variant_override{-1};

int env_variant() {  // -1 when unset or invalid
  static const int v = [] {
    const char* e = getenv("NSN_ATTN_VARIANT");
    if (!e || !*e) return -1;
    if (*e == 'v' || *e == 'V') e++;
    const int x = atoi(e);
    return x >= 0 && x < kDecodeVariants ? x : -1;
  }();
  return v;
}

int variant_for(bool all_fp16) {
  const int o = g_variant_override.load(std::memory_order_relaxed);
  if (o >= 0) return o;
  if (env_variant() >= 0) return env_variant();
  return all_fp16 ? kDecodeVariantFp16 : kDecodeVariantDefault;
}

template <int D>
nsn_status launch_fast_variant(const DecodeAttnArgs& a, const DecodePlan& p, cudaStream_t stream) {
  if constexpr (D > 128) {
    return launch_fast<D, 0>(a, p, stream);  // head_dim 256: v0 only (see Var)
  } else {
    switch (variant_for(a.all_fp16 != 0)) {
      case 1:
        return launch_fast<D, 1>(a, p, stream);
      case 2:
        return launch_fast<D, 2>(a, p, stream);
      case 3:
        return launch_fast<D, 3>(a, p, stream);
      case 4:
        return launch_fast<D, 4>(a, p, stream);
      case 5:
        return launch_fast<D, 5>(a, p, stream);
      case 6:
        return launch_fast<D, 6>(a, p, stream);
      default:
        return launch_fast<D, 0>(a, p, stream);
    }
  }
}

}  // namespace

int decode_attention_variant(bool all_fp16) { return variant_for(all_fp16); }

void set_decode_attention_variant(int v) {
  g_variant_override.store(v >= 0 && v < kDecodeVariants ? v : -1, std::memory_order_relaxed);
}

const char* decode_attention_variant_name(int v) {
  static const char* const names[kDecodeVariants] = {
      "v0: 256 thr, frags in regs, 4x32KB ring",
      "v1: 512 thr, frags in smem, 3x36KB ring",
      "v2: 256 thr, frags in smem, 2 windows/step, 3x36KB ring",
      "v3: 512 thr, frags in smem, 2 windows/step, 3x36KB ring",
      "v4: 512 thr, frags in smem, 4x32KB ring, <= 8 quantized windows/stage",
      "v5: 384 thr, frags in smem, 3x36KB ring",
      "v6: 384 thr, T frags in smem, Hq frags in regs, 3x36KB ring",
  };
  return v >= 0 && v < kDecodeVariants ? names[v] : "?";
}

DecodePlan plan_decode(const KvGeometry& g, int n_seqs, int max_ctx) {
  DecodePlan p{};
  p.group = g.n_kv_heads > 0 ? g.n_heads / g.n_kv_heads : 1;
  p.hgroups = (p.group + kHeadsPerCta - 1) / kHeadsPerCta;
  p.n_splits = 1;
  const int nw = (max_ctx + kWindow - 1) / kWindow;
  if (n_seqs <= 0 || nw <= 1) return p;
  // Cost model: waves of one block per SM, each wave as long as its blocks' windows plus a
  // fixed setup worth ~6 windows (codebook copies, fragments, final merge).
  const long base = (long)n_seqs * g.n_kv_heads * p.hgroups;
  const int sms = sm_count() > 0 ? sm_count() : 132;  // an H200's, when it cannot be queried
  double best = 1e30;
  for (int s = 1; s <= nw && s <= 64; s++) {
    const long waves = (base * s + sms - 1) / sms;
    const double cost = (double)waves * (6.0 + (double)((nw + s - 1) / s));
    if (cost < best - 1e-9) {
      best = cost;
      p.n_splits = s;
    }
  }
  return p;
}

nsn_status check_decode_args(const DecodeAttnArgs& a, DecodePlan* plan) {
  const KvGeometry& g = a.g;
  if (g.n_kv_heads < 1 || g.n_heads < g.n_kv_heads || g.n_heads % g.n_kv_heads != 0) {
    return set_error(NSN_E_INVALID, "decode_attention: n_heads %d / n_kv_heads %d", g.n_heads, g.n_kv_heads);
  }
  if (a.layer < 0 || a.layer >= g.n_layers) return set_error(NSN_E_INVALID, "decode_attention: layer %d", a.layer);
  if (a.n_seqs < 0 || a.n_seqs > 65535) return set_error(NSN_E_INVALID, "decode_attention: n_seqs %d", a.n_seqs);
  if (a.n_seqs > 0 && (!a.arena || !a.q || !a.out || !a.seqs)) {
    return set_error(NSN_E_INVALID, "decode_attention: null pointer argument");
  }
  if (a.n_seqs > 0 && a.max_ctx < 1) return set_error(NSN_E_INVALID, "decode_attention: max_ctx %d", a.max_ctx);
  if (!g.inv_freq || !g.codebook1 || !g.codebook2) return set_error(NSN_E_INVALID, "decode_attention: null geometry tables");
  *plan = plan_decode(g, a.n_seqs, a.max_ctx);
  if ((long)g.n_kv_heads * plan->hgroups > 65535) return set_error(NSN_E_INVALID, "decode_attention: too many heads");
  if (plan->n_splits > 1) {
    const size_t need = decode_attention_workspace(g, a.n_seqs, a.max_ctx);
    if (!a.workspace || a.workspace_bytes < need) {
      return set_error(NSN_E_INVALID, "decode_attention: workspace %zu B < %zu B needed", a.workspace_bytes, need);
    }
  }
  return NSN_OK;
}

nsn_status launch_attn_reduce(const DecodeAttnArgs& a, const DecodePlan& p, cudaStream_t stream) {
  if (p.n_splits <= 1 || a.n_seqs == 0) return NSN_OK;
  const float* ml = a.workspace + ws_acc_floats(a.g, a.n_seqs, p.n_splits);
  NSN_LAUNCH(attn_reduce_kernel, dim3(a.g.n_heads, a.n_seqs), a.g.head_dim, 0, stream, a.seqs, a.workspace, ml,
             a.g.n_heads, p.n_splits, a.g.head_dim, a.out);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "decode_attention reduce launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace gpu

size_t decode_attention_tables_bytes(int head_dim) {
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return 0;
  return (size_t)2 * gpu::kCbChunks * 16 + (size_t)4 * (head_dim / 16) * 32 * 16;
}

nsn_status launch_decode_attention_tables(const KvGeometry& g, uint8_t* dst, cudaStream_t stream) {
  const size_t bytes = decode_attention_tables_bytes(g.head_dim);
  if (!bytes) return set_error(NSN_E_UNSUPPORTED, "decode_attention_tables: head_dim %d", g.head_dim);
  if (!dst || !g.codebook1 || !g.codebook2 || !g.inv_freq || ((uintptr_t)dst & 15))
    return set_error(NSN_E_INVALID, "decode_attention_tables: null or misaligned pointer");
  const int n = (int)std::max<size_t>(2 * gpu::kCbChunks, 4 * (g.head_dim / 16) * 32 * 4);
  const dim3 grid((n + 255) / 256);
  switch (g.head_dim) {
    case 64:
      NSN_LAUNCH(gpu::attn_tables_kernel<64>, grid, 256, 0, stream, g.codebook1, g.codebook2, g.inv_freq, dst);
      break;
    case 128:
      NSN_LAUNCH(gpu::attn_tables_kernel<128>, grid, 256, 0, stream, g.codebook1, g.codebook2, g.inv_freq, dst);
      break;
    default:
      NSN_LAUNCH(gpu::attn_tables_kernel<256>, grid, 256, 0, stream, g.codebook1, g.codebook2, g.inv_freq, dst);
      break;
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "decode_attention_tables launch: %s", cudaGetErrorString(e));
  return NSN_OK;
}

size_t decode_attention_workspace(const KvGeometry& g, int n_seqs, int max_ctx) {
  const gpu::DecodePlan p = gpu::plan_decode(g, n_seqs, max_ctx);
  if (p.n_splits <= 1) return 0;
  const size_t counters = (size_t)n_seqs * g.n_kv_heads * p.hgroups;
  return (gpu::ws_acc_floats(g, n_seqs, p.n_splits) + (size_t)n_seqs * g.n_heads * p.n_splits * 2 + counters) *
         sizeof(float);
}

nsn_status launch_decode_attention(const DecodeAttnArgs& a, cudaStream_t stream) {
  gpu::DecodePlan plan;
  if (nsn_status st = gpu::check_decode_args(a, &plan)) return st;
  if (a.n_seqs == 0) return NSN_OK;
  if (a.g.quant_method == NSN_QUANT_RTN) return gpu::launch_decode_attention_ref(a, stream);
  if (a.g.quant_method != NSN_QUANT_NSN) {
    return set_error(NSN_E_UNSUPPORTED, "decode_attention: quant_method %d", a.g.quant_method);
  }
  nsn_status st;
  switch (a.g.head_dim) {
    case 64:
      st = gpu::launch_fast_variant<64>(a, plan, stream);
      break;
    case 128:
      st = gpu::launch_fast_variant<128>(a, plan, stream);
      break;
    case 256:
      st = gpu::launch_fast_variant<256>(a, plan, stream);
      break;
    default:
      return set_error(NSN_E_UNSUPPORTED, "decode_attention: head_dim %d (supported: 64, 128, 256)", a.g.head_dim);
  }
  return st;  // the fast kernel combines split-KV partials itself (finish_split)
}

}  // namespace nsn
