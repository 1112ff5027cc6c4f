// engine_step.cpp: nsn_step. Checks the whole batch, reserves every page it needs (all or
// nothing), hands the plan to the backend, and rolls the bookkeeping back if the backend fails,
// so a failed step leaves the engine as it was.
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
  int32_t top_n;
  nsn_seq_output* out;
  float* pos_logprob;
  int32_t* pos_top_ids;
  float* pos_top_logprobs;
  float* logits;
};

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
    const int64_t end = (int64_t)e.seqs[s.seq].len + s.n_tokens;
    REQUIRE(end <= c.max_position, "seqs[%d]: seq %d would reach %lld tokens, max_position is %d", i,
            s.seq, (long long)end, c.max_position);
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
  REQUIRE(!any_sample || a.out, "a sequence samples but out is null");
  REQUIRE(!any_logprobs || a.pos_logprob, "a sequence wants logprobs but pos_logprob is null");
  REQUIRE(!any_logprobs || a.top_n == 0 || (a.pos_top_ids && a.pos_top_logprobs),
          "a sequence wants top-%d logprobs but pos_top_ids / pos_top_logprobs is null", a.top_n);
  return NSN_OK;
}

// What one sequence had before the step, to undo its allocations.
struct Undo {
  Seq* seq;
  size_t n_pages;
  bool took_tail;
};

void roll_back(nsn_engine& e, const std::vector<Undo>& undo) {
  for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
    Seq& s = *it->seq;
    const int kind = kind_of_bits(s.kv_bits);
    while (s.pages.size() > it->n_pages) {
      e.pages.free(kind, s.pages.back());
      s.pages.pop_back();
    }
    if (it->took_tail) {
      e.pages.free(KV_F16, s.tail);
      s.tail = -1;
    }
  }
}

nsn_status run_step(nsn_engine& e, const StepArgs& a) {
  nsn_status st = validate(e, a);
  if (st != NSN_OK) return st;

  // Everything that can throw happens before the first page is taken.
  uint64_t need[kKinds] = {};
  size_t n_table = 0;
  for (int32_t i = 0; i < a.n_seqs; i++) {
    Seq& s = e.seqs[a.in[i].seq];
    const PageNeed p = pages_needed(s.kv_bits, s.len, a.in[i].n_tokens);
    need[kind_of_bits(s.kv_bits)] += p.quant;
    need[KV_F16] += p.fp16;
    s.pages.reserve(s.pages.size() + p.quant + p.fp16);
    s.history.reserve(s.len + a.in[i].n_tokens);
    n_table += (s.len + a.in[i].n_tokens + kWindow - 1) / kWindow;
  }
  if (!e.pages.fits(need)) {
    return set_error(NSN_E_OOM,
                     "KV pool exhausted: the step needs %llu fp16, %llu 2-bit and %llu 1-bit pages; "
                     "free now: %llu, %llu, %llu",
                     (unsigned long long)need[0], (unsigned long long)need[1],
                     (unsigned long long)need[2], (unsigned long long)e.pages.pages_free_now(0),
                     (unsigned long long)e.pages.pages_free_now(1),
                     (unsigned long long)e.pages.pages_free_now(2));
  }
  std::vector<SeqStep> plan_seqs(a.n_seqs);
  std::vector<int64_t> table;
  table.reserve(n_table);
  std::vector<Undo> undo;
  undo.reserve(a.n_seqs);

  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& in = a.in[i];
    Seq& s = e.seqs[in.seq];
    const PageNeed p = pages_needed(s.kv_bits, s.len, in.n_tokens);
    const int kind = kind_of_bits(s.kv_bits);
    undo.push_back({&s, s.pages.size(), p.fp16 > 0 && s.kv_bits != 16});
    if (s.kv_bits == 16) {
      for (uint64_t j = 0; j < p.fp16; j++) s.pages.push_back(e.pages.alloc(KV_F16));
    } else {
      if (p.fp16) s.tail = e.pages.alloc(KV_F16);
      for (uint64_t j = 0; j < p.quant; j++) s.pages.push_back(e.pages.alloc(kind));
    }
    SeqStep& ps = plan_seqs[i];
    ps.seq = in.seq;
    ps.kv_bits = s.kv_bits;
    ps.pos0 = s.len;
    ps.n_new = in.n_tokens;
    ps.tok_offset = in.token_offset;
    ps.sample = in.sample;
    ps.want_logprobs = in.want_logprobs;
    ps.next_token = in.next_token;
    ps.n_windows = (s.len + in.n_tokens + kWindow - 1) / kWindow;
    // Page table: complete windows, then (kv_bits 1/2) the tail for a partial last window.
    ps.page_off = table.data() + table.size();
    table.insert(table.end(), s.pages.begin(), s.pages.end());
    if (s.kv_bits != 16 && (int32_t)s.pages.size() < ps.n_windows) table.push_back(s.tail);
    ps.tail_off = s.kv_bits == 16 ? -1 : s.tail;
    ps.sampling = &s.sampling;
    ps.bias_ids = s.bias_ids.data();
    ps.bias_values = s.bias_values.data();
    ps.n_bias = (int32_t)s.bias_ids.size();
    ps.history = s.history.data();
    ps.history_len = s.len;
  }
  for (const Undo& u : undo) {
    for (size_t j = u.n_pages; j < u.seq->pages.size(); j++) {
      if (u.seq->pages[j] < 0) st = NSN_E_INTERNAL;
    }
    if (u.took_tail && u.seq->tail < 0) st = NSN_E_INTERNAL;
  }
  if (st != NSN_OK) {
    roll_back(e, undo);
    return set_error(st, "page allocation failed although the pool had room (allocator bug)");
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
  try {
    st = e.backend->step(plan);
  } catch (...) {
    roll_back(e, undo);
    throw;
  }
  if (st != NSN_OK) {
    roll_back(e, undo);
    return st;
  }
  for (int32_t i = 0; i < a.n_seqs; i++) {
    const nsn_seq_input& in = a.in[i];
    Seq& s = e.seqs[in.seq];
    s.history.insert(s.history.end(), a.tokens + in.token_offset,
                     a.tokens + in.token_offset + in.n_tokens);  // capacity reserved: no throw
    s.len += in.n_tokens;
  }
  if (e.spec.opts.debug_checks) return e.check();
  return NSN_OK;
}

}  // namespace

extern "C" nsn_status nsn_step(nsn_engine* e, const nsn_seq_input* seqs, int32_t n_seqs,
                               const int32_t* tokens, int32_t n_tokens, int32_t top_n,
                               nsn_seq_output* out, float* pos_logprob, int32_t* pos_top_ids,
                               float* pos_top_logprobs, float* logits) {
  return guarded([&]() -> nsn_status {
    if (!e) return set_error(NSN_E_INVALID, "engine handle is null");
    if (!e->finalized) {
      return set_error(NSN_E_STATE, "engine is not finalized (call nsn_engine_finalize first)");
    }
    if (e->faults_pending > 0) {
      e->faults_pending--;
      return set_error(NSN_E_INTERNAL, "injected fault");
    }
    const StepArgs a{seqs, n_seqs, tokens, n_tokens, top_n, out, pos_logprob, pos_top_ids,
                     pos_top_logprobs, logits};
    return run_step(*e, a);
  });
}
