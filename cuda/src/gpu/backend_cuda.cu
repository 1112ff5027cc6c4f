// backend_cuda.cu: the CUDA backend. Weights live on the GPU in bf16 (norm weights and biases in
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

namespace {

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

CudaBackend::~CudaBackend() {
  cudaSetDevice(dev_);
  if (stream_) cudaStreamSynchronize(stream_);
  drop_graphs();
  cublas_destroy(cublas_);  // before its workspace (one of allocations_) is freed
  for (void* p : allocations_) cudaFree(p);
  stage_.release();
  dec_ws_.release();
  plan_d_.release();
  if (plan_h_) cudaFreeHost(plan_h_);
  if (res_h_) cudaFreeHost(res_h_);
  if (arena_) cudaFree(arena_);
  if (stream_) cudaStreamDestroy(stream_);
}

nsn_status CudaBackend::dalloc(void** p, size_t bytes, const char* what) {
  const cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
  if (e != cudaSuccess) {
    cudaGetLastError();
    *p = nullptr;
    return set_error(NSN_E_OOM, "cuda: cudaMalloc of %zu bytes for %s failed: %s", bytes, what,
                     cudaGetErrorString(e));
  }
  allocations_.push_back(*p);
  return NSN_OK;
}

nsn_status CudaBackend::init() {
  dev_ = spec_.opts.device;
  int n_dev = 0;
  CK(cudaGetDeviceCount(&n_dev));
  if (dev_ >= n_dev)
    return set_error(NSN_E_NO_DEVICE, "cuda: device %d requested, %d visible", dev_, n_dev);
  TRY(set_device());
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev_));
  name_ = prop.name;
  CK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  TRY(cublas_create(&cublas_, stream_));
  // A workspace of its own, so that cuBLAS never allocates (not allowed in a graph capture).
  void* cublas_ws;
  TRY(dalloc(&cublas_ws, kCublasWorkspaceBytes, "cuBLAS workspace"));
  TRY(cublas_set_workspace(cublas_, cublas_ws, kCublasWorkspaceBytes));

  q_dim_ = c_.n_heads * c_.head_dim;
  kv_dim_ = c_.n_kv_heads * c_.head_dim;
  qkv_dim_ = q_dim_ + 2 * kv_dim_;
  T_max_ = spec_.opts.max_step_tokens;
  logit_rows_ = std::min(T_max_, kMaxLogitRows);
  const char* gemv_env = getenv("NSN_CUDA_GEMV");
  use_gemv_ = !(gemv_env && gemv_env[0] == '0');
  const char* graphs_env = getenv("NSN_CUDA_GRAPHS");
  graphs_on_ = !(graphs_env && graphs_env[0] == '0');
  layers_.resize(c_.n_layers);
  present_.assign((size_t)(c_.n_layers + 1) * NSN_W_COUNT, 0);

  // Constants: RoPE inverse frequencies and the codebooks.
  std::vector<float> inv_freq(c_.head_dim / 2);
  rope_inv_freq(c_, inv_freq.data());
  float *cb1, *cb2;
  TRY(dalloc((void**)&inv_freq_, inv_freq.size() * 4, "inv_freq"));
  TRY(dalloc((void**)&cb1, 256 * 8 * 4, "codebook1"));
  TRY(dalloc((void**)&cb2, 256 * 8 * 4, "codebook2"));
  CK(cudaMemcpy(inv_freq_, inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(cb1, kCodebook1, 256 * 8 * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(cb2, kCodebook2, 256 * 8 * 4, cudaMemcpyHostToDevice));
  geo_.n_layers = c_.n_layers;
  geo_.n_heads = c_.n_heads;
  geo_.n_kv_heads = c_.n_kv_heads;
  geo_.head_dim = c_.head_dim;
  geo_.quant_method = spec_.opts.quant_method;
  geo_.ablation = spec_.opts.ablation;
  geo_.inv_freq = inv_freq_;
  geo_.codebook1 = cb1;
  geo_.codebook2 = cb2;
  // Decode attention's constant tables, built once (every attention block copies them).
  if (const size_t tb = decode_attention_tables_bytes(c_.head_dim)) {
    uint8_t* tables;
    TRY(dalloc((void**)&tables, tb, "decode attention tables"));
    TRY(launch_decode_attention_tables(geo_, tables, stream_));
    CK(cudaStreamSynchronize(stream_));
    geo_.attn_tables = tables;
  }
  return NSN_OK;
}

// ---- weights -------------------------------------------------------------------------------

nsn_status CudaBackend::slot_dest(int slot, int layer, bf16** bf, float** f32) {
  *bf = nullptr;
  *f32 = nullptr;
  const uint64_t H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  auto get_bf = [&](bf16** p, uint64_t n, const char* what) -> nsn_status {
    if (!*p) {
      TRY(dalloc((void**)p, n * 2, what));
      weight_bytes_ += n * 2;
    }
    return NSN_OK;
  };
  auto get_f = [&](float** p, uint64_t n, const char* what) -> nsn_status {
    if (!*p) {
      TRY(dalloc((void**)p, n * 4, what));
      weight_bytes_ += n * 4;
    }
    return NSN_OK;
  };
  if (slot == NSN_W_EMBED) {
    TRY(get_bf(&embed_, V * H, "embed"));
    *bf = embed_;
    return NSN_OK;
  }
  if (slot == NSN_W_LM_HEAD) {
    TRY(get_bf(&lm_head_, V * H, "lm_head"));
    *bf = lm_head_;
    return NSN_OK;
  }
  if (slot == NSN_W_FINAL_NORM) {
    TRY(get_f(&final_norm_, H, "final_norm"));
    *f32 = final_norm_;
    return NSN_OK;
  }
  LayerW& L = layers_[layer];
  const uint64_t Q = q_dim_, KV = kv_dim_, QKV = qkv_dim_;
  switch (slot) {
    case NSN_W_ATTN_NORM: TRY(get_f(&L.attn_norm, H, "attn_norm")); *f32 = L.attn_norm; break;
    case NSN_W_MLP_NORM: TRY(get_f(&L.mlp_norm, H, "mlp_norm")); *f32 = L.mlp_norm; break;
    case NSN_W_Q: TRY(get_bf(&L.wqkv, QKV * H, "wqkv")); *bf = L.wqkv; break;
    case NSN_W_K: TRY(get_bf(&L.wqkv, QKV * H, "wqkv")); *bf = L.wqkv + Q * H; break;
    case NSN_W_V: TRY(get_bf(&L.wqkv, QKV * H, "wqkv")); *bf = L.wqkv + (Q + KV) * H; break;
    case NSN_W_Q_BIAS: TRY(get_f(&L.bqkv, QKV, "bqkv")); *f32 = L.bqkv; break;
    case NSN_W_K_BIAS: TRY(get_f(&L.bqkv, QKV, "bqkv")); *f32 = L.bqkv + Q; break;
    case NSN_W_V_BIAS: TRY(get_f(&L.bqkv, QKV, "bqkv")); *f32 = L.bqkv + Q + KV; break;
    case NSN_W_O: TRY(get_bf(&L.wo, H * Q, "wo")); *bf = L.wo; break;
    case NSN_W_GATE: TRY(get_bf(&L.wgu, 2 * I * H, "wgu")); *bf = L.wgu; break;
    case NSN_W_UP: TRY(get_bf(&L.wgu, 2 * I * H, "wgu")); *bf = L.wgu + I * H; break;
    case NSN_W_DOWN: TRY(get_bf(&L.wdown, H * I, "wdown")); *bf = L.wdown; break;
    default: return set_error(NSN_E_INTERNAL, "cuda: unexpected weight slot %d", slot);
  }
  return NSN_OK;
}

nsn_status CudaBackend::set_weight(int slot, int layer, int dtype, const void* data, uint64_t n) {
  TRY(set_device());
  bf16* bf;
  float* f32;
  TRY(slot_dest(slot, layer, &bf, &f32));
  // Upload in chunks through a staging buffer, converting on the device.
  const size_t esize = dtype == NSN_F32 ? 4 : 2;
  const uint64_t chunk = std::min<uint64_t>(n, (64ull << 20) / esize);
  DevBuf tmp;
  nsn_status st = tmp.ensure(chunk * esize, "weight upload staging");
  for (uint64_t i0 = 0; st == NSN_OK && i0 < n; i0 += chunk) {
    const uint64_t m = std::min(chunk, n - i0);
    cudaError_t e = cudaMemcpyAsync(tmp.p, (const uint8_t*)data + i0 * esize, m * esize,
                                    cudaMemcpyHostToDevice, stream_);
    if (e != cudaSuccess) {
      st = set_error(NSN_E_BACKEND, "cuda: cudaMemcpyAsync (weight %s) failed: %s", slot_name(slot),
                     cudaGetErrorString(e));
      break;
    }
    st = bf ? launch_to_bf16(tmp.p, dtype, m, bf + i0, stream_)
            : launch_to_f32(tmp.p, dtype, m, f32 + i0, stream_);
    // The staging buffer is reused: the conversion must finish before the next copy lands.
    if (st == NSN_OK) {
      e = cudaStreamSynchronize(stream_);
      if (e != cudaSuccess)
        st = set_error(NSN_E_BACKEND, "cuda: weight %s upload: %s", slot_name(slot), cudaGetErrorString(e));
    }
  }
  tmp.release();
  if (st != NSN_OK) return st;
  present_[(size_t)(slot_is_global(slot) ? c_.n_layers : layer) * NSN_W_COUNT + slot] = 1;
  return NSN_OK;
}

nsn_status CudaBackend::init_random(uint64_t seed) {
  TRY(set_device());
  const float kStd = 0.02f;  // as the CPU backend
  for (int slot = 0; slot < NSN_W_COUNT; slot++) {
    if (!slot_in_model(c_, slot)) continue;
    const bool global = slot_is_global(slot);
    const bool norm = slot == NSN_W_FINAL_NORM || slot == NSN_W_ATTN_NORM || slot == NSN_W_MLP_NORM;
    for (int l = 0; l < (global ? 1 : c_.n_layers); l++) {
      const int layer = global ? -1 : l;
      bf16* bf;
      float* f32;
      TRY(slot_dest(slot, global ? 0 : l, &bf, &f32));
      const uint64_t n = slot_elements(c_, slot);
      if (norm) TRY(launch_fill(f32, n, 1.0f, stream_));
      else TRY(launch_synthetic(seed, slot, layer, kStd, n, bf, f32, stream_));
      present_[(size_t)(global ? c_.n_layers : l) * NSN_W_COUNT + slot] = 1;
    }
  }
  CK(cudaStreamSynchronize(stream_));
  return NSN_OK;
}

bool CudaBackend::has_weight(int slot, int layer) const {
  return present_[(size_t)(layer < 0 ? c_.n_layers : layer) * NSN_W_COUNT + slot] != 0;
}

// ---- memory --------------------------------------------------------------------------------

size_t CudaBackend::scratch_bytes() const {
  const size_t T = T_max_, H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  const size_t R = logit_rows_;
  return T * H * 4 + T * H * 2 + T * qkv_dim_ * 4 + T * q_dim_ * 4 + T * q_dim_ * 2 +
         T * 2 * I * 4 + T * I * 2 + R * H * 2 + 3 * R * V * 4 + R * sizeof(RowResult) + 64 * 6;
}

uint64_t CudaBackend::default_arena_bytes() const {
  if (cudaSetDevice(dev_) != cudaSuccess) return 0;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
  const size_t need = scratch_ready_ ? 0 : scratch_bytes();
  if (free_b <= need) return 0;
  // 90% of what the weights and the step scratch leave; the rest covers staging pages, the
  // decode workspace and cuBLAS.
  uint64_t bytes = (uint64_t)((double)(free_b - need) * 0.9);
  return bytes & ~(uint64_t)((1 << 20) - 1);
}

nsn_status CudaBackend::alloc_scratch() {
  if (scratch_ready_) return NSN_OK;
  const size_t T = T_max_, H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  const size_t R = logit_rows_;
  TRY(dalloc((void**)&x_, T * H * 4, "x"));
  TRY(dalloc((void**)&xn_, T * H * 2, "xn"));
  TRY(dalloc((void**)&qkv_, T * qkv_dim_ * 4, "qkv"));
  TRY(dalloc((void**)&q_, T * q_dim_ * 4, "q"));
  TRY(dalloc((void**)&attn_, T * q_dim_ * 2, "attn"));
  TRY(dalloc((void**)&gu_, T * 2 * I * 4, "gate/up"));
  TRY(dalloc((void**)&h_, T * I * 2, "swiglu"));
  TRY(dalloc((void**)&xf_, R * H * 2, "final rows"));
  TRY(dalloc((void**)&logits_, R * V * 4, "logits"));
  TRY(dalloc((void**)&zscratch_, R * V * 4, "sampler logits"));
  TRY(dalloc((void**)&counts_, R * V * 4, "sampler counts"));
  TRY(dalloc((void**)&res_d_, R * sizeof(RowResult), "row results"));
  CK(cudaMemset(counts_, 0, R * V * 4));
  CK(cudaMallocHost((void**)&res_h_, R * sizeof(RowResult)));
  scratch_ready_ = true;
  return NSN_OK;
}

nsn_status CudaBackend::alloc_arena(uint64_t bytes) {
  TRY(set_device());
  TRY(alloc_scratch());
  drop_graphs();  // they hold arena addresses
  if (arena_) {
    CK(cudaFree(arena_));
    arena_ = nullptr;
  }
  const cudaError_t e = cudaMalloc((void**)&arena_, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    arena_ = nullptr;
    return set_error(NSN_E_OOM, "cuda: cudaMalloc of a %llu-byte KV arena failed: %s",
                     (unsigned long long)bytes, cudaGetErrorString(e));
  }
  arena_bytes_ = bytes;
  return NSN_OK;
}

// ---- step ----------------------------------------------------------------------------------

// Every sequence decodes one token: the steps whose layers run as a CUDA graph.
bool pure_decode(const StepPlan& plan) {
  if (plan.n_seqs < 1 || plan.n_tokens != plan.n_seqs) return false;
  for (int i = 0; i < plan.n_seqs; i++)
    if (plan.seqs[i].n_new != 1) return false;
  return true;
}

nsn_status CudaBackend::step(const StepPlan& plan) {
  TRY(set_device());
  if (!arena_ || !scratch_ready_) return set_error(NSN_E_STATE, "cuda: step before alloc_arena");
  const int T = plan.n_tokens;
  if (T > T_max_) return set_error(NSN_E_INVALID, "cuda: %d tokens > max_step_tokens %d", T, T_max_);
  const bool graph = graphs_on_ && pure_decode(plan);
  TRY(pack_plan(plan, graph));
  TRY(upload_plan());
  if (sec_.n_dec) {
    // Sized before any capture (a capture must not allocate).
    const size_t ws = decode_attention_workspace(geo_, sec_.n_dec, sec_.max_ctx);
    const size_t before = dec_ws_.bytes;  // ensure() reallocates only to grow
    if (ws) TRY(dec_ws_.ensure(ws, "decode attention workspace"));
    // A new workspace starts zeroed (split counters); the kernels leave them at zero. (Its
    // address may equal the old one's, so the size tells whether it is new.)
    if (dec_ws_.bytes != before) CK(cudaMemsetAsync(dec_ws_.p, 0, dec_ws_.bytes, stream_));
  }
  TRY(graph ? forward_graph(plan) : forward_layers(plan));
  TRY(logits_and_sampling(plan));
  return NSN_OK;
}

// Packs the plan into pk_, recording the sections in sec_. The per-row sections the layers
// read come first: tokens[T], tok_kv[T], dec_seqs[n_dec], dec_enc; so in a pure-decode step
// their offsets depend only on the row count. With graph_layout, dec_enc (when any window
// filled) holds one job per decode row, the unused ones no-ops (kv_bits 0), so that the
// encode launch is the same whichever rows filled a window.
nsn_status CudaBackend::pack_plan(const StepPlan& plan, bool graph_layout) {
  const int T = plan.n_tokens, L = c_.n_layers;
  const uint64_t arena = (uint64_t)(uintptr_t)arena_;
  const uint64_t SP = stage_page_bytes();

  // Staging pages this step needs: per quantized prefill, its earlier complete windows
  // (dequantized) and, for each window that completes inside the chunk, its exact K/V and its
  // dequantized encoding.
  size_t n_stage = 0;
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    if (s.n_new > 1 && s.kv_bits != 16)
      n_stage += (size_t)(s.pos0 / kWindow) + 2 * ((s.pos0 + s.n_new) / kWindow - s.pos0 / kWindow);
  }
  if (n_stage) TRY(stage_.ensure(n_stage * SP, "staging pages"));
  const uint64_t stage = (uint64_t)(uintptr_t)stage_.p;

  // ---- pack the plan ----
  Packer& P = pk_;
  P.clear();
  Sections& S = sec_;
  S = Sections{};
  sec_.tokens = P.put(plan.tokens, T);
  std::vector<TokenKv> tok(T);
  std::vector<DecodeSeq> dec;
  std::vector<const SeqStep*> dec_steps;  // the sequence of each decode row (page tables)
  std::vector<EncodeJob> dec_enc;
  std::vector<PrefillSeq> pre;
  std::vector<std::vector<PageRef>> pre_pages, pre_deq;
  std::vector<PrefillTile> tiles;
  std::vector<KvCopyJob> copies;
  // Per-layer job lists are built for layer 0 and shifted per layer (single-layer staging
  // pages are addressed as page - layer * SP so that the kernels' layer offset lands on them).
  struct StageJob {
    uint64_t arena_page;  // quantized page in the arena
    uint64_t stage_page;  // staging page (layer 0 address)
    int32_t bits, pos0;
  };
  std::vector<StageJob> deq, penc;
  size_t next_stage = 0;
  S.max_ctx = 0;

  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    const bool quant = s.kv_bits != 16;
    if (s.n_new == 1) {
      const int p = s.pos0, w = p / kWindow;
      TokenKv& tk = tok[s.tok_offset];
      tk.page = arena + (uint64_t)(quant ? s.tail_off : s.page_off[w]);
      tk.layered = 1;
      tk.slot = p % kWindow;
      tk.pos = p;
      if (quant && (p + 1) % kWindow == 0)
        dec_enc.push_back({arena_ + s.tail_off, arena_ + s.page_off[w], s.kv_bits, w * kWindow});
      DecodeSeq ds{};
      ds.kv_bits = s.kv_bits;
      ds.n_ctx = p + 1;
      ds.q_row = s.tok_offset;
      ds.n_windows = s.n_windows;
      dec.push_back(ds);
      dec_steps.push_back(&s);
      S.max_ctx = std::max(S.max_ctx, p + 1);
      continue;
    }
    // Prefill chunk.
    const int w_first = s.pos0 / kWindow;                 // window of the first new token
    const int w_full_end = (s.pos0 + s.n_new) / kWindow;  // windows < this are complete after
    // pages: exact K/V per window; deq_pages: the window as encoded (prefill_attention.cuh).
    std::vector<PageRef> pages(s.n_windows), deq_pages(s.n_windows);
    std::vector<uint64_t> stage_of(s.n_windows, 0);
    for (int w = 0; w < s.n_windows; w++) {
      PageRef& pr = pages[w];
      if (!quant) {
        pr = {arena + (uint64_t)s.page_off[w], 1, 0};
      } else if (w < w_full_end) {
        // Complete after the step: dequantized for the rows past it (or completing it).
        const uint64_t dq = stage + (uint64_t)(next_stage++) * SP;
        deq.push_back({arena + (uint64_t)s.page_off[w], dq, s.kv_bits, w * kWindow});
        deq_pages[w] = {dq, 0, 0};
        pr = deq_pages[w];  // windows before the chunk are never read exactly
        if (w >= w_first) {
          // Completes in this chunk: the append writes its exact K/V to a staging page, which
          // is encoded (before the dequant above runs) and read exactly by the rows inside it.
          stage_of[w] = stage + (uint64_t)(next_stage++) * SP;
          pr = {stage_of[w], 0, 0};
          penc.push_back({arena + (uint64_t)s.page_off[w], stage_of[w], s.kv_bits, w * kWindow});
        }
      } else {
        pr = {arena + (uint64_t)s.tail_off, 1, 0};  // the partial last window
      }
      if (!quant || w >= w_full_end) deq_pages[w] = pr;
    }
    // The tail's earlier tokens move to staging when their window completes in this chunk.
    if (quant && s.pos0 % kWindow != 0 && w_first < w_full_end)
      copies.push_back({arena + (uint64_t)s.tail_off, stage_of[w_first], 1, 0, s.pos0 % kWindow, 0});
    for (int j = 0; j < s.n_new; j++) {
      const int p = s.pos0 + j, w = p / kWindow;
      TokenKv& tk = tok[s.tok_offset + j];
      tk.pos = p;
      tk.slot = p % kWindow;
      tk.page = pages[w].page;
      tk.layered = pages[w].layered;
    }
    PrefillSeq ps{};
    ps.q_row0 = s.tok_offset;
    ps.n_new = s.n_new;
    ps.pos0 = s.pos0;
    ps.n_windows = s.n_windows;
    ps.quant = quant;
    for (int i0 = 0; i0 < s.n_new; i0 += 64) tiles.push_back({(int32_t)pre.size(), i0});
    pre.push_back(ps);
    pre_pages.push_back(std::move(pages));
    pre_deq.push_back(std::move(deq_pages));
  }
  S.tok_kv = P.put(tok);
  S.n_dec = (int)dec.size();
  if (S.n_dec) S.dec_seqs = P.put(dec);
  if (graph_layout && !dec_enc.empty()) dec_enc.resize(dec.size(), EncodeJob{});  // no-op jobs
  S.n_dec_enc = (int)dec_enc.size();
  if (S.n_dec_enc) S.dec_enc = P.put(dec_enc);  // arena addresses filled above (absolute)
  // The decode rows' page tables, anywhere after those (DecodeSeq.page_off points at them).
  for (int i = 0; i < S.n_dec; i++) {
    const size_t table = P.put(dec_steps[i]->page_off, dec_steps[i]->n_windows);
    P.point(S.dec_seqs + i * sizeof(DecodeSeq) + offsetof(DecodeSeq, page_off), table);
  }
  S.n_pre = (int)pre.size();
  if (S.n_pre) {
    std::vector<size_t> page_offs(S.n_pre), deq_offs(S.n_pre);
    for (int i = 0; i < S.n_pre; i++) {
      page_offs[i] = P.put(pre_pages[i]);
      deq_offs[i] = P.put(pre_deq[i]);
    }
    S.pre_seqs = P.put(pre);
    for (int i = 0; i < S.n_pre; i++) {
      P.point(S.pre_seqs + i * sizeof(PrefillSeq) + offsetof(PrefillSeq, pages), page_offs[i]);
      P.point(S.pre_seqs + i * sizeof(PrefillSeq) + offsetof(PrefillSeq, deq_pages), deq_offs[i]);
    }
    S.n_tiles = (int)tiles.size();
    S.tiles = P.put(tiles);
  }
  S.n_copies = (int)copies.size();
  if (S.n_copies) S.copies = P.put(copies);
  auto per_layer = [&](const std::vector<StageJob>& jobs, bool to_stage) {
    std::vector<EncodeJob> all;
    all.reserve(jobs.size() * L);
    for (int l = 0; l < L; l++) {
      for (const StageJob& j : jobs) {
        const uint64_t st = j.stage_page - (uint64_t)l * SP;
        EncodeJob e{};
        e.src_page = (const uint8_t*)(uintptr_t)(to_stage ? j.arena_page : st);
        e.dst_page = (uint8_t*)(uintptr_t)(to_stage ? st : j.arena_page);
        e.kv_bits = j.bits;
        e.pos0 = j.pos0;
        all.push_back(e);
      }
    }
    return all;
  };
  S.n_deq = (int)deq.size();
  if (S.n_deq) S.deq = P.put(per_layer(deq, true));
  S.n_penc = (int)penc.size();
  if (S.n_penc) S.penc = P.put(per_layer(penc, false));

  // Rows that need logits, their logprob jobs and the draws.
  logit_row_list_.clear();
  logit_seq_.clear();
  for (int i = 0; i < plan.n_seqs; i++) {
    const SeqStep& s = plan.seqs[i];
    if (plan.logits) continue;
    const int first = s.want_logprobs ? 0 : s.sample ? s.n_new - 1 : s.n_new;
    for (int j = first; j < s.n_new; j++) {
      logit_row_list_.push_back(s.tok_offset + j);
      logit_seq_.push_back(i);
    }
  }
  if (plan.logits) {
    std::vector<int32_t> seq_of(T, 0);
    for (int i = 0; i < plan.n_seqs; i++)
      for (int j = 0; j < plan.seqs[i].n_new; j++) seq_of[plan.seqs[i].tok_offset + j] = i;
    for (int t = 0; t < T; t++) {
      logit_row_list_.push_back(t);
      logit_seq_.push_back(seq_of[t]);
    }
  }
  S.n_logit = (int)logit_row_list_.size();
  S.logit_rows = P.put(logit_row_list_);
  {
    std::vector<LogitRowJob> jobs(S.n_logit);
    std::vector<SampleJob> samples;
    struct Arrays {
      size_t bias_ids = 0, bias_values = 0, hist = 0;
      bool has_bias = false, has_hist = false;
    };
    std::vector<Arrays> arrays;
    std::vector<int32_t> hist;
    for (int r = 0; r < S.n_logit; r++) {
      const int row = logit_row_list_[r];
      const SeqStep& s = plan.seqs[logit_seq_[r]];
      const bool last = row == s.tok_offset + s.n_new - 1;
      jobs[r].next_id = s.want_logprobs ? (last ? s.next_token : plan.tokens[row + 1]) : -1;
      jobs[r].sample_idx = -1;
      if (!(s.sample && last)) continue;
      jobs[r].sample_idx = (int32_t)samples.size();
      SampleJob sj{};
      sj.params = *s.sampling;
      sj.row = r;
      sj.P = s.pos0 + s.n_new;
      sj.n_bias = s.n_bias;
      const nsn_sampling& sp = sj.params;
      const bool penal = sp.repetition_penalty != 1.0f || sp.frequency_penalty != 0.0f ||
                         sp.presence_penalty != 0.0f;
      sj.hist_len = penal ? sj.P : 0;
      Arrays a;
      if (s.n_bias) {
        a.has_bias = true;
        a.bias_ids = P.put(s.bias_ids, s.n_bias);
        a.bias_values = P.put(s.bias_values, s.n_bias);
      }
      if (penal) {
        // Penalties look at every token before the drawn one: the history, then this chunk.
        hist.assign(s.history, s.history + s.history_len);
        hist.insert(hist.end(), plan.tokens + s.tok_offset, plan.tokens + s.tok_offset + s.n_new);
        a.has_hist = true;
        a.hist = P.put(hist);
      }
      samples.push_back(sj);
      arrays.push_back(a);
    }
    S.row_jobs = P.put(jobs);
    S.n_samples = (int)samples.size();
    if (S.n_samples) {
      S.samples = P.put(samples);
      for (int i = 0; i < S.n_samples; i++) {
        const size_t at = S.samples + i * sizeof(SampleJob);
        if (arrays[i].has_bias) {
          P.point(at + offsetof(SampleJob, bias_ids), arrays[i].bias_ids);
          P.point(at + offsetof(SampleJob, bias_values), arrays[i].bias_values);
        }
        if (arrays[i].has_hist) P.point(at + offsetof(SampleJob, hist), arrays[i].hist);
      }
    }
  }
  return NSN_OK;
}

