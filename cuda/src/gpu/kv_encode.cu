// kv_encode.cu: NSN (and RTN) encoding of completed 64-token windows on the GPU, and the inverse
// (dequantization to fp16 pages). One thread block per (job, kv head, part); 256 threads.
//
// The encoder repeats the CPU reference (quant/nsn_encode.cpp) step by step with the same float
// operations, so blocks come out bitwise equal except for rare near-ties of the centroid search
// (here one fused multiply-add per term; see KERNELS.md):
//   keys only: un-rotate the stored post-RoPE fp16 key (fp32)
//   1. s1 = RMS(x) (double sum), 4-bit quantized over the window (fp16 min/step)
//   2. x1 = x / s1^;  o = window mean (double sum), 4-bit per 32-channel group;  x2 = x1 - o^
//   3. s2 = RMS(x2); x3 = x2 * (1/s2);  keys: RoPE(x3, p)
//   4. y = H x3 (FWHT in registers + warp shuffles)
//   5. nearest of 256 centroids (codebook + |c|^2 in shared memory); 2-bit on |y| + sign bits
//   6. s2' = s2 |y|^2 / <y, y^> (double)
#include <stdio.h>

#include "../backend.h"
#include "../kv_layout.h"
#include "kv_block_dev.cuh"
#include "kv_kernels.cuh"
#include "nsn_math.cuh"

