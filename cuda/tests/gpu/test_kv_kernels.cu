// test_kv_kernels.cu: the CUDA KV kernels against the CPU reference (cuda/src/quant/*.cpp).
//   encode:    GPU blocks vs quant_encode_block: >= 99.9% identical codes/signs, s2' within one
//              fp16 ulp (tokens whose codes match), every other byte identical (up to rare ties)
//   dequant:   GPU fp16 reconstruction vs quant_decode_block of the same bytes
//   attention: fast kernel (and the reference kernel) vs quant_attend_block / attend_exact /
//              attn_finish, contexts 1, 63, 64, 65, 1000, 4096, kv_bits 16/2/1 alone and mixed,
//              head_dim 64/128/256, GQA 4:1 and 8:1 (+12:1, 1:1, RTN at head_dim 128)
// Prints the worst error of each case; exits 1 on any failure. --small: a quick subset (for
// compute-sanitizer). Build: see tools/gpu_kernel_tests.sh.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "../../src/gpu/decode_attention.cuh"
#include "../../src/gpu/kv_kernels.cuh"
#include "../../src/half.h"
#include "../../src/kv_layout.h"
#include "../../src/quant/nsn_quant.h"
#include "../../src/rope.h"
#include "check.h"

using namespace nsn;

// Gaussian rows with outlier channels, per-channel offsets and per-token scale changes.
static void gen_rows(Rng& r, int n, int d, float* x, uint64_t channel_seed) {
  Rng cr(channel_seed);
  std::vector<float> gain(d), bias(d);
  for (int c = 0; c < d; c++) {
    gain[c] = cr.uniform() < 0.05f ? 6.0f + 4.0f * cr.uniform() : 0.5f + cr.uniform();
    bias[c] = 0.7f * cr.normal();
  }
  for (int t = 0; t < n; t++) {
    const float tok = 0.4f + 1.2f * r.uniform();
    for (int c = 0; c < d; c++) x[(size_t)t * d + c] = tok * (gain[c] * r.normal() + bias[c]);
  }
}

struct Tables {
  int d;
  float theta;
  std::vector<float> inv_freq;
  float *d_inv_freq = nullptr, *d_cb1 = nullptr, *d_cb2 = nullptr;
  uint8_t* d_attn_tables = nullptr;  // decode attention's precomputed tables
  explicit Tables(int d_, float theta_ = 500000.0f) : d(d_), theta(theta_), inv_freq(d_ / 2) {
    nsn_model_config c{};
    c.head_dim = d;
    c.rope_theta = theta;
    rope_inv_freq(c, inv_freq.data());
    CK(cudaMalloc(&d_inv_freq, 4 * (d / 2)));
    CK(cudaMalloc(&d_cb1, 4 * 2048));
    CK(cudaMalloc(&d_cb2, 4 * 2048));
    CK(cudaMemcpy(d_inv_freq, inv_freq.data(), 4 * (d / 2), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_cb1, kCodebook1, 4 * 2048, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d_cb2, kCodebook2, 4 * 2048, cudaMemcpyHostToDevice));
    if (const size_t tb = decode_attention_tables_bytes(d)) {
      CK(cudaMalloc(&d_attn_tables, tb));
      NK(launch_decode_attention_tables(geo(1, 1, 1, NSN_QUANT_NSN, 0, false), d_attn_tables, 0));
      CK(cudaDeviceSynchronize());
    }
  }
  ~Tables() {
    cudaFree(d_attn_tables);
    cudaFree(d_inv_freq);
    cudaFree(d_cb1);
    cudaFree(d_cb2);
  }
  // with_tables: the precomputed attention tables (the backend's configuration), else none
  // (every attention block builds them itself).
  KvGeometry geo(int n_layers, int n_heads, int n_kv, int method, int ablation, bool with_tables = true) const {
    KvGeometry g{};
    g.n_layers = n_layers;
    g.n_heads = n_heads;
    g.n_kv_heads = n_kv;
    g.head_dim = d;
    g.quant_method = method;
    g.ablation = ablation;
    g.inv_freq = d_inv_freq;
    g.codebook1 = d_cb1;
    g.codebook2 = d_cb2;
    g.attn_tables = with_tables ? d_attn_tables : nullptr;
    return g;
  }
};

