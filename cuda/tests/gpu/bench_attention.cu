// bench_attention.cu: decode-attention kernel time for fp16 / NSN-2 / NSN-1 pages at
// contexts 1K..128K and batch 1..64, plus batch 256 and 512 at 1K and 4K (32 query heads, 8 KV
// heads, head_dim 128), and the encode/dequant kernels' throughput. CUDA events around each
// launch (plan + attention kernel), warm-up, median of many iterations; the pages rotate over
// enough copies that every launch reads from HBM, not L2. Efficiency = KV bytes that must be
// read / time / this card's device-to-device copy rate, measured first (read + write bytes /
// time of a 1 GiB cudaMemcpy).
//   bench_attention [--json FILE] [--quick] [--only KV_BITS CTX BATCH]   (--only: one shape, for ncu)
// Build: see tools/gpu_kernel_tests.sh.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../../src/gpu/decode_attention.cuh"
#include "../../src/gpu/kv_kernels.cuh"
#include "../../src/kv_layout.h"
#include "../../src/quant/nsn_quant.h"
#include "../../src/rope.h"
#include "check.h"

using namespace nsn;


constexpr int D = 128, NH = 32, NKV = 8;

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return (uint32_t)x;
}
__device__ __forceinline__ uint16_t rand_half(uint64_t x, float lo, float hi) {
  const float u = (hash32(x) >> 8) * (1.0f / 16777216.0f);
  return __half_as_ushort(__float2half_rn(lo + (hi - lo) * u));
}

// Random but valid pages: fp16 values in [-2, 2]; quantized blocks get random codes/signs/
// nibbles and sane fp16 scales and means.
__global__ void fill_pages(uint8_t* base, size_t bytes, int kind, uint32_t block, uint64_t seed) {
  const size_t n_words = bytes / 4;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_words; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t w;
    if (kind == KV_F16) {
      w = rand_half(seed + 2 * i, -2.f, 2.f) | ((uint32_t)rand_half(seed + 2 * i + 1, -2.f, 2.f) << 16);
    } else {
      w = hash32(seed ^ (i * 0x9E3779B97F4A7C15ull));
      const uint32_t off = (uint32_t)((i * 4) % block);
      const NsnBlockLayout L = nsn_block_layout(bits_of_kind(kind), D);
      if (off >= L.s2 && off < L.s1q) {
        w = rand_half(seed + i, 0.6f, 1.4f) | ((uint32_t)rand_half(seed + i + 7, 0.6f, 1.4f) << 16);
      } else if (off == L.s1meta) {
        w = __half_as_ushort(__float2half_rn(0.5f)) | ((uint32_t)__half_as_ushort(__float2half_rn(0.07f)) << 16);
      } else if (off >= L.ometa) {
        w = __half_as_ushort(__float2half_rn(-0.4f)) | ((uint32_t)__half_as_ushort(__float2half_rn(0.05f)) << 16);
      }
    }
    reinterpret_cast<uint32_t*>(base)[i] = w;
  }
}

struct Result {
  std::string name;
  int kv_bits, ctx, batch;
  double us, bytes, eff;
  int ctas;  // decode attention's persistent grid (0: not applicable)
};

static double median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