namespace nsn {
namespace {

using namespace gpu;

struct EncArgs {
  const EncodeJob* jobs;
  int n_kv_heads, layer, method, ablation;
  const float* inv_freq;
  const float* cb1;
  const float* cb2;
};

__device__ __forceinline__ float round_f16_dev(float v) { return __half2float(__float2half_rn(v)); }
__device__ __forceinline__ void put_half_dev(uint8_t* p, float v) {
  *reinterpret_cast<__half*>(p) = __float2half_rn(v);
}

// Shared memory of the encoder (floats unless noted), D = head_dim:
//   x     [64][D]        the window, transformed in place
//   cs,sn [64][D/2]      RoPE cos/sin per token (keys); reused as double partials [2][64][D/8]
//   cb    [256][8], cn [256]   codebook and |c|^2
//   s1 [64], s1h [64], s2 [64], o [D], oh [D], code [64] (int)
//   blk   [block bytes]  the output block, assembled here and written out with 16-byte stores
template <int D>
struct EncSmem {
  static constexpr int kX = 0;
  static constexpr int kCs = kX + kWindow * D;
  static constexpr int kSn = kCs + kWindow * (D / 2);
  static constexpr int kCb = kSn + kWindow * (D / 2);
  static constexpr int kCn = kCb + 256 * kSub;
  static constexpr int kS1 = kCn + 256;
  static constexpr int kS1h = kS1 + kWindow;
  static constexpr int kS2 = kS1h + kWindow;
  static constexpr int kO = kS2 + kWindow;
  static constexpr int kOh = kO + D;
  static constexpr int kCode = kOh + D;
  static constexpr int kBlk = kCode + kWindow;  // byte block starts here (float index)
  static constexpr int kMaxBlock = 8192;         // >= every block format at D <= 256
  static constexpr size_t bytes = (size_t)kBlk * 4 + kMaxBlock;
};

template <int D>
__device__ void rtn_encode(const EncArgs& a, int kv_bits, bool is_key, float* x, float* cs,
                           float* sn, uint8_t* blk, float* meta_min, float* meta_step) {
  const int tid = threadIdx.x, levels = (1 << kv_bits) - 1, row_bytes = D * kv_bits / 8;
  const RtnBlockLayout L = rtn_block_layout(kv_bits, D);
  constexpr int H = D / 2;
  if (is_key) {  // quantized after RoPE (re-apply the rotation the caller's page had)
    for (int idx = tid; idx < kWindow * H; idx += kBlockThreads) {
      const int t = idx / H, i = idx % H;
      const float c = cs[idx], s = sn[idx];
      const float u = x[t * D + i], v = x[t * D + i + H];
      x[t * D + i] = __fsub_rn(__fmul_rn(u, c), __fmul_rn(v, s));
      x[t * D + i + H] = __fadd_rn(__fmul_rn(v, c), __fmul_rn(u, s));
    }
    __syncthreads();
    for (int c = tid; c < D; c += kBlockThreads) {
      float lo = x[c], hi = x[c];
      for (int t = 1; t < kWindow; t++) {
        lo = fminf(lo, x[t * D + c]);
        hi = fmaxf(hi, x[t * D + c]);
      }
      const float mn = round_f16_dev(lo), st = round_f16_dev(__fdiv_rn(__fsub_rn(hi, lo), (float)levels));
      meta_min[c] = mn;
      meta_step[c] = st;
      put_half_dev(blk + L.meta + 2 * c, mn);
      put_half_dev(blk + L.meta + 2 * (D + c), st);
    }
  } else {
    for (int idx = tid; idx < kWindow * (D / 32); idx += kBlockThreads) {
      const int t = idx / (D / 32), g = idx % (D / 32);
      const float* v = x + t * D + g * 32;
      float lo = v[0], hi = v[0];
      for (int j = 1; j < 32; j++) {
        lo = fminf(lo, v[j]);
        hi = fmaxf(hi, v[j]);
      }
      const float mn = round_f16_dev(lo), st = round_f16_dev(__fdiv_rn(__fsub_rn(hi, lo), (float)levels));
      meta_min[idx] = mn;
      meta_step[idx] = st;
      put_half_dev(blk + L.meta + 4 * idx, mn);
      put_half_dev(blk + L.meta + 4 * idx + 2, st);
    }
  }
  __syncthreads();
  const int per_byte = 8 / kv_bits;
  for (int idx = tid; idx < kWindow * row_bytes; idx += kBlockThreads) {
    const int t = idx / row_bytes, k = idx % row_bytes;
    uint32_t v = 0;
    for (int e = 0; e < per_byte; e++) {
      const int c = k * per_byte + e;
      const int mi = is_key ? c : t * (D / 32) + c / 32;
      v |= (uint32_t)uniform_code_dev(meta_min[mi], meta_step[mi], x[t * D + c], levels) << (e * kv_bits);
    }
    blk[idx] = (uint8_t)v;
  }
}

template <int D>
__global__ void __launch_bounds__(kBlockThreads) kv_encode_kernel(EncArgs a) {
  using S = EncSmem<D>;
  constexpr int E = D / 32, H = D / 2, NS = D / kSub, P = kWindow * NS / kBlockThreads;
  NSN_DYNAMIC_SMEM(float, sm);
  float* x = sm + S::kX;
  float* cs = sm + S::kCs;
  float* sn = sm + S::kSn;
  float* cb = sm + S::kCb;
  float* cn = sm + S::kCn;
  float* s1 = sm + S::kS1;
  float* s1h = sm + S::kS1h;
  float* s2 = sm + S::kS2;
  float* o = sm + S::kO;
  float* oh = sm + S::kOh;
  int* code = reinterpret_cast<int*>(sm + S::kCode);
  uint8_t* blk = reinterpret_cast<uint8_t*>(sm + S::kBlk);

  const EncodeJob job = a.jobs[blockIdx.y];
  if (job.kv_bits == 0) return;  // a no-op job (padding of a fixed-size job list)
  const int kvh = blockIdx.x >> 1, part = blockIdx.x & 1;
  const bool is_key = part == 0;
  const int kv_bits = job.kv_bits, kind = kind_of_bits(kv_bits);
  const int tid = threadIdx.x, lane = tid & 31, warp = __shfl_sync(kFull, tid >> 5, 0);
  const uint8_t* src = job.src_page + block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, kvh, part);
  uint8_t* dst = job.dst_page + block_offset(kind, D, a.method, a.n_kv_heads, a.layer, kvh, part);
  const uint32_t bb = block_bytes(kind, D, a.method);

