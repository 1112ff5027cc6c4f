// decode_attention_ref.cu: the plain decode-attention kernel. Each thread block decodes its
// windows to fp32 K/V in shared memory (kv_block_dev.cuh, the numbers of quant_decode_block)
// and runs textbook online-softmax attention for up to 8 query heads. It serves the RTN
// baseline (quality runs, not speed), head_dim 256, and is the tests' second opinion on the
// fast kernel. One block per (KV head x head group, sequence), no split.
#include <math.h>

#include <mutex>

#include "../backend.h"
#include "../kv_layout.h"
#include "decode_attention.cuh"
#include "kv_block_dev.cuh"

namespace nsn {
namespace gpu {
namespace {

struct RefArgs {
  const uint8_t* arena;
  const DecodeSeq* seqs;
  const float* q;
  __nv_bfloat16* out;
  const float* inv_freq;
  const float* cb1;
  const float* cb2;
  int n_heads, n_kv_heads, group, hgroups, layer, method, ablation;
  float scale_log2;  // softmax scale in log2 units
};

template <int D>
struct RefSmem {
  static constexpr int K = 0, V = K + kWindow * D, DCS = V + kWindow * D, DSN = DCS + kWindow * D / 2;
  static constexpr int CB = DSN + kWindow * D / 2, SCR = CB + 256 * kSub, Q = SCR + 2 * kWindow + 2 * D;
  static constexpr int ACC = Q + kHeadsPerCta * D, SC = ACC + kHeadsPerCta * D, END = SC + kHeadsPerCta * kWindow;
  static constexpr size_t bytes = (size_t)END * 4;
};

template <int D>
__global__ void __launch_bounds__(kBlockThreads, 1) decode_attn_ref_kernel(RefArgs a) {
  using S = RefSmem<D>;
  NSN_DYNAMIC_SMEM(float, sm);
  float *kx = sm + S::K, *vx = sm + S::V, *q = sm + S::Q, *acc = sm + S::ACC, *sc = sm + S::SC;
  const int tid = threadIdx.x, lane = tid & 31, warp = __shfl_sync(kFull, tid >> 5, 0);
  const DecodeSeq sq = a.seqs[blockIdx.z];
  const int kvh = blockIdx.y / a.hgroups, hg = blockIdx.y % a.hgroups;
  const int head0 = kvh * a.group + hg * kHeadsPerCta;
  const int nh = min(kHeadsPerCta, a.group - hg * kHeadsPerCta);
  const int n_ctx = sq.n_ctx, n_windows = (n_ctx + kWindow - 1) / kWindow;
  const int kind = kind_of_bits(sq.kv_bits);
  const int nq = sq.kv_bits == 16 ? 0 : n_ctx / kWindow;
  const int w0 = 0, w1 = n_windows;
  const bool hadamard = !(a.ablation & NSN_ABL_NO_HADAMARD);

  for (int idx = tid; idx < kHeadsPerCta * D; idx += kBlockThreads) {
    const int n = idx / D;
    q[idx] = n < nh ? a.q[((size_t)sq.q_row * a.n_heads + head0 + n) * D + idx % D] : 0.0f;
    acc[idx] = 0.0f;
  }
  if (nq > w0 && a.method == NSN_QUANT_NSN) {
    build_delta_table<D>(a.inv_freq, sm + S::DCS, sm + S::DSN);
    load_codebook(sq.kv_bits == 1 ? a.cb1 : a.cb2, sm + S::CB);
  }
  __syncthreads();
  float m_run = -INFINITY, l_run = 0.0f;  // warp n keeps head n's state (lane-uniform)
  for (int w = w0; w < w1; w++) {
    const int n_valid = min(kWindow, n_ctx - w * kWindow);
    const uint8_t* page = a.arena + sq.page_off[w];
    if (w < nq) {
      const uint8_t* kb = page + block_offset(kind, D, a.method, a.n_kv_heads, a.layer, kvh, 0);
      const uint8_t* vb = page + block_offset(kind, D, a.method, a.n_kv_heads, a.layer, kvh, 1);
      if (a.method == NSN_QUANT_RTN) {
        decode_rtn_block<D>(kb, sq.kv_bits, true, kx);
        decode_rtn_block<D>(vb, sq.kv_bits, false, vx);
      } else {
        decode_nsn_block<D>(kb, sq.kv_bits, true, hadamard, w * kWindow, a.inv_freq, sm + S::CB,
                            sm + S::DCS, sm + S::DSN, kx, sm + S::SCR);
        decode_nsn_block<D>(vb, sq.kv_bits, false, hadamard, w * kWindow, a.inv_freq, sm + S::CB,
                            sm + S::DCS, sm + S::DSN, vx, sm + S::SCR);
      }
    } else {
      const __half* kh = reinterpret_cast<const __half*>(page + block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, kvh, 0));
      const __half* vh = reinterpret_cast<const __half*>(page + block_offset(KV_F16, D, 0, a.n_kv_heads, a.layer, kvh, 1));
      for (int idx = tid; idx < n_valid * D; idx += kBlockThreads) {
        kx[idx] = __half2float(kh[idx]);
        vx[idx] = __half2float(vh[idx]);
      }
      __syncthreads();
    }
    for (int idx = tid; idx < kHeadsPerCta * kWindow; idx += kBlockThreads) {
      const int n = idx / kWindow, t = idx % kWindow;
      float s = -INFINITY;
      if (n < nh && t < n_valid) {
        float d = 0.0f;
        for (int c = 0; c < D; c++) d += q[n * D + c] * kx[t * D + c];
        s = d * a.scale_log2;
      }
      sc[idx] = s;
    }
    __syncthreads();
    if (warp < nh) {
      float* s = sc + warp * kWindow;
      const float mx = warp_max(fmaxf(s[lane], s[lane + 32]));
      const float mn = fmaxf(m_run, mx);
      const float alpha = exp2f(m_run - mn);  // m_run = -inf at the start: 0
      const float p0 = exp2f(s[lane] - mn), p1 = exp2f(s[lane + 32] - mn);
      l_run = l_run * alpha + warp_sum(p0 + p1);
      m_run = mn;
      __syncwarp();
      s[lane] = p0;
      s[lane + 32] = p1;
      __syncwarp();
      for (int c = lane; c < D; c += 32) {
        float v = acc[warp * D + c] * alpha;
        for (int t = 0; t < n_valid; t++) v += s[t] * vx[t * D + c];
        acc[warp * D + c] = v;
      }
    }
    __syncthreads();
  }
  if (warp < nh) {
    for (int c = lane; c < D; c += 32) {
      a.out[((size_t)sq.q_row * a.n_heads + head0 + warp) * D + c] =
          __float2bfloat16(l_run > 0.0f ? acc[warp * D + c] / l_run : 0.0f);
    }
  }
}

template <int D>
nsn_status launch_ref(const DecodeAttnArgs& a, const DecodePlan& p, cudaStream_t stream) {
  static std::once_flag once;
  static cudaError_t attr_err = cudaSuccess;
  std::call_once(once, [] {
    attr_err = cudaFuncSetAttribute(decode_attn_ref_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)RefSmem<D>::bytes);
  });
  if (nsn_status st = cuda_status(attr_err, "reference kernel shared-memory attribute")) return st;
  RefArgs r{};
  r.arena = a.arena;
  r.seqs = a.seqs;
  r.q = a.q;
  r.out = a.out;
  r.inv_freq = a.g.inv_freq;
  r.cb1 = a.g.codebook1;
  r.cb2 = a.g.codebook2;
  r.n_heads = a.g.n_heads;
  r.n_kv_heads = a.g.n_kv_heads;
  r.group = p.group;
  r.hgroups = p.hgroups;
  r.layer = a.layer;
  r.method = a.g.quant_method;
  r.ablation = a.g.ablation;
  r.scale_log2 = a.scale * 1.4426950408889634f;
  NSN_LAUNCH(decode_attn_ref_kernel<D>, dim3(1, a.g.n_kv_heads * p.hgroups, a.n_seqs), kBlockThreads, RefSmem<D>::bytes,
             stream, r);
  return cuda_status(cudaGetLastError(), "reference kernel launch");
}

}  // namespace

nsn_status launch_decode_attention_ref(const DecodeAttnArgs& a, cudaStream_t stream) {
  DecodePlan plan;
  if (nsn_status st = check_decode_args(a, &plan)) return st;
  if (a.n_seqs == 0) return NSN_OK;
  return with_head_dim(a.g.head_dim, "decode_attention_ref", [&](auto d) { return launch_ref<decltype(d)::value>(a, plan, stream); });
}

}  // namespace gpu
}  // namespace nsn
