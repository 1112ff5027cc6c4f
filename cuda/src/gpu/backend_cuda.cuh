// backend_cuda.cuh: the CUDA backend's class, shared by the files that implement it:
//   backend_cuda.cu          lifecycle, weights, the factory
//   backend_cuda_memory.cu   the KV arena and the step scratch
//   backend_cuda_plan.cu     packing a step's plan into one buffer and uploading it
//   backend_cuda_forward.cu  the step: layers, logits + sampling, read_kv
//   backend_cuda_graphs.cu   CUDA graphs of pure-decode steps
//
// The CUDA backend. Weights live on the GPU in bf16 (norm weights and biases in
// fp32), the residual stream in fp32, GEMMs run on cuBLAS (bf16 in, fp32 compute; a one-row
// batch uses the weight-streaming GEMV of gemv.cu instead). One step:
//   upload the packed plan (one host->device copy) -> embed -> per layer:
//     norm -> QKV GEMM -> [tail -> staging copies] -> bias + RoPE + KV append
//     -> [encode windows prefills filled] -> [dequant the quantized windows prefills read]
//     -> [encode windows decode rows filled]
//     -> decode attention (n_new == 1 rows) -> prefill attention (chunks)
//     -> O GEMM (+= residual) -> norm -> gate/up GEMM
//     -> SwiGLU -> down GEMM (+= residual)
//   -> final norm + lm_head on the rows that need logits -> logprobs + sampling on the GPU
//   -> one device->host copy of ids and logprobs.
// In pure-decode steps (every sequence adds one token) the layer loop runs as a CUDA graph,
// captured once per key (rows, encode launched or not) and
// replayed; the plan's per-row sections sit at offsets that depend only on the row count.
// NSN_CUDA_GRAPHS=0 turns graphs off.
// Where prefill K/V goes (kv_bits 1/2): windows that complete inside the chunk are staged in
// single-layer scratch pages and encoded into the sequence's quantized pages before attention;
// the partial last window goes straight to the tail page. Every quantized window a chunk reads
// (earlier ones and those it completed) is dequantized into a staging page, so that a query
// reads complete windows as encoded and only its own window exactly (nsn.h's rule, the same
// as the CPU backend's, whatever the chunking; prefill_attention.cuh).
// Section BACKEND.md tells the whole story.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../backend.h"
#include "../half.h"
#include "../kv_layout.h"
#include "../quant/nsn_quant.h"
#include "../rope.h"
#include "../weights.h"
#include "cublas_loader.cuh"
#include "decode_attention.cuh"
#include "gemv.cuh"
#include "kv_kernels.cuh"
#include "layers.cuh"
#include "prefill_attention.cuh"
#include "sampling.cuh"

namespace nsn {
namespace cuda_backend {

#define CK(call)                                                                         \
  do {                                                                                   \
    const cudaError_t e_ = (call);                                                       \
    if (e_ != cudaSuccess)                                                               \
      return set_error(NSN_E_BACKEND, "cuda: %s failed: %s", #call, cudaGetErrorString(e_)); \
  } while (0)

#define TRY(call)                          \
  do {                                     \
    const nsn_status s_ = (call);          \
    if (s_ != NSN_OK) return s_;           \
  } while (0)

typedef __nv_bfloat16 bf16;

// A device buffer that only grows (contents are not kept).
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  nsn_status ensure(size_t want, const char* what) {
    if (want <= bytes) return NSN_OK;
    if (p) {
      cudaDeviceSynchronize();
      cudaFree(p);
      p = nullptr;
      bytes = 0;
    }
    const cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return set_error(NSN_E_OOM, "cuda: cudaMalloc of %zu bytes for %s failed: %s", want, what,
                       cudaGetErrorString(e));
    }
    bytes = want;
    return NSN_OK;
  }
  void release() {
    if (p) cudaFree(p);
    p = nullptr;
    bytes = 0;
  }
};

// Builds the step's plan in host memory: arrays at 16-byte aligned offsets; pointer fields
// hold offsets until relocate() adds the device address of the uploaded copy.
struct Packer {
  std::vector<uint8_t> buf;
  std::vector<size_t> fixups;  // byte offsets of pointer fields
  void clear() {
    buf.clear();
    fixups.clear();
  }
  size_t align() {
    buf.resize((buf.size() + 15) & ~(size_t)15);
    return buf.size();
  }
  template <class T>
  size_t put(const T* p, size_t n) {
    const size_t off = align();
    buf.resize(off + n * sizeof(T));
    if (n) memcpy(buf.data() + off, p, n * sizeof(T));
    return off;
  }
  template <class T>
  size_t put(const std::vector<T>& v) {
    return put(v.data(), v.size());
  }
  // A pointer field at byte offset `field` of the buffer that must point at offset `target`.
  void point(size_t field, size_t target) {
    const uint64_t v = target;
    memcpy(buf.data() + field, &v, 8);
    fixups.push_back(field);
  }
  void relocate(uint64_t base) {
    for (size_t f : fixups) {
      uint64_t v;
      memcpy(&v, buf.data() + f, 8);
      v += base;
      memcpy(buf.data() + f, &v, 8);
    }
  }
};

constexpr int kMaxLogitRows = 256;  // rows of logits computed (and sampled) per block
constexpr size_t kCublasWorkspaceBytes = 32u << 20;  // cuBLAS's recommendation for Hopper

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(const EngineSpec& spec) : spec_(spec), c_(spec.cfg) {}
  ~CudaBackend() override;
  nsn_status init();