  for (uint32_t i = tid; i < bb / 16; i += kBlockThreads) reinterpret_cast<uint4*>(blk)[i] = make_uint4(0, 0, 0, 0);
  // The window: fp16 [64][D] -> fp32.
  for (int i = tid; i < kWindow * D / 8; i += kBlockThreads) {
    const uint4 u = reinterpret_cast<const uint4*>(src)[i];
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
      const float2 f = unpack_half2(w[k]);
      x[i * 8 + 2 * k] = f.x;
      x[i * 8 + 2 * k + 1] = f.y;
    }
  }
  if (is_key) {
    for (int idx = tid; idx < kWindow * H; idx += kBlockThreads) {
      rope_cs(job.pos0 + idx / H, a.inv_freq[idx % H], cs[idx], sn[idx]);
    }
  }
  __syncthreads();
  if (is_key) {  // rope_unapply: back to the pre-RoPE key the CPU encoder takes
    for (int idx = tid; idx < kWindow * H; idx += kBlockThreads) {
      const int t = idx / H, i = idx % H;
      const float c = cs[idx], s = sn[idx];
      const float u = x[t * D + i], v = x[t * D + i + H];
      x[t * D + i] = __fadd_rn(__fmul_rn(u, c), __fmul_rn(v, s));
      x[t * D + i + H] = __fsub_rn(__fmul_rn(v, c), __fmul_rn(u, s));
    }
    __syncthreads();
  }

  if (a.method == NSN_QUANT_RTN) {
    // meta scratch: cs/sn are free once the keys are re-rotated (>= max(D, 64*D/32) floats each)
    rtn_encode<D>(a, kv_bits, is_key, x, cs, sn, blk, cs, sn);
    __syncthreads();
    for (uint32_t i = tid; i < bb / 16; i += kBlockThreads) {
      reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(blk)[i];
    }
    return;
  }

  const NsnBlockLayout L = nsn_block_layout(kv_bits, D);
  const float inv_sqrt_d = 1.0f / sqrtf((float)D);
  {  // codebook and |c|^2 (same summation as the CPU's SearchTables)
    const float* cbg = kv_bits == 1 ? a.cb1 : a.cb2;
    for (int i = tid; i < 256 * kSub; i += kBlockThreads) cb[i] = cbg[i];
    if (tid < 256) {
      float s = 0.0f;
      for (int j = 0; j < kSub; j++) {
        const float v = cbg[tid * kSub + j];
        s = __fadd_rn(s, __fmul_rn(v, v));
      }
      cn[tid] = s;
    }
  }

  // 1. First Normalize.
  for (int t = warp; t < kWindow; t += 8) {
    double ss = 0.0;
    for (int c = lane; c < D; c += 32) ss += (double)x[t * D + c] * (double)x[t * D + c];
    ss = warp_sum_d(ss);
    if (lane == 0) s1[t] = (a.ablation & NSN_ABL_NO_NORM1) ? 1.0f : __fmul_rn((float)sqrt(ss), inv_sqrt_d);
  }
  __syncthreads();
  if (warp == 0) {
    const float v0 = s1[lane], v1 = s1[lane + 32];
    const float lo = warp_min(fminf(v0, v1)), hi = warp_max(fmaxf(v0, v1));
    const float mn = round_f16_dev(lo), st = round_f16_dev(__fdiv_rn(__fsub_rn(hi, lo), 15.0f));
    const int c0 = uniform_code_dev(mn, st, v0, 15), c1 = uniform_code_dev(mn, st, v1, 15);
    code[lane] = c0;
    code[lane + 32] = c1;
    s1h[lane] = fmaxf(u4_value(mn, st, c0), kS1EpsDev);
    s1h[lane + 32] = fmaxf(u4_value(mn, st, c1), kS1EpsDev);
    __syncwarp();
    blk[L.s1q + lane] = (uint8_t)(code[2 * lane] | (code[2 * lane + 1] << 4));
    if (lane == 0) {
      put_half_dev(blk + L.s1meta, mn);
      put_half_dev(blk + L.s1meta + 2, st);
    }
  }
  __syncthreads();
  for (int idx = tid; idx < kWindow * D; idx += kBlockThreads) x[idx] = __fdiv_rn(x[idx], s1h[idx / D]);
  __syncthreads();

