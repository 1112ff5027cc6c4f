// backend_cuda_plan.cu: a step's plan packed into one buffer (page tables, jobs, tiles) and
// uploaded (the class: backend_cuda.cuh).
#include "backend_cuda.cuh"

namespace nsn {
namespace cuda_backend {

// Packs the plan into pk_, recording the sections in sec_. The per-row sections the layers
// read come first: tokens[T], tok_kv[T], dec_seqs[n_dec], dec_enc; so in a pure-decode step
// their offsets depend only on the row count. With graph_layout, dec_enc (when any window
// filled) holds one job per decode row, the unused ones no-ops (kv_bits 0), so that the
// encode launch is the same whichever rows filled a window.
nsn_status CudaBackend::pack_plan(const StepPlan& plan, bool graph_layout) {
  const int T = plan.n_tokens, L = c_.n_layers;
  const uint64_t arena = (uint64_t)(uintptr_t)arena_;
  const uint64_t SP = stage_page_bytes();

  // Staging pages this step needs: per quantized prefill, its earlier complete windows
  // (dequantized) and, for each window that completes inside the chunk, its exact K/V and its
  // dequantized encoding.
  size_t n_stage = 0;
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    if (s.n_new > 1 && s.kv_bits != 16)
      n_stage += (size_t)(s.pos0 / kWindow) + 2 * ((s.pos0 + s.n_new) / kWindow - s.pos0 / kWindow);
  }
  if (n_stage) TRY(stage_.ensure(n_stage * SP, "staging pages"));
  const uint64_t stage = (uint64_t)(uintptr_t)stage_.p;