  const char* name() const override { return "cuda"; }
  std::string device_name() const override { return name_; }
  nsn_status set_weight(int slot, int layer, int dtype, const void* data, uint64_t n) override;
  nsn_status init_random(uint64_t seed) override;
  bool has_weight(int slot, int layer) const override;
  uint64_t weight_bytes() const override { return weight_bytes_; }
  uint64_t default_arena_bytes() const override;
  nsn_status alloc_arena(uint64_t bytes) override;
  nsn_status step(const StepPlan& plan) override;
  int64_t graph_steps() const override { return graph_steps_; }
  nsn_status read_kv(const SeqStep& s, int layer, int kv_head, int start, int count, float* k_out,
                     float* v_out) override;

 private:
  struct LayerW {
    float* attn_norm = nullptr;  // [H]
    float* mlp_norm = nullptr;   // [H]
    bf16* wqkv = nullptr;        // [(nh + 2 nkv) d][H]: q rows, then k, then v
    float* bqkv = nullptr;       // [(nh + 2 nkv) d] (qkv_bias models only)
    bf16* wo = nullptr;          // [H][nh d]
    bf16* wgu = nullptr;         // [2 I][H]: gate rows, then up rows
    bf16* wdown = nullptr;       // [H][I]
  };

  nsn_status set_device() {
    CK(cudaSetDevice(dev_));
    return NSN_OK;
  }
  // Device destination of a slot (allocated on first use): exactly one of *bf / *f32 is set.
  nsn_status slot_dest(int slot, int layer, bf16** bf, float** f32);
  nsn_status dalloc(void** p, size_t bytes, const char* what);
  size_t scratch_bytes() const;
  nsn_status alloc_scratch();
  uint64_t stage_page_bytes() const { return (uint64_t)c_.n_kv_heads * 2 * kWindow * c_.head_dim * 2; }
  // y fp32 [M][ldy] (+)= x bf16 [M][ldx] . w[N][K]^T: the GEMV for decode batches, else cuBLAS.
  nsn_status linear(int M, int N, int K, const bf16* x, int ldx, const bf16* w, float* y, int ldy,
                    float beta);
  // The step: pack the plan into pk_ (sections in sec_), upload it, run the layers (eagerly
  // or as a CUDA graph), then logits and sampling.
  nsn_status pack_plan(const StepPlan& plan, bool graph_layout);
  nsn_status upload_plan();
  nsn_status forward_layers(const StepPlan& plan);
  nsn_status logits_and_sampling(const StepPlan& plan);

