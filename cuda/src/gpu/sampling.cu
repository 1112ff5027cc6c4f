// sampling.cu: raw logprobs (log-sum-exp, top-N, the next token's logprob) and the sampler of
// ../sampling.h on the GPU. One block of 1024 threads per logits row.
//
// Ranking: a candidate's rank key is (ordered bits of z) << 32 | (~id), so a larger key is a
// higher logit and, among equal logits, a lower id: exactly the CPU's (z desc, id asc). top_k
// and top_p pick a key threshold by a radix descent over that 64-bit key (4 bits a pass) that
// finds the candidate where the running weight, in rank order, first reaches the target
// (weight 1 for top_k, p for top_p); everything ranked at or above it is kept. Sums run in
// double like the CPU's, but in a parallel order: results agree with the CPU except when a
// threshold falls within ~1e-15 (relative) of a running sum.
#include "sampling.cuh"

#include <math.h>

#include "../backend.h"
#include "../random.h"
#include "nsn_math.cuh"

namespace nsn {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ inline uint32_t ordered(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline uint64_t rank_key(float z, int id) {
  return ((uint64_t)ordered(z) << 32) | (uint32_t)(0xffffffffu - (uint32_t)id);
}

__device__ inline int key_id(uint64_t key) { return (int)(0xffffffffu - (uint32_t)key); }

// Block-wide reductions; every thread of the block must call them, the result goes to all.
struct Red {
  double d[kWarps];
  uint64_t u[kWarps];
  float f[kWarps];
  int i[kWarps];
};

__device__ double block_sum_d(double v, Red& r) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) r.d[threadIdx.x >> 5] = v;
  __syncthreads();
  double t = 0.0;
  for (int w = 0; w < kWarps; w++) t += r.d[w];
  return t;
}

__device__ uint64_t block_max_u64(uint64_t v, Red& r) {
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t x = __shfl_xor_sync(0xffffffffu, v, o);
    v = x > v ? x : v;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) r.u[threadIdx.x >> 5] = v;
  __syncthreads();
  uint64_t t = r.u[0];
  for (int w = 1; w < kWarps; w++) t = r.u[w] > t ? r.u[w] : t;
  return t;
}

__device__ float block_max_f(float v, Red& r) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) r.f[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = r.f[0];
  for (int w = 1; w < kWarps; w++) t = fmaxf(t, r.f[w]);
  return t;
}

__device__ int block_sum_i(int v, Red& r) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) r.i[threadIdx.x >> 5] = v;
  __syncthreads();
  int t = 0;
  for (int w = 0; w < kWarps; w++) t += r.i[w];
  return t;
}

__device__ int block_min_i(int v, Red& r) {
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) r.i[threadIdx.x >> 5] = v;
  __syncthreads();
  int t = r.i[0];
  for (int w = 1; w < kWarps; w++) t = min(t, r.i[w]);
  return t;
}

// Exclusive prefix sum over threads (in thread order) and the block total.
__device__ double block_scan_excl_d(double v, double* total, Red& r) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const double x = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += x;
  }
  __syncthreads();
  if (lane == 31) r.d[warp] = inc;
  __syncthreads();
  double before = 0.0, all = 0.0;
  for (int w = 0; w < kWarps; w++) {
    if (w < warp) before += r.d[w];
    all += r.d[w];
  }
  *total = all;
  return before + inc - v;
}

