// engine_step.cpp: nsn_step. Checks the whole batch, page tables included (ids inside the
// arena, no page written by two rows or written while another row reads it), turns page ids
// into arena offsets and hands the plan to the backend. The core allocates nothing behind the
// caller's back: the pages are the caller's (the TS scheduler's).
#include <math.h>

#include <algorithm>

#include "engine.h"
#include "kv_layout.h"

using namespace nsn;

namespace {

#define REQUIRE(cond, ...) \
  if (!(cond)) return set_error(NSN_E_INVALID, __VA_ARGS__)

struct StepArgs {
  const nsn_seq_input* in;
  int32_t n_seqs;
  const int32_t* tokens;
  int32_t n_tokens;
  const int32_t* pages;
  int32_t n_pages;
  const int32_t* history;
  int32_t n_history;
  int32_t top_n;
  nsn_seq_output* out;
  float* pos_logprob;
  int32_t* pos_top_ids;
  float* pos_top_logprobs;
  float* logits;
};

// A byte range of the arena: [off, off + bytes).
struct Range {
  int64_t off;
  uint64_t bytes;
  int32_t row;
};

// One row's page table and tail: ids in range, the right count for its kv_bits and length.
nsn_status validate_pages(const nsn_engine& e, const StepArgs& a, int32_t i) {
  const nsn_seq_input& s = a.in[i];
  const int32_t kv_bits = e.seqs[s.seq].kv_bits;
  const int kind = kind_of_bits(kv_bits);
  const int64_t end = (int64_t)s.pos0 + s.n_tokens;
  const int32_t want = table_pages(kv_bits, end);
  REQUIRE(s.n_pages == want, "seqs[%d]: n_pages %d, but %lld tokens at kv_bits %d take %d pages", i,
          s.n_pages, (long long)end, kv_bits, want);
  REQUIRE(s.page_offset >= 0 && (int64_t)s.page_offset + s.n_pages <= a.n_pages,
          "seqs[%d]: pages [%d, %d + %d) exceed n_pages %d", i, s.page_offset, s.page_offset,
          s.n_pages, a.n_pages);
  for (int32_t w = 0; w < s.n_pages; w++) {
    const int32_t id = a.pages[s.page_offset + w];
    REQUIRE(id >= 0 && (uint64_t)id < e.page_ids(kind),
            "seqs[%d]: page %d of its table is id %d, not a kv_bits %d page id (< %llu)", i, w, id,
            kv_bits, (unsigned long long)e.page_ids(kind));
  }
  if (kv_bits == 16) {
    REQUIRE(s.tail_page == -1, "seqs[%d]: tail_page %d must be -1 at kv_bits 16", i, s.tail_page);
  } else {
    REQUIRE(s.tail_page >= 0 && (uint64_t)s.tail_page < e.page_ids(KV_F16),
            "seqs[%d]: tail_page %d is not an fp16 page id (< %llu)", i, s.tail_page,
            (unsigned long long)e.page_ids(KV_F16));
  }
  return NSN_OK;
}

// No page is written by two rows, and none is written while another row reads it.
nsn_status validate_writes(const nsn_engine& e, const StepArgs& a) {
  std::vector<Range> writes, reads;
  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& s = a.in[i];
    const int32_t kv_bits = e.seqs[s.seq].kv_bits;
    const int kind = kind_of_bits(kv_bits);
    const int32_t first_written = s.pos0 / kWindow;
    for (int32_t w = 0; w < s.n_pages; w++) {
      const Range r{e.page_offset(kind, a.pages[s.page_offset + w]), e.page_bytes[kind], i};
      (w < first_written ? reads : writes).push_back(r);
    }
    if (kv_bits != 16) writes.push_back({e.page_offset(KV_F16, s.tail_page), e.page_bytes[KV_F16], i});
  }
  auto by_off = [](const Range& x, const Range& y) { return x.off < y.off; };
  std::sort(writes.begin(), writes.end(), by_off);
  std::sort(reads.begin(), reads.end(), by_off);
  for (size_t j = 1; j < writes.size(); j++) {
    const Range &p = writes[j - 1], &q = writes[j];
    REQUIRE(p.off + (int64_t)p.bytes <= q.off,
            "seqs[%d] and seqs[%d] write the same KV memory (arena bytes %lld and %lld)", p.row,
            q.row, (long long)p.off, (long long)q.off);
  }
  for (const Range& w : writes) {
    // A read range overlapping w starts after w.off - (the largest page) and before w's end.
    const int64_t from = w.off - (int64_t)e.page_bytes[KV_F16] + 1;
    auto it = std::lower_bound(reads.begin(), reads.end(), from,
                               [](const Range& r, int64_t off) { return r.off < off; });
    for (; it != reads.end() && it->off < w.off + (int64_t)w.bytes; ++it) {
      if (it->off + (int64_t)it->bytes > w.off) {
        return set_error(NSN_E_INVALID,
                         "seqs[%d] writes KV memory (arena byte %lld) that seqs[%d] reads", w.row,
                         (long long)w.off, it->row);
      }
    }
  }
  return NSN_OK;
}

