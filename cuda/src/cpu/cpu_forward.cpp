// cpu_forward.cpp: one step of the CPU backend, read top to bottom: embed every token of the
// batch, run the layers over all of them at once (each sequence's attention reads its own
// pages), then logits only for the rows that need them, logprobs and sampling.
#include <math.h>
#include <string.h>

#include <algorithm>

#include "../kv_layout.h"
#include "../rope.h"
#include "cpu_backend.h"
#include "kernels.h"

namespace nsn {

namespace {

constexpr int kRowBlock = 16;  // rows per task for the cheap per-row passes

// fn(t0, t1) over row blocks, on the pool when there are several.
template <class F>
void for_rows(ThreadPool& pool, int T, F&& fn) {
  const int tasks = (T + kRowBlock - 1) / kRowBlock;
  pool.run(tasks, [&](int task, int) { fn(task * kRowBlock, std::min(T, (task + 1) * kRowBlock)); });
}

}  // namespace

void CpuBackend::embed_and_rope_tables(const StepPlan& plan) {
  const int T = plan.n_tokens, H = c_.hidden_size, half = c_.head_dim / 2;
  row_seq_.resize(T);
  std::vector<int32_t>& pos = row_pos_;
  pos.resize(T);
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    for (int j = 0; j < s.n_new; j++) {
      row_seq_[s.tok_offset + j] = i;
      pos[s.tok_offset + j] = s.pos0 + j;
    }
  }
  for_rows(pool_, T, [&](int t0, int t1) {
    for (int t = t0; t < t1; t++) {
      memcpy(&x_[(size_t)t * H], &embed_[(size_t)plan.tokens[t] * H], H * sizeof(float));
      rope_cos_sin(pos[t], inv_freq_.data(), c_.head_dim, &cos_[(size_t)t * half], &sin_[(size_t)t * half]);
    }
  });
}

// qkv = attn_norm(x) . Wqkv^T (+ bias); RoPE on q and k; k and v rounded to fp16, the precision
// the cache stores, so attention sees the same K/V whether it reads this step's rows or pages.
void CpuBackend::project_qkv(int layer, int T) {
  const Layer& L = layers_[layer];
  const int H = c_.hidden_size, d = c_.head_dim, half = d / 2;
  rmsnorm(x_.data(), H, L.attn_norm.data(), H, c_.rms_eps, T, xn_.data(), H);
  matmul(pool_, xn_.data(), H, T, H, L.wqkv.data(), qkv_dim_, qkv_.data(), qkv_dim_, false);
  for_rows(pool_, T, [&](int t0, int t1) {
    for (int t = t0; t < t1; t++) {
      float* r = &qkv_[(size_t)t * qkv_dim_];
      if (!L.bqkv.empty()) {
        for (int i = 0; i < qkv_dim_; i++) r[i] += L.bqkv[i];
      }
      const float* cs = &cos_[(size_t)t * half];
      const float* sn = &sin_[(size_t)t * half];
      for (int h = 0; h < c_.n_heads + c_.n_kv_heads; h++) rope_apply(r + h * d, d, cs, sn);
      round_f16_row(r + q_dim_, 2 * kv_dim_);
    }
  });
}

nsn_status CpuBackend::step(const StepPlan& plan) {
  const int T = plan.n_tokens, H = c_.hidden_size, I = c_.intermediate_size;
  // Every buffer is sized before the first write to the cache (and the pool allocates
  // nothing): a failed allocation leaves the cache untouched.
  x_.resize((size_t)T * H);
  xn_.resize((size_t)T * H);
  qkv_.resize((size_t)T * qkv_dim_);
  attn_.resize((size_t)T * q_dim_);
  gu_.resize((size_t)T * 2 * I);
  h_.resize((size_t)T * I);
  cos_.resize((size_t)T * c_.head_dim / 2);
  sin_.resize((size_t)T * c_.head_dim / 2);
  plan_logit_rows(plan);
  plan_attention(plan);

  embed_and_rope_tables(plan);
  for (int layer = 0; layer < c_.n_layers; layer++) {
    const Layer& L = layers_[layer];
    project_qkv(layer, T);
    attention(plan, layer);
    matmul(pool_, attn_.data(), q_dim_, T, q_dim_, L.wo.data(), H, x_.data(), H, true);
    rmsnorm(x_.data(), H, L.mlp_norm.data(), H, c_.rms_eps, T, xn_.data(), H);
    matmul(pool_, xn_.data(), H, T, H, L.wgu.data(), 2 * I, gu_.data(), 2 * I, false);
    silu_mul(gu_.data(), T, I, h_.data());
    matmul(pool_, h_.data(), I, T, I, L.wdown.data(), H, x_.data(), H, true);
  }
  logits_and_sampling(plan);
  return NSN_OK;
}