// ---- raw logprobs -------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) logprob_kernel(const float* __restrict__ logits, int V,
                                                           const LogitRowJob* __restrict__ rows,
                                                           int top_n, RowResult* __restrict__ res) {
  __shared__ Red red;
  const int row = blockIdx.x;
  const float* z = logits + (size_t)row * V;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += kThreads) mx = fmaxf(mx, z[i]);
  mx = block_max_f(mx, red);
  float lse = -INFINITY;
  if (mx != -INFINITY) {
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += kThreads) s += exp((double)(z[i] - mx));
    s = block_sum_d(s, red);
    lse = mx + (float)log(s);
  }
  RowResult& out = res[row];
  // Top-N: each thread keeps its best keys sorted, then N rounds take the block's best head.
  uint64_t best[NSN_MAX_TOP_N];
  const int n = top_n < V ? top_n : V;
  int have = 0;
  if (n > 0) {
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const uint64_t k = rank_key(z[i], i);
      if (have == n && k <= best[n - 1]) continue;
      int j = have < n ? have++ : n - 1;
      while (j > 0 && k > best[j - 1]) {
        best[j] = best[j - 1];
        j--;
      }
      best[j] = k;
    }
  }
  int head = 0;
  for (int r = 0; r < n; r++) {
    const uint64_t mine = head < have ? best[head] : 0;
    const uint64_t win = block_max_u64(mine, red);
    if (head < have && mine == win) head++;
    if (threadIdx.x == 0) {
      const int id = key_id(win);
      out.top_ids[r] = id;
      out.top_logprobs[r] = z[id] - lse;
    }
  }
  if (threadIdx.x == 0) {
    for (int r = n; r < top_n; r++) {
      out.top_ids[r] = -1;
      out.top_logprobs[r] = NAN;
    }
    out.lse = lse;
    const int nid = rows[row].next_id;
    out.next_logprob = nid >= 0 ? z[nid] - lse : NAN;
    out.token = -1;
    out.token_logprob = NAN;
  }
}

// ---- sampler -------------------------------------------------------------------------------

struct SampleShared {
  Red red;
  double w[kWarps][16];
  int c[kWarps][16];
  uint64_t prefix;
  double above;
  int done;
};