nsn_status validate(const nsn_engine& e, const StepArgs& a) {
  const nsn_model_config& c = e.spec.cfg;
  const int32_t max_seqs = (int32_t)e.seqs.size();
  REQUIRE(a.n_seqs >= 1 && a.n_seqs <= max_seqs, "n_seqs %d must be in [1, max_seqs = %d]", a.n_seqs,
          max_seqs);
  REQUIRE(a.in, "seqs is null");
  REQUIRE(a.tokens, "tokens is null");
  REQUIRE(a.n_tokens >= 1 && a.n_tokens <= e.spec.opts.max_step_tokens,
          "n_tokens %d must be in [1, max_step_tokens = %d]", a.n_tokens, e.spec.opts.max_step_tokens);
  REQUIRE(a.top_n >= 0 && a.top_n <= NSN_MAX_TOP_N, "top_n %d must be in [0, %d]", a.top_n,
          NSN_MAX_TOP_N);
  REQUIRE(a.n_pages >= 0, "n_pages %d must be >= 0", a.n_pages);
  REQUIRE(a.n_history >= 0, "n_history %d must be >= 0", a.n_history);
  std::vector<uint8_t> listed(max_seqs, 0);
  std::vector<std::pair<int32_t, int32_t>> spans(a.n_seqs);  // (token_offset, n_tokens)
  bool any_sample = false, any_logprobs = false;
  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& s = a.in[i];
    REQUIRE(s.seq >= 0 && s.seq < max_seqs, "seqs[%d].seq %d is out of range [0, %d)", i, s.seq,
            max_seqs);
    REQUIRE(e.seqs[s.seq].live, "seqs[%d].seq %d is not live", i, s.seq);
    REQUIRE(!listed[s.seq], "seqs[%d]: seq %d appears twice in one step", i, s.seq);
    listed[s.seq] = 1;
    REQUIRE(s.n_tokens >= 1, "seqs[%d].n_tokens %d must be >= 1", i, s.n_tokens);
    REQUIRE(s.token_offset >= 0 && (int64_t)s.token_offset + s.n_tokens <= a.n_tokens,
            "seqs[%d]: tokens [%d, %d + %d) exceed n_tokens %d", i, s.token_offset, s.token_offset,
            s.n_tokens, a.n_tokens);
    REQUIRE(s.sample == 0 || s.sample == 1, "seqs[%d].sample %d must be 0 or 1", i, s.sample);
    REQUIRE(s.want_logprobs == 0 || s.want_logprobs == 1, "seqs[%d].want_logprobs %d must be 0 or 1",
            i, s.want_logprobs);
    REQUIRE(s.next_token >= -1 && s.next_token < c.vocab_size,
            "seqs[%d].next_token %d must be -1 or in [0, %d)", i, s.next_token, c.vocab_size);
    REQUIRE(s.pos0 >= 0, "seqs[%d].pos0 %d must be >= 0", i, s.pos0);
    const int64_t end = (int64_t)s.pos0 + s.n_tokens;
    REQUIRE(end <= c.max_position, "seqs[%d]: seq %d would reach %lld tokens, max_position is %d", i,
            s.seq, (long long)end, c.max_position);
    REQUIRE(s.reserved == 0, "seqs[%d].reserved %d must be 0", i, s.reserved);
    if (s.history_offset == -1) {
      REQUIRE(!s.sample || !has_penalty(e.seqs[s.seq].sampling),
              "seqs[%d]: its sampling has penalties, so it needs its history (history_offset -1)", i);
    } else {
      REQUIRE(a.history, "seqs[%d]: history_offset %d but history is null", i, s.history_offset);
      REQUIRE(s.history_offset >= 0 && (int64_t)s.history_offset + s.pos0 <= a.n_history,
              "seqs[%d]: history [%d, %d + %d) exceeds n_history %d", i, s.history_offset,
              s.history_offset, s.pos0, a.n_history);
    }
    REQUIRE(a.pages || s.n_pages == 0, "pages is null");
    nsn_status st = validate_pages(e, a, i);
    if (st != NSN_OK) return st;
    spans[i] = {s.token_offset, s.n_tokens};
    any_sample |= s.sample == 1;
    any_logprobs |= s.want_logprobs == 1;
  }
  // The chunks must tile tokens[] exactly (in any order): no gap, no overlap.
  std::sort(spans.begin(), spans.end());
  int64_t next = 0;
  for (const auto& [off, n] : spans) {
    REQUIRE(off == next, "chunks do not tile tokens[]: a chunk starts at %d where %lld was expected",
            off, (long long)next);
    next += n;
  }
  REQUIRE(next == a.n_tokens, "chunks cover %lld tokens, n_tokens is %d", (long long)next, a.n_tokens);
  for (int32_t t = 0; t < a.n_tokens; t++) {
    REQUIRE(a.tokens[t] >= 0 && a.tokens[t] < c.vocab_size, "tokens[%d] = %d is not in [0, %d)", t,
            a.tokens[t], c.vocab_size);
  }
  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& s = a.in[i];
    if (s.history_offset < 0) continue;
    for (int32_t t = s.history_offset; t < s.history_offset + s.pos0; t++) {
      REQUIRE(a.history[t] >= 0 && a.history[t] < c.vocab_size,
              "history[%d] = %d (seqs[%d]) is not in [0, %d)", t, a.history[t], i, c.vocab_size);
    }
  }
  REQUIRE(!any_sample || a.out, "a sequence samples but out is null");
  REQUIRE(!any_logprobs || a.pos_logprob, "a sequence wants logprobs but pos_logprob is null");
  REQUIRE(!any_logprobs || a.top_n == 0 || (a.pos_top_ids && a.pos_top_logprobs),
          "a sequence wants top-%d logprobs but pos_top_ids / pos_top_logprobs is null", a.top_n);
  return NSN_OK;
}