// One pinned host->device copy of the packed plan, pointer fields relocated to plan_d_.
nsn_status CudaBackend::upload_plan() {
  Packer& P = pk_;
  const size_t bytes = P.align();
  // Grown with headroom: a moved plan buffer drops the cached graphs.
  if (!plan_d_.p || bytes > plan_d_.bytes)
    TRY(plan_d_.ensure(std::max<size_t>(2 * bytes, 1 << 16), "step plan"));
  if (bytes > plan_h_bytes_) {
    if (plan_h_) cudaFreeHost(plan_h_);
    plan_h_ = nullptr;
    plan_h_bytes_ = 0;
    const size_t want = std::max<size_t>(bytes * 2, 1 << 16);
    CK(cudaMallocHost((void**)&plan_h_, want));
    plan_h_bytes_ = want;
  }
  P.relocate((uint64_t)(uintptr_t)plan_d_.p);
  memcpy(plan_h_, P.buf.data(), bytes);
  CK(cudaMemcpyAsync(plan_d_.p, plan_h_, bytes, cudaMemcpyHostToDevice, stream_));
  return NSN_OK;
}

nsn_status CudaBackend::linear(int M, int N, int K, const bf16* x, int ldx, const bf16* w, float* y,
                               int ldy, float beta) {
  if (use_gemv_ && gemv_supported(M, K, ldx, x, w))
    return launch_gemv(M, N, K, x, ldx, w, y, ldy, beta, stream_);
  return gemm_xwT(cublas_, M, N, K, x, ldx, w, y, true, ldy, 1.0f, beta);
}

