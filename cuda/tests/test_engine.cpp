// test_engine.cpp: the native library's tests on the CPU backend (make -C cuda test).
// ABI validation (page tables included) here; model consistency in test_forward.cpp; sampling in
// test_sampling.cpp; conversions and RoPE in test_numerics.cpp.
#include <stdlib.h>

#include <random>

#include "../src/kv_layout.h"
#include "test_util.h"

namespace {

bool error_mentions(const char* word) { return strstr(nsn_last_error(), word) != nullptr; }

void test_create_validation() {
  nsn_engine* e = nullptr;
  nsn_model_config c = tiny_config(64);
  nsn_engine_options o = cpu_options();
  CHECK_ST(nsn_engine_create(nullptr, &o, &e), NSN_E_INVALID);
  CHECK_ST(nsn_engine_create(&c, &o, nullptr), NSN_E_INVALID);
  struct Bad {
    const char* field;
    void (*edit)(nsn_model_config&);
    nsn_status want;
  };
  const Bad bad[] = {
      {"head_dim", [](nsn_model_config& m) { m.head_dim = 96; }, NSN_E_UNSUPPORTED},
      {"head_dim", [](nsn_model_config& m) { m.head_dim = 0; }, NSN_E_INVALID},
      {"n_heads", [](nsn_model_config& m) { m.n_kv_heads = 3; }, NSN_E_INVALID},
      {"vocab_size", [](nsn_model_config& m) { m.vocab_size = (1 << 24) + 1; }, NSN_E_INVALID},
      {"vocab_size", [](nsn_model_config& m) { m.vocab_size = 0; }, NSN_E_INVALID},
      {"hidden_size", [](nsn_model_config& m) { m.hidden_size = -4; }, NSN_E_INVALID},
      {"n_layers", [](nsn_model_config& m) { m.n_layers = 0; }, NSN_E_INVALID},
      {"rms_eps", [](nsn_model_config& m) { m.rms_eps = NAN; }, NSN_E_INVALID},
      {"rope_theta", [](nsn_model_config& m) { m.rope_theta = 0; }, NSN_E_INVALID},
      {"rope_scaling", [](nsn_model_config& m) { m.rope_scaling = 7; }, NSN_E_INVALID},
      {"rope_high_freq_factor", [](nsn_model_config& m) {
         m.rope_scaling = NSN_ROPE_LLAMA3;
         m.rope_factor = 8;
         m.rope_low_freq_factor = 4;
         m.rope_high_freq_factor = 1;
         m.rope_original_max_position = 8192;
       }, NSN_E_INVALID},
      {"flags", [](nsn_model_config& m) { m.flags = 8; }, NSN_E_INVALID},
  };
  for (const Bad& b : bad) {
    nsn_model_config m = tiny_config(64);
    b.edit(m);
    e = nullptr;
    CHECK_ST(nsn_engine_create(&m, &o, &e), b.want);
    CHECK(e == nullptr, "no engine on failure");
    CHECK(error_mentions(b.field), "message names %s: %s", b.field, nsn_last_error());
  }
  const struct {
    const char* field;
    void (*edit)(nsn_engine_options&);
  } bad_opts[] = {
      {"backend", [](nsn_engine_options& p) { p.backend = 3; }},
      {"n_threads", [](nsn_engine_options& p) { p.n_threads = -1; }},
      {"max_seqs", [](nsn_engine_options& p) { p.max_seqs = -2; }},
      {"quant_method", [](nsn_engine_options& p) { p.quant_method = 5; }},
      {"ablation", [](nsn_engine_options& p) { p.ablation = 128; }},  // no such bit
      {"ablation", [](nsn_engine_options& p) {
         p.quant_method = NSN_QUANT_RTN;
         p.ablation = NSN_ABL_NO_SHIFT;
       }},
      {"debug_checks", [](nsn_engine_options& p) { p.debug_checks = 2; }},
  };
  for (const auto& b : bad_opts) {
    nsn_engine_options p = cpu_options();
    b.edit(p);
    CHECK_ST(nsn_engine_create(&c, &p, &e), NSN_E_INVALID);
    CHECK(error_mentions(b.field), "message names %s: %s", b.field, nsn_last_error());
  }
  if (!nsn_cuda_available()) {
    nsn_engine_options p = cpu_options();
    p.backend = NSN_BACKEND_CUDA;
    CHECK_ST(nsn_engine_create(&c, &p, &e), NSN_E_NO_DEVICE);
    p.backend = NSN_BACKEND_AUTO;
    CHECK_ST(nsn_engine_create(&c, &p, &e), NSN_OK);
    CHECK(info(e).backend == NSN_BACKEND_CPU, "auto resolves to cpu without a GPU");
    forget_engine(e);
  nsn_engine_destroy(e);
  }
  // Null options mean defaults.
  CHECK_ST(nsn_engine_create(&c, nullptr, &e), NSN_OK);
  const nsn_engine_info i = info(e);
  CHECK(i.max_seqs == 16384 && i.max_step_tokens == 2048 && i.n_threads >= 1, "defaults: %d %d %d",
        i.max_seqs, i.max_step_tokens, i.n_threads);
  forget_engine(e);
  nsn_engine_destroy(e);
  nsn_engine_destroy(nullptr);
}

void test_weight_validation() {
  nsn_model_config c = tiny_config(64);
  c.flags = NSN_MODEL_TIED;
  nsn_engine_options o = cpu_options();
  nsn_engine* e = nullptr;
  CHECK_ST(nsn_engine_create(&c, &o, &e), NSN_OK);
  std::vector<float> w((size_t)c.vocab_size * c.hidden_size, 0.01f);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, -1, NSN_F32, w.data(), w.size()), NSN_OK);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, -1, NSN_F32, w.data(), w.size() - 1), NSN_E_INVALID);
  CHECK(error_mentions("elements"), "%s", nsn_last_error());
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, 0, NSN_F32, w.data(), w.size()), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_Q, 2, NSN_F32, w.data(), 64ull * 4 * 128), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_COUNT, -1, NSN_F32, w.data(), 1), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_LM_HEAD, -1, NSN_F32, w.data(), w.size()), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_Q_BIAS, 0, NSN_F32, w.data(), 256), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, -1, 9, w.data(), w.size()), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, -1, NSN_F32, nullptr, w.size()), NSN_E_INVALID);
  CHECK_ST(nsn_engine_set_weight(nullptr, NSN_W_EMBED, -1, NSN_F32, w.data(), w.size()), NSN_E_INVALID);
  // Missing weights: finalize refuses and names one.
  CHECK_ST(nsn_engine_finalize(e), NSN_E_STATE);
  CHECK(error_mentions("never set"), "%s", nsn_last_error());
  int32_t seq;
  CHECK_ST(seq_create(e, 16, &seq), NSN_E_STATE);
  CHECK_ST(nsn_engine_init_random(e, 1), NSN_OK);
  CHECK_ST(nsn_engine_finalize(e), NSN_OK);
  CHECK_ST(nsn_engine_finalize(e), NSN_E_STATE);
  CHECK_ST(nsn_engine_set_weight(e, NSN_W_EMBED, -1, NSN_F32, w.data(), w.size()), NSN_E_STATE);
  // fp16/bf16 inputs are accepted before finalize only; shapes were checked above.
  forget_engine(e);
  nsn_engine_destroy(e);
}

