// decode_attention.cu: paged decode attention (one query row per sequence) over fp16, NSN-2 and
// NSN-1 pages in one launch. See KERNELS.md for the design and the measurements behind it;
// quant/nsn_attend.cpp is the CPU reference of the math.
//
// Plan / run (FlashInfer style). attn_plan_kernel (one block) reads the sequences' lengths and
// writes a work list: the work units (sequence, KV head, head group) are laid end to end by
// their windows and cut into gridDim.x equal ranges; a unit crossing a cut is split into pieces
// whose partials the last piece to finish combines. The attention kernel is persistent: one CTA
// per SM loads the constant tables (codebook copies, T fragments) once and runs its items one
// after another. Pages stream through a cp.async ring of shared-memory stages (one fp16 window,
// or up to 12 quantized windows, per stage) that runs across item boundaries: the next item's
// first stages, its q and the work record after it are in flight while this one computes.
//
// Per item: 384 threads = 3 window groups x 4 token slices. Warp (G, s) handles tokens
// [16s, 16s+16) of the stage's windows G, G+3, ... with its own online-softmax state; warps are
// merged at the end of the item. All products run on tensor cores (mma.m16n8k16):
//   scores^T[16 tok x 8 heads] = Y^[tok x d] (codes) . (Hq)^T  +  T[tok x d] . AB[d x heads]
//   out^T  [16 ch x 8 heads]  += Y^T[ch x tok] . (p s1 s2')^T[tok x heads]
// The code rows Y^ come straight from the codebook in shared memory: ldmatrix takes one row
// address per lane, so each lane points at C[code] (8 copies of the codebook, one per bank
// group, make the gather conflict-free); 2-bit signs are XORed into the fragments. T is the
// fixed cos/sin(delta theta) table and AB the per-window mean coefficients (A_i, B_i of
// nsn_attend.cpp), so the RoPE'd window mean costs one extra mma per k-step. The value mean
// (sum_t p s1) H o^V is added to the same accumulator, which stays in the Hadamard basis over
// quantized windows and is rotated back once (warp-level FWHT over the fragment layout).
#include <limits.h>
#include <math.h>

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
constexpr int kQSlots = 3;          // q buffers: the item computing and up to two issued ahead
constexpr int kRecSlots = 8;        // work records in shared memory (prefetched three items ahead)
constexpr int kRecAhead = 3;
constexpr int kPlanThreads = 1024;
constexpr int kPlanSmem = kPlanThreads * 8 + kMaxCtas * 4;

// Compile-time configuration (head_dim 64 and 128; 256 runs the reference kernel).
template <int D>
struct Cfg {
  static constexpr int NT = 384, NWARP = NT / 32, NG = NT / 128;  // 3 window groups x 4 slices
  static constexpr int KS = D / 16;  // k-steps over channels (QK) = m-tiles over channels (PV)
  static constexpr int NS = D / kSub;
  static constexpr int H = D / 2;
  static constexpr int E = D / 32;
  static constexpr int STAGE = 36864;  // one fp16 window (2 x 64 x D x 2 B) or <= 12 quantized ones
  static constexpr int NSTAGE = 3;     // ring stages: 2 in flight while one computes
  static constexpr int NWQ_CAP = 12;   // quantized windows per stage
  static constexpr int ABW = D / 8 + 4;  // words per (head, lane%4) row of AB / QW (+4: no bank conflicts)
  static constexpr int AB_WORDS = kHeadsPerCta * 4 * ABW;
  // per-window prep record (bytes): (s1, s1*s2') per token for K and V, H o^V (permuted), AB
  static constexpr int P_S1K = 0, P_S1V = 512, P_OV = 1024, P_AB = 1024 + 4 * D;
  static constexpr int PREP = P_AB + 4 * AB_WORDS;
  static constexpr int QBYTES = kHeadsPerCta * D * 4;
  // shared memory map (bytes)
  static constexpr int CB = 0;                           // fp16 codebook x 8 copies: [256][8][8]
  static constexpr int TF = 32768;                       // T fragments [4 slices][KS][32 lanes] x 16 B
  static constexpr int RING = TF + 4 * KS * 32 * 16;     // NSTAGE x STAGE
  static constexpr int PREPS = RING + NSTAGE * STAGE;    // NWQ_CAP prep records; the item merge; q^H scratch
  static constexpr int QF = PREPS + NWQ_CAP * PREP;      // fp32 q [kQSlots][8][D]
  static constexpr int QW = QF + kQSlots * QBYTES;       // fp16 q B-fragments [2 (hi, lo)][8][4][ABW]
  static constexpr int WML = QW + 2 * AB_WORDS * 4;      // per-warp (m, l) [2][NWARP][8 heads]
  static constexpr int REC = WML + 2 * NWARP * kHeadsPerCta * 4;  // AttnItem [kRecSlots]
  static constexpr int FLAG = REC + kRecSlots * (int)sizeof(AttnItem);
  static constexpr int TOTAL = FLAG + 16;
  static_assert(TOTAL <= 232448, "shared memory");
  static_assert(2 * kWindow * D * 2 <= STAGE, "an fp16 window fits a stage");
  static_assert(NT % H == 0, "prep: one rotary pair per thread");
  static_assert(NWARP * kHeadsPerCta * D * 4 <= NWQ_CAP * PREP, "the item merge lives in the prep records");
  static_assert(PREP % 16 == 0 && (ABW * 4) % 16 == 0 && RING % 16 == 0 && QF % 16 == 0 && REC % 16 == 0, "alignment");
};

struct FastArgs {
  const uint8_t* arena;
  const float* q;
  __nv_bfloat16* out;
  const int* begin;        // [gridDim.x + 1]
  const AttnItem* items;
  int* cnt;                // split counters [2 * ctas]
  float* ws_ml;            // [2 * ctas][8][2]
  float* ws_acc;           // [2 * ctas][8][D]
  const float* inv_freq;
  const float* cb1;
  const float* cb2;
  const uint8_t* tables;   // precomputed shared-memory tables (null: built by each CTA)
  int n_heads, n_kv_heads, group, hgroups, layer, hadamard;
  float scale_log2;        // softmax scale in log2 units
};

// ------------------------------------------------------------------ small helpers

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