// Backend-independent planning (backend.h StepPlan): the rows that need logits.
void plan_logit_rows(const StepPlan& plan, std::vector<int32_t>& rows, std::vector<int32_t>& seq) {
  if (plan.logits) {
    seq.resize(plan.n_tokens);
    for (int32_t i = 0; i < plan.n_seqs; i++)
      for (int32_t j = 0; j < plan.seqs[i].n_new; j++) seq[plan.seqs[i].tok_offset + j] = i;
    for (int32_t t = 0; t < plan.n_tokens; t++) rows.push_back(t);
    return;
  }
  for (int32_t i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    const int32_t first = s.want_logprobs ? 0 : s.sample ? s.n_new - 1 : s.n_new;
    for (int32_t j = first; j < s.n_new; j++) {
      rows.push_back(s.tok_offset + j);
      seq.push_back(i);
    }
  }
}

// Every output starts as "nothing"; the backend fills what it computes.
void preset_outputs(const StepPlan& plan) {
  const size_t T = plan.n_tokens, top = plan.top_n;
  if (plan.pos_logprob) std::fill(plan.pos_logprob, plan.pos_logprob + T, NAN);
  if (top && plan.pos_top_ids) std::fill(plan.pos_top_ids, plan.pos_top_ids + T * top, -1);
  if (top && plan.pos_top_logprobs) std::fill(plan.pos_top_logprobs, plan.pos_top_logprobs + T * top, NAN);
  for (int32_t i = 0; plan.out && i < plan.n_seqs; i++) {
    nsn_seq_output& o = plan.out[i];
    o.token = -1;
    o.logprob = NAN;
    std::fill(o.top_ids, o.top_ids + NSN_MAX_TOP_N, -1);
    std::fill(o.top_logprobs, o.top_logprobs + NSN_MAX_TOP_N, NAN);
  }
}

