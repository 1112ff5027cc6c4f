// backend_cuda_forward.cu: the CUDA backend's step: the layer loop, logits and sampling, and
// read_kv (the class: backend_cuda.cuh).
#include "backend_cuda.cuh"

namespace nsn {
namespace cuda_backend {

// ---- step ----------------------------------------------------------------------------------

// Every sequence decodes one token: the steps whose layers run as a CUDA graph.
static bool pure_decode(const StepPlan& plan) {
  if (plan.n_seqs < 1 || plan.n_tokens != plan.n_seqs) return false;
  for (int i = 0; i < plan.n_seqs; i++)
    if (plan.seqs[i].n_new != 1) return false;
  return true;
}

nsn_status CudaBackend::step(const StepPlan& plan) {
  TRY(set_device());
  if (!arena_ || !scratch_ready_) return set_error(NSN_E_STATE, "cuda: step before alloc_arena");
  const int T = plan.n_tokens;
  if (T > T_max_) return set_error(NSN_E_INVALID, "cuda: %d tokens > max_step_tokens %d", T, T_max_);
  const bool graph = graphs_on_ && pure_decode(plan);
  TRY(pack_plan(plan, graph));
  TRY(upload_plan());
  if (sec_.n_dec) {
    // Sized before any capture (a capture must not allocate).
    const size_t ws = decode_attention_workspace(geo_, sec_.n_dec, sec_.max_ctx);
    const size_t before = dec_ws_.bytes;  // ensure() reallocates only to grow
    if (ws) TRY(dec_ws_.ensure(ws, "decode attention workspace"));
    // A new workspace starts zeroed (split counters); the kernels leave them at zero. (Its
    // address may equal the old one's, so the size tells whether it is new.)
    if (dec_ws_.bytes != before) CK(cudaMemsetAsync(dec_ws_.p, 0, dec_ws_.bytes, stream_));
  }
  TRY(graph ? forward_graph(plan) : forward_layers(plan));
  TRY(logits_and_sampling(plan));
  return NSN_OK;
}

nsn_status CudaBackend::linear(int M, int N, int K, const bf16* x, int ldx, const bf16* w, float* y,
                               int ldy, float beta) {
  if (use_gemv_ && gemv_supported(M, K, ldx, x, w))
    return launch_gemv(M, N, K, x, ldx, w, y, ldy, beta, stream_);
  return gemm_xwT(cublas_, M, N, K, x, ldx, w, y, true, ldy, 1.0f, beta);
}

nsn_status CudaBackend::forward_layers(const StepPlan& plan) {
  const int T = plan.n_tokens, H = c_.hidden_size, I = c_.intermediate_size;
  const Sections& S = sec_;
  uint8_t* base = (uint8_t*)plan_d_.p;
  const int32_t* tokens = (const int32_t*)(base + S.tokens);
  const TokenKv* tok = (const TokenKv*)(base + S.tok_kv);
  const float scale = 1.0f / sqrtf((float)c_.head_dim);

  TRY(launch_embed(embed_, tokens, T, H, x_, stream_));
  for (int l = 0; l < c_.n_layers; l++) {
    const LayerW& W = layers_[l];
    // One row: RMSNorm fused into the GEMV (gemv.cu), one launch instead of two.
    const bool fuse = use_gemv_ && T == 1;
    if (fuse && gemv_rmsnorm_supported(H, x_, W.attn_norm, W.wqkv)) {
      TRY(launch_gemv_rmsnorm(qkv_dim_, H, x_, W.attn_norm, c_.rms_eps, W.wqkv, qkv_, 0.0f, stream_));
    } else {
      TRY(launch_rmsnorm(x_, nullptr, T, H, W.attn_norm, c_.rms_eps, xn_, stream_));
      TRY(linear(T, qkv_dim_, H, xn_, H, W.wqkv, qkv_, qkv_dim_, 0.0f));
    }
    if (S.n_copies)
      TRY(launch_kv_copy((const KvCopyJob*)(base + S.copies), S.n_copies, l, c_.n_kv_heads,
                         c_.head_dim, stream_));
    QkvRopeArgs ra{};
    ra.qkv = qkv_;
    ra.bias = W.bqkv;
    ra.tok = tok;
    ra.inv_freq = inv_freq_;
    ra.q = q_;
    ra.n = T;
    ra.n_heads = c_.n_heads;
    ra.n_kv_heads = c_.n_kv_heads;
    ra.head_dim = c_.head_dim;
    ra.layer = l;
    TRY(launch_qkv_rope_append(ra, stream_));
    if (S.n_penc)
      TRY(launch_kv_encode(geo_, (const EncodeJob*)(base + S.penc) + (size_t)l * S.n_penc, S.n_penc,
                           l, stream_));
    if (S.n_deq)
      TRY(launch_kv_dequant(geo_, (const EncodeJob*)(base + S.deq) + (size_t)l * S.n_deq, S.n_deq, l,
                            stream_));
    if (S.n_dec_enc)
      TRY(launch_kv_encode(geo_, (const EncodeJob*)(base + S.dec_enc), S.n_dec_enc, l, stream_));
    if (S.n_dec) {
      DecodeAttnArgs da{};
      da.g = geo_;
      da.arena = arena_;
      da.layer = l;
      da.q = q_;
      da.out = attn_;
      da.seqs = (const DecodeSeq*)(base + S.dec_seqs);
      da.n_seqs = S.n_dec;
      da.max_ctx = S.max_ctx;
      da.scale = scale;
      da.workspace = (float*)dec_ws_.p;
      da.workspace_bytes = dec_ws_.bytes;
      da.reuse_plan = l > 0;  // the plan depends on the sequences only: planned once per step
      TRY(launch_decode_attention(da, stream_));
    }
    if (S.n_tiles) {
      PrefillAttnArgs pa{};
      pa.q = q_;
      pa.out = attn_;
      pa.seqs = (const PrefillSeq*)(base + S.pre_seqs);
      pa.tiles = (const PrefillTile*)(base + S.tiles);
      pa.n_tiles = S.n_tiles;
      pa.n_heads = c_.n_heads;
      pa.n_kv_heads = c_.n_kv_heads;
      pa.head_dim = c_.head_dim;
      pa.layer = l;
      pa.scale = scale;
      TRY(launch_prefill_attention(pa, stream_));
    }
    TRY(linear(T, H, q_dim_, attn_, q_dim_, W.wo, x_, H, 1.0f));
    // One row: RMSNorm, the gate/up GEMV and SwiGLU in one launch.
    if (fuse && gemv_rmsnorm_supported(H, x_, W.mlp_norm, W.wgu)) {
      TRY(launch_gemv_rmsnorm_swiglu(I, H, x_, W.mlp_norm, c_.rms_eps, W.wgu, h_, stream_));
    } else {
      TRY(launch_rmsnorm(x_, nullptr, T, H, W.mlp_norm, c_.rms_eps, xn_, stream_));
      TRY(linear(T, 2 * I, H, xn_, H, W.wgu, gu_, 2 * I, 0.0f));
      TRY(launch_swiglu(gu_, T, I, h_, stream_));
    }
    TRY(linear(T, H, I, h_, I, W.wdown, x_, H, 1.0f));
  }
  return NSN_OK;
}

// ---- logits --------------------------------------------------------------------------------

nsn_status CudaBackend::logits_and_sampling(const StepPlan& plan) {
  const int H = c_.hidden_size, V = c_.vocab_size;
  const Sections& S = sec_;
  uint8_t* base = (uint8_t*)plan_d_.p;
  // Outputs arrive preset to "nothing" (the core, backend.h).
  const bf16* head = (c_.flags & NSN_MODEL_TIED) ? embed_ : lm_head_;
  const int32_t* rows_d = (const int32_t*)(base + S.logit_rows);
  const LogitRowJob* jobs_d = (const LogitRowJob*)(base + S.row_jobs);
  // Sample jobs carry global logit-row indices (host copy: the packed plan).
  const SampleJob* samples_h = S.n_samples ? (const SampleJob*)(pk_.buf.data() + S.samples) : nullptr;
  const SampleJob* samples_d = (const SampleJob*)(base + S.samples);
  int s_next = 0;
  for (int r0 = 0; r0 < S.n_logit; r0 += logit_rows_) {
    const int n = std::min(logit_rows_, S.n_logit - r0);
    TRY(launch_rmsnorm(x_, rows_d + r0, n, H, final_norm_, c_.rms_eps, xf_, stream_));
    TRY(linear(n, V, H, xf_, H, head, logits_, V, 0.0f));
    if (plan.logits)
      CK(cudaMemcpyAsync(plan.logits + (size_t)r0 * V, logits_, (size_t)n * V * 4,
                         cudaMemcpyDeviceToHost, stream_));
    // Samples are listed in logit-row order: those of this block are contiguous.
    const int s0 = s_next;
    while (s_next < S.n_samples && samples_h[s_next].row < r0 + n) s_next++;
    TRY(launch_logprobs_and_sample(logits_, n, V, jobs_d + r0, plan.top_n, samples_d + s0,
                                   s_next - s0, r0, zscratch_, counts_, res_d_, stream_));
    CK(cudaMemcpyAsync(res_h_, res_d_, (size_t)n * sizeof(RowResult), cudaMemcpyDeviceToHost,
                       stream_));
    CK(cudaStreamSynchronize(stream_));
    for (int i = 0; i < n; i++) {
      const int row = logit_row_list_[r0 + i];
      const SeqStep& s = plan.seqs[logit_seq_[r0 + i]];
      const RowResult& rr = res_h_[i];
      const bool last = row == s.tok_offset + s.n_new - 1;
      if (s.want_logprobs) {
        plan.pos_logprob[row] = rr.next_logprob;
        if (plan.top_n) {
          memcpy(plan.pos_top_ids + (size_t)row * plan.top_n, rr.top_ids, plan.top_n * 4);
          memcpy(plan.pos_top_logprobs + (size_t)row * plan.top_n, rr.top_logprobs, plan.top_n * 4);
        }
      }
      if (s.sample && last) {
        nsn_seq_output& o = plan.out[logit_seq_[r0 + i]];
        o.token = rr.token;
        o.logprob = rr.token_logprob;
        memcpy(o.top_ids, rr.top_ids, plan.top_n * 4);
        memcpy(o.top_logprobs, rr.top_logprobs, plan.top_n * 4);
      }
    }
  }
  CK(cudaStreamSynchronize(stream_));
  CK(cudaGetLastError());
  return NSN_OK;
}

// ---- read_kv -------------------------------------------------------------------------------

nsn_status CudaBackend::read_kv(const SeqStep& s, int layer, int kv_head, int start, int count,
                                float* k_out, float* v_out) {
  TRY(set_device());
  const int d = c_.head_dim;
  const uint64_t SP = stage_page_bytes();
  const int n_quant = s.kv_bits == 16 ? 0 : s.pos0 / kWindow;
  TRY(stage_.ensure(SP, "staging pages"));
  DevBuf job;
  TRY(job.ensure(sizeof(EncodeJob), "read_kv job"));
  std::vector<uint16_t> kh((size_t)kWindow * d), vh((size_t)kWindow * d);
  nsn_status st = NSN_OK;
  for (int w = start / kWindow; st == NSN_OK && w * kWindow < start + count; w++) {
    const int lo = std::max(start, w * kWindow), hi = std::min(start + count, (w + 1) * kWindow);
    uint64_t page;
    int layered;
    if (w < n_quant) {
      EncodeJob j{};
      j.src_page = arena_ + s.page_off[w];
      j.dst_page = (uint8_t*)stage_.p - (size_t)layer * SP;
      j.kv_bits = s.kv_bits;
      j.pos0 = w * kWindow;
      cudaError_t e = cudaMemcpyAsync(job.p, &j, sizeof j, cudaMemcpyHostToDevice, stream_);
      if (e != cudaSuccess) {
        st = set_error(NSN_E_BACKEND, "cuda: read_kv job upload: %s", cudaGetErrorString(e));
        break;
      }
      st = launch_kv_dequant(geo_, (const EncodeJob*)job.p, 1, layer, stream_);
      if (st != NSN_OK) break;
      page = (uint64_t)(uintptr_t)stage_.p;
      layered = 0;
    } else {
      page = (uint64_t)(uintptr_t)(arena_ + (s.kv_bits == 16 ? s.page_off[w] : s.tail_off));
      layered = 1;
    }
    const uint8_t* kb = f16_block(page, layered, layer, c_.n_kv_heads, d, kv_head, 0);
    const uint8_t* vb = f16_block(page, layered, layer, c_.n_kv_heads, d, kv_head, 1);
    cudaError_t e = cudaMemcpyAsync(kh.data(), kb, kh.size() * 2, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaMemcpyAsync(vh.data(), vb, vh.size() * 2, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) {
      st = set_error(NSN_E_BACKEND, "cuda: read_kv copy: %s", cudaGetErrorString(e));
      break;
    }
    for (int p = lo; p < hi; p++) {
      const size_t src = (size_t)(p - w * kWindow) * d, dst = (size_t)(p - start) * d;
      for (int i = 0; i < d; i++) {
        k_out[dst + i] = f16_to_f32(kh[src + i]);
        v_out[dst + i] = f16_to_f32(vh[src + i]);
      }
    }
  }
  job.release();
  return st;
}

}  // namespace cuda_backend
}  // namespace nsn
