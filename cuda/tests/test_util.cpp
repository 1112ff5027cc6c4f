// test_util.cpp: see test_util.h.
#include "test_util.h"

#include <algorithm>
#include <map>

int g_failures = 0;

namespace {

struct TestSeq {
  int32_t kv_bits = 16;
  int32_t len = 0;
  std::vector<int32_t> tokens;
  std::vector<int32_t> pages;
  int32_t tail = -1;
};

// Page ids per kind: slabs are handed to a kind on first need and never return (tests are short).
struct TestPool {
  uint64_t n_slabs = 0, per_slab[3] = {}, next_slab = 0;
  std::vector<int32_t> free_ids[3];
  std::map<int32_t, TestSeq> seqs;

  int32_t take(int kind) {
    if (free_ids[kind].empty()) {
      if (next_slab >= n_slabs) return -1;
      const uint64_t slab = next_slab++;
      for (uint64_t i = per_slab[kind]; i-- > 0;) free_ids[kind].push_back((int32_t)(slab * per_slab[kind] + i));
    }
    const int32_t id = free_ids[kind].back();
    free_ids[kind].pop_back();
    return id;
  }
};

std::map<nsn_engine*, TestPool> g_pools;

int kind_of(int kv_bits) { return kv_bits == 16 ? 0 : kv_bits == 2 ? 1 : 2; }

TestPool& pool_of(nsn_engine* e) {
  TestPool& p = g_pools[e];
  if (p.n_slabs == 0) {
    nsn_engine_info i{};
    if (nsn_engine_get_info(e, &i) == NSN_OK) {
      p.n_slabs = i.n_slabs;
      for (int k = 0; k < 3; k++) p.per_slab[k] = i.pages_per_slab[k];
    }
  }
  return p;
}

int32_t table_pages(int kv_bits, int64_t end) { return (int32_t)(kv_bits == 16 ? (end + 63) / 64 : end / 64); }

}  // namespace

nsn_status seq_create(nsn_engine* e, int32_t kv_bits, int32_t* seq_out) {
  const nsn_status st = nsn_seq_create(e, kv_bits, seq_out);
  if (st == NSN_OK) {
    TestSeq s;
    s.kv_bits = kv_bits;
    pool_of(e).seqs[*seq_out] = s;
  }
  return st;
}

nsn_status seq_free(nsn_engine* e, int32_t seq) {
  const nsn_status st = nsn_seq_free(e, seq);
  TestPool& p = pool_of(e);
  auto it = p.seqs.find(seq);
  if (st == NSN_OK && it != p.seqs.end()) {
    for (int32_t id : it->second.pages) p.free_ids[kind_of(it->second.kv_bits)].push_back(id);
    if (it->second.tail >= 0) p.free_ids[0].push_back(it->second.tail);
    p.seqs.erase(it);
  }
  return st;
}

void forget_engine(nsn_engine* e) { g_pools.erase(e); }

nsn_status seq_read_kv(nsn_engine* e, int32_t seq, int32_t layer, int32_t kv_head, int32_t start,
                       int32_t count, float* k_out, float* v_out) {
  const TestSeq& s = pool_of(e).seqs[seq];
  const int32_t n = table_pages(s.kv_bits, s.len);
  return nsn_seq_read_kv(e, s.kv_bits, s.pages.data(), n, s.tail, s.len, layer, kv_head, start,
                         count, k_out, v_out);
}

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
  TestPool& pool = pool_of(e);
  std::vector<nsn_seq_input> in;
  std::vector<int32_t> tokens, pages, history;
  for (const Chunk& c : chunks) {
    TestSeq& ts = pool.seqs[c.seq];
    nsn_seq_input s{};
    s.seq = c.seq;
    s.pos0 = ts.len;
    s.n_tokens = (int32_t)c.tokens.size();
    s.token_offset = (int32_t)tokens.size();
    s.sample = c.sample;
    s.want_logprobs = c.want_logprobs;
    s.next_token = c.next_token;
    const int64_t end = (int64_t)ts.len + (int64_t)c.tokens.size();
    if (ts.kv_bits != 16 && ts.tail < 0) ts.tail = pool.take(0);
    while ((int64_t)ts.pages.size() < table_pages(ts.kv_bits, end)) {
      const int32_t id = pool.take(kind_of(ts.kv_bits));
      if (id < 0) break;  // the step fails its page-count check
      ts.pages.push_back(id);
    }
    s.page_offset = (int32_t)pages.size();
    s.n_pages = std::min<int32_t>((int32_t)ts.pages.size(), table_pages(ts.kv_bits, end));
    pages.insert(pages.end(), ts.pages.begin(), ts.pages.begin() + s.n_pages);
    s.tail_page = ts.tail;
    s.history_offset = ts.len > 0 ? (int32_t)history.size() : -1;
    history.insert(history.end(), ts.tokens.begin(), ts.tokens.end());
    r.offsets.push_back(s.token_offset);
    tokens.insert(tokens.end(), c.tokens.begin(), c.tokens.end());
    in.push_back(s);
  }
  r.out.assign(chunks.size(), nsn_seq_output{});
  r.pos_logprob.assign(tokens.size(), 0.0f);
  r.pos_top_ids.assign(tokens.size() * (top_n ? top_n : 1), 0);
  r.pos_top_logprobs.assign(tokens.size() * (top_n ? top_n : 1), 0.0f);
  if (want_logits) r.logits.assign(tokens.size() * (size_t)vocab, 0.0f);
  r.status = nsn_step(e, in.data(), (int32_t)in.size(), tokens.data(), (int32_t)tokens.size(),
                      pages.data(), (int32_t)pages.size(), history.data(), (int32_t)history.size(),
                      top_n, r.out.data(), r.pos_logprob.data(), r.pos_top_ids.data(),
                      r.pos_top_logprobs.data(), want_logits ? r.logits.data() : nullptr);
  if (r.status == NSN_OK) {
    for (const Chunk& c : chunks) {
      TestSeq& ts = pool.seqs[c.seq];
      ts.len += (int32_t)c.tokens.size();
      ts.tokens.insert(ts.tokens.end(), c.tokens.begin(), c.tokens.end());
    }
  }
  return r;
}

int32_t seq_len(nsn_engine* e, int32_t seq) { return pool_of(e).seqs[seq].len; }

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
