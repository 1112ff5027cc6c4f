// cpu_attention.cpp: attention over the paged KV cache for one layer of a step, and the KV
// append that goes with it (backend.h states the semantics):
//   1. decode sequences (one new token) append it first, encoding its window if it filled;
//   2. every query attends, window by window in position order: windows stored quantized go
//      through quant_attend_block on their codes, every other window's tokens (fp16 pages, the
//      tail, this step's own rows) through attend_exact;
//   3. prefill chunks append their tokens after attending, encoding each window that fills.
// Windows are visited in the same order with the same boundaries whatever the chunking, so a
// kv_bits 16 sequence gets bitwise the same attention from a whole prefill, a chunked one, or
// token-by-token decoding.
#include <math.h>
#include <string.h>

#include <algorithm>

#include "../kv_layout.h"
#include "../rope.h"
#include "cpu_backend.h"
#include "kernels.h"

namespace nsn {

void CpuBackend::plan_attention(const StepPlan& plan) {
  decode_tasks_.clear();
  prefill_tasks_.clear();
  attend_tasks_.clear();
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    for (int h = 0; h < c_.n_kv_heads; h++) {
      (s.n_new == 1 ? decode_tasks_ : prefill_tasks_).push_back({i, h, 0, s.n_new});
      for (int t0 = 0; t0 < s.n_new; t0 += kQueryBlock) {
        attend_tasks_.push_back({i, h, t0, std::min(s.n_new, t0 + kQueryBlock)});
      }
    }
  }
}

void CpuBackend::attention(const StepPlan& plan, int layer) {
  auto append = [&](const std::vector<AttnTask>& tasks) {
    pool_.run((int)tasks.size(), [&](int i, int thread) {
      const AttnTask& t = tasks[i];
      append_kv(plan.seqs[t.seq], layer, t.kv_head, t.t0, t.t1 - t.t0, scratch_[thread]);
    });
  };
  append(decode_tasks_);
  pool_.run((int)attend_tasks_.size(), [&](int i, int thread) {
    const AttnTask& t = attend_tasks_[i];
    attend_rows(plan.seqs[t.seq], layer, t.kv_head, t.t0, t.t1, scratch_[thread]);
  });
  append(prefill_tasks_);
}

// Queries t0..t1-1 of sequence s (positions pos0 + t), the G query heads of one KV head.
void CpuBackend::attend_rows(const SeqStep& s, int layer, int kv_head, int t0, int t1, Scratch& sc) {
  const int d = c_.head_dim, G = c_.n_heads / c_.n_kv_heads, nq = t1 - t0;
  const float scale = 1.0f / sqrtf((float)d);
  const bool decode = s.n_new == 1;
  const int stored = decode ? s.pos0 + 1 : s.pos0;  // tokens readable from the cache
  const int n_quant = s.kv_bits == 16 ? 0 : stored / kWindow;
  const int last = s.pos0 + t1 - 1;  // position of the last query

  sc.m.resize((size_t)nq * G);
  sc.l.resize((size_t)nq * G);
  sc.acc.resize((size_t)nq * G * d);
  sc.acc_rot.resize((size_t)nq * G * d);
  // 1-bit keys score through a per-query table of <(Hq)_g, C1[c]>; building it costs about as
  // much as decoding a few windows, so it is used once there are enough of them.
  const bool lut = s.kv_bits == 1 && n_quant >= kLutMinWindows;
  const size_t lut_per_query = (size_t)G * (d / kSub) * 256;
  if (lut) sc.lut.resize(nq * lut_per_query);
  std::vector<AttnState>& st = sc.st;
  st.resize(nq);
  auto q_of = [&](int t) { return &qkv_[(size_t)(s.tok_offset + t) * qkv_dim_ + (size_t)kv_head * G * d]; };
  for (int i = 0; i < nq; i++) {
    st[i] = AttnState{};
    st[i].n_q = G;
    st[i].d = d;
    st[i].m = &sc.m[(size_t)i * G];
    st[i].l = &sc.l[(size_t)i * G];
    st[i].acc = &sc.acc[(size_t)i * G * d];
    st[i].acc_rot = &sc.acc_rot[(size_t)i * G * d];
    st[i].lut = lut ? &sc.lut[i * lut_per_query] : nullptr;
    attn_init(st[i]);
  }
  if (n_quant > 0) {
    // H q once per query head per step: the code term of a quantized key is <H q, y^>.
    sc.qh.resize((size_t)nq * G * d);
    for (int i = 0; i < nq; i++) {
      memcpy(&sc.qh[(size_t)i * G * d], q_of(t0 + i), (size_t)G * d * sizeof(float));
      for (int g = 0; g < G; g++) fwht(&sc.qh[((size_t)i * G + g) * d], d);
    }
  }
  const QuantParams qp = quant_params(s.kv_bits, true);
  const int kind = kind_of_bits(s.kv_bits);
  for (int w = 0; w <= last / kWindow; w++) {
    const int lo = w * kWindow;
    if (w < n_quant) {
      const uint8_t* kb = block(s.page_off[w], kind, layer, kv_head, 0);
      const uint8_t* vb = block(s.page_off[w], kind, layer, kv_head, 1);
      for (int i = 0; i < nq; i++) {
        quant_attend_block(qp, kb, vb, lo, kWindow, q_of(t0 + i), &sc.qh[(size_t)i * G * d], scale, st[i]);
      }
      continue;
    }
    // Exact tokens of this window: stored ones from their fp16 page, this step's from its rows.
    const int hi = std::min(lo + kWindow, last + 1);
    const int64_t page = s.kv_bits == 16 ? s.page_off[w] : s.tail_off;
    const int n_cached = std::max(0, std::min(hi, stored) - lo);
    if (n_cached > 0) {
      f16_to_f32_row((const uint16_t*)block(page, KV_F16, layer, kv_head, 0), n_cached * d, sc.k.data());
      f16_to_f32_row((const uint16_t*)block(page, KV_F16, layer, kv_head, 1), n_cached * d, sc.v.data());
    }
    for (int p = lo + n_cached; p < hi; p++) {
      const float* row = &qkv_[(size_t)(s.tok_offset + p - s.pos0) * qkv_dim_ + q_dim_ + (size_t)kv_head * d];
      memcpy(&sc.k[(size_t)(p - lo) * d], row, d * sizeof(float));
      memcpy(&sc.v[(size_t)(p - lo) * d], row + kv_dim_, d * sizeof(float));
    }
    for (int i = 0; i < nq; i++) {
      const int p = s.pos0 + t0 + i;
      if (p < lo) continue;
      attend_exact(sc.k.data(), sc.v.data(), std::min(kWindow, p - lo + 1), q_of(t0 + i), scale, st[i]);
    }
  }
  for (int i = 0; i < nq; i++) {
    attn_finish(st[i], &attn_[(size_t)(s.tok_offset + t0 + i) * q_dim_ + (size_t)kv_head * G * d]);
  }
}