nsn_status run_step(nsn_engine& e, const StepArgs& a) {
  nsn_status st = validate(e, a);
  if (st != NSN_OK) return st;
  if ((st = validate_writes(e, a)) != NSN_OK) return st;

  // Page tables as arena offsets; kv_bits 1/2 add the tail for a partial last window.
  size_t n_table = 0;
  for (int32_t i = 0; i < a.n_seqs; i++) n_table += a.in[i].n_pages + 1;
  std::vector<int64_t> table;
  table.reserve(n_table);
  std::vector<SeqStep> plan_seqs(a.n_seqs);
  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& in = a.in[i];
    const Seq& s = e.seqs[in.seq];
    const int kind = kind_of_bits(s.kv_bits);
    SeqStep& ps = plan_seqs[i];
    ps.seq = in.seq;
    ps.kv_bits = s.kv_bits;
    ps.pos0 = in.pos0;
    ps.n_new = in.n_tokens;
    ps.tok_offset = in.token_offset;
    ps.sample = in.sample;
    ps.want_logprobs = in.want_logprobs;
    ps.next_token = in.next_token;
    ps.n_windows = (in.pos0 + in.n_tokens + kWindow - 1) / kWindow;
    ps.page_off = table.data() + table.size();
    for (int32_t w = 0; w < in.n_pages; w++) {
      table.push_back(e.page_offset(kind, a.pages[in.page_offset + w]));
    }
    ps.tail_off = s.kv_bits == 16 ? -1 : e.page_offset(KV_F16, in.tail_page);
    if (s.kv_bits != 16 && in.n_pages < ps.n_windows) table.push_back(ps.tail_off);
    ps.sampling = &s.sampling;
    ps.bias_ids = s.bias_ids.data();
    ps.bias_values = s.bias_values.data();
    ps.n_bias = (int32_t)s.bias_ids.size();
    ps.history = in.history_offset < 0 ? nullptr : a.history + in.history_offset;
    ps.history_len = in.pos0;
  }

  StepPlan plan{};
  plan.seqs = plan_seqs.data();
  plan.n_seqs = a.n_seqs;
  plan.tokens = a.tokens;
  plan.n_tokens = a.n_tokens;
  plan.top_n = a.top_n;
  plan.out = a.out;
  plan.pos_logprob = a.pos_logprob;
  plan.pos_top_ids = a.pos_top_ids;
  plan.pos_top_logprobs = a.pos_top_logprobs;
  plan.logits = a.logits;
  std::vector<int32_t> logit_rows, logit_seq;
  plan_logit_rows(plan, logit_rows, logit_seq);
  plan.logit_rows = logit_rows.data();
  plan.logit_seq = logit_seq.data();
  plan.n_logit_rows = (int32_t)logit_rows.size();
  preset_outputs(plan);
  st = e.backend->step(plan);
  if (st != NSN_OK) return st;
  if (e.spec.opts.debug_checks) return e.check();
  return NSN_OK;
}

}  // namespace

extern "C" nsn_status nsn_step(nsn_engine* e, const nsn_seq_input* seqs, int32_t n_seqs,
                               const int32_t* tokens, int32_t n_tokens, const int32_t* pages,
                               int32_t n_pages, const int32_t* history, int32_t n_history,
                               int32_t top_n, nsn_seq_output* out, float* pos_logprob,
                               int32_t* pos_top_ids, float* pos_top_logprobs, float* logits) {
  return guarded([&]() -> nsn_status {
    if (!e) return set_error(NSN_E_INVALID, "engine handle is null");
    if (!e->finalized) {
      return set_error(NSN_E_STATE, "engine is not finalized (call nsn_engine_finalize first)");
    }
    if (e->faults_pending > 0) {
      e->faults_pending--;
      return set_error(NSN_E_INTERNAL, "injected fault");
    }
    const StepArgs a{seqs, n_seqs, tokens, n_tokens, pages, n_pages, history, n_history, top_n,
                     out, pos_logprob, pos_top_ids, pos_top_logprobs, logits};
    return run_step(*e, a);
  });
}