// Radix descent: among alive candidates (finite z, key >= lower), the key where the running
// weight in rank order (key descending) first reaches `target`; the lowest alive key when the
// total stays below it. Weight 1 (use_p false) or p = expf(z - top).
__device__ uint64_t select_key(const float* z, int V, uint64_t lower, bool use_p, float top,
                               double target, SampleShared& sh) {
  if (threadIdx.x == 0) {
    sh.prefix = 0;
    sh.above = 0.0;
    sh.done = 0;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int shift = 60; shift >= 0; shift -= 4) {
    const uint64_t mask_hi = shift == 60 ? 0 : ~((1ull << (shift + 4)) - 1);
    const uint64_t prefix = sh.prefix;
    double w[16];
    int c[16];
#pragma unroll
    for (int d = 0; d < 16; d++) {
      w[d] = 0.0;
      c[d] = 0;
    }
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float zi = z[i];
      if (!(zi > -INFINITY)) continue;
      const uint64_t k = rank_key(zi, i);
      if (k < lower || (k & mask_hi) != prefix) continue;
      const int d = (int)((k >> shift) & 15);
      const double wi = use_p ? (double)expf(zi - top) : 1.0;
      // Unrolled select keeps w/c in registers.
#pragma unroll
      for (int e = 0; e < 16; e++) {
        if (e == d) {
          w[e] += wi;
          c[e]++;
        }
      }
    }
#pragma unroll
    for (int d = 0; d < 16; d++) {
      double wd = w[d];
      int cd = c[d];
      for (int o = 16; o > 0; o >>= 1) {
        wd += __shfl_xor_sync(0xffffffffu, wd, o);
        cd += __shfl_xor_sync(0xffffffffu, cd, o);
      }
      if (lane == 0) {
        sh.w[warp][d] = wd;
        sh.c[warp][d] = cd;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double W[16];
      int C[16];
      for (int d = 0; d < 16; d++) {
        W[d] = 0.0;
        C[d] = 0;
        for (int ww = 0; ww < kWarps; ww++) {
          W[d] += sh.w[ww][d];
          C[d] += sh.c[ww][d];
        }
      }
      double cum = sh.above;
      int pick = -1, lowest = -1;
      for (int d = 15; d >= 0; d--) {
        if (C[d] == 0) continue;
        lowest = d;
        if (pick < 0 && cum + W[d] >= target) {
          pick = d;
          break;
        }
        cum += W[d];
      }
      if (pick < 0) {
        // Unreachable target: the running sum of everything above `lowest` was added to cum.
        pick = lowest < 0 ? 0 : lowest;
        cum -= lowest < 0 ? 0.0 : W[pick];
      }
      sh.above = cum;
      sh.prefix = prefix | ((uint64_t)pick << shift);
      sh.done = (C[pick] <= 1) ? 1 : 0;
    }
    __syncthreads();
    if (sh.done) {
      // One candidate left in this prefix range: its key is the block's max there.
      const uint64_t pfx = sh.prefix;
      const uint64_t mask = shift == 0 ? ~0ull : ~((1ull << shift) - 1);
      uint64_t best = 0;
      for (int i = threadIdx.x; i < V; i += kThreads) {
        const float zi = z[i];
        if (!(zi > -INFINITY)) continue;
        const uint64_t k = rank_key(zi, i);
        if (k >= lower && (k & mask) == pfx && k > best) best = k;
      }
      return block_max_u64(best, sh.red);
    }
  }
  return sh.prefix;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float* __restrict__ logits, int V,
                                                          const SampleJob* __restrict__ jobs,
                                                          int row_base,
                                                          float* __restrict__ zscratch,
                                                          int32_t* __restrict__ counts,
                                                          RowResult* __restrict__ res) {
  __shared__ SampleShared sh;
  const SampleJob& job = jobs[blockIdx.x];
  const nsn_sampling& sp = job.params;
  const int row = job.row - row_base;
  const float* raw = logits + (size_t)row * V;
  float* zp = zscratch + (size_t)blockIdx.x * V;
  int32_t* cnt = counts + (size_t)blockIdx.x * V;

  // Steps 1-4: logit_bias, penalties, the min_tokens ban.
  const bool rep = sp.repetition_penalty != 1.0f;
  const bool freq = sp.frequency_penalty != 0.0f || sp.presence_penalty != 0.0f;
  const bool penal = (rep || freq) && job.hist != nullptr && job.hist_len > 0;
  const bool ban = (int64_t)job.P - sp.n_prompt < sp.min_tokens && sp.n_stop_ids > 0;
  const bool modify = job.n_bias > 0 || penal || ban;
  const float T = sp.temperature;
  const float* z = raw;
  if (modify || T != 0.0f) {
    for (int i = threadIdx.x; i < V; i += kThreads) zp[i] = raw[i];
    z = zp;
    __syncthreads();
  }
  if (job.n_bias > 0) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < job.n_bias; i++) zp[job.bias_ids[i]] += job.bias_values[i];
    }
    __syncthreads();
  }
  if (penal) {
    // bit 0: seen anywhere; bits 1..: occurrences at output positions (>= n_prompt).
    for (int p = threadIdx.x; p < job.hist_len; p += kThreads) {
      const int t = job.hist[p];
      if (p >= sp.n_prompt) atomicAdd(&cnt[t], 2);
      else atomicOr(&cnt[t], 1);
    }
    __syncthreads();
    for (int p = threadIdx.x; p < job.hist_len; p += kThreads) {
      const int t = job.hist[p];
      const int v = atomicExch(&cnt[t], 0);  // the first claimant of a token applies it once
      if (v == 0) continue;
      float x = zp[t];
      if (rep) x = x > 0.0f ? x / sp.repetition_penalty : __fmul_rn(x, sp.repetition_penalty);
      const int c = v >> 1;
      if (c > 0) x = __fsub_rn(x, __fadd_rn(__fmul_rn(sp.frequency_penalty, (float)c),
                                            sp.presence_penalty));
      zp[t] = x;
    }
    __syncthreads();
  }
  if (ban) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < sp.n_stop_ids; i++) zp[sp.stop_ids[i]] = -INFINITY;
    }
    __syncthreads();
  }
  // Step 5: greedy (lowest id on ties; id 0 when everything is -inf, like the CPU's argmax).
  uint64_t gk = 0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const uint64_t k = rank_key(z[i], i);
    gk = k > gk ? k : gk;
  }
  gk = block_max_u64(gk, sh.red);
  const int greedy = key_id(gk);
  RowResult& out = res[row];
  auto finish = [&](int token) {
    if (threadIdx.x == 0) {
      out.token = token;
      out.token_logprob = raw[token] - out.lse;
    }
  };
  if (T == 0.0f) {
    finish(greedy);
    return;
  }
  // Step 6: temperature; candidates are the finite logits.
  int n_cand = 0;
  float top = -INFINITY;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    const float x = zp[i] / T;
    zp[i] = x;
    if (x > -INFINITY) {
      n_cand++;
      top = fmaxf(top, x);
    }
  }
  n_cand = block_sum_i(n_cand, sh.red);
  top = block_max_f(top, sh.red);
  if (n_cand == 0) {
    finish(greedy);
    return;
  }
  // Steps 7-8: top_k, then top_p, as key thresholds.
  uint64_t lower = 0;
  if (sp.top_k > 0 && sp.top_k < n_cand) lower = select_key(zp, V, 0, false, top, (double)sp.top_k, sh);
  if (sp.top_p < 1.0f) {
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += kThreads) {
      const float x = zp[i];
      if (x > -INFINITY && rank_key(x, i) >= lower) s += expf(x - top);
    }
    s = block_sum_d(s, sh.red);
    lower = select_key(zp, V, lower, true, top, (double)sp.top_p * s, sh);
  }
  // Steps 9-10: min_p, then the draw in id order over each thread's contiguous id range.
  const int per = (V + kThreads - 1) / kThreads;
  const int i0 = threadIdx.x * per, i1 = min(V, i0 + per);
  auto kept_p = [&](int i) -> float {  // p of a kept candidate, or -1
    const float x = zp[i];
    if (!(x > -INFINITY) || rank_key(x, i) < lower) return -1.0f;
    const float p = expf(x - top);
    if (sp.min_p > 0.0f && p < sp.min_p) return -1.0f;
    return p;
  };
  double local = 0.0;
  int last = -1;
  for (int i = i0; i < i1; i++) {
    const float p = kept_p(i);
    if (p >= 0.0f) {
      local += p;
      last = i;
    }
  }
  double total = 0.0;
  const double before = block_scan_excl_d(local, &total, sh.red);
  const double target = (double)sample_uniform(sp.seed, job.P) * total;
  int chosen = V;
  double run = before;
  for (int i = i0; i < i1; i++) {
    const float p = kept_p(i);
    if (p < 0.0f) continue;
    run += p;
    if (run > target) {
      chosen = i;
      break;
    }
  }
  chosen = block_min_i(chosen, sh.red);
  const int last_all = -block_min_i(-last, sh.red);
  finish(chosen < V ? chosen : (last_all >= 0 ? last_all : greedy));
}

nsn_status check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "%s launch: %s", what, cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace

nsn_status launch_logprobs_and_sample(const float* logits, int n_rows, int vocab,
                                      const LogitRowJob* rows, int top_n, const SampleJob* samples,
                                      int n_samples, int row_base, float* zscratch, int32_t* counts,
                                      RowResult* res, cudaStream_t stream) {
  if (top_n < 0 || top_n > NSN_MAX_TOP_N)
    return set_error(NSN_E_INVALID, "logprobs: top_n %d not in [0, %d]", top_n, NSN_MAX_TOP_N);
  if (n_rows <= 0) return NSN_OK;
  NSN_LAUNCH(logprob_kernel, n_rows, kThreads, 0, stream, logits, vocab, rows, top_n, res);
  nsn_status st = check_launch("logprob_kernel");
  if (st != NSN_OK || n_samples <= 0) return st;
  NSN_LAUNCH(sample_kernel, n_samples, kThreads, 0, stream, logits, vocab, samples, row_base,
             zscratch, counts, res);
  return check_launch("sample_kernel");
}

}  // namespace nsn