nsn_status CudaBackend::forward_layers(const StepPlan& plan) {
  const int T = plan.n_tokens, H = c_.hidden_size, I = c_.intermediate_size;
  const Sections& S = sec_;
  uint8_t* base = (uint8_t*)plan_d_.p;
  const int32_t* tokens = (const int32_t*)(base + S.tokens);
  const TokenKv* tok = (const TokenKv*)(base + S.tok_kv);
  const float scale = 1.0f / sqrtf((float)c_.head_dim);

  TRY(launch_embed(embed_, tokens, T, H, x_, stream_));
  for (int l = 0; l < c_.n_layers; l++) {
    const LayerW& W = layers_[l];
    // One row: RMSNorm fused into the GEMV (gemv.cu), one launch instead of two.
    const bool fuse = use_gemv_ && T == 1;
    if (fuse && gemv_rmsnorm_supported(H, x_, W.attn_norm, W.wqkv)) {
      TRY(launch_gemv_rmsnorm(qkv_dim_, H, x_, W.attn_norm, c_.rms_eps, W.wqkv, qkv_, 0.0f, stream_));
    } else {
      TRY(launch_rmsnorm(x_, nullptr, T, H, W.attn_norm, c_.rms_eps, xn_, stream_));
      TRY(linear(T, qkv_dim_, H, xn_, H, W.wqkv, qkv_, qkv_dim_, 0.0f));
    }
    if (S.n_copies)
      TRY(launch_kv_copy((const KvCopyJob*)(base + S.copies), S.n_copies, l, c_.n_kv_heads,
                         c_.head_dim, stream_));
    QkvRopeArgs ra{};
    ra.qkv = qkv_;
    ra.bias = W.bqkv;
    ra.tok = tok;
    ra.inv_freq = inv_freq_;
    ra.q = q_;
    ra.n = T;
    ra.n_heads = c_.n_heads;
    ra.n_kv_heads = c_.n_kv_heads;
    ra.head_dim = c_.head_dim;
    ra.layer = l;
    TRY(launch_qkv_rope_append(ra, stream_));
    if (S.n_penc)
      TRY(launch_kv_encode(geo_, (const EncodeJob*)(base + S.penc) + (size_t)l * S.n_penc, S.n_penc,
                           l, stream_));
    if (S.n_deq)
      TRY(launch_kv_dequant(geo_, (const EncodeJob*)(base + S.deq) + (size_t)l * S.n_deq, S.n_deq, l,
                            stream_));
    if (S.n_dec_enc)
      TRY(launch_kv_encode(geo_, (const EncodeJob*)(base + S.dec_enc), S.n_dec_enc, l, stream_));
    if (S.n_dec) {
      DecodeAttnArgs da{};
      da.g = geo_;
      da.arena = arena_;
      da.layer = l;
      da.q = q_;
      da.out = attn_;
      da.seqs = (const DecodeSeq*)(base + S.dec_seqs);
      da.n_seqs = S.n_dec;
      da.max_ctx = S.max_ctx;
      da.scale = scale;
      da.workspace = (float*)dec_ws_.p;
      da.workspace_bytes = dec_ws_.bytes;
      da.reuse_plan = l > 0;  // the plan depends on the sequences only: planned once per step
      TRY(launch_decode_attention(da, stream_));
    }
    if (S.n_tiles) {
      PrefillAttnArgs pa{};
      pa.q = q_;
      pa.out = attn_;
      pa.seqs = (const PrefillSeq*)(base + S.pre_seqs);
      pa.tiles = (const PrefillTile*)(base + S.tiles);
      pa.n_tiles = S.n_tiles;
      pa.n_heads = c_.n_heads;
      pa.n_kv_heads = c_.n_kv_heads;
      pa.head_dim = c_.head_dim;
      pa.layer = l;
      pa.scale = scale;
      TRY(launch_prefill_attention(pa, stream_));
    }
    TRY(linear(T, H, q_dim_, attn_, q_dim_, W.wo, x_, H, 1.0f));
    // One row: RMSNorm, the gate/up GEMV and SwiGLU in one launch.
    if (fuse && gemv_rmsnorm_supported(H, x_, W.mlp_norm, W.wgu)) {
      TRY(launch_gemv_rmsnorm_swiglu(I, H, x_, W.mlp_norm, c_.rms_eps, W.wgu, h_, stream_));
    } else {
      TRY(launch_rmsnorm(x_, nullptr, T, H, W.mlp_norm, c_.rms_eps, xn_, stream_));
      TRY(linear(T, 2 * I, H, xn_, H, W.wgu, gu_, 2 * I, 0.0f));
      TRY(launch_swiglu(gu_, T, I, h_, stream_));
    }
    TRY(linear(T, H, I, h_, I, W.wdown, x_, H, 1.0f));
  }
  return NSN_OK;
}