void test_step_validation() {
  const nsn_model_config c = tiny_config(64);
  nsn_engine_options o = cpu_options();
  o.max_seqs = 4;
  o.max_step_tokens = 128;
  nsn_engine* e = make_engine(c, o);
  int32_t a, b;
  CHECK_ST(seq_create(e, 16, &a), NSN_OK);
  CHECK_ST(seq_create(e, 2, &b), NSN_OK);
  CHECK_ST(seq_create(e, 4, &b), NSN_E_INVALID);
  CHECK(error_mentions("kv_bits"), "%s", nsn_last_error());
  CHECK_ST(seq_create(e, 2, nullptr), NSN_E_INVALID);
  CHECK(step(e, 512, {{a, {1, 2, 3}}, {b, {4, 5}}}).status == NSN_OK, "%s", nsn_last_error());

  // Raw rows for a (16-bit, 3 tokens from pos0 3: fp16 page 0) and b (2-bit, tail page 1).
  std::vector<int32_t> toks = {1, 2, 3};
  std::vector<int32_t> pages = {0, 5, 6};
  nsn_seq_input in{a, 3, 3, 0, 0, 0, -1, 0, 1, -1, -1, 0};
  nsn_seq_output out[2];
  float lp[8];
  auto raw = [&](const nsn_seq_input* s, int n_seqs, const int32_t* t, int n_t, int top_n,
                 nsn_seq_output* o_, float* l_) {
    return nsn_step(e, s, n_seqs, t, n_t, pages.data(), (int32_t)pages.size(), nullptr, 0, top_n,
                    o_, l_, nullptr, nullptr, nullptr);
  };
  CHECK_ST(nsn_step(nullptr, &in, 1, toks.data(), 3, pages.data(), 3, nullptr, 0, 0, out, nullptr,
                    nullptr, nullptr, nullptr),
           NSN_E_INVALID);
  CHECK_ST(raw(&in, 0, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK_ST(raw(nullptr, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK_ST(raw(&in, 1, nullptr, 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK_ST(raw(&in, 1, toks.data(), 3, 21, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("top_n"), "%s", nsn_last_error());
  nsn_seq_input bad = in;
  bad.seq = 9;
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  bad.seq = 2;  // never created
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("not live"), "%s", nsn_last_error());
  bad = in;
  bad.n_tokens = 2;  // leaves token 2 uncovered
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("tile") || error_mentions("cover"), "%s", nsn_last_error());
  nsn_seq_input two[2] = {in, in};  // overlapping token spans
  two[0].n_tokens = 2;
  two[1] = {b, 2, 2, 1, 0, 0, -1, 0, 0, 1, -1, 0};
  CHECK_ST(raw(two, 2, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  nsn_seq_input dup[2] = {in, in};
  dup[0].n_tokens = 1;
  dup[1].n_tokens = 2;
  dup[1].token_offset = 1;
  CHECK_ST(raw(dup, 2, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("twice"), "%s", nsn_last_error());
  std::vector<int32_t> bad_tok = {1, 512, 3};
  CHECK_ST(raw(&in, 1, bad_tok.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("tokens[1]"), "%s", nsn_last_error());
  bad = in;
  bad.sample = 1;
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, nullptr, nullptr), NSN_E_INVALID);
  bad = in;
  bad.want_logprobs = 1;
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 2, out, lp), NSN_E_INVALID);  // top-2 without arrays
  bad = in;
  bad.next_token = 512;
  CHECK_ST(raw(&bad, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  std::vector<int32_t> many(129, 1);
  nsn_seq_input big = in;
  big.n_tokens = 129;
  CHECK_ST(raw(&big, 1, many.data(), 129, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("max_step_tokens"), "%s", nsn_last_error());
  // Page tables: counts, ids, tails, history, no page written twice or while read.
  CHECK_ST(raw(&in, 1, toks.data(), 3, 0, out, nullptr), NSN_OK);  // the valid row
  in.pos0 = 6;
  const struct {
    const char* what;
    void (*edit)(nsn_seq_input&);
  } bad_rows[] = {
      {"n_pages", [](nsn_seq_input& r) { r.n_pages = 2; }},
      {"n_pages", [](nsn_seq_input& r) { r.n_pages = 0; }},
      {"exceed n_pages", [](nsn_seq_input& r) { r.page_offset = 3; }},
      {"exceed n_pages", [](nsn_seq_input& r) { r.page_offset = -1; }},
      {"tail_page", [](nsn_seq_input& r) { r.tail_page = 4; }},
      {"pos0", [](nsn_seq_input& r) { r.pos0 = -1; }},
      {"history", [](nsn_seq_input& r) { r.history_offset = 0; }},
      {"reserved", [](nsn_seq_input& r) { r.reserved = 1; }},
  };
  for (const auto& br : bad_rows) {
    nsn_seq_input r = in;
    br.edit(r);
    CHECK_ST(raw(&r, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
    CHECK(error_mentions(br.what), "message names %s: %s", br.what, nsn_last_error());
  }
  const nsn_engine_info ei = info(e);
  pages[0] = (int32_t)ei.page_ids[0];  // one past the last fp16 page id
  CHECK_ST(raw(&in, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("page id"), "%s", nsn_last_error());
  pages[0] = -1;
  CHECK_ST(raw(&in, 1, toks.data(), 3, 0, out, nullptr), NSN_E_INVALID);
  pages[0] = 0;
  nsn_seq_input pair[2] = {in, {b, 2, 1, 3, 0, 0, -1, 0, 0, 0, -1, 0}};  // b's tail = a's page
  CHECK_ST(raw(pair, 2, many.data(), 4, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("same KV memory"), "%s", nsn_last_error());
  // a (at pos0 64) reads page 0, while b's tail is page 0.
  nsn_seq_input reader = in;
  reader.pos0 = 64;
  reader.n_pages = 2;  // pages 0 (read) and 5 (written)
  pair[0] = reader;
  CHECK_ST(raw(pair, 2, many.data(), 4, 0, out, nullptr), NSN_E_INVALID);
  CHECK(error_mentions("reads"), "%s", nsn_last_error());
  std::vector<float> kk(64 * 64), vv(64 * 64);
  const int32_t pg0[1] = {0};
  CHECK_ST(nsn_seq_read_kv(e, 16, pg0, 1, -1, 6, 0, 0, 0, 6, kk.data(), vv.data()), NSN_OK);
  CHECK_ST(nsn_seq_read_kv(e, 16, pg0, 2, -1, 6, 0, 0, 0, 6, kk.data(), vv.data()), NSN_E_INVALID);
  CHECK_ST(nsn_seq_read_kv(e, 2, pg0, 0, -1, 6, 0, 0, 0, 6, kk.data(), vv.data()), NSN_E_INVALID);
  CHECK_ST(nsn_seq_read_kv(e, 3, pg0, 1, -1, 6, 0, 0, 0, 6, kk.data(), vv.data()), NSN_E_INVALID);
  in.pos0 = 3;

  // Sampling parameters.
  nsn_sampling sp{};
  sp.temperature = 1;
  sp.top_p = 1;
  sp.repetition_penalty = 1;
  CHECK_ST(nsn_seq_set_sampling(e, a, &sp, nullptr, nullptr, 0), NSN_OK);
  const struct {
    const char* field;
    void (*edit)(nsn_sampling&);
  } bad_sp[] = {
      {"temperature", [](nsn_sampling& s) { s.temperature = -0.5f; }},
      {"temperature", [](nsn_sampling& s) { s.temperature = NAN; }},
      {"top_p", [](nsn_sampling& s) { s.top_p = 0; }},
      {"top_p", [](nsn_sampling& s) { s.top_p = 1.5f; }},
      {"min_p", [](nsn_sampling& s) { s.min_p = 1.5f; }},
      {"repetition_penalty", [](nsn_sampling& s) { s.repetition_penalty = 0; }},
      {"presence_penalty", [](nsn_sampling& s) { s.presence_penalty = 2.5f; }},
      {"frequency_penalty", [](nsn_sampling& s) { s.frequency_penalty = -3; }},
      {"top_k", [](nsn_sampling& s) { s.top_k = -2; }},
      {"n_stop_ids", [](nsn_sampling& s) { s.n_stop_ids = 9; }},
      {"stop_ids", [](nsn_sampling& s) {
         s.n_stop_ids = 1;
         s.stop_ids[0] = 600;
       }},
      {"min_tokens", [](nsn_sampling& s) { s.min_tokens = -1; }},
  };
  for (const auto& bsp : bad_sp) {
    nsn_sampling s = sp;
    bsp.edit(s);
    CHECK_ST(nsn_seq_set_sampling(e, a, &s, nullptr, nullptr, 0), NSN_E_INVALID);
    CHECK(error_mentions(bsp.field), "message names %s: %s", bsp.field, nsn_last_error());
  }
  int32_t ids[2] = {3, 512};
  float vals[2] = {1, 1};
  CHECK_ST(nsn_seq_set_sampling(e, a, &sp, ids, vals, 2), NSN_E_INVALID);
  CHECK_ST(nsn_seq_set_sampling(e, a, &sp, ids, vals, 513), NSN_E_INVALID);
  CHECK_ST(nsn_seq_set_sampling(e, a, &sp, nullptr, nullptr, 1), NSN_E_INVALID);
  CHECK_ST(nsn_seq_set_sampling(e, a, nullptr, nullptr, nullptr, 0), NSN_E_INVALID);

  // read_kv and the rest of the sequence API.
  std::vector<float> k(64 * 4), v(64 * 4);
  CHECK_ST(seq_read_kv(e, a, 0, 0, 0, 3, k.data(), v.data()), NSN_OK);
  CHECK_ST(seq_read_kv(e, a, 0, 0, 1, 6, k.data(), v.data()), NSN_E_INVALID);
  CHECK_ST(seq_read_kv(e, a, 2, 0, 0, 1, k.data(), v.data()), NSN_E_INVALID);
  CHECK_ST(seq_read_kv(e, a, 0, 2, 0, 1, k.data(), v.data()), NSN_E_INVALID);
  CHECK_ST(seq_read_kv(e, a, 0, 0, 0, 1, nullptr, v.data()), NSN_E_INVALID);
  CHECK_ST(seq_free(e, 3), NSN_E_INVALID);
  CHECK_ST(nsn_engine_inject_fault(e, -1), NSN_E_INVALID);
  CHECK_ST(nsn_engine_get_info(e, nullptr), NSN_E_INVALID);

  CHECK_ST(nsn_engine_check(e), NSN_OK);

  // Sequence slots run out cleanly.
  int32_t s3, s4, s5;
  CHECK_ST(seq_create(e, 1, &s3), NSN_OK);
  CHECK_ST(seq_create(e, 1, &s4), NSN_OK);
  CHECK_ST(seq_create(e, 1, &s5), NSN_E_OOM);
  CHECK_ST(seq_free(e, s3), NSN_OK);
  CHECK_ST(seq_free(e, s3), NSN_E_INVALID);
  CHECK_ST(seq_create(e, 1, &s5), NSN_OK);
  CHECK(s5 == s3, "the freed slot is reused");

  // Injected faults: the step fails and changes nothing, then steps work again.
  CHECK_ST(nsn_engine_inject_fault(e, 2), NSN_OK);
  for (int i = 0; i < 2; i++) {
    CHECK(step(e, 512, {{a, {7}}, {b, {8}}}).status == NSN_E_INTERNAL, "injected fault %d", i);
    CHECK(error_mentions("injected fault"), "%s", nsn_last_error());
  }
  CHECK(step(e, 512, {{a, {7}}, {b, {8}}}).status == NSN_OK, "%s", nsn_last_error());
  // max_position bounds the sequence.
  nsn_model_config small = c;
  small.max_position = 100;
  nsn_engine* e2 = make_engine(small, o);
  int32_t z;
  CHECK_ST(seq_create(e2, 16, &z), NSN_OK);
  CHECK(step(e2, 512, {{z, make_tokens(100, 512, 1)}}).status == NSN_OK, "%s", nsn_last_error());
  CHECK(step(e2, 512, {{z, {1}}}).status == NSN_E_INVALID, "position 100 >= max_position");
  CHECK(error_mentions("max_position"), "%s", nsn_last_error());
  forget_engine(e2);
  nsn_engine_destroy(e2);
  forget_engine(e);
  nsn_engine_destroy(e);
}

}  // namespace

void test_abi() {
  test_create_validation();
  test_weight_validation();
  test_step_validation();
}

// Usage: test_engine [tests|bench]   (default: both)
int main(int argc, char** argv) {
  const char* what = argc > 1 ? argv[1] : "all";
  if (strcmp(what, "bench") != 0) {
    test_numerics();
    test_abi();
    test_forward();
    test_sampling();
  }
  if (strcmp(what, "tests") != 0) bench_decode();
  if (g_failures) {
    fprintf(stderr, "%d check(s) FAILED\n", g_failures);
    return 1;
  }
  printf("all engine tests passed\n");
  return 0;
}