// Writes this step's K/V rows first..first+count-1 of s into the cache as fp16; at kv_bits 1/2
// the tail takes them and every window that fills is encoded into its quantized page.
void CpuBackend::append_kv(const SeqStep& s, int layer, int kv_head, int first, int count, Scratch& sc) {
  const int d = c_.head_dim;
  for (int j = first; j < first + count; j++) {
    const int pos = s.pos0 + j, w = pos / kWindow, slot = pos % kWindow;
    const int64_t page = s.kv_bits == 16 ? s.page_off[w] : s.tail_off;
    const float* row = &qkv_[(size_t)(s.tok_offset + j) * qkv_dim_ + q_dim_ + (size_t)kv_head * d];
    f32_to_f16_row(row, d, (uint16_t*)block(page, KV_F16, layer, kv_head, 0) + (size_t)slot * d);
    f32_to_f16_row(row + kv_dim_, d, (uint16_t*)block(page, KV_F16, layer, kv_head, 1) + (size_t)slot * d);
    if (s.kv_bits != 16 && slot == kWindow - 1) encode_window(s, layer, kv_head, w, sc);
  }
}

// The tail holds window w complete: keys go back to pre-RoPE (the quantizer rotates only the
// centred residual), then both blocks are encoded into the window's quantized page.
void CpuBackend::encode_window(const SeqStep& s, int layer, int kv_head, int w, Scratch& sc) {
  const int d = c_.head_dim, pos0 = w * kWindow;
  f16_to_f32_row((const uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 0), kWindow * d, sc.k.data());
  f16_to_f32_row((const uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 1), kWindow * d, sc.v.data());
  for (int t = 0; t < kWindow; t++) {
    rope_cos_sin(pos0 + t, inv_freq_.data(), d, sc.cs.data(), sc.sn.data());
    rope_unapply(&sc.k[(size_t)t * d], d, sc.cs.data(), sc.sn.data());
  }
  const int kind = kind_of_bits(s.kv_bits);
  quant_encode_block(quant_params(s.kv_bits, true), sc.k.data(), pos0, block(s.page_off[w], kind, layer, kv_head, 0));
  quant_encode_block(quant_params(s.kv_bits, false), sc.v.data(), pos0, block(s.page_off[w], kind, layer, kv_head, 1));
}

}  // namespace nsn