int main(int argc, char** argv) {
  const char* json = nullptr;
  bool quick = false;
  int only_bits = 0, only_ctx = 0, only_batch = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
    if (!strcmp(argv[i], "--quick")) quick = true;
    if (!strcmp(argv[i], "--only") && i + 3 < argc) {
      only_bits = atoi(argv[i + 1]);
      only_ctx = atoi(argv[i + 2]);
      only_batch = atoi(argv[i + 3]);
      i += 3;
    }
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  size_t free_b = 0, total_b = 0;
  CK(cudaMemGetInfo(&free_b, &total_b));
  printf("device: %s, %d SMs, %.1f GiB free\n", prop.name, prop.multiProcessorCount, free_b / 1073741824.0);
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // The card's own copy rate: a 1 GiB device-to-device cudaMemcpy, bytes read + written / time.
  double copy_bw = 0.0;
  {
    const size_t n = 1ull << 30;
    uint8_t *src, *dst;
    CK(cudaMalloc(&src, n));
    CK(cudaMalloc(&dst, n));
    CK(cudaMemset(src, 1, n));
    std::vector<float> t;
    for (int it = -2; it < 15; it++) {
      CK(cudaEventRecord(e0));
      CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, 0));
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms = 0.f;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (it >= 0) t.push_back(ms);
    }
    copy_bw = 2.0 * n / (median(t) * 1e-3);
    CK(cudaFree(src));
    CK(cudaFree(dst));
    printf("device-to-device copy: %.1f GB/s (read + write)\n", copy_bw / 1e9);
  }
  const double kPeakBw = copy_bw;

  // tables
  nsn_model_config cfg{};
  cfg.head_dim = D;
  cfg.rope_theta = 500000.0f;
  std::vector<float> inv_freq(D / 2);
  rope_inv_freq(cfg, inv_freq.data());
  float *d_inv, *d_cb1, *d_cb2;
  CK(cudaMalloc(&d_inv, 4 * D / 2));
  CK(cudaMalloc(&d_cb1, 4 * 2048));
  CK(cudaMalloc(&d_cb2, 4 * 2048));
  CK(cudaMemcpy(d_inv, inv_freq.data(), 4 * D / 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_cb1, kCodebook1, 4 * 2048, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_cb2, kCodebook2, 4 * 2048, cudaMemcpyHostToDevice));
  KvGeometry g{};
  g.n_layers = 1;
  g.n_heads = NH;
  g.n_kv_heads = NKV;
  g.head_dim = D;
  g.quant_method = NSN_QUANT_NSN;
  g.inv_freq = d_inv;
  g.codebook1 = d_cb1;
  g.codebook2 = d_cb2;
  uint8_t* d_tables = nullptr;  // the precomputed attention tables, as the backend sets them
  CK(cudaMalloc(&d_tables, decode_attention_tables_bytes(D)));
  if (launch_decode_attention_tables(g, d_tables, 0) != NSN_OK) {
    fprintf(stderr, "decode_attention_tables: %s\n", nsn_last_error());
    return 1;
  }
  g.attn_tables = d_tables;

  std::vector<Result> results;
  std::vector<int> ctxs = quick ? std::vector<int>{4096, 32768} : std::vector<int>{1024, 4096, 16384, 32768, 131072};
  std::vector<int> batches = quick ? std::vector<int>{1, 16} : std::vector<int>{1, 4, 16, 64};
  std::vector<int> bit_list = {16, 2, 1};
  std::vector<int> big_ctxs = quick ? std::vector<int>{1024} : std::vector<int>{1024, 4096};  // large batches
  std::vector<int> big_batches = quick ? std::vector<int>{512} : std::vector<int>{256, 512};
  if (only_bits) {
    ctxs = {only_ctx};
    batches = {only_batch};
    bit_list = {only_bits};
    big_ctxs.clear();
  }
  // One measurement at one shape.
  auto measure = [&](int bits, int ctx, int batch, const char* name) {
        const int kind = kind_of_bits(bits), nw = ctx / 64;
        const size_t pb = page_bytes(kind, D, NSN_QUANT_NSN, 1, NKV);
        const size_t set_bytes = pb * nw * batch;  // one copy of every sequence's pages
        const double must_read = (double)batch * NKV * nw * 2.0 * block_bytes(kind, D, NSN_QUANT_NSN);
        int copies = (int)std::min<size_t>(8, std::max<size_t>(1, (512ull << 20) / set_bytes));
        CK(cudaMemGetInfo(&free_b, &total_b));
        if ((double)set_bytes * copies > 0.85 * free_b) copies = 1;
        if ((double)set_bytes > 0.85 * free_b) {
          printf("%-8d %7d %5d  skipped (%.1f GB does not fit)\n", bits, ctx, batch, set_bytes / 1e9);
          return;
        }
        uint8_t* arena;
        CK(cudaMalloc(&arena, set_bytes * copies));
        fill_pages<<<4096, 256>>>(arena, set_bytes * copies, kind, block_bytes(kind, D, NSN_QUANT_NSN), 1234567ull * bits + ctx);
        CK(cudaGetLastError());
        // page tables: a shuffled page order per copy
        std::vector<int64_t> offs((size_t)copies * batch * nw);
        std::vector<int64_t> perm((size_t)batch * nw);
        for (size_t i = 0; i < perm.size(); i++) perm[i] = (int64_t)i;
        uint64_t rs = 88172645463325252ull;
        for (size_t i = perm.size(); i > 1; i--) {
          rs ^= rs << 13;
          rs ^= rs >> 7;
          rs ^= rs << 17;
          std::swap(perm[i - 1], perm[rs % i]);
        }
        for (int c = 0; c < copies; c++)
          for (size_t i = 0; i < perm.size(); i++) offs[(size_t)c * perm.size() + i] = (int64_t)(c * set_bytes + perm[i] * pb);
        int64_t* d_offs;
        CK(cudaMalloc(&d_offs, 8 * offs.size()));
        CK(cudaMemcpy(d_offs, offs.data(), 8 * offs.size(), cudaMemcpyHostToDevice));
        std::vector<DecodeSeq> seqs((size_t)copies * batch);
        for (int c = 0; c < copies; c++)
          for (int b = 0; b < batch; b++)
            seqs[(size_t)c * batch + b] = DecodeSeq{bits, ctx, b, nw, d_offs + ((size_t)c * batch + b) * nw};
        DecodeSeq* d_seqs;
        CK(cudaMalloc(&d_seqs, sizeof(DecodeSeq) * seqs.size()));
        CK(cudaMemcpy(d_seqs, seqs.data(), sizeof(DecodeSeq) * seqs.size(), cudaMemcpyHostToDevice));
        float* d_q;
        __nv_bfloat16* d_out;
        CK(cudaMalloc(&d_q, 4ull * batch * NH * D));
        CK(cudaMalloc(&d_out, 2ull * batch * NH * D));
        std::vector<float> hq((size_t)batch * NH * D);
        for (size_t i = 0; i < hq.size(); i++) hq[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
        CK(cudaMemcpy(d_q, hq.data(), 4 * hq.size(), cudaMemcpyHostToDevice));
        DecodeAttnArgs a{};
        a.g = g;
        a.arena = arena;
        a.layer = 0;
        a.q = d_q;
        a.out = d_out;
        a.n_seqs = batch;
        a.max_ctx = ctx;
        a.scale = 1.0f / sqrtf((float)D);
        a.workspace_bytes = decode_attention_workspace(g, batch, ctx);
        float* d_ws = nullptr;
        if (a.workspace_bytes) {
          CK(cudaMalloc(&d_ws, a.workspace_bytes));
          CK(cudaMemset(d_ws, 0, a.workspace_bytes));  // the split counters start at zero
        }
        a.workspace = d_ws;
        const int ctas = gpu::plan_decode(g).ctas;
        // reps x (per back-to-back launches between two events): launch gaps stay hidden
        const int per = 10, reps = quick ? 5 : (must_read > 4e9 ? 5 : 11);
        std::vector<float> times;
        long cnt = 0;
        for (int rep = -1; rep < reps; rep++) {
          CK(cudaEventRecord(e0));
          for (int k = 0; k < per; k++) {
            a.seqs = d_seqs + (size_t)(cnt++ % copies) * batch;
            NK(launch_decode_attention(a, 0));
          }
          CK(cudaEventRecord(e1));
          CK(cudaEventSynchronize(e1));
          float ms = 0.f;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          if (rep >= 0) times.push_back(ms * 1000.f / per);
        }
        const double us = median(times);
        const double eff = must_read / (us * 1e-6) / kPeakBw;
        printf("%-8d %7d %5d %6d %10.2f %9.1f %6.1f%%\n", bits, ctx, batch, ctas, us, must_read / (us * 1e-6) / 1e9,
               100 * eff);
        fflush(stdout);
        results.push_back({name, bits, ctx, batch, us, must_read, eff, ctas});
        CK(cudaFree(arena));
        CK(cudaFree(d_offs));
        CK(cudaFree(d_seqs));
        CK(cudaFree(d_q));
        CK(cudaFree(d_out));
        if (d_ws) CK(cudaFree(d_ws));
  };
  printf("%-8s %7s %5s %6s %10s %9s %7s\n", "kv_bits", "ctx", "batch", "ctas", "time_us", "GB/s", "eff");
  for (int ctx : ctxs) {
    for (int batch : batches) {
      for (int bits : bit_list) measure(bits, ctx, batch, "decode_attention");
    }
  }
  for (int ctx : big_ctxs) {
    for (int batch : big_batches) {
      for (int bits : bit_list) measure(bits, ctx, batch, "decode_attention");
    }
  }

  // encode / dequant throughput: 512 windows x 8 kv heads x (K, V) blocks per launch
  for (int bits : {2, 1}) {
    if (only_bits) break;
    const int n_jobs = 512, kind = kind_of_bits(bits);
    const size_t fp = page_bytes(KV_F16, D, 0, 1, NKV), qp = page_bytes(kind, D, NSN_QUANT_NSN, 1, NKV);
    uint8_t *src, *dst;
    CK(cudaMalloc(&src, fp * n_jobs));
    CK(cudaMalloc(&dst, qp * n_jobs));
    fill_pages<<<4096, 256>>>(src, fp * n_jobs, KV_F16, 0, 99);
    std::vector<EncodeJob> jobs(n_jobs);
    for (int j = 0; j < n_jobs; j++) jobs[j] = EncodeJob{src + j * fp, dst + j * qp, bits, 64 * j};
    EncodeJob* d_jobs;
    CK(cudaMalloc(&d_jobs, sizeof(EncodeJob) * n_jobs));
    CK(cudaMemcpy(d_jobs, jobs.data(), sizeof(EncodeJob) * n_jobs, cudaMemcpyHostToDevice));
    for (int which = 0; which < 2; which++) {
      std::vector<float> times;
      if (which == 1) {  // dequant reads the quantized pages back into fp16 pages
        for (int j = 0; j < n_jobs; j++) jobs[j] = EncodeJob{dst + j * qp, src + j * fp, bits, 64 * j};
        CK(cudaMemcpy(d_jobs, jobs.data(), sizeof(EncodeJob) * n_jobs, cudaMemcpyHostToDevice));
      }
      for (int it = -2; it < 10; it++) {
        CK(cudaEventRecord(e0));
        NK(which == 0 ? launch_kv_encode(g, d_jobs, n_jobs, 0, 0) : launch_kv_dequant(g, d_jobs, n_jobs, 0, 0));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        if (it >= 0) times.push_back(ms * 1000.f);
      }
      const double us = median(times), blocks = (double)n_jobs * NKV * 2;
      printf("%s bits=%d: %d windows x %d kv heads x K,V = %.0f blocks in %.1f us: %.3f us/block, %.2f M blocks/s\n",
             which ? "kv_dequant" : "kv_encode ", bits, n_jobs, NKV, blocks, us, us / blocks, blocks / us);
      results.push_back({which ? "kv_dequant" : "kv_encode", bits, 64, n_jobs * NKV * 2, us, 0.0, 0.0, 0});
    }
    CK(cudaFree(src));
    CK(cudaFree(dst));
    CK(cudaFree(d_jobs));
  }

  if (json) {
    FILE* f = fopen(json, "w");
    if (!f) {
      fprintf(stderr, "cannot write %s\n", json);
      return 2;
    }
    fprintf(f, "{\"device\": \"%s\", \"peak_bw\": %.3e, \"copy_gbps\": %.1f, \"head_dim\": %d, \"n_heads\": %d, \"n_kv_heads\": %d, \"results\": [\n",
            prop.name, kPeakBw, copy_bw / 1e9, D, NH, NKV);
    for (size_t i = 0; i < results.size(); i++) {
      const Result& r = results[i];
      fprintf(f, "  {\"kernel\": \"%s\", \"kv_bits\": %d, \"ctx\": %d, \"batch\": %d, \"us\": %.3f, \"bytes\": %.0f, \"eff\": %.4f, \"ctas\": %d}%s\n",
              r.name.c_str(), r.kv_bits, r.ctx, r.batch, r.us, r.bytes, r.eff, r.ctas, i + 1 < results.size() ? "," : "");
    }
    fprintf(f, "]}\n");
    fclose(f);
  }
  return 0;
}