// ---- CUDA graphs ---------------------------------------------------------------------------

// The key of this (pure-decode, packed) step. Decode attention plans its work on the device
// from the DecodeSeqs (data) into a workspace whose size depends on n only: a graph captured at
// one context length replays correctly at any other.
CudaBackend::GraphKey CudaBackend::graph_key() const {
  const Sections& S = sec_;
  GraphKey k{};
  k.n = S.n_dec;
  k.encode = S.n_dec_enc > 0;
  return k;
}

// forward_layers as a CUDA graph: replays the one cached under this step's key, else captures
// it first. A failed capture turns graphs off for this backend and runs the step eagerly.
nsn_status CudaBackend::forward_graph(const StepPlan& plan) {
  const GraphKey key = graph_key();
  // The cached graphs all hold the plan buffer's and the workspace's addresses: when either
  // moved, none is valid.
  if (plan_d_.p != graph_plan_ || dec_ws_.p != graph_ws_) {
    drop_graphs();
    graph_plan_ = plan_d_.p;
    graph_ws_ = dec_ws_.p;
  }
  CachedGraph* hit = nullptr;
  for (CachedGraph& g : graphs_)
    if (g.key == key) hit = &g;
  if (!hit) {
    // A key's first step runs eagerly: kernels launched for the first time (lazy module
    // loading, the attention kernel's one-time shared-memory attribute) never do so inside a
    // capture. The second step with the key captures.
    if (std::find(warm_keys_.begin(), warm_keys_.end(), key) == warm_keys_.end()) {
      if (warm_keys_.size() >= 4 * kMaxGraphs) warm_keys_.erase(warm_keys_.begin());
      warm_keys_.push_back(key);
      return forward_layers(plan);
    }
    cudaGraphExec_t exec = nullptr;
    if (capture_graph(plan, &exec) != NSN_OK) {
      // The library never prints: a failed capture shows as graph_steps (nsn_engine_info) no
      // longer growing.
      graphs_on_ = false;
      drop_graphs();
      return forward_layers(plan);
    }
    hit = &cache_graph(key, exec);
  }
  hit->used = ++graph_clock_;
  CK(cudaGraphLaunch(hit->exec, stream_));
  graph_steps_++;
  return NSN_OK;
}