  // CUDA graphs of pure-decode steps (BACKEND.md "CUDA graphs"). A captured forward pass
  // bakes in its kernel arguments: besides the buffer addresses (the weights, scratch and
  // arena, fixed or the cache is dropped; the plan buffer and the decode workspace, see
  // graph_plan_ / graph_ws_), they depend only on what the key holds.
  struct GraphKey {
    int n;         // rows (= decode sequences)
    int encode;    // the decode-row encode is launched (with n jobs, unused ones no-ops)
    bool operator==(const GraphKey& o) const { return n == o.n && encode == o.encode; }
  };
  struct CachedGraph {
    GraphKey key;
    cudaGraphExec_t exec;
    uint64_t used;  // graph_clock_ at the last launch (least recently used is evicted)
  };
  static constexpr size_t kMaxGraphs = 64;
  GraphKey graph_key() const;
  nsn_status forward_graph(const StepPlan& plan);
  nsn_status capture_graph(const StepPlan& plan, cudaGraphExec_t* out);
  CachedGraph& cache_graph(const GraphKey& key, cudaGraphExec_t exec);
  void drop_graphs();

  EngineSpec spec_;
  nsn_model_config c_;
  int dev_ = 0;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  CublasHandle cublas_ = nullptr;
  int q_dim_ = 0, kv_dim_ = 0, qkv_dim_ = 0;
  int T_max_ = 0, logit_rows_ = 0;
  bool use_gemv_ = true;  // NSN_CUDA_GEMV=0 sends every linear layer to cuBLAS
  bool graphs_on_ = true; // NSN_CUDA_GRAPHS=0 (or a failed capture) runs every step eagerly
  std::vector<CachedGraph> graphs_;
  std::vector<GraphKey> warm_keys_;  // keys that already ran once eagerly
  const void* graph_plan_ = nullptr;  // plan_d_.p and dec_ws_.p when the cached graphs and warm
  const void* graph_ws_ = nullptr;    // keys were made (a move drops them all)
  uint64_t graph_clock_ = 0;
  int64_t graph_steps_ = 0;  // steps run through a graph (nsn_engine_info.graph_steps)

  std::vector<LayerW> layers_;
  bf16* embed_ = nullptr;       // [V][H]
  bf16* lm_head_ = nullptr;     // [V][H] (untied models)
  float* final_norm_ = nullptr; // [H]
  std::vector<uint8_t> present_;
  uint64_t weight_bytes_ = 0;
  std::vector<void*> allocations_;  // weights and constants, freed at destruction

  KvGeometry geo_{};
  float* inv_freq_ = nullptr;  // device [d/2]

  uint8_t* arena_ = nullptr;
  uint64_t arena_bytes_ = 0;

  // Step scratch, [T_max] rows unless noted.
  bool scratch_ready_ = false;
  float* x_ = nullptr;      // [T][H] residual stream
  bf16* xn_ = nullptr;      // [T][H] normed
  float* qkv_ = nullptr;    // [T][qkv_dim]
  float* q_ = nullptr;      // [T][nh][d]
  bf16* attn_ = nullptr;    // [T][nh d]
  float* gu_ = nullptr;     // [T][2 I]
  bf16* h_ = nullptr;       // [T][I]
  bf16* xf_ = nullptr;      // [logit_rows][H] final-normed rows
  float* logits_ = nullptr; // [logit_rows][V]
  float* zscratch_ = nullptr;   // [logit_rows][V] sampler work area
  int32_t* counts_ = nullptr;   // [logit_rows][V] penalty counts, zero between steps
  RowResult* res_d_ = nullptr;  // [logit_rows]
  RowResult* res_h_ = nullptr;  // pinned [logit_rows]

  DevBuf stage_;      // single-layer fp16 staging pages
  DevBuf dec_ws_;     // decode attention split-KV workspace
  DevBuf plan_d_;     // the uploaded plan
  uint8_t* plan_h_ = nullptr;  // pinned copy of the plan
  size_t plan_h_bytes_ = 0;
  Packer pk_;

  // Offsets (in pk_) and counts of this step's plan sections.
  struct Sections {
    size_t tokens, tok_kv, logit_rows, row_jobs, samples;
    size_t dec_seqs, dec_enc, pre_seqs, tiles, copies, deq, penc;  // deq/penc: [n_layers][n]
    int n_dec, n_dec_enc, n_pre, n_tiles, n_copies, n_deq, n_penc, n_logit, n_samples;
    int max_ctx;
  } sec_{};
  std::vector<int32_t> logit_row_list_;  // host copy: token rows needing logits
  std::vector<int32_t> logit_seq_;       // host: plan seq index of each logit row
};

}  // namespace cuda_backend
}  // namespace nsn
