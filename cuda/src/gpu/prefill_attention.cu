// prefill_attention.cu: flash-style causal attention over fp16 pages for prefill chunks.
//
// One block = 64 query rows of one query head (4 warps x 16 rows). It walks the sequence's
// windows in order (one 64-token page per iteration, only those the causal mask reaches; at
// kv_bits 1/2 a window can take two iterations, its dequantized page for the rows that read it
// encoded and its exact page for the rows inside it that do not, see prefill_attention.cuh):
// S = Q K^T on tensor cores (fp16 in, fp32 out), online softmax in fp32 per row, P rounded to
// fp16, O += P V on tensor cores with O kept in fp32 shared memory (so the softmax rescale is a
// plain multiply). Key slots past the last query position are zeroed on load: staging pages
// may hold stale bytes there, and 0 * NaN would poison O.
#include "prefill_attention.cuh"

#include <cuda_fp16.h>
#include <math.h>
#ifndef NSN_EMU
#include <mma.h>  // the CPU emulator (cuda/tests/gpu/cuda_emu.h) brings its own nvcuda::wmma
#endif

#include "../backend.h"
#include "layers.cuh"
#include "nsn_math.cuh"

namespace nsn {

namespace {

using namespace nvcuda;

constexpr int kBM = 64, kBN = 64, kWarpsPA = 4, kThreadsPA = kWarpsPA * 32;

template <int D>
struct Smem {
  static constexpr int LDH = D + 8;    // halves per row of Q/K/V tiles
  static constexpr int LDS = kBN + 4;  // floats per row of S
  static constexpr int LDP = kBN + 8;  // halves per row of P
  static constexpr int LDO = D + 4;    // floats per row of O
  static constexpr size_t q = 0;
  static constexpr size_t k = q + (size_t)kBM * LDH * 2;
  static constexpr size_t v = k + (size_t)kBN * LDH * 2;
  static constexpr size_t s = v + (size_t)kBN * LDH * 2;
  static constexpr size_t p = s + (size_t)kBM * LDS * 4;
  static constexpr size_t o = p + (size_t)kBM * LDP * 2;
  static constexpr size_t bytes = o + (size_t)kBM * LDO * 4;
  static_assert(k % 32 == 0 && v % 32 == 0 && s % 32 == 0 && p % 32 == 0 && o % 32 == 0, "align");
};

template <int D>
__global__ void __launch_bounds__(kThreadsPA) prefill_attention_kernel(PrefillAttnArgs a) {
  using L = Smem<D>;
  NSN_DYNAMIC_SMEM(uint8_t, smem);
  __half* Qs = (__half*)(smem + L::q);
  __half* Ks = (__half*)(smem + L::k);
  __half* Vs = (__half*)(smem + L::v);
  float* Ss = (float*)(smem + L::s);
  __half* Ps = (__half*)(smem + L::p);
  float* Os = (float*)(smem + L::o);

  const PrefillTile tile = a.tiles[blockIdx.x];
  const PrefillSeq sq = a.seqs[tile.seq];
  const int h = blockIdx.y;
  const int kvh = h / (a.n_heads / a.n_kv_heads);
  const int nq = min(kBM, sq.n_new - tile.i0);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  // Q tile -> fp16; O = 0.
  for (int idx = tid; idx < kBM * D; idx += kThreadsPA) {
    const int rr = idx / D, c = idx - rr * D;
    float x = 0.0f;
    if (rr < nq) x = a.q[((size_t)(sq.q_row0 + tile.i0 + rr) * a.n_heads + h) * D + c];
    Qs[rr * L::LDH + c] = __float2half_rn(x);
    Os[rr * L::LDO + c] = 0.0f;
  }
  // Softmax state of row r = warp*16 + lane/2, duplicated in the two lanes that own it; each
  // lane of the pair handles 32 of the 64 key columns and D/2 of the O columns.
  const int r = warp * 16 + (lane >> 1), hs = lane & 1;
  const int qpos = sq.pos0 + tile.i0 + r;
  const bool row_valid = r < nq;
  float m = -INFINITY, l = 0.0f;
  const int first_pos = sq.pos0 + tile.i0;
  const int last_pos = first_pos + nq - 1;
  const int n_win = min(sq.n_windows, last_pos / kBN + 1);

  for (int it = 0; it < 2 * n_win; it++) {
    // Iteration 2w reads window w as encoded, 2w + 1 exactly; at kv_bits 16 only the latter.
    const int w = it >> 1;
    const bool deq = (it & 1) == 0;
    if (deq && !sq.quant) continue;
    // Rows of this pass: deq, w < (qpos + 1) / 64; exact, kv_bits 16: w <= qpos / 64, else only
    // w == qpos / 64 with qpos not completing it. Uniform over the block: skip an empty pass.
    if (deq && w >= (last_pos + 1) / kBN) continue;
    if (!deq && sq.quant && max(first_pos, w * kBN) > min(last_pos, w * kBN + kBN - 2)) continue;
    __syncthreads();  // the previous iteration is done with Ks / Vs; Q and O are initialised
    const PageRef pg = deq ? sq.deq_pages[w] : sq.pages[w];
    const uint4* kb = (const uint4*)f16_block(pg.page, pg.layered, a.layer, a.n_kv_heads, D, kvh, 0);
    const uint4* vb = (const uint4*)f16_block(pg.page, pg.layered, a.layer, a.n_kv_heads, D, kvh, 1);
    constexpr int kVecPerRow = D / 8;
    for (int idx = tid; idx < kBN * kVecPerRow; idx += kThreadsPA) {
      const int j = idx / kVecPerRow, c = idx - j * kVecPerRow;
      const bool valid = w * kBN + j <= last_pos;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (valid) {
        kv = kb[idx];
        vv = vb[idx];
      }
      *(uint4*)(Ks + j * L::LDH + c * 8) = kv;
      *(uint4*)(Vs + j * L::LDH + c * 8) = vv;
    }
    __syncthreads();

    // S[warp rows][0..64) = Q K^T
    for (int ct = 0; ct < kBN / 16; ct++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, Qs + (warp * 16) * L::LDH + kk * 16, L::LDH);
        wmma::load_matrix_sync(fb, Ks + (ct * 16) * L::LDH + kk * 16, L::LDH);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(Ss + (warp * 16) * L::LDS + ct * 16, acc, L::LDS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax for row r over this window's 64 keys.
    float s_loc[32];
    float mloc = -INFINITY;
#pragma unroll
    for (int j = 0; j < 32; j++) {
      const int col = hs * 32 + j;
      const int kpos = w * kBN + col;
      float s = Ss[r * L::LDS + col] * a.scale;
      const bool reads = !sq.quant ? true
                         : deq     ? w < (qpos + 1) / kBN
                                   : w == qpos / kBN && (qpos + 1) % kBN != 0;
      if (!row_valid || !reads || kpos > qpos) s = -INFINITY;
      s_loc[j] = s;
      mloc = fmaxf(mloc, s);
    }
    mloc = fmaxf(mloc, __shfl_xor_sync(0xffffffffu, mloc, 1));
    const float m_new = fmaxf(m, mloc);
    float alpha = 1.0f, psum = 0.0f;
    if (m_new == -INFINITY) {
#pragma unroll
      for (int j = 0; j < 32; j++) Ps[r * L::LDP + hs * 32 + j] = __float2half_rn(0.0f);
    } else {
      alpha = expf(m - m_new);  // m = -inf gives 0
#pragma unroll
      for (int j = 0; j < 32; j++) {
        const __half ph = __float2half_rn(expf(s_loc[j] - m_new));
        Ps[r * L::LDP + hs * 32 + j] = ph;
        psum += __half2float(ph);  // l sums the p actually used by P V
      }
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * alpha + psum;
    m = m_new;
    if (alpha != 1.0f) {
      for (int c = hs * (D / 2); c < (hs + 1) * (D / 2); c++) Os[r * L::LDO + c] *= alpha;
    }
    __syncwarp();

    // O[warp rows] += P V
    for (int ct = 0; ct < D / 16; ct++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      float* op = Os + (warp * 16) * L::LDO + ct * 16;
      wmma::load_matrix_sync(acc, op, L::LDO, wmma::mem_row_major);
      for (int kk = 0; kk < kBN / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, Ps + (warp * 16) * L::LDP + kk * 16, L::LDP);
        wmma::load_matrix_sync(fb, Vs + (kk * 16) * L::LDH + ct * 16, L::LDH);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(op, acc, L::LDO, wmma::mem_row_major);
    }
    __syncwarp();
  }

  if (row_valid) {
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    __nv_bfloat16* dst = a.out + (size_t)(sq.q_row0 + tile.i0 + r) * a.n_heads * D + (size_t)h * D;
    for (int c = hs * (D / 2); c < (hs + 1) * (D / 2); c++)
      dst[c] = __float2bfloat16_rn(Os[r * L::LDO + c] * inv);
  }
}

template <int D>
nsn_status launch_d(const PrefillAttnArgs& a, cudaStream_t stream) {
  // Set on every launch: the attribute is per device, and calls come from any thread.
  const size_t bytes = Smem<D>::bytes;
  cudaError_t e = cudaFuncSetAttribute(prefill_attention_kernel<D>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "cudaFuncSetAttribute(prefill_attention<%d>, %zu B smem): %s",
                     D, bytes, cudaGetErrorString(e));
  NSN_LAUNCH(prefill_attention_kernel<D>, dim3(a.n_tiles, a.n_heads), kThreadsPA, bytes, stream, a);
  e = cudaGetLastError();
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "prefill_attention_kernel<%d> launch: %s", D, cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace

nsn_status launch_prefill_attention(const PrefillAttnArgs& a, cudaStream_t stream) {
  if (a.n_tiles <= 0) return NSN_OK;
  if (a.n_heads <= 0 || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0)
    return set_error(NSN_E_INVALID, "prefill_attention: n_heads %d / n_kv_heads %d", a.n_heads,
                     a.n_kv_heads);
  switch (a.head_dim) {
    case 64: return launch_d<64>(a, stream);
    case 128: return launch_d<128>(a, stream);
    case 256: return launch_d<256>(a, stream);
    default: return set_error(NSN_E_UNSUPPORTED, "prefill_attention: head_dim %d", a.head_dim);
  }
}

}  // namespace nsn