// Captures forward_layers on stream_ and instantiates it. Thread-local mode: Deno calls in from
// arbitrary threads, and only this thread's calls matter to the capture. Whatever fails, the
// capture is ended and the partial graph destroyed: the stream never stays capturing.
nsn_status CudaBackend::capture_graph(const StepPlan& plan, cudaGraphExec_t* out) {
  *out = nullptr;
  cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return set_error(NSN_E_BACKEND, "cuda: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
  }
  const nsn_status st = forward_layers(plan);
  cudaGraph_t graph = nullptr;
  e = cudaStreamEndCapture(stream_, &graph);
  if (st == NSN_OK && e == cudaSuccess) e = cudaGraphInstantiate(out, graph, 0);
  if (graph) cudaGraphDestroy(graph);  // the executable graph is independent of it
  if (st == NSN_OK && e == cudaSuccess) return NSN_OK;
  *out = nullptr;
  cudaGetLastError();  // clear the error the failed capture left behind
  if (st != NSN_OK) return st;
  return set_error(NSN_E_BACKEND, "cuda: graph capture/instantiate: %s", cudaGetErrorString(e));
}

// Adds a graph to the cache, evicting the least recently launched one when full.
CudaBackend::CachedGraph& CudaBackend::cache_graph(const GraphKey& key, cudaGraphExec_t exec) {
  if (graphs_.size() < kMaxGraphs) {
    graphs_.push_back({key, exec, 0});
    return graphs_.back();
  }
  auto older = [](const CachedGraph& a, const CachedGraph& b) { return a.used < b.used; };
  CachedGraph& lru = *std::min_element(graphs_.begin(), graphs_.end(), older);
  cudaGraphExecDestroy(lru.exec);
  lru = {key, exec, 0};
  return lru;
}