  // 2. Shift.
  const bool shift = !(a.ablation & NSN_ABL_NO_SHIFT);
  for (int c = tid; c < D; c += kBlockThreads) {
    if (shift) {
      double s = 0.0;
      for (int t = 0; t < kWindow; t++) s += (double)x[t * D + c];
      o[c] = (float)(s / kWindow);
    } else {
      oh[c] = 0.0f;
    }
  }
  __syncthreads();
  if (shift && warp < D / 32) {
    const int g = warp, c = g * 32 + lane;
    const float v = o[c];
    const float lo = warp_min(v), hi = warp_max(v);
    const float mn = round_f16_dev(lo), st = round_f16_dev(__fdiv_rn(__fsub_rn(hi, lo), 15.0f));
    const int q = uniform_code_dev(mn, st, v, 15);
    oh[c] = u4_value(mn, st, q);
    const int q_next = __shfl_down_sync(kFull, q, 1);
    if (!(lane & 1)) blk[L.oq + c / 2] = (uint8_t)(q | (q_next << 4));
    if (lane == 0) {
      put_half_dev(blk + L.ometa + 2 * g, mn);
      put_half_dev(blk + L.ometa + 2 * (D / 32 + g), st);
    }
  }
  __syncthreads();

  // 3.-4. Second Normalize, RoPE (keys), Hadamard: one warp per token, lane owns E channels.
  const bool hadamard = !(a.ablation & NSN_ABL_NO_HADAMARD);
  for (int t = warp; t < kWindow; t += 8) {
    float y[E];
    double ss = 0.0;
#pragma unroll
    for (int j = 0; j < E; j++) {
      const int c = lane * E + j;
      y[j] = __fsub_rn(x[t * D + c], oh[c]);
      ss += (double)y[j] * (double)y[j];
    }
    ss = warp_sum_d(ss);
    const float s2v = __fmul_rn((float)sqrt(ss), inv_sqrt_d);
    const float inv_s2 = s2v > 0.0f ? __fdiv_rn(1.0f, s2v) : 0.0f;
#pragma unroll
    for (int j = 0; j < E; j++) y[j] = __fmul_rn(y[j], inv_s2);
    if (is_key) {
      const bool lower = lane < 16;
#pragma unroll
      for (int j = 0; j < E; j++) {
        const int i = (lane & 15) * E + j;
        const float c = cs[t * H + i], s = sn[t * H + i];
        const float other = __shfl_xor_sync(kFull, y[j], 16);
        y[j] = lower ? __fsub_rn(__fmul_rn(y[j], c), __fmul_rn(other, s))
                     : __fadd_rn(__fmul_rn(y[j], c), __fmul_rn(other, s));
      }
    }
    if (hadamard) warp_fwht<E>(y, lane);
#pragma unroll
    for (int j = 0; j < E; j++) x[t * D + lane * E + j] = y[j];
    if (lane == 0) s2[t] = s2v;
  }
  __syncthreads();