// What an item's stages look like (uniform in the CTA; recomputed from the record when needed).
template <int D>
struct ItemGeom {
  int kvh, head0, nh, kind, nwq, nqs, n_qst, n_st, chunks;
  bool quant;
  uint32_t bb, chunk_magic;
  NsnBlockLayout L;
  // Built at every stage (issue and compute side): everything that depends on the code width
  // is a compile-time constant per width, selected, so no run-time division is left but the
  // head-group one (hgroups > 1 only).
  __device__ __forceinline__ ItemGeom(const AttnItem& it, int group, int hgroups) {
    constexpr NsnBlockLayout L1 = nsn_block_layout(1, D), L2 = nsn_block_layout(2, D);
    constexpr int NWQ1 = stage_windows(L1.bytes), NWQ2 = stage_windows(L2.bytes);
    constexpr int CH1 = (int)(2 * L1.bytes / 16), CH2 = (int)(2 * L2.bytes / 16);  // 16-byte chunks of K + V
    constexpr uint32_t MG1 = (uint32_t)((0x100000000ull + CH1 - 1) / CH1), MG2 = (uint32_t)((0x100000000ull + CH2 - 1) / CH2);
    kvh = hgroups == 1 ? it.unit : it.unit / hgroups;
    const int hg = it.unit - kvh * hgroups;
    head0 = kvh * group + hg * kHeadsPerCta;
    nh = min(kHeadsPerCta, group - hg * kHeadsPerCta);
    quant = it.kv_bits != 16;
    const bool two = it.kv_bits == 2;
    kind = kind_of_bits(it.kv_bits);
    L = two ? L2 : L1;
    bb = quant ? L.bytes : 0;  // bytes of one K (or V) block
    nwq = quant ? (two ? NWQ2 : NWQ1) : 1;
    const int nq = quant ? it.n_ctx / kWindow : 0;
    nqs = max(0, min(it.w1, nq) - it.w0);  // quantized windows in range
    n_qst = !quant ? 0 : two ? (nqs + NWQ2 - 1) / NWQ2 : (nqs + NWQ1 - 1) / NWQ1;
    n_st = n_qst + (it.w1 - it.w0 - nqs);
    chunks = quant ? (two ? CH2 : CH1) : 0;
    chunk_magic = quant ? (two ? MG2 : MG1) : 0u;
  }
  // Quantized windows per stage for blocks of `bytes` (K and V of a window share a stage).
  NSN_HD static constexpr int stage_windows(uint32_t bytes) {
    return Cfg<D>::NWQ_CAP < Cfg<D>::STAGE / (int)(2 * bytes) ? Cfg<D>::NWQ_CAP : Cfg<D>::STAGE / (int)(2 * bytes);
  }
};

// Online-softmax step for a 16-token x 8-head score tile in C-fragment layout (s[0]: token gr /
// head 2tq, [1]: gr / 2tq+1, [2]: gr+8 / 2tq, [3]: gr+8 / 2tq+1). Turns s into probabilities,
// rescales acc and l when the running max moves.
template <int D>
__device__ __forceinline__ void softmax_update(float (&s)[4], float (&m)[2], float (&l)[2], float (&acc)[D / 16][4]) {
  float mx0 = fmaxf(s[0], s[2]), mx1 = fmaxf(s[1], s[3]);
#pragma unroll
  for (int o = 4; o <= 16; o <<= 1) {
    mx0 = fmaxf(mx0, __shfl_xor_sync(kFull, mx0, o));
    mx1 = fmaxf(mx1, __shfl_xor_sync(kFull, mx1, o));
  }
  // n0, n1 are finite: every step has a finite score per head column (quantized windows have
  // no masked tokens and unused head columns score 0; an fp16 slice starts with a valid token).
  // The first step's m = -inf gives a = 2^-inf = 0 (acc and l are still zero).
  const float n0 = fmaxf(m[0], mx0), n1 = fmaxf(m[1], mx1);
  const float a0 = fast_exp2(m[0] - n0), a1 = fast_exp2(m[1] - n1);
  s[0] = fast_exp2(s[0] - n0);
  s[2] = fast_exp2(s[2] - n0);
  s[1] = fast_exp2(s[1] - n1);
  s[3] = fast_exp2(s[3] - n1);
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
  l[0] += s[0] + s[2];
  l[1] += s[1] + s[3];
}

// Output channel c of head row r (slot-major partials r = slot * 8 + head) from npieces
// partials starting at slot0: sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M). L1-bypassing loads
// (other CTAs wrote them).
__device__ __forceinline__ float combine_pieces(const float* ws_acc, const float* ws_ml, int slot0, int npieces, int n,
                                                int c, int d) {
  float M = -INFINITY;
  for (int s = 0; s < npieces; s++) M = fmaxf(M, load_cg(ws_ml + 2 * ((slot0 + s) * kHeadsPerCta + n)));
  float Ls = 0.0f, A = 0.0f;
  for (int s = 0; s < npieces; s++) {
    const int r = (slot0 + s) * kHeadsPerCta + n;
    const float ms = load_cg(ws_ml + 2 * r);
    const float f = ms == -INFINITY ? 0.0f : exp2f(ms - M);
    Ls += load_cg(ws_ml + 2 * r + 1) * f;
    A += load_cg(ws_acc + (size_t)r * d + c) * f;
  }
  return Ls > 0.0f ? A / Ls : 0.0f;
}

// ------------------------------------------------------------------ the attention kernel

// One CTA's state and its steps. Every member function is called by all threads of the CTA.
template <int D>
struct Cta {
  using C = Cfg<D>;
  static constexpr int KS = C::KS, NS = C::NS, H = C::H, E = C::E, NG = C::NG, NWARP = C::NWARP;
  const FastArgs& a;
  uint8_t* smem;
  int tid, lane, warp, gr, tq, grp, sl;
  int ib, ie;  // this CTA's items

  __device__ __forceinline__ AttnItem& rec(int j) const {
    return reinterpret_cast<AttnItem*>(smem + C::REC)[j % kRecSlots];
  }
  __device__ __forceinline__ float* qf(int j) const {
    return reinterpret_cast<float*>(smem + C::QF + (j % kQSlots) * C::QBYTES);
  }
  __device__ __forceinline__ uint8_t* ring(int g) const { return smem + C::RING + (g % C::NSTAGE) * C::STAGE; }
  __device__ __forceinline__ uint8_t* prep_rec(int wi) const { return smem + C::PREPS + wi * C::PREP; }

