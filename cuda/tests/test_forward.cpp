// test_forward.cpp: the CPU forward pass agrees with itself across the ways a sequence can be
// fed: batched with others or alone, whole prefill or chunks or token by token, and at kv_bits
// 1/2 exactly where the cache holds exact tokens.
#include <stdlib.h>

#include <chrono>

#include "test_util.h"

namespace {

constexpr int V = 512;

struct Feed {
  int kv_bits;
  std::vector<int32_t> prompt;
  std::vector<int32_t> decode;  // teacher-forced decode tokens
};

// Logits rows (prompt rows, then one per decode step) of every feed, run together in one batch
// (together = true) or each in its own engine.
std::vector<std::vector<float>> run_feeds(const nsn_model_config& c, const std::vector<Feed>& feeds,
                                          bool together) {
  std::vector<std::vector<float>> rows(feeds.size());
  auto run = [&](const std::vector<size_t>& which) {
    nsn_engine* e = make_engine(c, cpu_options());
    std::vector<int32_t> seq(feeds.size());
    for (size_t i : which) CHECK_ST(seq_create(e, feeds[i].kv_bits, &seq[i]), NSN_OK);
    std::vector<Chunk> chunks;
    for (size_t i : which) chunks.push_back({seq[i], feeds[i].prompt});
    StepOut r = step(e, V, chunks);
    CHECK(r.status == NSN_OK, "prefill: %s", nsn_last_error());
    for (size_t j = 0; j < which.size(); j++) {
      const size_t i = which[j];
      const float* z = r.logits.data() + (size_t)r.offsets[j] * V;
      rows[i].insert(rows[i].end(), z, z + feeds[i].prompt.size() * V);
    }
    size_t n_decode = 0;
    for (size_t i : which) n_decode = std::max(n_decode, feeds[i].decode.size());
    for (size_t t = 0; t < n_decode; t++) {
      chunks.clear();
      std::vector<size_t> in_step;
      for (size_t i : which) {
        if (t < feeds[i].decode.size()) {
          chunks.push_back({seq[i], {feeds[i].decode[t]}});
          in_step.push_back(i);
        }
      }
      r = step(e, V, chunks);
      CHECK(r.status == NSN_OK, "decode: %s", nsn_last_error());
      for (size_t j = 0; j < in_step.size(); j++) {
        const float* z = r.logits.data() + (size_t)r.offsets[j] * V;
        rows[in_step[j]].insert(rows[in_step[j]].end(), z, z + V);
      }
    }
    forget_engine(e);
  nsn_engine_destroy(e);
  };
  if (together) {
    std::vector<size_t> all(feeds.size());
    for (size_t i = 0; i < feeds.size(); i++) all[i] = i;
    run(all);
  } else {
    for (size_t i = 0; i < feeds.size(); i++) run({i});
  }
  return rows;
}

void test_batch_invariance(int head_dim) {
  const nsn_model_config c = tiny_config(head_dim);
  // Lengths chosen so decoding crosses window boundaries at every precision.
  const std::vector<Feed> feeds = {
      {16, make_tokens(100, V, 1), make_tokens(60, V, 11)},
      {2, make_tokens(70, V, 2), make_tokens(60, V, 12)},
      {1, make_tokens(150, V, 3), make_tokens(60, V, 13)},
      {2, make_tokens(3, V, 4), make_tokens(62, V, 14)},
      {1, make_tokens(64, V, 5), make_tokens(20, V, 15)},
  };
  const auto batched = run_feeds(c, feeds, true);
  const auto alone = run_feeds(c, feeds, false);
  for (size_t i = 0; i < feeds.size(); i++) {
    bool finite = true;
    for (float z : batched[i]) finite &= std::isfinite(z);
    const float diff = batched[i].size() == alone[i].size()
                           ? max_abs_diff(batched[i].data(), alone[i].data(), alone[i].size())
                           : INFINITY;
    printf("batch vs alone (d=%d, kv_bits %2d, %zu prompt + %zu decode): max |diff| = %g\n", head_dim,
           feeds[i].kv_bits, feeds[i].prompt.size(), feeds[i].decode.size(), diff);
    CHECK(finite, "finite logits");
    CHECK(diff == 0.0f, "a sequence's logits do not depend on its batch (d=%d, feed %zu): %g", head_dim,
          i, diff);
  }
}

// Logits of `tokens` fed in the given chunk sizes (one sequence, kv_bits).
std::vector<float> feed_chunks(const nsn_model_config& c, int kv_bits, const std::vector<int32_t>& tokens,
                               const std::vector<int>& sizes) {
  nsn_engine* e = make_engine(c, cpu_options());
  int32_t s;
  CHECK_ST(seq_create(e, kv_bits, &s), NSN_OK);
  std::vector<float> rows;
  size_t at = 0;
  for (int n : sizes) {
    std::vector<int32_t> part(tokens.begin() + at, tokens.begin() + at + n);
    const StepOut r = step(e, V, {{s, part}});
    CHECK(r.status == NSN_OK, "%s", nsn_last_error());
    rows.insert(rows.end(), r.logits.begin(), r.logits.end());
    at += n;
  }
  forget_engine(e);
  nsn_engine_destroy(e);
  return rows;
}

void test_chunking(int head_dim) {
  const nsn_model_config c = tiny_config(head_dim);
  const std::vector<int32_t> toks = make_tokens(150, V, 21);
  const std::vector<float> whole = feed_chunks(c, 16, toks, {150});
  const std::vector<float> chunked = feed_chunks(c, 16, toks, {37, 64, 49});
  const std::vector<float> one_by_one = feed_chunks(c, 16, toks, std::vector<int>(150, 1));
  float scale = 0;
  for (float z : whole) scale = std::max(scale, fabsf(z));
  const float d1 = max_abs_diff(whole.data(), chunked.data(), whole.size());
  const float d2 = max_abs_diff(whole.data(), one_by_one.data(), whole.size());
  printf("kv_bits 16, d=%d, 150 tokens (|logit| <= %.3f): chunked vs whole max |diff| = %g, "
         "decode vs prefill max |diff| = %g\n", head_dim, scale, d1, d2);
  CHECK(d1 <= 1e-5f * scale, "chunked prefill matches whole prefill: %g", d1);
  CHECK(d2 <= 1e-5f * scale, "token-by-token decode matches prefill: %g", d2);

  // kv_bits 1/2: one rule however the prompt is chunked (nsn.h): a token reads the encoded
  // pages of every complete window before it and exact K/V only within its own window. So a
  // whole prefill, any chunking and token-by-token decode agree bit for bit; rows before the
  // first complete window equal kv_bits 16, later ones differ (they read quantized windows).
  for (int bits : {2, 1}) {
    const std::vector<float> q_whole = feed_chunks(c, bits, toks, {150});
    const std::vector<float> q_decode = feed_chunks(c, bits, toks, std::vector<int>(150, 1));
    float worst = 0;
    for (const std::vector<int>& sizes : std::vector<std::vector<int>>{{37, 64, 49}, {64, 64, 22},
                                                                       {63, 2, 85}, {1, 100, 49}}) {
      const std::vector<float> q_chunked = feed_chunks(c, bits, toks, sizes);
      worst = std::max(worst, max_abs_diff(q_whole.data(), q_chunked.data(), q_whole.size()));
    }
    const float dd = max_abs_diff(q_whole.data(), q_decode.data(), q_whole.size());
    const float d_first = max_abs_diff(whole.data(), q_whole.data(), 63 * V);
    const float d_rest = max_abs_diff(whole.data() + 63 * V, q_whole.data() + 63 * V, (150 - 63) * V);
    printf("kv_bits %d, d=%d: prefill vs chunked %g, vs decode %g; vs kv_bits 16: first 63 rows %g, "
           "later rows (quantized windows) %g\n", bits, head_dim, worst, dd, d_first, d_rest);
    CHECK(worst == 0.0f, "chunking changes nothing at kv_bits %d: %g", bits, worst);
    CHECK(dd == 0.0f, "token-by-token decode = one-chunk prefill at kv_bits %d: %g", bits, dd);
    CHECK(d_first == 0.0f, "rows inside the first window are exact at kv_bits %d: %g", bits, d_first);
    CHECK(d_rest > 0.0f && std::isfinite(d_rest), "quantized windows change later rows (kv_bits %d)", bits);
  }
}

// Keys read back: layer 0 K/V depend on the tokens only, so they agree across kv_bits wherever the
// cache is exact, and the quantized windows stay close.
void test_read_kv(int head_dim) {
  const nsn_model_config c = tiny_config(head_dim);
  const std::vector<int32_t> toks = make_tokens(150, V, 31);
  std::vector<std::vector<float>> k(3), v(3);
  const int bits[3] = {16, 2, 1};
  for (int i = 0; i < 3; i++) {
    nsn_engine* e = make_engine(c, cpu_options());
    int32_t s;
    CHECK_ST(seq_create(e, bits[i], &s), NSN_OK);
    CHECK(step(e, V, {{s, toks}}, 0, false).status == NSN_OK, "%s", nsn_last_error());
    k[i].resize(150 * head_dim);
    v[i].resize(150 * head_dim);
    CHECK_ST(seq_read_kv(e, s, 0, 1, 0, 150, k[i].data(), v[i].data()), NSN_OK);
    forget_engine(e);
  nsn_engine_destroy(e);
  }
  for (int i = 1; i < 3; i++) {
    const float tail_k = max_abs_diff(k[0].data() + 128 * head_dim, k[i].data() + 128 * head_dim, 22 * head_dim);
    const float tail_v = max_abs_diff(v[0].data() + 128 * head_dim, v[i].data() + 128 * head_dim, 22 * head_dim);
    CHECK(tail_k == 0.0f && tail_v == 0.0f, "tail tokens are exact at kv_bits %d", bits[i]);
    double ek = 0, nk = 0, ev = 0, nv = 0;
    for (int j = 0; j < 128 * head_dim; j++) {
      ek += (k[i][j] - k[0][j]) * (double)(k[i][j] - k[0][j]);
      nk += (double)k[0][j] * k[0][j];
      ev += (v[i][j] - v[0][j]) * (double)(v[i][j] - v[0][j]);
      nv += (double)v[0][j] * v[0][j];
    }
    const double rk = sqrt(ek / nk), rv = sqrt(ev / nv);
    printf("read_kv d=%d kv_bits %d: relative error of quantized windows K %.3f V %.3f\n", head_dim,
           bits[i], rk, rv);
    CHECK(rk > 0 && rk < 1.0 && rv > 0 && rv < 1.0, "quantized K/V stay close: %g %g", rk, rv);
  }
}

// Model variants load and run: llama3 RoPE scaling, qkv bias, untied head.
void test_variants() {
  nsn_model_config c = tiny_config(128);
  c.rope_scaling = NSN_ROPE_LLAMA3;
  c.rope_factor = 8;
  c.rope_low_freq_factor = 1;
  c.rope_high_freq_factor = 4;
  c.rope_original_max_position = 256;
  c.flags = NSN_MODEL_QKV_BIAS | NSN_MODEL_TIED;
  for (int variant = 0; variant < 2; variant++) {
    nsn_engine* e = make_engine(c, cpu_options());
    int32_t s;
    CHECK_ST(seq_create(e, 2, &s), NSN_OK);
    const StepOut r = step(e, V, {{s, make_tokens(80, V, 41)}});
    bool finite = r.status == NSN_OK;
    for (float z : r.logits) finite &= std::isfinite(z);
    CHECK(finite, "variant %d runs with finite logits (%s)", variant, nsn_last_error());
    forget_engine(e);
  nsn_engine_destroy(e);
    c.rope_scaling = NSN_ROPE_LINEAR;
    c.rope_factor = 2;
    c.flags = 0;
  }
}

}  // namespace

