// cpu_attention.cpp: attention over the paged KV cache for one layer of a step, and the KV
// writes that go with it (nsn.h states the rule: a token at position p reads the encoded pages
// of the complete windows w < (p + 1) / 64 and exact K/V for the rest of its own window):
//   1. kv_bits 16 decodes append their token; kv_bits 1/2 rows encode every window that
//      completes in this step, from the tail's earlier tokens and this step's rows;
//   2. every query attends, window by window in position order: encoded windows through
//      quant_attend_block on their codes, its own window's exact tokens (fp16 pages, the tail,
//      this step's rows) through attend_exact;
//   3. kv_bits 16 prefill chunks append their tokens; kv_bits 1/2 rows leave the tokens of
//      their last, incomplete window in the tail.
// What a query reads depends only on its position, never on how the sequence was split into
// chunks (or recomputed after a preemption, or served partly from shared prefix pages), so
// greedy output is the same bit for bit.
#include <math.h>
#include <string.h>

#include <algorithm>

#include "../kv_layout.h"
#include "../rope.h"
#include "cpu_backend.h"
#include "kernels.h"

namespace nsn {

void CpuBackend::plan_attention(const StepPlan& plan) {
  before_tasks_.clear();
  after_tasks_.clear();
  attend_tasks_.clear();
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    const int end = s.pos0 + s.n_new;
    for (int h = 0; h < c_.n_kv_heads; h++) {
      if (s.kv_bits == 16) {
        (s.n_new == 1 ? before_tasks_ : after_tasks_).push_back({i, h, 0, s.n_new});
      } else {
        for (int w = s.pos0 / kWindow; w < end / kWindow; w++) before_tasks_.push_back({i, h, w, -1});
        if (end % kWindow != 0) after_tasks_.push_back({i, h, 0, -1});
      }
      for (int t0 = 0; t0 < s.n_new; t0 += kQueryBlock) {
        attend_tasks_.push_back({i, h, t0, std::min(s.n_new, t0 + kQueryBlock)});
      }
    }
  }
}

void CpuBackend::attention(const StepPlan& plan, int layer) {
  auto write = [&](const std::vector<AttnTask>& tasks) {
    pool_.run((int)tasks.size(), [&](int i, int thread) {
      const AttnTask& t = tasks[i];
      const SeqStep& s = plan.seqs[t.seq];
      if (s.kv_bits == 16) {
        append_kv(s, layer, t.kv_head, t.t0, t.t1 - t.t0);
      } else if (t.t1 < 0 && &tasks == &before_tasks_) {
        encode_window(s, layer, t.kv_head, t.t0, scratch_[thread]);
      } else {
        write_tail(s, layer, t.kv_head);
      }
    });
  };
  write(before_tasks_);
  pool_.run((int)attend_tasks_.size(), [&](int i, int thread) {
    const AttnTask& t = attend_tasks_[i];
    attend_rows(plan.seqs[t.seq], layer, t.kv_head, t.t0, t.t1, scratch_[thread]);
  });
  write(after_tasks_);
}

// Queries t0..t1-1 of sequence s (positions pos0 + t), the G query heads of one KV head.
void CpuBackend::attend_rows(const SeqStep& s, int layer, int kv_head, int t0, int t1, Scratch& sc) {
  const int d = c_.head_dim, G = c_.n_heads / c_.n_kv_heads, nq = t1 - t0;
  const float scale = 1.0f / sqrtf((float)d);
  // Tokens readable from fp16 pages: a kv_bits 16 decode appended its token already; the
  // tail of kv_bits 1/2 holds the tokens before pos0 of window pos0 / 64.
  const int stored = s.kv_bits == 16 && s.n_new == 1 ? s.pos0 + 1 : s.pos0;
  const int last = s.pos0 + t1 - 1;  // position of the last query
  // Encoded windows query p reads: the complete ones, its own too when p completes it.
  auto n_quant = [&](int p) { return s.kv_bits == 16 ? 0 : (p + 1) / kWindow; };
  // Windows query p reads exactly: every one up to its own at kv_bits 16; at 1/2 only its own,
  // unless p completes it (then it reads it encoded).
  auto reads_exact = [&](int p, int w) { return w <= p / kWindow && w >= n_quant(p); };

  sc.m.resize((size_t)nq * G);
  sc.l.resize((size_t)nq * G);
  sc.acc.resize((size_t)nq * G * d);
  sc.acc_rot.resize((size_t)nq * G * d);
  // 1-bit keys score through a per-query table of <(Hq)_g, C1[c]>; building it costs about as
  // much as decoding a few windows, so a query uses it once it reads enough of them (decided
  // by its position alone, so that its scores never depend on the chunking).
  const size_t lut_per_query = (size_t)G * (d / kSub) * 256;
  const bool any_lut = s.kv_bits == 1 && n_quant(last) >= kLutMinWindows;
  if (any_lut) sc.lut.resize(nq * lut_per_query);
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
    const bool lut = s.kv_bits == 1 && n_quant(s.pos0 + t0 + i) >= kLutMinWindows;
    st[i].lut = lut ? &sc.lut[i * lut_per_query] : nullptr;
    attn_init(st[i]);
  }
  if (n_quant(last) > 0) {
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
    if (w < n_quant(last)) {
      const uint8_t* kb = block(s.page_off[w], kind, layer, kv_head, 0);
      const uint8_t* vb = block(s.page_off[w], kind, layer, kv_head, 1);
      for (int i = 0; i < nq; i++) {
        if (w >= n_quant(s.pos0 + t0 + i)) continue;
        quant_attend_block(qp, kb, vb, lo, kWindow, q_of(t0 + i), &sc.qh[(size_t)i * G * d], scale, st[i]);
      }
    }
    // Exact tokens of this window for the queries that read it so: stored ones from their
    // fp16 page, this step's from its rows.
    bool exact = false;
    for (int i = 0; i < nq && !exact; i++) exact = reads_exact(s.pos0 + t0 + i, w);
    if (!exact) continue;
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
      if (!reads_exact(p, w)) continue;
      attend_exact(sc.k.data(), sc.v.data(), std::min(kWindow, p - lo + 1), q_of(t0 + i), scale, st[i]);
    }
  }
  for (int i = 0; i < nq; i++) {
    attn_finish(st[i], &attn_[(size_t)(s.tok_offset + t0 + i) * q_dim_ + (size_t)kv_head * G * d]);
  }
}