  // ---- load: constant tables, work records, q, stages ----

  // The T fragments (once per CTA) from the precomputed tables, or built here.
  __device__ __forceinline__ void load_t_fragments() const {
    uint4* dst = reinterpret_cast<uint4*>(smem + C::TF);
    if (a.tables) {
      const uint4* src = reinterpret_cast<const uint4*>(a.tables + 2 * kCbChunks * 16);
      for (int e = tid; e < 4 * KS * 32; e += C::NT) dst[e] = src[e];
    } else {
      for (int idx = tid; idx < 4 * KS * 32 * 4; idx += C::NT)
        reinterpret_cast<uint32_t*>(dst)[idx] = t_fragment_word<KS>(a.inv_freq, idx);
    }
  }
  // The codebook copies of kv_bits (when the CTA's first item of that width starts).
  __device__ __forceinline__ void load_codebook(int kv_bits) const {
    uint4* dst = reinterpret_cast<uint4*>(smem + C::CB);
    if (a.tables) {
      const uint4* src = reinterpret_cast<const uint4*>(a.tables + (kv_bits == 1 ? 0 : kCbChunks * 16));
      for (int e = tid; e < kCbChunks; e += C::NT) dst[e] = src[e];
    } else {
      const float* cbg = kv_bits == 1 ? a.cb1 : a.cb2;
      for (int e = tid; e < kCbChunks; e += C::NT) dst[e] = codebook_chunk(cbg, e);
    }
  }
  // Async copy of work record j into its slot (three 16-byte chunks).
  __device__ __forceinline__ void issue_record(int j) const {
    if (tid < 3) cp_async16(smem_addr(reinterpret_cast<uint8_t*>(&rec(j)) + 16 * tid), reinterpret_cast<const uint8_t*>(a.items + j) + 16 * tid);
  }
  // Async copy of item j's q rows (heads >= nh zero-filled).
  __device__ __forceinline__ void issue_q(int j, const AttnItem& it, const ItemGeom<D>& g) const {
    constexpr int PER_HEAD = D / 4;  // 16-byte chunks per head row
    if (tid < kHeadsPerCta * PER_HEAD) {
      const int n = tid / PER_HEAD, k = tid % PER_HEAD;
      const bool valid = n < g.nh;
      const float* src = a.q + (valid ? ((size_t)it.q_row * a.n_heads + g.head0 + n) * D + 4 * k : 0);
      cp_async16(smem_addr(qf(j) + n * D + 4 * k), src, valid);
    }
  }