void CudaBackend::drop_graphs() {
  for (CachedGraph& g : graphs_) cudaGraphExecDestroy(g.exec);
  graphs_.clear();
  warm_keys_.clear();
}

// ---- logits --------------------------------------------------------------------------------

nsn_status CudaBackend::logits_and_sampling(const StepPlan& plan) {
  const int T = plan.n_tokens, H = c_.hidden_size, V = c_.vocab_size;
  const Sections& S = sec_;
  uint8_t* base = (uint8_t*)plan_d_.p;
  // Outputs start as "nothing": the CPU backend's conventions.
  if (plan.pos_logprob) std::fill(plan.pos_logprob, plan.pos_logprob + T, NAN);
  if (plan.top_n && plan.pos_top_ids) std::fill(plan.pos_top_ids, plan.pos_top_ids + (size_t)T * plan.top_n, -1);
  if (plan.top_n && plan.pos_top_logprobs)
    std::fill(plan.pos_top_logprobs, plan.pos_top_logprobs + (size_t)T * plan.top_n, NAN);
  for (int i = 0; plan.out && i < plan.n_seqs; i++) {
    nsn_seq_output& o = plan.out[i];
    o.token = -1;
    o.logprob = NAN;
    std::fill(o.top_ids, o.top_ids + NSN_MAX_TOP_N, -1);
    std::fill(o.top_logprobs, o.top_logprobs + NSN_MAX_TOP_N, NAN);
  }
  const bf16* head = (c_.flags & NSN_MODEL_TIED) ? embed_ : lm_head_;
  const int32_t* rows_d = (const int32_t*)(base + S.logit_rows);
  const LogitRowJob* jobs_d = (const LogitRowJob*)(base + S.row_jobs);
  // Sample jobs carry global logit-row indices (host copy: the packed plan).
  const SampleJob* samples_h = S.n_samples ? (const SampleJob*)(pk_.buf.data() + S.samples) : nullptr;
  const SampleJob* samples_d = (const SampleJob*)(base + S.samples);
  int s_next = 0;
  for (int r0 = 0; r0 < S.n_logit; r0 += logit_rows_) {
    const int n = std::min(logit_rows_, S.n_logit - r0);
    TRY(launch_rmsnorm(x_, rows_d + r0, n, H, final_norm_, c_.rms_eps, xf_, stream_));
    TRY(linear(n, V, H, xf_, H, head, logits_, V, 0.0f));
    if (plan.logits)
      CK(cudaMemcpyAsync(plan.logits + (size_t)r0 * V, logits_, (size_t)n * V * 4,
                         cudaMemcpyDeviceToHost, stream_));
    // Samples are listed in logit-row order: those of this block are contiguous.
    const int s0 = s_next;
    while (s_next < S.n_samples && samples_h[s_next].row < r0 + n) s_next++;
    TRY(launch_logprobs_and_sample(logits_, n, V, jobs_d + r0, plan.top_n, samples_d + s0,
                                   s_next - s0, r0, zscratch_, counts_, res_d_, stream_));
    CK(cudaMemcpyAsync(res_h_, res_d_, (size_t)n * sizeof(RowResult), cudaMemcpyDeviceToHost,
                       stream_));
    CK(cudaStreamSynchronize(stream_));
    for (int i = 0; i < n; i++) {
      const int row = logit_row_list_[r0 + i];
      const SeqStep& s = plan.seqs[logit_seq_[r0 + i]];
      const RowResult& rr = res_h_[i];
      const bool last = row == s.tok_offset + s.n_new - 1;
      if (s.want_logprobs) {
        plan.pos_logprob[row] = rr.next_logprob;
        if (plan.top_n) {
          memcpy(plan.pos_top_ids + (size_t)row * plan.top_n, rr.top_ids, plan.top_n * 4);
          memcpy(plan.pos_top_logprobs + (size_t)row * plan.top_n, rr.top_logprobs, plan.top_n * 4);
        }
      }
      if (s.sample && last) {
        nsn_seq_output& o = plan.out[logit_seq_[r0 + i]];
        o.token = rr.token;
        o.logprob = rr.token_logprob;
        memcpy(o.top_ids, rr.top_ids, plan.top_n * 4);
        memcpy(o.top_logprobs, rr.top_logprobs, plan.top_n * 4);
      }
    }
  }
  CK(cudaStreamSynchronize(stream_));
  CK(cudaGetLastError());
  return NSN_OK;
}