// K and V of this step's row j of s (fp16-rounded already by project_qkv).
const float* CpuBackend::row_kv(const SeqStep& s, int kv_head, int j) const {
  return &qkv_[(size_t)(s.tok_offset + j) * qkv_dim_ + q_dim_ + (size_t)kv_head * c_.head_dim];
}

// kv_bits 16: writes this step's K/V rows first..first+count-1 of s into their fp16 pages.
void CpuBackend::append_kv(const SeqStep& s, int layer, int kv_head, int first, int count) {
  const int d = c_.head_dim;
  for (int j = first; j < first + count; j++) {
    const int pos = s.pos0 + j, w = pos / kWindow, slot = pos % kWindow;
    const float* row = row_kv(s, kv_head, j);
    f32_to_f16_row(row, d, (uint16_t*)block(s.page_off[w], KV_F16, layer, kv_head, 0) + (size_t)slot * d);
    f32_to_f16_row(row + kv_dim_, d, (uint16_t*)block(s.page_off[w], KV_F16, layer, kv_head, 1) + (size_t)slot * d);
  }
}

// kv_bits 1/2: the tokens of the last, incomplete window after this step go to the tail (after
// the tokens already there when the window began before this step).
void CpuBackend::write_tail(const SeqStep& s, int layer, int kv_head) {
  const int d = c_.head_dim, end = s.pos0 + s.n_new;
  for (int pos = std::max(s.pos0, end / kWindow * kWindow); pos < end; pos++) {
    const float* row = row_kv(s, kv_head, pos - s.pos0);
    const size_t at = (size_t)(pos % kWindow) * d;
    f32_to_f16_row(row, d, (uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 0) + at);
    f32_to_f16_row(row + kv_dim_, d, (uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 1) + at);
  }
}

// Window w of s completes in this step: its exact K/V (tokens before pos0 from the tail, the
// rest from this step's rows) are encoded into its quantized page. Keys go back to pre-RoPE
// first (the quantizer rotates only the centred residual).
void CpuBackend::encode_window(const SeqStep& s, int layer, int kv_head, int w, Scratch& sc) {
  const int d = c_.head_dim, pos0 = w * kWindow;
  const int n_tail = std::max(0, s.pos0 - pos0);  // tokens of w cached before this step
  if (n_tail > 0) {
    f16_to_f32_row((const uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 0), n_tail * d, sc.k.data());
    f16_to_f32_row((const uint16_t*)block(s.tail_off, KV_F16, layer, kv_head, 1), n_tail * d, sc.v.data());
  }
  for (int t = n_tail; t < kWindow; t++) {
    const float* row = row_kv(s, kv_head, pos0 + t - s.pos0);
    memcpy(&sc.k[(size_t)t * d], row, d * sizeof(float));
    memcpy(&sc.v[(size_t)t * d], row + kv_dim_, d * sizeof(float));
  }
  for (int t = 0; t < kWindow; t++) {
    rope_cos_sin(pos0 + t, inv_freq_.data(), d, sc.cs.data(), sc.sn.data());
    rope_unapply(&sc.k[(size_t)t * d], d, sc.cs.data(), sc.sn.data());
  }
  const int kind = kind_of_bits(s.kv_bits);
  quant_encode_block(quant_params(s.kv_bits, true), sc.k.data(), pos0, block(s.page_off[w], kind, layer, kv_head, 0));
  quant_encode_block(quant_params(s.kv_bits, false), sc.v.data(), pos0, block(s.page_off[w], kind, layer, kv_head, 1));
}

}  // namespace nsn
