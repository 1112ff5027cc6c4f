// sampling.cpp: the reference sampler (procedure in sampling.h).
#include "sampling.h"

#include <math.h>

#include <algorithm>

#include "random.h"

namespace nsn {

float logsumexp(const float* z, int32_t vocab) {
  float mx = -INFINITY;
  for (int32_t i = 0; i < vocab; i++) mx = z[i] > mx ? z[i] : mx;
  if (mx == -INFINITY) return -INFINITY;
  double sum = 0.0;
  for (int32_t i = 0; i < vocab; i++) sum += exp((double)(z[i] - mx));
  return mx + (float)log(sum);
}

void top_logprobs(const float* z, int32_t vocab, float lse, int32_t n, int32_t slots, int32_t* ids,
                  float* logprobs) {
  n = std::min(n, vocab);
  // Insertion into a short sorted list: n <= 20, and most logits fail the first comparison.
  int32_t best[NSN_MAX_TOP_N];
  int32_t have = 0;
  for (int32_t i = 0; i < vocab && n > 0; i++) {
    if (have == n && !(z[i] > z[best[n - 1]])) continue;  // ties keep the lower id
    int32_t j = have < n ? have++ : n - 1;
    while (j > 0 && z[i] > z[best[j - 1]]) {
      best[j] = best[j - 1];
      j--;
    }
    best[j] = i;
  }
  for (int32_t j = 0; j < slots; j++) {
    ids[j] = j < have ? best[j] : -1;
    logprobs[j] = j < have ? z[best[j]] - lse : NAN;
  }
}

namespace {

int32_t argmax(const float* z, int32_t vocab) {
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; i++) {
    if (z[i] > z[best]) best = i;
  }
  return best;
}

// Steps 2-3: penalties from the tokens at positions < P.
void apply_penalties(const SampleInput& in, SampleScratch& s, float* z) {
  const nsn_sampling& sp = *in.params;
  const bool rep = sp.repetition_penalty != 1.0f;
  const bool freq = sp.frequency_penalty != 0.0f || sp.presence_penalty != 0.0f;
  if (!rep && !freq) return;
  if ((int32_t)s.seen.size() < in.vocab) {
    s.seen.assign(in.vocab, 0);
    s.out_count.assign(in.vocab, 0);
  }
  s.touched.clear();
  const int32_t total = in.history_len + in.chunk_len;
  for (int32_t pos = 0; pos < total; pos++) {
    const int32_t t = pos < in.history_len ? in.history[pos] : in.chunk[pos - in.history_len];
    if (!s.seen[t]) s.touched.push_back(t);
    s.seen[t] = 1;
    if (pos >= sp.n_prompt) s.out_count[t]++;
  }
  for (int32_t t : s.touched) {
    if (rep) z[t] = z[t] > 0.0f ? z[t] / sp.repetition_penalty : z[t] * sp.repetition_penalty;
    const int32_t c = s.out_count[t];
    if (c > 0) z[t] -= sp.frequency_penalty * (float)c + sp.presence_penalty;
    s.seen[t] = 0;
    s.out_count[t] = 0;
  }
}

}  // namespace

int32_t sample_token(const SampleInput& in, SampleScratch& s) {
  const nsn_sampling& sp = *in.params;
  const int32_t V = in.vocab;
  s.z.assign(in.logits, in.logits + V);
  float* z = s.z.data();
  for (int32_t i = 0; i < in.n_bias; i++) z[in.bias_ids[i]] += in.bias_values[i];
  apply_penalties(in, s, z);
  const int64_t P = (int64_t)in.history_len + in.chunk_len;
  if (P - sp.n_prompt < sp.min_tokens) {
    for (int32_t i = 0; i < sp.n_stop_ids; i++) z[sp.stop_ids[i]] = -INFINITY;
  }
  const int32_t greedy = argmax(z, V);
  if (sp.temperature == 0.0f) return greedy;

  s.order.clear();
  for (int32_t i = 0; i < V; i++) {
    z[i] /= sp.temperature;
    if (z[i] > -INFINITY) s.order.push_back(i);
  }
  if (s.order.empty()) return greedy;
  auto ranked = [z](int32_t a, int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); };
  size_t n = s.order.size();
  const bool need_rank = (sp.top_k > 0 && (size_t)sp.top_k < n) || sp.top_p < 1.0f;
  if (need_rank) {
    // Only the part of the ranking the filters look at gets sorted.
    const size_t k = sp.top_k > 0 ? std::min(n, (size_t)sp.top_k) : n;
    std::partial_sort(s.order.begin(), s.order.begin() + k, s.order.end(), ranked);
    n = k;
  }
  float top = -INFINITY;
  for (size_t i = 0; i < n; i++) top = std::max(top, z[s.order[i]]);
  auto prob = [&](int32_t t) { return expf(z[t] - top); };
  if (sp.top_p < 1.0f) {
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += prob(s.order[i]);
    const double target = (double)sp.top_p * total;
    double run = 0.0;
    size_t keep = 0;
    while (keep < n) {
      run += prob(s.order[keep++]);
      if (run >= target) break;
    }
    n = keep;
  }
  // The best candidate has p = 1 >= min_p, so at least one token stays.
  if ((int32_t)s.kept.size() < V) s.kept.assign(V, 0);
  int32_t lo = V, hi = -1;
  for (size_t i = 0; i < n; i++) {
    const int32_t t = s.order[i];
    if (sp.min_p > 0.0f && prob(t) < sp.min_p) continue;
    s.kept[t] = 1;
    lo = std::min(lo, t);
    hi = std::max(hi, t);
  }
  // The draw walks the kept set in id order: it needs the set, not its ranking.
  double total = 0.0;
  for (int32_t t = lo; t <= hi; t++) {
    if (s.kept[t]) total += prob(t);
  }
  const double target = (double)sample_uniform(sp.seed, P) * total;
  double run = 0.0;
  int32_t chosen = -1, last = -1;
  for (int32_t t = lo; t <= hi; t++) {
    if (!s.kept[t]) continue;
    s.kept[t] = 0;  // leave the flags clear for the next call
    last = t;
    if (chosen < 0) {
      run += prob(t);
      if (run > target) chosen = t;
    }
  }
  return chosen >= 0 ? chosen : last;  // rounding may leave the sum at the target
}

}  // namespace nsn