  // ---- pack the plan ----
  Packer& P = pk_;
  P.clear();
  Sections& S = sec_;
  S = Sections{};
  sec_.tokens = P.put(plan.tokens, T);
  std::vector<TokenKv> tok(T);
  std::vector<DecodeSeq> dec;
  std::vector<const SeqStep*> dec_steps;  // the sequence of each decode row (page tables)
  std::vector<EncodeJob> dec_enc;
  std::vector<PrefillSeq> pre;
  std::vector<std::vector<PageRef>> pre_pages, pre_deq;
  std::vector<PrefillTile> tiles;
  std::vector<KvCopyJob> copies;
  // Per-layer job lists are built for layer 0 and shifted per layer (single-layer staging
  // pages are addressed as page - layer * SP so that the kernels' layer offset lands on them).
  struct StageJob {
    uint64_t arena_page;  // quantized page in the arena
    uint64_t stage_page;  // staging page (layer 0 address)
    int32_t bits, pos0;
  };
  std::vector<StageJob> deq, penc;
  size_t next_stage = 0;
  S.max_ctx = 0;

  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    const bool quant = s.kv_bits != 16;
    if (s.n_new == 1) {
      const int p = s.pos0, w = p / kWindow;
      TokenKv& tk = tok[s.tok_offset];
      tk.page = arena + (uint64_t)(quant ? s.tail_off : s.page_off[w]);
      tk.layered = 1;
      tk.slot = p % kWindow;
      tk.pos = p;
      if (quant && (p + 1) % kWindow == 0)
        dec_enc.push_back({arena_ + s.tail_off, arena_ + s.page_off[w], s.kv_bits, w * kWindow});
      DecodeSeq ds{};
      ds.kv_bits = s.kv_bits;
      ds.n_ctx = p + 1;
      ds.q_row = s.tok_offset;
      ds.n_windows = s.n_windows;
      dec.push_back(ds);
      dec_steps.push_back(&s);
      S.max_ctx = std::max(S.max_ctx, p + 1);
      continue;
    }
    // Prefill chunk.
    const int w_first = s.pos0 / kWindow;                 // window of the first new token
    const int w_full_end = (s.pos0 + s.n_new) / kWindow;  // windows < this are complete after
    // pages: exact K/V per window; deq_pages: the window as encoded (prefill_attention.cuh).
    std::vector<PageRef> pages(s.n_windows), deq_pages(s.n_windows);
    std::vector<uint64_t> stage_of(s.n_windows, 0);
    for (int w = 0; w < s.n_windows; w++) {
      PageRef& pr = pages[w];
      if (!quant) {
        pr = {arena + (uint64_t)s.page_off[w], 1, 0};
      } else if (w < w_full_end) {
        // Complete after the step: dequantized for the rows past it (or completing it).
        const uint64_t dq = stage + (uint64_t)(next_stage++) * SP;
        deq.push_back({arena + (uint64_t)s.page_off[w], dq, s.kv_bits, w * kWindow});
        deq_pages[w] = {dq, 0, 0};
        pr = deq_pages[w];  // windows before the chunk are never read exactly
        if (w >= w_first) {
          // Completes in this chunk: the append writes its exact K/V to a staging page, which
          // is encoded (before the dequant above runs) and read exactly by the rows inside it.
          stage_of[w] = stage + (uint64_t)(next_stage++) * SP;
          pr = {stage_of[w], 0, 0};
          penc.push_back({arena + (uint64_t)s.page_off[w], stage_of[w], s.kv_bits, w * kWindow});
        }
      } else {
        pr = {arena + (uint64_t)s.tail_off, 1, 0};  // the partial last window
      }
      if (!quant || w >= w_full_end) deq_pages[w] = pr;
    }
    // The tail's earlier tokens move to staging when their window completes in this chunk.
    if (quant && s.pos0 % kWindow != 0 && w_first < w_full_end)
      copies.push_back({arena + (uint64_t)s.tail_off, stage_of[w_first], 1, 0, s.pos0 % kWindow, 0});
    for (int j = 0; j < s.n_new; j++) {
      const int p = s.pos0 + j, w = p / kWindow;
      TokenKv& tk = tok[s.tok_offset + j];
      tk.pos = p;
      tk.slot = p % kWindow;
      tk.page = pages[w].page;
      tk.layered = pages[w].layered;
    }
    PrefillSeq ps{};
    ps.q_row0 = s.tok_offset;
    ps.n_new = s.n_new;
    ps.pos0 = s.pos0;
    ps.n_windows = s.n_windows;
    ps.quant = quant;
    for (int i0 = 0; i0 < s.n_new; i0 += 64) tiles.push_back({(int32_t)pre.size(), i0});
    pre.push_back(ps);
    pre_pages.push_back(std::move(pages));
    pre_deq.push_back(std::move(deq_pages));
  }
  S.tok_kv = P.put(tok);
  S.n_dec = (int)dec.size();
  if (S.n_dec) S.dec_seqs = P.put(dec);
  if (graph_layout && !dec_enc.empty()) dec_enc.resize(dec.size(), EncodeJob{});  // no-op jobs
  S.n_dec_enc = (int)dec_enc.size();
  if (S.n_dec_enc) S.dec_enc = P.put(dec_enc);  // arena addresses filled above (absolute)
  // The decode rows' page tables, anywhere after those (DecodeSeq.page_off points at them).
  for (int i = 0; i < S.n_dec; i++) {
    const size_t table = P.put(dec_steps[i]->page_off, dec_steps[i]->n_windows);
    P.point(S.dec_seqs + i * sizeof(DecodeSeq) + offsetof(DecodeSeq, page_off), table);
  }
  S.n_pre = (int)pre.size();
  if (S.n_pre) {
    std::vector<size_t> page_offs(S.n_pre), deq_offs(S.n_pre);
    for (int i = 0; i < S.n_pre; i++) {
      page_offs[i] = P.put(pre_pages[i]);
      deq_offs[i] = P.put(pre_deq[i]);
    }
    S.pre_seqs = P.put(pre);
    for (int i = 0; i < S.n_pre; i++) {
      P.point(S.pre_seqs + i * sizeof(PrefillSeq) + offsetof(PrefillSeq, pages), page_offs[i]);
      P.point(S.pre_seqs + i * sizeof(PrefillSeq) + offsetof(PrefillSeq, deq_pages), deq_offs[i]);
    }
    S.n_tiles = (int)tiles.size();
    S.tiles = P.put(tiles);
  }
  S.n_copies = (int)copies.size();
  if (S.n_copies) S.copies = P.put(copies);
  auto per_layer = [&](const std::vector<StageJob>& jobs, bool to_stage) {
    std::vector<EncodeJob> all;
    all.reserve(jobs.size() * L);
    for (int l = 0; l < L; l++) {
      for (const StageJob& j : jobs) {
        const uint64_t st = j.stage_page - (uint64_t)l * SP;
        EncodeJob e{};
        e.src_page = (const uint8_t*)(uintptr_t)(to_stage ? j.arena_page : st);
        e.dst_page = (uint8_t*)(uintptr_t)(to_stage ? st : j.arena_page);
        e.kv_bits = j.bits;
        e.pos0 = j.pos0;
        all.push_back(e);
      }
    }
    return all;
  };
  S.n_deq = (int)deq.size();
  if (S.n_deq) S.deq = P.put(per_layer(deq, true));
  S.n_penc = (int)penc.size();
  if (S.n_penc) S.penc = P.put(per_layer(penc, false));