// ---- read_kv -------------------------------------------------------------------------------

nsn_status CudaBackend::read_kv(const SeqStep& s, int layer, int kv_head, int start, int count,
                                float* k_out, float* v_out) {
  TRY(set_device());
  const int d = c_.head_dim;
  const uint64_t SP = stage_page_bytes();
  const int n_quant = s.kv_bits == 16 ? 0 : s.pos0 / kWindow;
  TRY(stage_.ensure(SP, "staging pages"));
  DevBuf job;
  TRY(job.ensure(sizeof(EncodeJob), "read_kv job"));
  std::vector<uint16_t> kh((size_t)kWindow * d), vh((size_t)kWindow * d);
  nsn_status st = NSN_OK;
  for (int w = start / kWindow; st == NSN_OK && w * kWindow < start + count; w++) {
    const int lo = std::max(start, w * kWindow), hi = std::min(start + count, (w + 1) * kWindow);
    uint64_t page;
    int layered;
    if (w < n_quant) {
      EncodeJob j{};
      j.src_page = arena_ + s.page_off[w];
      j.dst_page = (uint8_t*)stage_.p - (size_t)layer * SP;
      j.kv_bits = s.kv_bits;
      j.pos0 = w * kWindow;
      cudaError_t e = cudaMemcpyAsync(job.p, &j, sizeof j, cudaMemcpyHostToDevice, stream_);
      if (e != cudaSuccess) {
        st = set_error(NSN_E_BACKEND, "cuda: read_kv job upload: %s", cudaGetErrorString(e));
        break;
      }
      st = launch_kv_dequant(geo_, (const EncodeJob*)job.p, 1, layer, stream_);
      if (st != NSN_OK) break;
      page = (uint64_t)(uintptr_t)stage_.p;
      layered = 0;
    } else {
      page = (uint64_t)(uintptr_t)(arena_ + (s.kv_bits == 16 ? s.page_off[w] : s.tail_off));
      layered = 1;
    }
    const uint8_t* kb = f16_block(page, layered, layer, c_.n_kv_heads, d, kv_head, 0);
    const uint8_t* vb = f16_block(page, layered, layer, c_.n_kv_heads, d, kv_head, 1);
    cudaError_t e = cudaMemcpyAsync(kh.data(), kb, kh.size() * 2, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaMemcpyAsync(vh.data(), vb, vh.size() * 2, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) {
      st = set_error(NSN_E_BACKEND, "cuda: read_kv copy: %s", cudaGetErrorString(e));
      break;
    }
    for (int p = lo; p < hi; p++) {
      const size_t src = (size_t)(p - w * kWindow) * d, dst = (size_t)(p - start) * d;
      for (int i = 0; i < d; i++) {
        k_out[dst + i] = f16_to_f32(kh[src + i]);
        v_out[dst + i] = f16_to_f32(vh[src + i]);
      }
    }
  }
  job.release();
  return st;
}

}  // namespace

// ---- factory -------------------------------------------------------------------------------

std::unique_ptr<Backend> make_cuda_backend(const EngineSpec& spec, nsn_status* st) {
  auto b = std::make_unique<CudaBackend>(spec);
  *st = b->init();
  if (*st != NSN_OK) return nullptr;
  return b;
}

bool cuda_backend_available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0 && cublas_load() == NSN_OK;
}

}  // namespace nsn