  // The issue cursor: item j, its stage s, and the global stage count g (the ring slot). Each
  // call commits one cp.async group (empty past the last item), so the compute side's
  // cp_async_wait<NSTAGE - 2> always means "stage g has landed".
  struct Cursor {
    int j, s, g;
  };
  __device__ __forceinline__ void issue(Cursor& cur) const {
    if (cur.j < ie) {
      const AttnItem& it = rec(cur.j);
      const ItemGeom<D> g(it, a.group, a.hgroups);
      if (cur.s == 0) {  // entering item j: its q, and the record kRecAhead items ahead
        issue_q(cur.j, it, g);
        if (cur.j + kRecAhead < ie) issue_record(cur.j + kRecAhead);
      }
      uint8_t* buf = ring(cur.g);
      if (cur.s < g.n_qst) {
        const int ws = it.w0 + cur.s * g.nwq, nw = min(g.nwq, g.nqs - cur.s * g.nwq);
        // K block (V follows) = block_offset(g.kind, D, NSN_QUANT_NSN, .., g.kvh, 0): g.bb is the block size
        const uint64_t blk_off = (uint64_t)((a.layer * a.n_kv_heads + g.kvh) * 2) * g.bb;
        // 16-byte chunks of the stage's windows (K and V blocks are contiguous in a page),
        // flattened over windows so every thread issues ~equally many; wi = idx / chunks by a
        // multiply-high (exact for idx < 2^32 / chunks).
        const uint32_t dst0 = smem_addr(buf);
        const int total = nw * g.chunks;
#pragma unroll 4
        for (int idx = tid; idx < total; idx += C::NT) {
          const int wi = (int)mul_hi((uint32_t)idx, g.chunk_magic);
          const int ch = idx - wi * g.chunks;
          cp_async16(dst0 + wi * 2 * g.bb + ch * 16, a.arena + it.page_off[ws + wi] + blk_off + ch * 16);
        }
      } else {
        const int w = it.w0 + g.nqs + (cur.s - g.n_qst);
        const int n_valid = min(kWindow, it.n_ctx - w * kWindow);
        const uint8_t* page = a.arena + it.page_off[w] + block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, g.kvh, 0);
        constexpr int CH = D / 8;  // 16-byte chunks per row
        // rows XOR-swizzled (ldmatrix without bank conflicts); rows past the tail zero-filled
        for (int idx = tid; idx < 2 * kWindow * CH; idx += C::NT) {
          const int part = idx / (kWindow * CH), t = (idx / CH) % kWindow, ch = idx % CH;
          const bool valid = t < n_valid;
          const uint8_t* src = page + (size_t)part * kWindow * D * 2 + (valid ? t * D * 2 + ch * 16 : 0);
          cp_async16(smem_addr(buf + part * kWindow * D * 2 + t * D * 2 + ((ch ^ (t & 7)) << 4)), src, valid);
        }
      }
      if (++cur.s == g.n_st) {
        cur.j++;
        cur.s = 0;
      }
      // The next stage's page offsets into L1 now, so the next call's address loads hit there
      // (its record has landed: records are kRecAhead items ahead, stages at most two).
      if (cur.j < ie && tid < 2) {
        const AttnItem& nx = rec(cur.j);
        const ItemGeom<D> ng(nx, a.group, a.hgroups);
        const int w = cur.s < ng.n_qst ? nx.w0 + cur.s * ng.nwq : nx.w0 + ng.nqs + (cur.s - ng.n_qst);
        const int nw = cur.s < ng.n_qst ? min(ng.nwq, ng.nqs - cur.s * ng.nwq) : 1;
        prefetch_l1(nx.page_off + w + (tid ? nw - 1 : 0));  // first and last offset: <= 2 lines
      }
    }
    cur.g++;
    cp_async_commit();
  }

  // ---- item start: q in the layouts the two paths use ----
  // qw: fp16 B fragments of q = hi + lo (fp16 windows see q to ~fp32 accuracy, two mma per
  // k-step); qhf: this lane's fragments of H q (quantized windows).
  __device__ __forceinline__ void item_begin(int j, const ItemGeom<D>& g, uint32_t (&qhf)[KS][2]) const {
    const float* q = qf(j);
    uint32_t* qw = reinterpret_cast<uint32_t*>(smem + C::QW);
    float* qh = reinterpret_cast<float*>(smem + C::PREPS);  // scratch until the first prep
    for (int idx = tid; idx < kHeadsPerCta * 4 * KS * 2; idx += C::NT) {
      const int n = idx / (4 * KS * 2), t4 = (idx / (KS * 2)) % 4, s = (idx >> 1) % KS, r = idx & 1;
      const int c = 16 * s + 2 * t4 + 8 * r;
      const float a0 = q[n * D + c], a1 = q[n * D + c + 1];
      const float h0 = __half2float(__float2half_rn(a0)), h1 = __half2float(__float2half_rn(a1));
      qw[(n * 4 + t4) * C::ABW + 2 * s + r] = pack_half2(h0, h1);
      qw[C::AB_WORDS + (n * 4 + t4) * C::ABW + 2 * s + r] = pack_half2(a0 - h0, a1 - h1);
    }
    if (g.quant && warp < kHeadsPerCta) {
      float v[E];
#pragma unroll
      for (int i = 0; i < E; i++) v[i] = q[warp * D + lane * E + i];
      if (a.hadamard) warp_fwht<E>(v, lane);
#pragma unroll
      for (int i = 0; i < E; i++) qh[warp * D + lane * E + i] = v[i];
    }
    __syncthreads();
    if (g.quant) {
#pragma unroll
      for (int s = 0; s < KS; s++) {
        const int c = 16 * s + 2 * tq;
        qhf[s][0] = pack_half2(qh[gr * D + c], qh[gr * D + c + 1]);
        qhf[s][1] = pack_half2(qh[gr * D + c + 8], qh[gr * D + c + 9]);
      }
    }
    __syncthreads();  // the scratch is dead (prep records follow)
  }

  // ---- prep of a quantized stage (one pass, one barrier) ----
  // Per token (s1, s1*s2') of K and V (keys' carry the softmax scale); per window and rotary
  // pair the mean coefficients A_i, B_i of every head (o' = RoPE(o^K, pos0)); H o^V in the
  // accumulator's fragment order.
  __device__ __forceinline__ void prep(const uint8_t* buf, const float* q, const ItemGeom<D>& g, int ws, int nw, float step_c,
                       float step_s) const {
    const NsnBlockLayout& L = g.L;
    for (int idx = tid; idx < nw * kWindow; idx += C::NT) {  // (window, K|V, token pair)
      const int wi = idx >> 6, part = (idx >> 5) & 1, tp = idx & 31;
      const uint8_t* blk = buf + wi * 2 * g.bb + part * g.bb;
      const float2 meta = unpack_half2(*reinterpret_cast<const uint32_t*>(blk + L.s1meta));  // min, step
      const float2 s2 = unpack_half2(*reinterpret_cast<const uint32_t*>(blk + L.s2 + 4 * tp));
      const int codes = blk[L.s1q + tp];
      const float f = part ? 1.0f : a.scale_log2;
      const float s1a = fmaxf(u4_value(meta.x, meta.y, codes & 15), kS1EpsDev);
      const float s1b = fmaxf(u4_value(meta.x, meta.y, codes >> 4), kS1EpsDev);
      reinterpret_cast<float4*>(prep_rec(wi) + (part ? C::P_S1V : C::P_S1K))[tp] =
          make_float4(s1a * f, s1a * s2.x * f, s1b * f, s1b * s2.y * f);
    }
    // This thread's rotary pair ii is fixed (NT % H == 0); its windows are NT/H apart, so after
    // one sincosf the rotation to each next window start is a complex product.
    float rc = 1.0f, rs = 0.0f;
    for (int idx = tid; idx < nw * H; idx += C::NT) {
      const int wi = idx / H, ii = idx % H;
      const uint8_t* kb = buf + wi * 2 * g.bb;
      const int g32 = ii / 32;  // ii and ii + H: groups g32 and g32 + H/32
      const float oa = u4_value(half_at(kb + L.ometa + 2 * g32), half_at(kb + L.ometa + 2 * (D / 32 + g32)),
                                (kb[L.oq + (ii >> 1)] >> ((ii & 1) * 4)) & 15);
      const int gb = g32 + H / 32, ib2 = ii + H;
      const float ob = u4_value(half_at(kb + L.ometa + 2 * gb), half_at(kb + L.ometa + 2 * (D / 32 + gb)),
                                (kb[L.oq + (ib2 >> 1)] >> ((ib2 & 1) * 4)) & 15);
      if (idx == tid) {
        sincosf(__fmul_rn((float)((ws + wi) * kWindow), a.inv_freq[ii]), &rs, &rc);
      } else {
        const float c2 = rc * step_c - rs * step_s;
        rs = rs * step_c + rc * step_s;
        rc = c2;
      }
      const float ra = oa * rc - ob * rs, rb = ob * rc + oa * rs;
      uint32_t* ab = reinterpret_cast<uint32_t*>(prep_rec(wi) + C::P_AB) + ((ii & 3) * C::ABW + 2 * (ii >> 3) + ((ii >> 2) & 1));
#pragma unroll
      for (int n = 0; n < kHeadsPerCta; n++) {  // heads >= nh: q is zero, so AB is zero
        const float qa = q[n * D + ii], qb = q[n * D + ii + H];
        ab[n * 4 * C::ABW] = pack_half2(qa * ra + qb * rb, qb * ra - qa * rb);
      }
    }
    for (int wi = warp; wi < nw; wi += NWARP) {
      const uint8_t* vb = buf + wi * 2 * g.bb + g.bb;
      float v[E];
#pragma unroll
      for (int i = 0; i < E; i++) {
        const int c = lane * E + i, g32 = c / 32;
        v[i] = u4_value(half_at(vb + L.ometa + 2 * g32), half_at(vb + L.ometa + 2 * (D / 32 + g32)),
                        (vb[L.oq + (c >> 1)] >> ((c & 1) * 4)) & 15);
      }
      if (a.hadamard) warp_fwht<E>(v, lane);  // H o^V: added to acc in the Hadamard basis
      float* ov = reinterpret_cast<float*>(prep_rec(wi) + C::P_OV);  // permuted to the C-fragment order
#pragma unroll
      for (int i = 0; i < E; i++) {
        const int c = lane * E + i;
        ov[((c & 7) * KS + (c >> 4)) * 2 + ((c >> 3) & 1)] = v[i];
      }
    }
    __syncthreads();
  }

  // ---- score: window wi's 16 tokens (this warp's slice) x 8 heads, log2 units ----
  template <bool TWO>
  __device__ __forceinline__ void score(const uint8_t* buf, const ItemGeom<D>& g, int wi, const uint32_t (&qhf)[KS][2],
                                        float (&sc)[4]) const {
    const NsnBlockLayout& L = g.L;
    const uint8_t* kb = buf + wi * 2 * g.bb;
    const uint8_t* pr = prep_rec(wi);
    const int tA = 16 * sl + gr, tB = tA + 8;
    const int tokK = 16 * sl + (lane & 7) + 8 * ((lane >> 3) & 1), pK = lane >> 4;
    const uint32_t selK[2] = {byte_selector(pK), byte_selector(2 + pK)};
    const uint32_t cb_lane = smem_addr(smem + C::CB) + (lane & 7) * 16;
    const uint4* tf_s = reinterpret_cast<const uint4*>(smem + C::TF);
    // two accumulator chains each for the code and the mean part (shorter latency)
    float xc[2][4] = {}, yc[2][4] = {};
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
    const uint32_t* abr = reinterpret_cast<const uint32_t*>(pr + C::P_AB) + (gr * 4 + tq) * C::ABW;
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
      const uint4 t4 = tf_s[(sl * KS + s) * 32 + lane];
      const uint32_t tt[4] = {t4.x, t4.y, t4.z, t4.w};
      mma_16816(xc[s & 1], fa, qhf[s][0], qhf[s][1]);
      mma_16816(yc[s & 1], tt, abw.x, abw.y);
    }
    const float2* s1k = reinterpret_cast<const float2*>(pr + C::P_S1K);
    const float2 kA = s1k[tA], kB = s1k[tB];  // (s1, s1 s2')
    // Head columns >= nh hold zeros (q and AB are zero there): finite scores, never written.
    sc[0] = kA.y * (xc[0][0] + xc[1][0]) + kA.x * (yc[0][0] + yc[1][0]);
    sc[1] = kA.y * (xc[0][1] + xc[1][1]) + kA.x * (yc[0][1] + yc[1][1]);
    sc[2] = kB.y * (xc[0][2] + xc[1][2]) + kB.x * (yc[0][2] + yc[1][2]);
    sc[3] = kB.y * (xc[0][3] + xc[1][3]) + kB.x * (yc[0][3] + yc[1][3]);
  }

  // ---- value accumulate: window wi with probabilities sc ----
  // Code part on tensor cores (Hadamard basis); mean part (sum p s1) H o^V.
  template <bool TWO>
  __device__ __forceinline__ void value_accumulate(const uint8_t* buf, const ItemGeom<D>& g, int wi, const float (&sc)[4],
                                                   float (&acc)[KS][4]) const {
    const NsnBlockLayout& L = g.L;
    const uint8_t* vb = buf + wi * 2 * g.bb + g.bb;
    const uint8_t* pr = prep_rec(wi);
    const int tA = 16 * sl + gr, tB = tA + 8;
    const int tokV = 16 * sl + 8 * (lane >> 4) + (lane & 7), pV = (lane >> 3) & 1;
    const uint32_t selV[2] = {byte_selector(pV), byte_selector(2 + pV)};
    const uint32_t cb_lane = smem_addr(smem + C::CB) + (lane & 7) * 16;
    const float2* s1v = reinterpret_cast<const float2*>(pr + C::P_S1V);
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
    const float* ov = reinterpret_cast<const float*>(pr + C::P_OV) + gr * KS * 2;
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
  }

  // This warp's share of a quantized stage: windows grp, grp + NG, ... (code width at compile
  // time, so each k-loop is straight-line code the scheduler can interleave).
  template <bool TWO>
  __device__ __forceinline__ void quant_windows(const uint8_t* buf, const ItemGeom<D>& g, int nw, const uint32_t (&qhf)[KS][2],
                                float (&m)[2], float (&l)[2], float (&acc)[KS][4]) const {
#pragma unroll 1
    for (int wi = grp; wi < nw; wi += NG) {
      float sc[4];
      score<TWO>(buf, g, wi, qhf, sc);
      softmax_update<D>(sc, m, l, acc);
      value_accumulate<TWO>(buf, g, wi, sc, acc);
    }
  }

  // One fp16 window (the tail, or a kv_bits 16 page): window group 0, one slice per warp.
  __device__ __forceinline__ void fp16_window(const uint8_t* buf, int n_valid, float (&m)[2], float (&l)[2], float (&acc)[KS][4]) const {
    if (grp != 0 || 16 * sl >= n_valid) return;
    const uint32_t* qw = reinterpret_cast<const uint32_t*>(smem + C::QW);
    const uint32_t kbase = smem_addr(buf), vbase = kbase + kWindow * D * 2;
    const int tokK = 16 * sl + (lane & 7) + 8 * ((lane >> 3) & 1), pK = lane >> 4;
    const int tokV = 16 * sl + 8 * (lane >> 4) + (lane & 7), pV = (lane >> 3) & 1;
    const uint32_t* qwr = qw + (gr * 4 + tq) * C::ABW;
    // four independent accumulator chains (q hi / lo x even / odd k-steps)
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
    float sc[4];
#pragma unroll
    for (int e = 0; e < 4; e++) sc[e] = ((xc[0][e] + xc[2][e]) + (xc[1][e] + xc[3][e])) * a.scale_log2;
    if (tA >= n_valid) sc[0] = sc[1] = -INFINITY;
    if (tB >= n_valid) sc[2] = sc[3] = -INFINITY;
    softmax_update<D>(sc, m, l, acc);
    const uint32_t pb0 = movmatrix_trans(pack_half2(sc[0], sc[1]));
    const uint32_t pb1 = movmatrix_trans(pack_half2(sc[2], sc[3]));
#pragma unroll
    for (int mt = 0; mt < KS; mt++) {
      uint32_t fa[4];
      ldmatrix_x4_trans(fa, vbase + tokV * D * 2 + (((2 * mt + pV) ^ (tokV & 7)) << 4));
      mma_16816(acc[mt], fa, pb0, pb1);
    }
  }

  // ---- finish: merge the warps, write out (or this piece's partial, and combine the pieces
  // when it is the unit's last) ----
  __device__ __forceinline__ void item_finish(const AttnItem& it, const ItemGeom<D>& g, float (&m)[2], float (&l)[2],
                              float (&acc)[KS][4]) const {
#pragma unroll
    for (int o = 4; o <= 16; o <<= 1) {
      l[0] += __shfl_xor_sync(kFull, l[0], o);
      l[1] += __shfl_xor_sync(kFull, l[1], o);
    }
    float* wm = reinterpret_cast<float*>(smem + C::WML);
    float* wl = wm + NWARP * kHeadsPerCta;
    float* wacc = reinterpret_cast<float*>(smem + C::PREPS);  // [NWARP][8 heads][D]
    __syncthreads();  // every warp is done with the stage's prep records
#pragma unroll
    for (int mt = 0; mt < KS; mt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) wacc[(warp * kHeadsPerCta + 2 * tq + (e & 1)) * D + 16 * mt + 8 * (e >> 1) + gr] = acc[mt][e];
    }
    if (gr == 0) {
      wm[warp * kHeadsPerCta + 2 * tq] = m[0];
      wm[warp * kHeadsPerCta + 2 * tq + 1] = m[1];
      wl[warp * kHeadsPerCta + 2 * tq] = l[0];
      wl[warp * kHeadsPerCta + 2 * tq + 1] = l[1];
    }
    __syncthreads();
    for (int idx = tid; idx < g.nh * D; idx += C::NT) {
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
      if (it.slot < 0) {
        a.out[((size_t)it.q_row * a.n_heads + g.head0 + n) * D + c] = __float2bfloat16(Ls > 0.0f ? A / Ls : 0.0f);
      } else {
        const int r = it.slot * kHeadsPerCta + n;
        a.ws_acc[(size_t)r * D + c] = A;
        if (c == 0) {
          a.ws_ml[2 * r] = M;
          a.ws_ml[2 * r + 1] = Ls;
        }
      }
    }
    if (it.slot < 0) return;
    // Split unit: the last of its npieces pieces to get here combines the partials and resets
    // the counter (no reduce launch).
    int* flag = reinterpret_cast<int*>(smem + C::FLAG);
    thread_fence();  // this piece's partial is visible before the counter moves
    __syncthreads();
    if (tid == 0) *flag = atomic_add_int(a.cnt + it.slot0, 1) == it.npieces - 1;
    __syncthreads();
    if (!*flag) return;
    thread_fence();
    for (int idx = tid; idx < g.nh * D; idx += C::NT) {
      const int n = idx / D, c = idx % D;
      a.out[((size_t)it.q_row * a.n_heads + g.head0 + n) * D + c] =
          __float2bfloat16(combine_pieces(a.ws_acc, a.ws_ml, it.slot0, it.npieces, n, c, D));
    }
    if (tid == 0) a.cnt[it.slot0] = 0;
  }
};