  // Rows that need logits (planned by the core), their logprob jobs and the draws.
  logit_row_list_.assign(plan.logit_rows, plan.logit_rows + plan.n_logit_rows);
  logit_seq_.assign(plan.logit_seq, plan.logit_seq + plan.n_logit_rows);
  S.n_logit = (int)logit_row_list_.size();
  S.logit_rows = P.put(logit_row_list_);
  {
    std::vector<LogitRowJob> jobs(S.n_logit);
    std::vector<SampleJob> samples;
    struct Arrays {
      size_t bias_ids = 0, bias_values = 0, hist = 0;
      bool has_bias = false, has_hist = false;
    };
    std::vector<Arrays> arrays;
    std::vector<int32_t> hist;
    for (int r = 0; r < S.n_logit; r++) {
      const int row = logit_row_list_[r];
      const SeqStep& s = plan.seqs[logit_seq_[r]];
      const bool last = row == s.tok_offset + s.n_new - 1;
      jobs[r].next_id = s.want_logprobs ? (last ? s.next_token : plan.tokens[row + 1]) : -1;
      jobs[r].sample_idx = -1;
      if (!(s.sample && last)) continue;
      jobs[r].sample_idx = (int32_t)samples.size();
      SampleJob sj{};
      sj.params = *s.sampling;
      sj.row = r;
      sj.P = s.pos0 + s.n_new;
      sj.n_bias = s.n_bias;
      const nsn_sampling& sp = sj.params;
      const bool penal = sp.repetition_penalty != 1.0f || sp.frequency_penalty != 0.0f ||
                         sp.presence_penalty != 0.0f;
      sj.hist_len = penal ? sj.P : 0;
      Arrays a;
      if (s.n_bias) {
        a.has_bias = true;
        a.bias_ids = P.put(s.bias_ids, s.n_bias);
        a.bias_values = P.put(s.bias_values, s.n_bias);
      }
      if (penal) {
        // Penalties look at every token before the drawn one: the history, then this chunk.
        hist.assign(s.history, s.history + s.history_len);
        hist.insert(hist.end(), plan.tokens + s.tok_offset, plan.tokens + s.tok_offset + s.n_new);
        a.has_hist = true;
        a.hist = P.put(hist);
      }
      samples.push_back(sj);
      arrays.push_back(a);
    }
    S.row_jobs = P.put(jobs);
    S.n_samples = (int)samples.size();
    if (S.n_samples) {
      S.samples = P.put(samples);
      for (int i = 0; i < S.n_samples; i++) {
        const size_t at = S.samples + i * sizeof(SampleJob);
        if (arrays[i].has_bias) {
          P.point(at + offsetof(SampleJob, bias_ids), arrays[i].bias_ids);
          P.point(at + offsetof(SampleJob, bias_values), arrays[i].bias_values);
        }
        if (arrays[i].has_hist) P.point(at + offsetof(SampleJob, hist), arrays[i].hist);
      }
    }
  }
  return NSN_OK;
}

// One pinned host->device copy of the packed plan, pointer fields relocated to plan_d_.
nsn_status CudaBackend::upload_plan() {
  Packer& P = pk_;
  const size_t bytes = P.align();
  // Grown with headroom: a moved plan buffer drops the cached graphs.
  if (!plan_d_.p || bytes > plan_d_.bytes)
    TRY(plan_d_.ensure(std::max<size_t>(2 * bytes, 1 << 16), "step plan"));
  if (bytes > plan_h_bytes_) {
    if (plan_h_) cudaFreeHost(plan_h_);
    plan_h_ = nullptr;
    plan_h_bytes_ = 0;
    const size_t want = std::max<size_t>(bytes * 2, 1 << 16);
    CK(cudaMallocHost((void**)&plan_h_, want));
    plan_h_bytes_ = want;
  }
  P.relocate((uint64_t)(uintptr_t)plan_d_.p);
  memcpy(plan_h_, P.buf.data(), bytes);
  CK(cudaMemcpyAsync(plan_d_.p, plan_h_, bytes, cudaMemcpyHostToDevice, stream_));
  return NSN_OK;
}

}  // namespace cuda_backend
}  // namespace nsn
