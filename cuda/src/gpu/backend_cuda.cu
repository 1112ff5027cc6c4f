// backend_cuda.cu: the CUDA backend's lifecycle (device, stream, cuBLAS, constants), its
// weights and the factory (the class: backend_cuda.cuh).
#include "backend_cuda.cuh"

namespace nsn {
namespace cuda_backend {

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

}  // namespace cuda_backend

// ---- factory -------------------------------------------------------------------------------

std::unique_ptr<Backend> make_cuda_backend(const EngineSpec& spec, nsn_status* st) {
  auto b = std::make_unique<cuda_backend::CudaBackend>(spec);
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
