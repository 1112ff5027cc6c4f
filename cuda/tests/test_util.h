// test_util.h: helpers shared by the engine tests (plain asserts that count failures and keep
// going, a tiny random model, step wrappers).
#pragma once
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "../include/nsn.h"

extern int g_failures;

#define CHECK(cond, ...)                                            \
  do {                                                              \
    if (!(cond)) {                                                  \
      g_failures++;                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                 \
      fprintf(stderr, "\n");                                        \
    }                                                               \
  } while (0)

// A status check that also shows nsn_last_error().
#define CHECK_ST(call, want)                                                              \
  do {                                                                                    \
    const nsn_status st_ = (call);                                                        \
    CHECK(st_ == (want), "status %d, want %d (%s)", (int)st_, (int)(want), nsn_last_error()); \
  } while (0)

// Small Llama-shaped model: GQA 2:1, vocab 512.
inline nsn_model_config tiny_config(int head_dim) {
  nsn_model_config c{};
  c.vocab_size = 512;
  c.hidden_size = 128;
  c.intermediate_size = 320;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = head_dim;
  c.max_position = 4096;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  return c;
}

inline nsn_engine_options cpu_options() {
  nsn_engine_options o{};
  o.backend = NSN_BACKEND_CPU;
  o.debug_checks = 1;
  return o;
}

// Creates, fills with random weights (seed) and finalizes; null on failure (reported).
nsn_engine* make_engine(const nsn_model_config& c, const nsn_engine_options& o, uint64_t seed = 7);

// Deterministic token stream.
std::vector<int32_t> make_tokens(int n, int vocab, uint32_t seed);

// One sequence's chunk in a step, with everything a test may want back.
struct Chunk {
  int32_t seq;
  std::vector<int32_t> tokens;
  bool sample = false;
  bool want_logprobs = false;
  int32_t next_token = -1;
};

struct StepOut {
  nsn_status status;
  std::vector<nsn_seq_output> out;          // [n_seqs]
  std::vector<float> logits;                // [n_tokens][vocab]
  std::vector<float> pos_logprob;           // [n_tokens]
  std::vector<int32_t> pos_top_ids;         // [n_tokens][top_n]
  std::vector<float> pos_top_logprobs;
  std::vector<int32_t> offsets;             // token offset of each chunk
};

// Runs one step; logits ([n_tokens][vocab]) are fetched unless logits = false.
StepOut step(nsn_engine* e, int vocab, const std::vector<Chunk>& chunks, int top_n = 0,
             bool logits = true);

// Sequences as the tests drive them: the library keeps no pages or lengths, so the tests keep
// each sequence's kv_bits, length, tokens and pages (a simple per-kind free list over the arena)
// and step() builds the page tables. seq_create / seq_free wrap nsn_seq_create / nsn_seq_free.
nsn_status seq_create(nsn_engine* e, int32_t kv_bits, int32_t* seq_out);
nsn_status seq_free(nsn_engine* e, int32_t seq);
int32_t seq_len(nsn_engine* e, int32_t seq);
// nsn_seq_read_kv of a test sequence's cache.
nsn_status seq_read_kv(nsn_engine* e, int32_t seq, int32_t layer, int32_t kv_head, int32_t start,
                       int32_t count, float* k_out, float* v_out);
// Forgets every sequence of an engine (call before nsn_engine_destroy).
void forget_engine(nsn_engine* e);
nsn_engine_info info(nsn_engine* e);
float max_abs_diff(const float* a, const float* b, size_t n);

void test_abi();
void test_forward();
void test_sampling();
void test_numerics();
void bench_decode();