template <int D>
__global__ void __launch_bounds__(Cfg<D>::NT, 1) decode_attn_kernel(const __grid_constant__ FastArgs a) {
  using C = Cfg<D>;
  NSN_DYNAMIC_SMEM(uint8_t, smem);
  Cta<D> t{a, smem};
  // Scalars that are uniform across the warp go through __shfl_sync(.., 0) so the compiler can
  // prove it: otherwise every shuffle becomes a divergence-safe (collective) loop.
  t.tid = threadIdx.x;
  t.lane = t.tid & 31;
  t.warp = __shfl_sync(kFull, t.tid >> 5, 0);
  t.gr = t.lane >> 2;  // mma fragment row group / column pair
  t.tq = t.lane & 3;
  t.grp = t.warp >> 2;  // window group (0 .. NG-1), 16-token slice
  t.sl = t.warp & 3;
  t.ib = __shfl_sync(kFull, a.begin[blockIdx.x], 0);
  t.ie = __shfl_sync(kFull, a.begin[blockIdx.x + 1], 0);
  if (t.ib >= t.ie) return;

  // ---- once per CTA: T fragments, the first kRecAhead work records ----
  t.load_t_fragments();
  if (t.tid < 3 * kRecAhead && t.ib + t.tid / 3 < t.ie) {
    const int j = t.ib + t.tid / 3, k = t.tid % 3;
    reinterpret_cast<uint4*>(&t.rec(j))[k] = reinterpret_cast<const uint4*>(a.items + j)[k];
  }
  float step_c = 1.0f, step_s = 0.0f;  // rotation by NT/H windows for this thread's rotary pair
  sincosf((float)(C::NT / C::H * kWindow) * a.inv_freq[t.tid % C::H], &step_s, &step_c);
  int cb_bits = 0;  // kv_bits of the codebook in shared memory (0: none yet)
  __syncthreads();

  typename Cta<D>::Cursor cur{t.ib, 0, 0};
#pragma unroll 1
  for (int i = 0; i < C::NSTAGE - 1; i++) t.issue(cur);

  uint32_t qhf[C::KS][2];
  float acc[C::KS][4];
  float m_run[2], l_run[2];
  bool rotated = true;  // acc in the original basis (CTA-uniform)
  int j = t.ib, s = 0;
#pragma unroll 1
  for (int g_st = 0; j < t.ie; g_st++) {
    cp_async_wait<C::NSTAGE - 2>();
    __syncthreads();
    t.issue(cur);
    const AttnItem it = t.rec(j);
    const ItemGeom<D> g(it, a.group, a.hgroups);
    if (s == 0) {
      if (g.quant && cb_bits != it.kv_bits) {
        t.load_codebook(it.kv_bits);
        cb_bits = it.kv_bits;
      }
      t.item_begin(j, g, qhf);
#pragma unroll
      for (int k = 0; k < C::KS; k++) {
#pragma unroll
        for (int e = 0; e < 4; e++) acc[k][e] = 0.0f;
      }
      m_run[0] = m_run[1] = -INFINITY;
      l_run[0] = l_run[1] = 0.0f;
      rotated = !(g.quant && a.hadamard);
    }
    const uint8_t* buf = t.ring(g_st);
    if (s < g.n_qst) {
      const int ws = it.w0 + s * g.nwq, nw = min(g.nwq, g.nqs - s * g.nwq);
      t.prep(buf, t.qf(j), g, ws, nw, step_c, step_s);
      if (it.kv_bits == 2) {
        t.template quant_windows<true>(buf, g, nw, qhf, m_run, l_run, acc);
      } else {
        t.template quant_windows<false>(buf, g, nw, qhf, m_run, l_run, acc);
      }
    } else {
      if (!rotated) {  // leave the Hadamard basis before adding fp16 values
        acc_fwht<D>(acc, t.lane);
        rotated = true;
      }
      const int w = it.w0 + g.nqs + (s - g.n_qst);
      t.fp16_window(buf, min(kWindow, it.n_ctx - w * kWindow), m_run, l_run, acc);
    }
    if (++s == g.n_st) {
      if (!rotated) acc_fwht<D>(acc, t.lane);
      t.item_finish(it, g, m_run, l_run, acc);
      j++;
      s = 0;
    }
  }
  cp_async_wait<0>();
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

// ------------------------------------------------------------------ the planner

// Exclusive prefix sum over the block (all kPlanThreads threads call it); total = the sum.
__device__ long long block_scan(long long v, long long* sh, long long& total) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int o = 1; o < kPlanThreads; o <<= 1) {
    const long long x = t >= o ? sh[t - o] : 0;
    __syncthreads();
    sh[t] += x;
    __syncthreads();
  }
  total = sh[kPlanThreads - 1];
  const long long ex = sh[t] - v;
  __syncthreads();
  return ex;
}

