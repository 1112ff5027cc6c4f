// cpu_backend.h: the portable C++ backend, the reference every other backend is compared with.
// Weights are held in fp32; the KV arena is host memory with the byte layouts of kv_layout.h.
//   cpu_backend.cpp   weights, arena, read_kv
//   cpu_forward.cpp   the forward pass of a step, logits, logprobs and sampling
//   cpu_attention.cpp attention over the paged cache, KV append and window encoding
#pragma once
#include <stdint.h>

#include <memory>
#include <string>
#include <vector>

#include "../backend.h"
#include "../quant/nsn_quant.h"
#include "../sampling.h"
#include "thread_pool.h"

namespace nsn {

class CpuBackend : public Backend {
 public:
  explicit CpuBackend(const EngineSpec& spec);
  ~CpuBackend() override;

  const char* name() const override { return "cpu"; }
  std::string device_name() const override;
  nsn_status set_weight(int slot, int layer, int dtype, const void* data, uint64_t n) override;
  nsn_status init_random(uint64_t seed) override;
  bool has_weight(int slot, int layer) const override;
  uint64_t weight_bytes() const override;
  nsn_status alloc_arena(uint64_t bytes) override;
  nsn_status step(const StepPlan& plan) override;
  nsn_status read_kv(const SeqStep& seq, int layer, int kv_head, int start, int count,
                     float* k_out, float* v_out) override;

 private:
  struct Layer {
    std::vector<float> attn_norm, mlp_norm;  // [H]
    std::vector<float> wqkv;  // [(nh + 2 nkv) d][H]: the q rows, then k, then v (one pass over x)
    std::vector<float> bqkv;  // [(nh + 2 nkv) d], empty without qkv_bias
    std::vector<float> wo;    // [H][nh d]
    std::vector<float> wgu;   // [2 I][H]: the gate rows, then the up rows
    std::vector<float> wdown; // [H][I]
  };

  // Per-thread buffers of attention, KV encoding and sampling.
  struct Scratch {
    std::vector<float> k, v;          // [64][d] one window of exact K/V
    std::vector<float> qh;            // [queries][G][d] Hadamard-rotated queries
    std::vector<float> m, l;          // [queries][G]
    std::vector<float> acc, acc_rot;  // [queries][G][d]
    std::vector<float> cs, sn;        // [d/2]
    std::vector<float> lut;           // [queries][G][d/8][256] 1-bit score tables
    std::vector<AttnState> st;        // [queries]
    SampleScratch sample;
  };
  static constexpr int kQueryBlock = 16;  // queries of one sequence and KV head per attention task
  static constexpr int kLutMinWindows = 4;  // 1-bit windows from which score tables pay off

  float* tensor(int slot, int layer, uint64_t* n_out);
  QuantParams quant_params(int kv_bits, bool is_key) const;
  uint8_t* block(int64_t page, int kind, int layer, int kv_head, int part) const;

  // cpu_forward.cpp
  void embed_and_rope_tables(const StepPlan& plan);
  void project_qkv(int layer, int T);
  void plan_logit_rows(const StepPlan& plan);
  void logits_and_sampling(const StepPlan& plan);
  void emit_row(const StepPlan& plan, int row, const float* z, Scratch& s);

  // cpu_attention.cpp
  struct AttnTask {
    int seq, kv_head, t0, t1;  // plan.seqs index, KV head, rows [t0, t1) of its chunk
                               // (kv_bits 1/2 writes: t0 = window to encode, t1 = -1)
  };
  void plan_attention(const StepPlan& plan);
  void attention(const StepPlan& plan, int layer);
  void attend_rows(const SeqStep& s, int layer, int kv_head, int t0, int t1, Scratch& sc);
  const float* row_kv(const SeqStep& s, int kv_head, int j) const;
  void append_kv(const SeqStep& s, int layer, int kv_head, int first, int count);
  void write_tail(const SeqStep& s, int layer, int kv_head);
  void encode_window(const SeqStep& s, int layer, int kv_head, int window, Scratch& sc);

  EngineSpec spec_;
  nsn_model_config c_;
  int q_dim_, kv_dim_, qkv_dim_;  // nh d, nkv d, (nh + 2 nkv) d
  ThreadPool pool_;
  std::vector<Layer> layers_;
  std::vector<float> embed_, final_norm_, lm_head_;
  std::vector<uint8_t> present_;  // [n_layers + 1][NSN_W_COUNT]; row n_layers = globals
  std::vector<float> inv_freq_;   // [d/2]
  uint8_t* arena_ = nullptr;
  uint64_t arena_bytes_ = 0;

  // Step buffers, [T] rows each.
  std::vector<float> x_, xn_, qkv_, attn_, gu_, h_;
  std::vector<float> cos_, sin_;     // [T][d/2] RoPE of each row's position
  std::vector<int32_t> row_seq_;     // [T] index into plan.seqs
  std::vector<int32_t> row_pos_;     // [T] position of each row
  std::vector<int32_t> logit_rows_;  // rows whose logits are needed, in order
  int logit_block_ = 0;              // rows per logits block
  std::vector<float> xs_;            // [block][H] final-normed rows of one logits block
  std::vector<float> logits_buf_;    // [block][vocab] when the caller wants no logits
  std::vector<AttnTask> before_tasks_, attend_tasks_, after_tasks_;  // see cpu_attention.cpp
  std::vector<Scratch> scratch_;     // [pool size]
};

}  // namespace nsn