  // 5. Nearest centroid, P (token, sub-vector) pairs per thread; the codebook row is a
  //    shared-memory broadcast. dist_c = |c|^2 + sum_j (-2 y_j) c_j as on the CPU.
  double* part_yy = reinterpret_cast<double*>(cs);  // [64][NS]
  double* part_yyq = part_yy + kWindow * NS;        // [64][NS]
  {
    float w[P][kSub];
    float best_d[P];
    int best[P];
#pragma unroll
    for (int k = 0; k < P; k++) {
      const int p = tid + k * kBlockThreads, t = p / NS, g = p % NS;
#pragma unroll
      for (int j = 0; j < kSub; j++) {
        const float v = x[t * D + g * kSub + j];
        w[k][j] = -2.0f * (kv_bits == 2 ? fabsf(v) : v);
      }
      best_d[k] = 3.4e38f;
      best[k] = 0;
    }
    for (int c = 0; c < 256; c++) {
      const float4 c0 = reinterpret_cast<const float4*>(cb + c * kSub)[0];
      const float4 c1 = reinterpret_cast<const float4*>(cb + c * kSub)[1];
      const float n = cn[c];
#pragma unroll
      for (int k = 0; k < P; k++) {
        float d = n;
        d = __fmaf_rn(w[k][0], c0.x, d);
        d = __fmaf_rn(w[k][1], c0.y, d);
        d = __fmaf_rn(w[k][2], c0.z, d);
        d = __fmaf_rn(w[k][3], c0.w, d);
        d = __fmaf_rn(w[k][4], c1.x, d);
        d = __fmaf_rn(w[k][5], c1.y, d);
        d = __fmaf_rn(w[k][6], c1.z, d);
        d = __fmaf_rn(w[k][7], c1.w, d);
        if (d < best_d[k]) {
          best_d[k] = d;
          best[k] = c;
        }
      }
    }
#pragma unroll
    for (int k = 0; k < P; k++) {
      const int p = tid + k * kBlockThreads, t = p / NS, g = p % NS;
      uint32_t sb = 0;
      double yy = 0.0, yyq = 0.0;
#pragma unroll
      for (int j = 0; j < kSub; j++) {
        const float v = x[t * D + g * kSub + j];
        float r = cb[best[k] * kSub + j];
        if (kv_bits == 2 && v < 0.0f) {
          sb |= 1u << j;
          r = -r;
        }
        yy += (double)v * (double)v;
        yyq += (double)v * (double)r;
      }
      blk[L.codes + t * NS + g] = (uint8_t)best[k];
      if (kv_bits == 2) blk[L.signs + t * NS + g] = (uint8_t)sb;
      part_yy[t * NS + g] = yy;
      part_yyq[t * NS + g] = yyq;
    }
  }
  __syncthreads();
  // 6. s2' = s2 |y|^2 / <y, y^>.
  if (tid < kWindow) {
    double yy = 0.0, yyq = 0.0;
    for (int g = 0; g < NS; g++) {
      yy += part_yy[tid * NS + g];
      yyq += part_yyq[tid * NS + g];
    }
    const float s2p = yyq > 0.0 ? (float)((double)s2[tid] * (yy / yyq)) : s2[tid];
    put_half_dev(blk + L.s2 + 2 * tid, s2p);
  }
  __syncthreads();
  for (uint32_t i = tid; i < bb / 16; i += kBlockThreads) {
    reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(blk)[i];
  }
}

// ---- dequantization: quantized page (layer) -> fp16 page ----

template <int D>
struct DeqSmem {
  static constexpr int kX = 0;
  static constexpr int kDcs = kX + kWindow * D;
  static constexpr int kDsn = kDcs + kWindow * (D / 2);
  static constexpr int kCb = kDsn + kWindow * (D / 2);
  static constexpr int kScratch = kCb + 256 * kSub;
  static constexpr size_t bytes = (size_t)(kScratch + 2 * kWindow + 2 * D) * 4;
};

template <int D>
__global__ void __launch_bounds__(kBlockThreads) kv_dequant_kernel(EncArgs a) {
  using S = DeqSmem<D>;
  NSN_DYNAMIC_SMEM(float, sm);
  float* x = sm + S::kX;
  const EncodeJob job = a.jobs[blockIdx.y];
  const int kvh = blockIdx.x >> 1, part = blockIdx.x & 1;
  const bool is_key = part == 0;
  const int kind = kind_of_bits(job.kv_bits);
  const uint8_t* src = job.src_page + block_offset(kind, D, a.method, a.n_kv_heads, a.layer, kvh, part);
  uint8_t* dst = job.dst_page + block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, kvh, part);
  if (a.method == NSN_QUANT_RTN) {
    decode_rtn_block<D>(src, job.kv_bits, is_key, x);
  } else {
    if (is_key) build_delta_table<D>(a.inv_freq, sm + S::kDcs, sm + S::kDsn);
    load_codebook(job.kv_bits == 1 ? a.cb1 : a.cb2, sm + S::kCb);
    decode_nsn_block<D>(src, job.kv_bits, is_key, !(a.ablation & NSN_ABL_NO_HADAMARD), job.pos0,
                        a.inv_freq, sm + S::kCb, sm + S::kDcs, sm + S::kDsn, x, sm + S::kScratch);
  }
  for (int i = threadIdx.x; i < kWindow * D / 8; i += kBlockThreads) {
    const float* v = x + i * 8;
    reinterpret_cast<uint4*>(dst)[i] = make_uint4(pack_half2(v[0], v[1]), pack_half2(v[2], v[3]),
                                                  pack_half2(v[4], v[5]), pack_half2(v[6], v[7]));
  }
}