// One block. Unit u of sequence s occupies positions [G, G + kItemCost + nw) of the line of all
// units (its windows are the last nw); CTA c owns [b(c), b(c+1)), b(c) = c * total / N. Each
// unit becomes one item per CTA its windows touch; a unit touching several CTAs gets npieces
// partial slots from a running count (at most 2 per CTA: a CTA cuts at most one unit at each
// end), and a counter at its first slot.
__global__ void __launch_bounds__(kPlanThreads) attn_plan_kernel(const DecodeSeq* seqs, int n_seqs, int units, int ctas,
                                                                 int* begin, AttnItem* items) {
  NSN_DYNAMIC_SMEM(long long, sh);  // [kPlanThreads], then int first[kMaxCtas]
  int* first = reinterpret_cast<int*>(sh + kPlanThreads);
  const int t = threadIdx.x;
  long long mine = 0;
  for (int s = t; s < n_seqs; s += kPlanThreads) mine += (long long)units * (kItemCost + (seqs[s].n_ctx + kWindow - 1) / kWindow);
  long long total;
  block_scan(mine, sh, total);
  const long long N = min((long long)ctas, max(total, 1LL));  // no CTA owns an empty range
  for (int c = t; c < ctas; c += kPlanThreads) first[c] = INT_MAX;
  // floor(x / d) for 0 <= x < 2^52: a double-precision estimate, corrected (64-bit integer
  // division is a ~100-instruction software routine, and this block runs alone on one SM)
  const double inv_total = 1.0 / (double)max(total, 1LL), inv_n = 1.0 / (double)N;
  auto div_floor = [](long long x, long long d, double inv_d) {
    long long q = (long long)((double)x * inv_d);
    while (q > 0 && q * d > x) q--;
    while ((q + 1) * d <= x) q++;
    return q;
  };
  auto b = [&](long long c) { return div_floor(c * total, N, inv_n); };
  auto owner = [&](long long p) { return (int)div_floor((p + 1) * N - 1, total, inv_total); };
  long long pos = 0, counts = 0;  // running position; running (items << 32 | slots)
  for (int base = 0; base < n_seqs; base += kPlanThreads) {
    const int s = base + t;
    DecodeSeq sq{};
    int nw = 0;
    if (s < n_seqs) {
      sq = seqs[s];
      nw = (sq.n_ctx + kWindow - 1) / kWindow;
    }
    const long long per = kItemCost + nw;
    long long sum;
    const long long G = pos + block_scan(s < n_seqs ? units * per : 0, sh, sum);
    pos += sum;
    long long mine2 = 0;
    if (s < n_seqs && nw > 0) {
      for (int u = 0; u < units; u++) {
        const long long p0 = G + u * per + kItemCost;
        const long long n = owner(p0 + nw - 1) - owner(p0) + 1;
        mine2 += (n << 32) + (n > 1 ? n : 0);
      }
    }
    const long long at = counts + block_scan(mine2, sh, sum);
    counts += sum;
    if (s < n_seqs && nw > 0) {
      int idx = (int)(at >> 32), slot = (int)(at & 0xffffffffLL);
      for (int u = 0; u < units; u++) {
        const long long p0 = G + u * per + kItemCost, p1 = p0 + nw;
        const int c0 = owner(p0), c1 = owner(p1 - 1), n = c1 - c0 + 1;
        for (int c = c0; c <= c1; c++, idx++) {
          AttnItem it;
          it.seq = s;
          it.unit = u;
          it.w0 = (int)(max(b(c), p0) - p0);
          it.w1 = (int)(min(b(c + 1), p1) - p0);
          it.kv_bits = sq.kv_bits;
          it.n_ctx = sq.n_ctx;
          it.q_row = sq.q_row;
          it.slot = n > 1 ? slot + (c - c0) : -1;
          it.slot0 = n > 1 ? slot : -1;
          it.npieces = n;
          it.page_off = sq.page_off;
          items[idx] = it;
          atomic_min_int(&first[c], idx);
        }
        if (n > 1) slot += n;
      }
    }
  }
  __syncthreads();
  if (t == 0) {  // begin[c] = the first item of CTA c (CTAs past N own none)
    int next = (int)(counts >> 32);
    begin[ctas] = next;
    for (int c = ctas - 1; c >= 0; c--) {
      next = min(next, first[c]);
      begin[c] = next;
    }
  }
}