// Logits only where someone reads them (the core's plan.logit_rows; with plan.logits every row,
// in place).
void CpuBackend::plan_logit_rows(const StepPlan& plan) {
  logit_rows_.assign(plan.logit_rows, plan.logit_rows + plan.n_logit_rows);
  // Blocks of rows, so a long prompt with logprobs never holds [T][vocab] at once.
  logit_block_ = plan.logits ? plan.n_tokens : std::min<int>((int)logit_rows_.size(), 64);
  if (!plan.logits) logits_buf_.resize((size_t)logit_block_ * c_.vocab_size);
  xs_.resize((size_t)logit_block_ * c_.hidden_size);
}

void CpuBackend::logits_and_sampling(const StepPlan& plan) {
  const int H = c_.hidden_size, V = c_.vocab_size;
  const float* head = (c_.flags & NSN_MODEL_TIED) ? embed_.data() : lm_head_.data();
  const size_t n_rows = logit_rows_.size();
  const size_t block = logit_block_;
  for (size_t r0 = 0; r0 < n_rows; r0 += block) {
    const int n = (int)std::min(block, n_rows - r0);
    for (int i = 0; i < n; i++) {
      rmsnorm(&x_[(size_t)logit_rows_[r0 + i] * H], H, final_norm_.data(), H, c_.rms_eps, 1,
              &xs_[(size_t)i * H], H);
    }
    float* z = plan.logits ? plan.logits : logits_buf_.data();
    matmul(pool_, xs_.data(), H, n, H, head, V, z, V, false);
    pool_.run(n, [&](int i, int thread) {
      emit_row(plan, logit_rows_[r0 + i], z + (size_t)i * V, scratch_[thread]);
    });
  }
}

// Logprobs of one position and, on a sampling sequence's last position, the draw.
void CpuBackend::emit_row(const StepPlan& plan, int row, const float* z, Scratch& sc) {
  const int V = c_.vocab_size;
  const int si = row_seq_[row];
  const SeqStep& s = plan.seqs[si];
  const int j = row - s.tok_offset;
  const bool last = j == s.n_new - 1;
  if (!s.want_logprobs && !(s.sample && last)) return;
  const float lse = logsumexp(z, V);
  if (s.want_logprobs) {
    const int next = last ? s.next_token : plan.tokens[row + 1];
    plan.pos_logprob[row] = next < 0 ? NAN : z[next] - lse;
    if (plan.top_n) {
      top_logprobs(z, V, lse, plan.top_n, plan.top_n, plan.pos_top_ids + (size_t)row * plan.top_n,
                   plan.pos_top_logprobs + (size_t)row * plan.top_n);
    }
  }
  if (s.sample && last) {
    SampleInput in{z, V, s.sampling, s.bias_ids, s.bias_values, s.n_bias,
                   s.history, s.history_len, plan.tokens + s.tok_offset, s.n_new};
    nsn_seq_output& o = plan.out[si];
    o.token = sample_token(in, sc.sample);
    o.logprob = z[o.token] - lse;
    top_logprobs(z, V, lse, plan.top_n, NSN_MAX_TOP_N, o.top_ids, o.top_logprobs);
  }
}

}  // namespace nsn