static void rope_row(const Tables& tb, int pos, float* x, bool inverse) {
  float cs[128], sn[128];
  rope_cos_sin(pos, tb.inv_freq.data(), tb.d, cs, sn);
  if (inverse) {
    rope_unapply(x, tb.d, cs, sn);
  } else {
    rope_apply(x, tb.d, cs, sn);
  }
}

static uint16_t rd16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static int ulp_diff16(uint16_t a, uint16_t b) {
  auto ord = [](uint16_t h) { return (h & 0x8000) ? -(int)(h & 0x7fff) : (int)h; };
  return abs(ord(a) - ord(b));
}

// ---------------------------------------------------------------- encode + dequant
static void test_encode(int d, int kv_bits, int method, int ablation, Rng& rng) {
  Tables tb(d);
  const int n_layers = 2, n_kv = 3, layer = 1, n_jobs = 3;
  const int pos0s[n_jobs] = {0, 64 * 5, 64 * 1999};
  const int kind = kind_of_bits(kv_bits);
  const size_t fp = page_bytes(KV_F16, d, 0, n_layers, n_kv), qp = page_bytes(kind, d, method, n_layers, n_kv);
  const uint32_t bb = block_bytes(kind, d, method);
  std::vector<uint8_t> src(fp * n_jobs, 0xFF), cpu(qp * n_jobs, 0xAB);
  std::vector<float> x((size_t)kWindow * d);
  const QuantParams pk{kv_bits, d, method, ablation, 1, tb.inv_freq.data()};
  const QuantParams pv{kv_bits, d, method, ablation, 0, tb.inv_freq.data()};
  for (int j = 0; j < n_jobs; j++) {
    for (int h = 0; h < n_kv; h++) {
      for (int part = 0; part < 2; part++) {
        gen_rows(rng, kWindow, d, x.data(), 100 + h * 2 + part);
        uint16_t* f16 = (uint16_t*)(src.data() + j * fp + block_offset(KV_F16, d, 0, n_kv, layer, h, part));
        for (int t = 0; t < kWindow; t++) {
          float* row = &x[(size_t)t * d];
          if (part == 0) rope_row(tb, pos0s[j] + t, row, false);  // the page holds post-RoPE keys
          for (int c = 0; c < d; c++) {
            f16[t * d + c] = f32_to_f16(row[c]);
            row[c] = f16_to_f32(f16[t * d + c]);
          }
          if (part == 0) rope_row(tb, pos0s[j] + t, row, true);  // what the CPU backend encodes
        }
        quant_encode_block(part ? pv : pk, x.data(), pos0s[j],
                           cpu.data() + j * qp + block_offset(kind, d, method, n_kv, layer, h, part));
      }
    }
  }
  uint8_t *d_src, *d_dst, *d_f16;
  EncodeJob* d_jobs;
  CK(cudaMalloc(&d_src, src.size()));
  CK(cudaMalloc(&d_dst, cpu.size()));
  CK(cudaMalloc(&d_f16, src.size()));
  CK(cudaMalloc(&d_jobs, sizeof(EncodeJob) * n_jobs));
  CK(cudaMemcpy(d_src, src.data(), src.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(d_dst, 0xAB, cpu.size()));
  CK(cudaMemset(d_f16, 0xFF, src.size()));
  std::vector<EncodeJob> jobs(n_jobs);
  for (int j = 0; j < n_jobs; j++) jobs[j] = EncodeJob{d_src + j * fp, d_dst + j * qp, kv_bits, pos0s[j]};
  CK(cudaMemcpy(d_jobs, jobs.data(), sizeof(EncodeJob) * n_jobs, cudaMemcpyHostToDevice));
  const KvGeometry g = tb.geo(n_layers, n_kv * 4, n_kv, method, ablation);
  NK(launch_kv_encode(g, d_jobs, n_jobs, layer, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint8_t> gpu(cpu.size());
  CK(cudaMemcpy(gpu.data(), d_dst, gpu.size(), cudaMemcpyDeviceToHost));

  long codes = 0, code_eq = 0, sign_eq = 0, other = 0, other_eq = 0, s2n = 0;
  int s2_ulp = 0, untouched_bad = 0;
  for (int j = 0; j < n_jobs; j++) {
    for (int h = 0; h < n_kv; h++) {
      for (int part = 0; part < 2; part++) {
        const size_t off = j * qp + block_offset(kind, d, method, n_kv, layer, h, part);
        const uint8_t *a = &gpu[off], *b = &cpu[off];
        const size_t off0 = j * qp + block_offset(kind, d, method, n_kv, 0, h, part);
        for (uint32_t i = 0; i < bb; i++) untouched_bad += gpu[off0 + i] != 0xAB;
        std::vector<char> field(bb, 0);  // 1 codes, 2 signs, 3 s2
        if (method == NSN_QUANT_NSN) {
          const NsnBlockLayout L = nsn_block_layout(kv_bits, d);
          const int ns = d / kSub;
          for (int t = 0; t < kWindow; t++) {
            bool tok_eq = true;
            for (int s = 0; s < ns; s++) {
              const int ic = L.codes + t * ns + s;
              field[ic] = 1;
              codes++;
              const bool ce = a[ic] == b[ic];
              code_eq += ce;
              tok_eq &= ce;
              if (kv_bits == 2) {
                const int is = L.signs + t * ns + s;
                field[is] = 2;
                sign_eq += a[is] == b[is];
                tok_eq &= a[is] == b[is];
              }
            }
            field[L.s2 + 2 * t] = field[L.s2 + 2 * t + 1] = 3;
            if (tok_eq) {
              s2n++;
              s2_ulp = std::max(s2_ulp, ulp_diff16(rd16(a + L.s2 + 2 * t), rd16(b + L.s2 + 2 * t)));
            }
          }
        } else {
          const int row_bytes = d * kv_bits / 8;
          for (int i = 0; i < kWindow * row_bytes; i++) {
            field[i] = 1;
            codes++;
            code_eq += a[i] == b[i];
          }
        }
        for (uint32_t i = 0; i < bb; i++) {
          if (field[i]) continue;
          other++;
          other_eq += a[i] == b[i];
        }
      }
    }
  }
  const double code_pct = 100.0 * code_eq / codes;
  const double sign_pct = kv_bits == 2 && method == NSN_QUANT_NSN ? 100.0 * sign_eq / codes : 100.0;
  const double other_pct = 100.0 * other_eq / std::max(1L, other);
  check(code_pct >= 99.9 && sign_pct >= 99.9 && s2_ulp <= 1 && other_pct >= 99.0 && untouched_bad == 0,
        "encode  d=%3d bits=%d %s abl=%d: codes %.4f%% signs %.4f%% s2' max %d ulp (%ld tokens) "
        "meta bytes %.3f%% other blocks intact %s",
        d, kv_bits, method ? "RTN" : "NSN", ablation, code_pct, sign_pct, s2_ulp, s2n, other_pct,
        untouched_bad ? "NO" : "yes");

  // dequant of the GPU-encoded blocks vs the CPU decode of the same bytes
  for (int j = 0; j < n_jobs; j++) jobs[j] = EncodeJob{d_dst + j * qp, d_f16 + j * fp, kv_bits, pos0s[j]};
  CK(cudaMemcpy(d_jobs, jobs.data(), sizeof(EncodeJob) * n_jobs, cudaMemcpyHostToDevice));
  NK(launch_kv_dequant(g, d_jobs, n_jobs, layer, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint8_t> deq(src.size());
  CK(cudaMemcpy(deq.data(), d_f16, deq.size(), cudaMemcpyDeviceToHost));
  double worst = 0.0;
  bool nan = false;
  for (int j = 0; j < n_jobs; j++) {
    for (int h = 0; h < n_kv; h++) {
      for (int part = 0; part < 2; part++) {
        std::vector<float> ref((size_t)kWindow * d);
        quant_decode_block(part ? pv : pk, &gpu[j * qp + block_offset(kind, d, method, n_kv, layer, h, part)],
                           pos0s[j], ref.data());
        const uint16_t* o = (const uint16_t*)(deq.data() + j * fp + block_offset(KV_F16, d, 0, n_kv, layer, h, part));
        double rms = 0.0;
        for (float v : ref) rms += (double)v * v;
        rms = sqrt(rms / ref.size()) + 1e-12;
        for (size_t i = 0; i < ref.size(); i++) {
          const float v = f16_to_f32(o[i]);
          if (!(fabsf(v) < 1e30f)) nan = true;
          worst = std::max(worst, fabs((double)v - ref[i]) / (fabs(ref[i]) + 1e-3 * rms));
        }
      }
    }
  }
  check(!nan && worst < 2e-3, "dequant d=%3d bits=%d %s abl=%d: max rel err %.2e", d, kv_bits,
        method ? "RTN" : "NSN", ablation, worst);
  cudaFree(d_src);
  cudaFree(d_dst);
  cudaFree(d_f16);
  cudaFree(d_jobs);
}

// ---------------------------------------------------------------- attention
struct SeqSpec {
  int kv_bits, n_ctx;
};

enum Kernel { FAST = 0, REF = 1 };

static void test_attention(int d, int group, int n_kv, const std::vector<SeqSpec>& specs, int method,
                           Kernel kernel, Rng& rng, const char* label) {
  Tables tb(d);
  const int n_layers = 2, layer = 1, n_heads = group * n_kv, n_seqs = (int)specs.size();
  const float scale = 1.0f / sqrtf((float)d);
  // arena: every window gets a page (fp16 or quantized format), filled with NaN bytes first
  std::vector<std::vector<int64_t>> offs(n_seqs);
  size_t arena_bytes = 4096;  // offset 0 unused
  for (int s = 0; s < n_seqs; s++) {
    const int nw = (specs[s].n_ctx + 63) / 64, nq = specs[s].kv_bits == 16 ? 0 : specs[s].n_ctx / 64;
    for (int w = 0; w < nw; w++) {
      offs[s].push_back((int64_t)arena_bytes);
      const int kind = w < nq ? kind_of_bits(specs[s].kv_bits) : KV_F16;
      arena_bytes += page_bytes(kind, d, method, n_layers, n_kv) + 256;
    }
  }
  std::vector<uint8_t> arena(arena_bytes, 0xFF);
  std::vector<float> q((size_t)n_seqs * n_heads * d), ref((size_t)n_seqs * n_heads * d);
  const float q_scale = getenv("NSN_TEST_QSCALE") ? (float)atof(getenv("NSN_TEST_QSCALE")) : 1.5f;
  for (auto& v : q) v = q_scale * rng.normal();
  if (getenv("NSN_TEST_Q16")) {  // diagnostics: q exactly representable in fp16
    for (auto& v : q) v = f16_to_f32(f32_to_f16(v));
  }
  std::vector<float> k, v, qh((size_t)group * d), kf, vf;
  for (int s = 0; s < n_seqs; s++) {
    const int n_ctx = specs[s].n_ctx, kv_bits = specs[s].kv_bits;
    const int nq = kv_bits == 16 ? 0 : n_ctx / 64, nw = (n_ctx + 63) / 64;
    const int kind = kind_of_bits(kv_bits == 16 ? 1 : kv_bits);
    const QuantParams pk{kv_bits == 16 ? 1 : kv_bits, d, method, 0, 1, tb.inv_freq.data()};
    const int q_row = n_seqs - 1 - s;
    for (int h = 0; h < n_kv; h++) {
      k.assign((size_t)nw * 64 * d, 0.0f);
      v.assign((size_t)nw * 64 * d, 0.0f);
      gen_rows(rng, n_ctx, d, k.data(), 7 + h);
      gen_rows(rng, n_ctx, d, v.data(), 77 + h);
      const float* qs = &q[((size_t)q_row * n_heads + h * group) * d];
      for (int i = 0; i < group; i++) {
        memcpy(&qh[(size_t)i * d], qs + (size_t)i * d, 4 * d);
        fwht(&qh[(size_t)i * d], d);
      }
      std::vector<float> m(group), l(group), acc((size_t)group * d), acc_rot((size_t)group * d),
          lut((size_t)group * (d / 8) * 256), out((size_t)group * d);
      AttnState st{group, d, m.data(), l.data(), acc.data(), acc_rot.data()};
      st.lut = lut.data();
      attn_init(st);
      for (int w = 0; w < nw; w++) {
        uint8_t* page = arena.data() + offs[s][w];
        if (w < nq) {
          uint8_t* kb = page + block_offset(kind, d, method, n_kv, layer, h, 0);
          uint8_t* vb = page + block_offset(kind, d, method, n_kv, layer, h, 1);
          QuantParams pv = pk;
          pv.is_key = 0;
          quant_encode_block(pk, &k[(size_t)w * 64 * d], w * 64, kb);
          quant_encode_block(pv, &v[(size_t)w * 64 * d], w * 64, vb);
          quant_attend_block(pk, kb, vb, w * 64, 64, qs, qh.data(), scale, st);
        } else {
          const int n_valid = std::min(64, n_ctx - w * 64);
          uint16_t* kp = (uint16_t*)(page + block_offset(KV_F16, d, 0, n_kv, layer, h, 0));
          uint16_t* vp = (uint16_t*)(page + block_offset(KV_F16, d, 0, n_kv, layer, h, 1));
          kf.assign((size_t)n_valid * d, 0.0f);
          vf.assign((size_t)n_valid * d, 0.0f);
          for (int t = 0; t < n_valid; t++) {
            float* row = &k[(size_t)(w * 64 + t) * d];
            rope_row(tb, w * 64 + t, row, false);
            for (int c = 0; c < d; c++) {
              kp[t * d + c] = f32_to_f16(row[c]);
              vp[t * d + c] = f32_to_f16(v[(size_t)(w * 64 + t) * d + c]);
              kf[(size_t)t * d + c] = f16_to_f32(kp[t * d + c]);
              vf[(size_t)t * d + c] = f16_to_f32(vp[t * d + c]);
            }
          }
          attend_exact(kf.data(), vf.data(), n_valid, qs, scale, st);
        }
      }
      attn_finish(st, out.data());
      memcpy(&ref[((size_t)q_row * n_heads + h * group) * d], out.data(), 4 * group * d);
    }
  }
  // device
  uint8_t* d_arena;
  float *d_q, *d_ws = nullptr;
  __nv_bfloat16* d_out;
  int64_t* d_offs;
  DecodeSeq* d_seqs;
  size_t n_off = 0;
  for (auto& o : offs) n_off += o.size();
  CK(cudaMalloc(&d_arena, arena.size()));
  CK(cudaMalloc(&d_q, 4 * q.size()));
  CK(cudaMalloc(&d_out, 2 * q.size()));
  CK(cudaMalloc(&d_offs, 8 * n_off));
  CK(cudaMalloc(&d_seqs, sizeof(DecodeSeq) * n_seqs));
  CK(cudaMemcpy(d_arena, arena.data(), arena.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_q, q.data(), 4 * q.size(), cudaMemcpyHostToDevice));
  CK(cudaMemset(d_out, 0xFF, 2 * q.size()));  // NaN: every element must be written
  std::vector<DecodeSeq> seqs(n_seqs);
  size_t at = 0;
  int max_ctx = 1;
  for (int s = 0; s < n_seqs; s++) {
    CK(cudaMemcpy(d_offs + at, offs[s].data(), 8 * offs[s].size(), cudaMemcpyHostToDevice));
    seqs[s] = DecodeSeq{specs[s].kv_bits, specs[s].n_ctx, n_seqs - 1 - s, (int)offs[s].size(), d_offs + at};
    at += offs[s].size();
    max_ctx = std::max(max_ctx, specs[s].n_ctx);
  }
  CK(cudaMemcpy(d_seqs, seqs.data(), sizeof(DecodeSeq) * n_seqs, cudaMemcpyHostToDevice));
  // The fast kernel runs three times: on the SM count's CTAs with the precomputed tables, the
  // same with each CTA building its tables, and on 3 CTAs (many work items per CTA, the stage
  // ring running across them, long sequences split over CTAs).
  const int n_pass = kernel == FAST ? 3 : 1;
  for (int pass = 0; pass < n_pass; pass++) {
  const bool tables = pass != 1;
  const int ctas = pass == 2 ? 3 : 0;
  gpu::set_decode_attention_ctas(ctas);
  CK(cudaMemset(d_out, 0xFF, 2 * q.size()));
  DecodeAttnArgs a{};
  a.g = tb.geo(n_layers, n_heads, n_kv, method, 0, tables);
  a.arena = d_arena;
  a.layer = layer;
  a.q = d_q;
  a.out = d_out;
  a.seqs = d_seqs;
  a.n_seqs = n_seqs;
  a.max_ctx = max_ctx;
  a.scale = scale;
  a.workspace_bytes = decode_attention_workspace(a.g, n_seqs, max_ctx);
  if (a.workspace_bytes && !d_ws) CK(cudaMalloc(&d_ws, a.workspace_bytes));  // pass 0 needs the most
  // the split counters start at zero (their place moves with the CTA count)
  if (d_ws) CK(cudaMemset(d_ws, 0, a.workspace_bytes));
  a.workspace = d_ws;
  NK(kernel == FAST ? launch_decode_attention(a, 0) : gpu::launch_decode_attention_ref(a, 0));
  if (kernel == FAST) {  // again on the plan the first call left (a later layer of a step): the
    // output checked is this second one's, so the reused plan and the reset counters are tested
    CK(cudaDeviceSynchronize());
    CK(cudaMemset(d_out, 0xFF, 2 * q.size()));
    a.reuse_plan = 1;
    NK(launch_decode_attention(a, 0));
  }
  CK(cudaDeviceSynchronize());
  std::vector<uint16_t> ob(q.size());
  CK(cudaMemcpy(ob.data(), d_out, 2 * ob.size(), cudaMemcpyDeviceToHost));
  // Per output row (sequence, head): error beyond bf16 rounding (2^-8 relative), over the row's RMS.
  double worst = 0.0;
  bool nan = false;
  std::vector<double> seq_err(n_seqs, 0.0);
  for (size_t row = 0; row < ob.size() / d; row++) {
    double rms = 0.0;
    for (int c = 0; c < d; c++) rms += (double)ref[row * d + c] * ref[row * d + c];
    rms = sqrt(rms / d) + 1e-20;
    const int s = n_seqs - 1 - (int)(row / n_heads);  // q_row -> sequence
    for (int c = 0; c < d; c++) {
      const float g = bf16_to_f32(ob[row * d + c]), r = ref[row * d + c];
      if (!(fabsf(g) < 1e30f)) nan = true;
      const double e = std::max(0.0, fabs((double)g - r) - fabs(r) / 256.0) / rms;
      worst = std::max(worst, e);
      seq_err[s] = std::max(seq_err[s], e);
    }
  }
  // The fast kernel feeds tensor cores fp16 operands: exact-in-fp32 for fp16 pages (q split
  // hi + lo), but H q, the codebook and the mean tables are rounded to fp16 for quantized
  // windows (scores within ~0.01 of the fp32 reference on this stress data: q ~ 1.5 N(0,1),
  // outlier channels up to 10x in K and V), which moves rows typically by ~1e-3 of their RMS,
  // in rare rows with a dominant outlier-channel value by up to ~4e-2.
  double tol = 2e-3;
  bool any_quant = false;
  for (const SeqSpec& sp : specs) any_quant |= sp.kv_bits != 16 && sp.n_ctx >= 64;
  if (kernel == FAST && any_quant && method == NSN_QUANT_NSN) tol = 5e-2;
  if (worst >= tol || getenv("NSN_TEST_VERBOSE")) {
    for (int s = 0; s < n_seqs; s++) {
      printf("      seq %d: kv_bits %2d ctx %5d  max|err|/rms %.2e\n", s, specs[s].kv_bits, specs[s].n_ctx, seq_err[s]);
    }
  }
  const int n_ctas = gpu::plan_decode(a.g).ctas;
  const char* kname = kernel == REF ? "ref    " : !tables ? "fast-nt" : "fast   ";
  check(!nan && worst < tol, "attn %s d=%3d gqa %2d:1 kv=%d %-28s ctas=%3d: max row err/rms %.2e (tol %.0e)%s",
        kname, d, group, n_kv, label, n_ctas, worst, tol, nan ? " NaN!" : "");
  }
  gpu::set_decode_attention_ctas(0);
  cudaFree(d_arena);
  cudaFree(d_q);
  cudaFree(d_out);
  cudaFree(d_offs);
  cudaFree(d_seqs);
  if (d_ws) cudaFree(d_ws);
}

int main(int argc, char** argv) {
  const bool small = argc > 1 && !strcmp(argv[1], "--small");
  Rng rng(12345);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("device: %s (%d SMs)%s\n", prop.name, prop.multiProcessorCount, small ? "  [--small]" : "");

  const int dims_all[] = {64, 128, 256};
  std::vector<int> dims = small ? std::vector<int>{128} : std::vector<int>(dims_all, dims_all + 3);
  printf("== encode / dequant ==\n");
  for (int d : dims) {
    for (int bits = 1; bits <= 2; bits++) test_encode(d, bits, NSN_QUANT_NSN, 0, rng);
  }
  if (!small) {
    for (int abl : {NSN_ABL_NO_NORM1, NSN_ABL_NO_SHIFT, NSN_ABL_NO_HADAMARD}) test_encode(128, 2, NSN_QUANT_NSN, abl, rng);
    test_encode(128, 1, NSN_QUANT_NSN, NSN_ABL_NO_HADAMARD, rng);
    for (int d : {64, 128}) {
      for (int bits = 1; bits <= 2; bits++) test_encode(d, bits, NSN_QUANT_RTN, 0, rng);
    }
  }

  printf("== decode attention ==\n");
  const int ctxs_all[] = {1, 63, 64, 65, 1000, 4096};
  std::vector<int> ctxs = small ? std::vector<int>{1, 65, 1000} : std::vector<int>(ctxs_all, ctxs_all + 6);
  char label[64];
  for (int d : dims) {
    for (int group : {4, 8}) {
      const int n_kv = group == 4 ? 2 : 1;
      std::vector<SeqSpec> mixed;
      for (int bits : {16, 2, 1}) {
        for (int ctx : ctxs) {
          mixed.push_back({bits, ctx});
          if (!small) {
            snprintf(label, sizeof label, "bits=%d ctx=%d", bits, ctx);
            test_attention(d, group, n_kv, {{bits, ctx}}, NSN_QUANT_NSN, FAST, rng, label);
          }
        }
      }
      snprintf(label, sizeof label, "mixed batch of %d", (int)mixed.size());
      test_attention(d, group, n_kv, mixed, NSN_QUANT_NSN, FAST, rng, label);
      if (small) test_attention(d, group, n_kv, mixed, NSN_QUANT_NSN, REF, rng, label);
      if (small) break;
    }
  }
  if (!small) {
    const std::vector<SeqSpec> mixed = {{1, 4096}, {16, 100}, {2, 1000}, {1, 65}, {2, 64}, {16, 1}, {2, 777}};
    test_attention(128, 12, 2, mixed, NSN_QUANT_NSN, FAST, rng, "mixed, 2 head groups");
    test_attention(128, 1, 4, mixed, NSN_QUANT_NSN, FAST, rng, "mixed, MHA");
    test_attention(128, 4, 2, mixed, NSN_QUANT_NSN, REF, rng, "mixed (reference kernel)");
    test_attention(128, 4, 2, mixed, NSN_QUANT_RTN, FAST, rng, "mixed, RTN method");
    test_attention(64, 8, 1, mixed, NSN_QUANT_RTN, FAST, rng, "mixed, RTN method");
  }
  printf("%s: %d failure(s)\n", g_fail ? "FAILED" : "PASSED", g_fail);
  return g_fail ? 1 : 0;
}