std::atomic<int> g_ctas_override{0};

template <int D>
nsn_status launch_fast(const DecodeAttnArgs& a, const DecodePlan& p, const WsLayout& w, cudaStream_t stream) {
  using C = Cfg<D>;
  static std::once_flag once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(once, [] {
    attr_err = cudaFuncSetAttribute(decode_attn_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::TOTAL);
  });
  if (nsn_status st = cuda_status(attr_err, "shared-memory attribute")) return st;
  uint8_t* ws = reinterpret_cast<uint8_t*>(a.workspace);
  FastArgs f{};
  f.arena = a.arena;
  f.q = a.q;
  f.out = a.out;
  f.begin = reinterpret_cast<const int*>(ws + w.begin);
  f.items = reinterpret_cast<const AttnItem*>(ws + w.items);
  f.cnt = reinterpret_cast<int*>(ws + w.cnt);
  f.ws_ml = reinterpret_cast<float*>(ws + w.ml);
  f.ws_acc = reinterpret_cast<float*>(ws + w.acc);
  f.inv_freq = a.g.inv_freq;
  f.cb1 = a.g.codebook1;
  f.cb2 = a.g.codebook2;
  f.tables = a.g.attn_tables;
  f.n_heads = a.g.n_heads;
  f.n_kv_heads = a.g.n_kv_heads;
  f.group = p.group;
  f.hgroups = p.hgroups;
  f.layer = a.layer;
  f.hadamard = (a.g.ablation & NSN_ABL_NO_HADAMARD) ? 0 : 1;
  f.scale_log2 = a.scale * 1.4426950408889634f;
  if (!a.reuse_plan) {
    NSN_LAUNCH(attn_plan_kernel, 1, kPlanThreads, kPlanSmem, stream, a.seqs, a.n_seqs, p.units, p.ctas,
               reinterpret_cast<int*>(ws + w.begin), reinterpret_cast<AttnItem*>(ws + w.items));
    if (nsn_status st = cuda_status(cudaGetLastError(), "plan launch")) return st;
  }
  NSN_LAUNCH((decode_attn_kernel<D>), p.ctas, C::NT, C::TOTAL, stream, f);
  return cuda_status(cudaGetLastError(), "launch");
}

}  // namespace

