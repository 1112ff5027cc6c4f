// test_prefill_attention.cu: the prefill attention kernel (prefill_attention.cu) against a CPU
// reference of nsn.h's rule. Each window has an exact page and a dequantized page filled with
// different random K/V, so reading the wrong one for any query shows: at kv_bits 1/2 a query
// at position p reads the dequantized page of windows w < (p + 1) / 64 and the exact page for
// the rest of its own window; at kv_bits 16 it reads exact pages only. Chunks start and end
// inside windows and at their edges, span several 64-row tiles and several sequences.
// Tolerance: Q and P are rounded to fp16 and the output to bf16 (~1e-2 of |out| <= 1), while
// a wrong page moves outputs by O(0.1-1). Exits 1 on any failure.
// Build: tools/gpu_kernel_tests.sh (GPU) and tools/emu_kernel_tests.sh (CPU emulator).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../../src/gpu/prefill_attention.cuh"
#include "check.h"

using namespace nsn;

namespace {

constexpr int kW = 64;

struct Chunk {
  int quant;  // 1: kv_bits 1/2 rule, 0: kv_bits 16
  int pos0, n_new;
};

struct SeqData {
  Chunk c;
  int n_windows;
  // [window][exact, dequantized][n_kv][K,V][64][d] fp16 (one layer)
  std::vector<std::vector<uint16_t>> pages[2];
};

uint16_t f16(float x) {
  __half h = __float2half_rn(x);
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
}
float f32(uint16_t u) {
  __half h;
  memcpy(&h, &u, 2);
  return __half2float(h);
}

// Which page query position q reads window w from: 0 exact, 1 dequantized, -1 none.
int source(const Chunk& c, int q, int w) {
  if (w > q / kW) return -1;
  if (!c.quant) return 0;
  if (w < (q + 1) / kW) return 1;
  return w == q / kW ? 0 : -1;
}

void run_case(int d, int n_heads, int n_kv, const std::vector<Chunk>& chunks, Rng& rng) {
  const size_t page_halves = (size_t)n_kv * 2 * kW * d;
  std::vector<SeqData> seqs;
  int rows = 0;
  for (const Chunk& c : chunks) {
    SeqData s;
    s.c = c;
    s.n_windows = (c.pos0 + c.n_new + kW - 1) / kW;
    for (int v = 0; v < 2; v++) {
      for (int w = 0; w < s.n_windows; w++) {
        std::vector<uint16_t> p(page_halves);
        for (auto& h : p) h = f16(rng.normal());
        s.pages[v].push_back(std::move(p));
      }
    }
    seqs.push_back(std::move(s));
    rows += c.n_new;
  }
  std::vector<float> q((size_t)rows * n_heads * d);
  for (float& x : q) x = rng.normal();

  // Device copies: pages, page lists, sequences, tiles, q, out.
  std::vector<void*> allocs;
  auto upload = [&](const void* src, size_t bytes) {
    void* p = nullptr;
    CK(cudaMalloc(&p, bytes ? bytes : 1));
    if (bytes) CK(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
    allocs.push_back(p);
    return p;
  };
  std::vector<PrefillSeq> dseqs;
  std::vector<PrefillTile> tiles;
  int row0 = 0;
  for (size_t i = 0; i < seqs.size(); i++) {
    const SeqData& s = seqs[i];
    std::vector<PageRef> refs[2];
    for (int v = 0; v < 2; v++) {
      for (int w = 0; w < s.n_windows; w++) {
        const void* p = upload(s.pages[v][w].data(), page_halves * 2);
        refs[v].push_back({(uint64_t)(uintptr_t)p, 0, 0});
      }
    }
    PrefillSeq ps{};
    ps.q_row0 = row0;
    ps.n_new = s.c.n_new;
    ps.pos0 = s.c.pos0;
    ps.n_windows = s.n_windows;
    ps.quant = s.c.quant;
    ps.pages = (const PageRef*)upload(refs[0].data(), refs[0].size() * sizeof(PageRef));
    ps.deq_pages = (const PageRef*)upload(refs[1].data(), refs[1].size() * sizeof(PageRef));
    dseqs.push_back(ps);
    for (int i0 = 0; i0 < s.c.n_new; i0 += 64) tiles.push_back({(int32_t)i, i0});
    row0 += s.c.n_new;
  }
  PrefillAttnArgs a{};
  a.q = (const float*)upload(q.data(), q.size() * 4);
  CK(cudaMalloc(&a.out, (size_t)rows * n_heads * d * 2));
  allocs.push_back(a.out);
  a.seqs = (const PrefillSeq*)upload(dseqs.data(), dseqs.size() * sizeof(PrefillSeq));
  a.tiles = (const PrefillTile*)upload(tiles.data(), tiles.size() * sizeof(PrefillTile));
  a.n_tiles = (int)tiles.size();
  a.n_heads = n_heads;
  a.n_kv_heads = n_kv;
  a.head_dim = d;
  a.layer = 0;
  a.scale = 1.0f / sqrtf((float)d);
  NK(launch_prefill_attention(a, 0));
  CK(cudaDeviceSynchronize());
  std::vector<__nv_bfloat16> out((size_t)rows * n_heads * d);
  CK(cudaMemcpy(out.data(), a.out, out.size() * 2, cudaMemcpyDeviceToHost));

  // Reference: softmax attention in double over the pages the rule names.
  double worst = 0;
  row0 = 0;
  const int group = n_heads / n_kv;
  for (const SeqData& s : seqs) {
    for (int i = 0; i < s.c.n_new; i++) {
      const int qp = s.c.pos0 + i;
      for (int h = 0; h < n_heads; h++) {
        const float* qv = &q[((size_t)(row0 + i) * n_heads + h) * d];
        const int kvh = h / group;
        std::vector<double> sc;
        std::vector<const uint16_t*> vals;
        for (int w = 0; w <= qp / kW; w++) {
          const int src = source(s.c, qp, w);
          if (src < 0) continue;
          const uint16_t* kb = s.pages[src][w].data() + (size_t)(kvh * 2 + 0) * kW * d;
          const uint16_t* vb = s.pages[src][w].data() + (size_t)(kvh * 2 + 1) * kW * d;
          for (int j = 0; j < kW && w * kW + j <= qp; j++) {
            double dot = 0;
            for (int c = 0; c < d; c++) dot += (double)f32(f16(qv[c])) * f32(kb[(size_t)j * d + c]);
            sc.push_back(dot * a.scale);
            vals.push_back(vb + (size_t)j * d);
          }
        }
        const double m = *std::max_element(sc.begin(), sc.end());
        double l = 0;
        for (double& x : sc) l += (x = exp(x - m));
        for (int c = 0; c < d; c++) {
          double o = 0;
          for (size_t j = 0; j < sc.size(); j++) o += sc[j] * f32(vals[j][c]);
          const double got = __bfloat162float(out[((size_t)(row0 + i) * n_heads + h) * d + c]);
          worst = std::max(worst, fabs(got - o / l));
        }
      }
    }
    row0 += s.c.n_new;
  }
  char what[160];
  int at = snprintf(what, sizeof what, "prefill attention d=%d heads %d/%d chunks", d, n_heads, n_kv);
  for (const Chunk& c : chunks) {
    at += snprintf(what + at, sizeof what - at, " [%s %d+%d]", c.quant ? "q" : "16", c.pos0, c.n_new);
  }
  check(worst < 2e-2, "%s: max |out - ref| %.2e", what, worst);
  for (void* p : allocs) CK(cudaFree(p));
}

}  // namespace

int main(int argc, char** argv) {
  const bool small = argc > 1 && !strcmp(argv[1], "--small");
  Rng rng(777);
  printf("== prefill attention ==\n");
  // Chunks from the start, mid-window, at a window edge, completing windows at their last row,
  // over several tiles; kv_bits 16 beside 1/2 in one launch.
  const std::vector<Chunk> mixed = {{1, 0, 150}, {1, 40, 100}, {0, 30, 100}, {1, 128, 70}, {1, 62, 3}};
  run_case(128, 4, 2, mixed, rng);
  run_case(64, 8, 2, {{1, 63, 66}, {0, 0, 64}, {1, 191, 2}}, rng);
  if (!small) {
    run_case(256, 4, 4, mixed, rng);
    run_case(128, 8, 1, {{1, 0, 300}, {1, 100, 230}, {0, 5, 250}}, rng);
  }
  printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "PASSED", g_fail);
  return g_fail ? 1 : 0;
}
