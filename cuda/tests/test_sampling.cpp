// test_sampling.cpp: the sampler by itself (sampling.h's procedure, on hand-made logits) and
// through nsn_step (greedy, logprobs, seeds, min_tokens, logit_bias).
#include <algorithm>

#include "../src/sampling.h"
#include "test_util.h"

namespace {

constexpr int V = 512;

nsn_sampling params(float temperature) {
  nsn_sampling s{};
  s.temperature = temperature;
  s.top_p = 1;
  s.repetition_penalty = 1;
  s.seed = 99;
  return s;
}

// Frequencies of sample_token over `draws` positions.
std::vector<double> frequencies(const std::vector<float>& z, const nsn_sampling& p, int draws,
                                const std::vector<int32_t>& history = {}) {
  nsn::SampleScratch sc;
  std::vector<double> f(z.size(), 0.0);
  for (int i = 0; i < draws; i++) {
    nsn_sampling q = p;
    q.seed = p.seed + (uint64_t)i * 7919;  // a fresh stream per draw
    nsn::SampleInput in{z.data(), (int32_t)z.size(), &q, nullptr, nullptr, 0,
                        history.data(), (int32_t)history.size(), nullptr, 0};
    f[nsn::sample_token(in, sc)] += 1.0 / draws;
  }
  return f;
}

void test_sampler_unit() {
  const std::vector<float> z = {0, 1, 2, 3};
  double e[4], sum = 0;
  for (int i = 0; i < 4; i++) sum += e[i] = exp(z[i]);
  std::vector<double> f = frequencies(z, params(1), 20000);
  for (int i = 0; i < 4; i++) {
    CHECK(fabs(f[i] - e[i] / sum) < 0.015, "softmax frequency of %d: %.3f vs %.3f", i, f[i], e[i] / sum);
  }
  nsn_sampling p = params(1);
  p.top_k = 2;
  f = frequencies(z, p, 5000);
  CHECK(f[0] == 0 && f[1] == 0 && fabs(f[3] - e[3] / (e[2] + e[3])) < 0.03, "top_k 2: %.3f %.3f %.3f %.3f",
        f[0], f[1], f[2], f[3]);
  p = params(1);
  p.top_p = 0.5f;  // the best token alone holds 0.64
  f = frequencies(z, p, 500);
  CHECK(f[3] > 0.9999, "top_p 0.5 keeps one token: %.3f", f[3]);
  p.top_p = 0.7f;  // needs the two best (0.64 + 0.24)
  f = frequencies(z, p, 3000);
  CHECK(f[0] == 0 && f[1] == 0 && f[2] > 0.15, "top_p 0.7: %.3f %.3f %.3f", f[0], f[1], f[2]);
  p = params(1);
  p.min_p = 0.3f;  // p / p_max = 0.05, 0.14, 0.37, 1
  f = frequencies(z, p, 3000);
  CHECK(f[0] == 0 && f[1] == 0 && f[2] > 0.15, "min_p 0.3: %.3f %.3f %.3f", f[0], f[1], f[2]);
  p = params(0.25f);  // sharper: the best token dominates
  f = frequencies(z, p, 3000);
  CHECK(f[3] > 0.95, "temperature 0.25: %.3f", f[3]);

  nsn::SampleScratch sc;
  auto greedy = [&](const std::vector<float>& logits, const nsn_sampling& sp, const std::vector<int32_t>& hist) {
    nsn::SampleInput in{logits.data(), (int32_t)logits.size(), &sp, nullptr, nullptr, 0,
                        hist.data(), (int32_t)hist.size(), nullptr, 0};
    return nsn::sample_token(in, sc);
  };
  // Repetition penalty: positive logits divided, negative multiplied.
  p = params(0);
  p.repetition_penalty = 2;
  CHECK(greedy({-1, 1, 2, 3}, p, {0, 3}) == 2, "repetition penalty 3 -> 1.5 < 2");
  CHECK(greedy({-1, 1, 2, 3}, params(0), {0, 3}) == 3, "no penalty");
  // Frequency / presence penalties count output positions only (>= n_prompt).
  p = params(0);
  p.n_prompt = 1;
  p.frequency_penalty = 0.6f;
  p.presence_penalty = 0.5f;
  CHECK(greedy({0, 1, 2.5f, 2.4f}, p, {3, 2, 2}) == 3, "2.5 - 2 * 0.6 - 0.5 < 2.4");
  CHECK(greedy({0, 1, 2.4f, 2.5f}, p, {3, 2, 2}) == 3, "prompt token 3 is not penalized");
  // Ties go to the lowest id.
  CHECK(greedy({1, 5, 5, 2}, params(0), {}) == 1, "lowest id among equal logits");
  // Everything banned: still a valid id.
  p = params(1);
  p.n_stop_ids = 2;
  p.stop_ids[0] = 0;
  p.stop_ids[1] = 1;
  p.min_tokens = 3;
  const int t = greedy({1, 2}, p, {});
  CHECK(t == 0 || t == 1, "all-banned draw returns an id: %d", t);
  // logsumexp and top_logprobs.
  const std::vector<float> zz = {0.5f, 2, 2, -1, 3};
  const float lse = nsn::logsumexp(zz.data(), 5);
  double ref = 0;
  for (float x : zz) ref += exp(x);
  CHECK(fabs(lse - log(ref)) < 1e-5, "lse %f vs %f", lse, log(ref));
  int32_t ids[6];
  float lps[6];
  nsn::top_logprobs(zz.data(), 5, lse, 4, 6, ids, lps);
  CHECK(ids[0] == 4 && ids[1] == 1 && ids[2] == 2 && ids[3] == 0 && ids[4] == -1 && std::isnan(lps[5]),
        "top ids %d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);
  CHECK(fabsf(lps[0] - (3 - lse)) < 1e-6f, "top logprob");
}

int argmax(const float* z, int n) {
  return (int)(std::max_element(z, z + n) - z);  // first maximum = lowest id
}

double lse_ref(const float* z, int n) {
  double m = z[argmax(z, n)], s = 0;
  for (int i = 0; i < n; i++) s += exp(z[i] - m);
  return m + log(s);
}

void test_sampling_engine() {
  const nsn_model_config c = tiny_config(64);
  nsn_engine* e = make_engine(c, cpu_options());
  int32_t s;
  CHECK_ST(seq_create(e, 2, &s), NSN_OK);
  const std::vector<int32_t> prompt = make_tokens(20, V, 51);
  Chunk ch{s, prompt, true, true, -1};
  StepOut r = step(e, V, {ch}, 5);
  CHECK(r.status == NSN_OK, "%s", nsn_last_error());
  const float* last = r.logits.data() + 19 * V;
  const int best = argmax(last, V);
  const double lse = lse_ref(last, V);
  CHECK(r.out[0].token == best, "greedy %d = argmax %d", r.out[0].token, best);
  CHECK(fabs(r.out[0].logprob - (last[best] - lse)) < 1e-4, "logprob %f vs %f", r.out[0].logprob,
        last[best] - lse);
  CHECK(r.out[0].top_ids[0] == best && r.out[0].top_ids[5] == -1 && std::isnan(r.out[0].top_logprobs[5]),
        "top-5 of the output");
  for (int j = 1; j < 5; j++) {
    CHECK(r.out[0].top_logprobs[j] <= r.out[0].top_logprobs[j - 1], "top logprobs descend");
  }
  float worst = 0;
  for (int i = 0; i < 19; i++) {
    const float* z = r.logits.data() + (size_t)i * V;
    worst = std::max(worst, fabsf(r.pos_logprob[i] - (float)(z[prompt[i + 1]] - lse_ref(z, V))));
    CHECK(r.pos_top_ids[i * 5] == argmax(z, V), "position %d top id", i);
  }
  CHECK(worst < 1e-4f, "prompt logprobs: worst error %g", worst);
  CHECK(std::isnan(r.pos_logprob[19]), "unknown next token -> NaN");

  // next_token fills the last position; rows not asking for logprobs stay NaN.
  int32_t s2;
  CHECK_ST(seq_create(e, 16, &s2), NSN_OK);
  r = step(e, V, {{s, {best}, false, true, 7}, {s2, {1, 2, 3}}}, 2);
  CHECK(r.status == NSN_OK, "%s", nsn_last_error());
  CHECK(fabs(r.pos_logprob[0] - (r.logits[7] - lse_ref(r.logits.data(), V))) < 1e-4, "next_token logprob");
  CHECK(std::isnan(r.pos_logprob[1]) && r.pos_top_ids[2] == -1, "rows without want_logprobs");

  // Logprobs of a chunk longer than one logits block, with and without the full logits.
  {
    int32_t a, b;
    CHECK_ST(seq_create(e, 1, &a), NSN_OK);
    CHECK_ST(seq_create(e, 1, &b), NSN_OK);
    const std::vector<int32_t> long_prompt = make_tokens(150, V, 52);
    const StepOut with = step(e, V, {{a, long_prompt, true, true, 3}}, 3, true);
    const StepOut without = step(e, V, {{b, long_prompt, true, true, 3}}, 3, false);
    CHECK(with.status == NSN_OK && without.status == NSN_OK, "%s", nsn_last_error());
    CHECK(with.pos_logprob == without.pos_logprob && with.pos_top_ids == without.pos_top_ids &&
              with.out[0].token == without.out[0].token,
          "logprobs do not depend on whether logits are returned");
    CHECK_ST(seq_free(e, a), NSN_OK);
    CHECK_ST(seq_free(e, b), NSN_OK);
  }

  // top_k = 1 is greedy whatever the temperature.
  nsn_sampling sp = params(1.3f);
  sp.top_k = 1;
  CHECK_ST(nsn_seq_set_sampling(e, s2, &sp, nullptr, nullptr, 0), NSN_OK);
  r = step(e, V, {{s2, {4}, true}});
  CHECK(r.out[0].token == argmax(r.logits.data(), V), "top_k 1 = greedy");

  forget_engine(e);
  nsn_engine_destroy(e);

  // min_tokens and logit_bias, each in a fresh engine: same state, only the parameters differ.
  auto first_token = [&](const nsn_sampling& p, const std::vector<int32_t>& bias_ids,
                         const std::vector<float>& bias_values, int* best_out, int* second_out) {
    nsn_engine* f = make_engine(c, cpu_options());
    int32_t q;
    CHECK_ST(seq_create(f, 16, &q), NSN_OK);
    CHECK_ST(nsn_seq_set_sampling(f, q, &p, bias_ids.data(), bias_values.data(), (int32_t)bias_ids.size()),
             NSN_OK);
    const StepOut o = step(f, V, {{q, prompt, true}});
    const float* z = o.logits.data() + 19 * V;
    std::vector<int> order(V);
    for (int i = 0; i < V; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
    *best_out = order[0];
    *second_out = order[1];
    forget_engine(f);
  nsn_engine_destroy(f);
    return o.out[0].token;
  };
  int b1, b2;
  nsn_sampling g = params(0);
  const int plain = first_token(g, {}, {}, &b1, &b2);
  CHECK(plain == b1, "greedy");
  g.n_prompt = 20;
  g.min_tokens = 1;
  g.n_stop_ids = 1;
  g.stop_ids[0] = b1;
  CHECK(first_token(g, {}, {}, &b1, &b2) == b2, "min_tokens bans the stop id");
  g.min_tokens = 0;
  CHECK(first_token(g, {}, {}, &b1, &b2) == b1, "min_tokens 0 allows it");
  g = params(0);
  CHECK(first_token(g, {5}, {100}, &b1, &b2) == 5, "logit_bias +100 forces a token");
  CHECK(first_token(g, {b1}, {-100}, &b1, &b2) == b2, "logit_bias -100 bans a token");
  CHECK(first_token(g, {b1}, {-100}, &b1, &b2) != b1, "banned");
}

// A seeded sequence draws the same tokens alone or among other sequences.
void test_seed_batch_independence() {
  const nsn_model_config c = tiny_config(64);
  auto generate = [&](int companions, uint64_t seed) {
    nsn_engine* e = make_engine(c, cpu_options());
    int32_t s;
    CHECK_ST(seq_create(e, 1, &s), NSN_OK);
    nsn_sampling p = params(1.0f);
    p.top_p = 0.95f;
    p.seed = seed;
    CHECK_ST(nsn_seq_set_sampling(e, s, &p, nullptr, nullptr, 0), NSN_OK);
    std::vector<int32_t> others(companions);
    for (int i = 0; i < companions; i++) {
      CHECK_ST(seq_create(e, i % 2 ? 16 : 2, &others[i]), NSN_OK);
      nsn_sampling q = params(0.8f);
      q.seed = 1000 + i;
      CHECK_ST(nsn_seq_set_sampling(e, others[i], &q, nullptr, nullptr, 0), NSN_OK);
    }
    std::vector<int32_t> out;
    std::vector<int32_t> next_other(companions, 3);
    int32_t next = -1;
    for (int t = 0; t < 30; t++) {
      std::vector<Chunk> chunks;
      for (int i = 0; i < companions; i++) {
        chunks.push_back({others[i], t == 0 ? make_tokens(5 + 17 * i, V, 60 + i) : std::vector<int32_t>{next_other[i]}, true});
      }
      chunks.insert(chunks.begin() + companions / 2,
                    Chunk{s, t == 0 ? make_tokens(12, V, 61) : std::vector<int32_t>{next}, true});
      const StepOut r = step(e, V, chunks, 0, false);
      CHECK(r.status == NSN_OK, "%s", nsn_last_error());
      for (size_t i = 0, k = 0; i < chunks.size(); i++) {
        if (chunks[i].seq == s) {
          next = r.out[i].token;
        } else {
          next_other[k++] = r.out[i].token;
        }
      }
      out.push_back(next);
    }
    forget_engine(e);
  nsn_engine_destroy(e);
    return out;
  };
  const std::vector<int32_t> alone = generate(0, 5), crowd = generate(3, 5), other = generate(0, 6);
  CHECK(alone == crowd, "seeded draws do not depend on the batch");
  CHECK(alone != other, "another seed draws other tokens");
}

}  // namespace

void test_sampling() {
  test_sampler_unit();
  test_sampling_engine();
  test_seed_batch_independence();
}
