// backend_cuda_memory.cu: device memory of the CUDA backend: the KV arena and the step scratch
// (the class: backend_cuda.cuh).
#include "backend_cuda.cuh"

namespace nsn {
namespace cuda_backend {

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

}  // namespace cuda_backend
}  // namespace nsn