void set_decode_attention_ctas(int n) { g_ctas_override.store(n > 0 ? std::min(n, kMaxCtas) : 0); }

DecodePlan plan_decode(const KvGeometry& g) {
  DecodePlan p{};
  p.group = g.n_kv_heads > 0 ? g.n_heads / g.n_kv_heads : 1;
  p.hgroups = (p.group + kHeadsPerCta - 1) / kHeadsPerCta;
  p.units = g.n_kv_heads * p.hgroups;
  const int o = g_ctas_override.load(std::memory_order_relaxed);
  const int sms = sm_count() > 0 ? sm_count() : 132;  // an H100's / H200's, when it cannot be queried
  p.ctas = std::min(o > 0 ? o : sms, kMaxCtas);
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
  if (!g.inv_freq || !g.codebook1 || !g.codebook2) return set_error(NSN_E_INVALID, "decode_attention: null geometry tables");
  *plan = plan_decode(g);
  if ((long)g.n_kv_heads * plan->hgroups > 65535 || (long)a.n_seqs * plan->units > (1L << 24)) {
    return set_error(NSN_E_INVALID, "decode_attention: too many heads x sequences");
  }
  return NSN_OK;
}

}  // namespace gpu

size_t decode_attention_tables_bytes(int head_dim) {
  if (head_dim != 64 && head_dim != 128 && head_dim != 256) return 0;
  return (size_t)2 * gpu::kCbChunks * 16 + (size_t)4 * (head_dim / 16) * 32 * 16;
}

nsn_status launch_decode_attention_tables(const KvGeometry& g, uint8_t* dst, cudaStream_t stream) {
  if (!decode_attention_tables_bytes(g.head_dim)) {
    return set_error(NSN_E_UNSUPPORTED, "decode_attention_tables: head_dim %d", g.head_dim);
  }
  if (!dst || !g.codebook1 || !g.codebook2 || !g.inv_freq || ((uintptr_t)dst & 15))
    return set_error(NSN_E_INVALID, "decode_attention_tables: null or misaligned pointer");
  return gpu::with_head_dim(g.head_dim, "decode_attention_tables", [&](auto d) {
    constexpr int D = decltype(d)::value;
    const int n = std::max(2 * gpu::kCbChunks, 4 * (D / 16) * 32 * 4);
    NSN_LAUNCH(gpu::attn_tables_kernel<D>, dim3((n + 255) / 256), 256, 0, stream, g.codebook1, g.codebook2, g.inv_freq,
               dst);
    return gpu::cuda_status(cudaGetLastError(), "tables launch");
  });
}

size_t decode_attention_workspace(const KvGeometry& g, int n_seqs, int /*max_ctx*/) {
  return gpu::ws_layout(g, gpu::plan_decode(g), n_seqs).bytes;
}

nsn_status launch_decode_attention(const DecodeAttnArgs& a, cudaStream_t stream) {
  gpu::DecodePlan plan;
  if (nsn_status st = gpu::check_decode_args(a, &plan)) return st;
  if (a.n_seqs == 0) return NSN_OK;
  if (a.g.quant_method == NSN_QUANT_RTN || a.g.head_dim == 256) return gpu::launch_decode_attention_ref(a, stream);
  if (a.g.quant_method != NSN_QUANT_NSN) {
    return set_error(NSN_E_UNSUPPORTED, "decode_attention: quant_method %d", a.g.quant_method);
  }
  const gpu::WsLayout w = gpu::ws_layout(a.g, plan, a.n_seqs);
  if (!a.workspace || a.workspace_bytes < w.bytes) {
    return set_error(NSN_E_INVALID, "decode_attention: workspace %zu B < %zu B needed", a.workspace_bytes, w.bytes);
  }
  return gpu::with_head_dim(a.g.head_dim, "decode_attention", [&](auto d) {
    constexpr int D = decltype(d)::value;
    if constexpr (D == 256) {
      return gpu::launch_decode_attention_ref(a, stream);  // (routed above; keeps the dispatch total)
    } else {
      return gpu::launch_fast<D>(a, plan, w, stream);
    }
  });
}

}  // namespace nsn