nsn_status check_common(const KvGeometry& g, const EncodeJob* jobs, int n_jobs, int layer,
                        const char* what) {
  if (n_jobs < 0 || (n_jobs > 0 && !jobs)) return set_error(NSN_E_INVALID, "%s: bad job list", what);
  if (layer < 0 || layer >= g.n_layers) return set_error(NSN_E_INVALID, "%s: layer %d out of range", what, layer);
  if (g.n_kv_heads < 1 || g.n_kv_heads > 65535 / 2) {
    return set_error(NSN_E_INVALID, "%s: n_kv_heads %d out of range", what, g.n_kv_heads);
  }
  if (n_jobs > 65535) return set_error(NSN_E_INVALID, "%s: %d jobs > 65535", what, n_jobs);
  if (g.quant_method != NSN_QUANT_NSN && g.quant_method != NSN_QUANT_RTN) {
    return set_error(NSN_E_UNSUPPORTED, "%s: quant_method %d", what, g.quant_method);
  }
  if (!g.codebook1 || !g.codebook2 || !g.inv_freq) return set_error(NSN_E_INVALID, "%s: null geometry tables", what);
  return NSN_OK;
}

// Id tells the instantiations apart, so each kernel gets its shared-memory attribute once.
template <int D, int Id>
nsn_status launch_one(void (*kernel)(EncArgs), size_t smem, const KvGeometry& g, const EncodeJob* jobs,
                      int n_jobs, int layer, cudaStream_t stream, const char* what) {
  static bool attr_set = false;  // benign race: setting the attribute twice is harmless
  if (!attr_set) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "%s: smem attribute: %s", what, cudaGetErrorString(e));
    attr_set = true;
  }
  EncArgs a{jobs, g.n_kv_heads, layer, g.quant_method, g.ablation, g.inv_freq, g.codebook1, g.codebook2};
  NSN_LAUNCH(kernel, dim3(2 * g.n_kv_heads, n_jobs), kBlockThreads, smem, stream, a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "%s launch: %s", what, cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace

nsn_status launch_kv_encode(const KvGeometry& g, const EncodeJob* jobs, int n_jobs, int layer,
                            cudaStream_t stream) {
  if (nsn_status st = check_common(g, jobs, n_jobs, layer, "kv_encode")) return st;
  if (n_jobs == 0) return NSN_OK;
  switch (g.head_dim) {
    case 64:
      return launch_one<64, 0>(kv_encode_kernel<64>, EncSmem<64>::bytes, g, jobs, n_jobs, layer, stream, "kv_encode");
    case 128:
      return launch_one<128, 0>(kv_encode_kernel<128>, EncSmem<128>::bytes, g, jobs, n_jobs, layer, stream, "kv_encode");
    case 256:
      return launch_one<256, 0>(kv_encode_kernel<256>, EncSmem<256>::bytes, g, jobs, n_jobs, layer, stream, "kv_encode");
    default:
      return set_error(NSN_E_UNSUPPORTED, "kv_encode: head_dim %d (supported: 64, 128, 256)", g.head_dim);
  }
}

nsn_status launch_kv_dequant(const KvGeometry& g, const EncodeJob* jobs, int n_jobs, int layer,
                             cudaStream_t stream) {
  if (nsn_status st = check_common(g, jobs, n_jobs, layer, "kv_dequant")) return st;
  if (n_jobs == 0) return NSN_OK;
  switch (g.head_dim) {
    case 64:
      return launch_one<64, 1>(kv_dequant_kernel<64>, DeqSmem<64>::bytes, g, jobs, n_jobs, layer, stream, "kv_dequant");
    case 128:
      return launch_one<128, 1>(kv_dequant_kernel<128>, DeqSmem<128>::bytes, g, jobs, n_jobs, layer, stream, "kv_dequant");
    case 256:
      return launch_one<256, 1>(kv_dequant_kernel<256>, DeqSmem<256>::bytes, g, jobs, n_jobs, layer, stream, "kv_dequant");
    default:
      return set_error(NSN_E_UNSUPPORTED, "kv_dequant: head_dim %d (supported: 64, 128, 256)", g.head_dim);
  }
}

}  // namespace nsn