void test_forward() {
  for (int d : {64, 128}) {
    test_batch_invariance(d);
    test_chunking(d);
    test_read_kv(d);
  }
  test_variants();
}

// Decode speed of the demo-sized model (not asserted).
void bench_decode() {
  nsn_model_config c{};
  c.vocab_size = 4096;
  c.hidden_size = 256;
  c.intermediate_size = 768;
  c.n_layers = 6;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 128;
  c.max_position = 2048;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000;
  c.flags = NSN_MODEL_TIED;
  nsn_engine_options o = cpu_options();
  o.debug_checks = 0;
  if (const char* t = getenv("NSN_THREADS")) o.n_threads = atoi(t);  // e.g. 1 on a busy machine
  nsn_engine* e = make_engine(c, o);
  for (int bits : {16, 2, 1}) {
    for (int batch : {1, 8}) {
      std::vector<int32_t> seqs(batch);
      std::vector<Chunk> chunks;
      for (int b = 0; b < batch; b++) {
        CHECK_ST(seq_create(e, bits, &seqs[b]), NSN_OK);
        chunks.push_back({seqs[b], make_tokens(32, c.vocab_size, b), true});
      }
      step(e, c.vocab_size, chunks, 0, false);
      const int n = 128;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < n; i++) {
        for (int b = 0; b < batch; b++) chunks[b].tokens = {(i * 7 + b) % c.vocab_size};
        const StepOut r = step(e, c.vocab_size, chunks, 0, false);
        if (r.status != NSN_OK) CHECK(false, "bench step: %s", nsn_last_error());
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      printf("demo model (7M params, %s), kv_bits %2d, batch %d: %.0f tokens/s (%.2f ms/step, "
             "context 32..160)\n", info(e).device_name, bits, batch, n * batch / s, 1e3 * s / n);
      for (int b = 0; b < batch; b++) CHECK_ST(seq_free(e, seqs[b]), NSN_OK);
    }
  }
  forget_engine(e);
  nsn_engine_destroy(e);
}
