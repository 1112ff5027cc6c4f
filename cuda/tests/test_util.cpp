// test_util.cpp: see test_util.h.
#include "test_util.h"

int g_failures = 0;

nsn_engine* make_engine(const nsn_model_config& c, const nsn_engine_options& o, uint64_t seed) {
  nsn_engine* e = nullptr;
  CHECK_ST(nsn_engine_create(&c, &o, &e), NSN_OK);
  if (!e) return nullptr;
  CHECK_ST(nsn_engine_init_random(e, seed), NSN_OK);
  CHECK_ST(nsn_engine_finalize(e), NSN_OK);
  return e;
}

std::vector<int32_t> make_tokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t(n);
  uint32_t x = seed * 2654435761u + 1;
  for (int i = 0; i < n; i++) {
    x = x * 1664525u + 1013904223u;
    t[i] = (int32_t)((x >> 8) % (uint32_t)vocab);
  }
  return t;
}

StepOut step(nsn_engine* e, int vocab, const std::vector<Chunk>& chunks, int top_n, bool want_logits) {
  StepOut r;
  std::vector<nsn_seq_input> in;
  std::vector<int32_t> tokens;
  for (const Chunk& c : chunks) {
    nsn_seq_input s{};
    s.seq = c.seq;
    s.n_tokens = (int32_t)c.tokens.size();
    s.token_offset = (int32_t)tokens.size();
    s.sample = c.sample;
    s.want_logprobs = c.want_logprobs;
    s.next_token = c.next_token;
    r.offsets.push_back(s.token_offset);
    tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
    in.push_back(s);
  }
  r.out.assign(chunks.size(), nsn_seq_output{});
  r.pos_logprob.assign(tokens.size(), 0.0f);
  r.pos_top_ids.assign(tokens.size() * (top_n ? top_n : 1), 0);
  r.pos_top_logprobs.assign(tokens.size() * (top_n ? top_n : 1), 0.0f);
  if (want_logits) r.logits.assign(tokens.size() * (size_t)vocab, 0.0f);
  r.status = nsn_step(e, in.data(), (int32_t)in.size(), tokens.data(), (int32_t)tokens.size(), top_n,
                      r.out.data(), r.pos_logprob.data(), r.pos_top_ids.data(), r.pos_top_logprobs.data(),
                      want_logits ? r.logits.data() : nullptr);
  return r;
}

int32_t seq_len(nsn_engine* e, int32_t seq) {
  int32_t n = -1;
  CHECK_ST(nsn_seq_length(e, seq, &n), NSN_OK);
  return n;
}

nsn_engine_info info(nsn_engine* e) {
  nsn_engine_info i{};
  CHECK_ST(nsn_engine_get_info(e, &i), NSN_OK);
  return i;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) {
    const float d = fabsf(a[i] - b[i]);
    if (!(d <= m)) m = d;  // NaN propagates as a failure
  }
  return m;
}
