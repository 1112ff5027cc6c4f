// cublas_emu.cpp: the entry points of cuda/src/gpu/cublas_loader.cuh for the CPU emulator
// (tools/emu_backend.sh links it instead of cublas_loader.cu). gemm_xwT computes what
// cublasGemmEx does for the backend: y = alpha * x . w^T + beta * y with bf16 inputs, fp32
// products and accumulation, and a bf16 (rounded to nearest even) or fp32 output; with beta = 0
// y is not read (NaN garbage there does not leak), as in cuBLAS. The GEMM is a stream operation
// of the handle's stream: it runs at once, or is recorded by an emulated graph capture.
// Compiled as C++ with -DNSN_EMU -include cuda/tests/gpu/cuda_emu.h.
#include <vector>

#include "../../src/backend.h"
#include "../../src/gpu/cublas_loader.cuh"

namespace nsn {
namespace {

struct EmuHandle {
  cudaStream_t stream;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

void gemm(int M, int N, int K, const __nv_bfloat16* x, int ldx, const __nv_bfloat16* w, void* y,
          bool y_f32, int ldy, float alpha, float beta) {
  // x rows and w rows as fp32 (exact), then dot products in fp32 with 8 partial sums.
  std::vector<float> xf((size_t)M * K), wf(K);
  for (int m = 0; m < M; m++)
    for (int k = 0; k < K; k++) xf[(size_t)m * K + k] = __bfloat162float(x[(size_t)m * ldx + k]);
  for (int n = 0; n < N; n++) {
    const __nv_bfloat16* wr = w + (size_t)n * K;
    for (int k = 0; k < K; k++) wf[k] = __bfloat162float(wr[k]);
    for (int m = 0; m < M; m++) {
      const float* xr = xf.data() + (size_t)m * K;
      float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int k = 0;
      for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; j++) part[j] += xr[k + j] * wf[k + j];
      for (; k < K; k++) part[k & 7] += xr[k] * wf[k];
      const float acc = ((part[0] + part[1]) + (part[2] + part[3])) +
                        ((part[4] + part[5]) + (part[6] + part[7]));
      if (y_f32) {
        float* yp = (float*)y + (size_t)m * ldy + n;
        *yp = beta == 0.0f ? alpha * acc : alpha * acc + beta * *yp;
      } else {
        __nv_bfloat16* yp = (__nv_bfloat16*)y + (size_t)m * ldy + n;
        const float old = beta == 0.0f ? 0.0f : __bfloat162float(*yp);
        *yp = __float2bfloat16_rn(beta == 0.0f ? alpha * acc : alpha * acc + beta * old);
      }
    }
  }
}

}  // namespace

nsn_status cublas_load() { return NSN_OK; }

nsn_status cublas_create(CublasHandle* out, cudaStream_t stream) {
  *out = new EmuHandle{stream};
  return NSN_OK;
}

void cublas_destroy(CublasHandle h) { delete (EmuHandle*)h; }

nsn_status cublas_set_workspace(CublasHandle h, void* workspace, size_t bytes) {
  EmuHandle* e = (EmuHandle*)h;
  e->workspace = workspace;
  e->workspace_bytes = bytes;
  return NSN_OK;
}

nsn_status gemm_xwT(CublasHandle h, int M, int N, int K, const __nv_bfloat16* x, int ldx,
                    const __nv_bfloat16* w, void* y, bool y_f32, int ldy, float alpha, float beta) {
  if (M == 0) return NSN_OK;
  if (!h || M < 0 || N <= 0 || K <= 0 || ldx < K || ldy < N)
    return set_error(NSN_E_BACKEND, "cublasGemmEx(M=%d N=%d K=%d) failed (status 7, emulator)", M,
                     N, K);
  const cudaError_t e = nsn_emu::enqueue(((EmuHandle*)h)->stream, [=] {
    nsn_emu::profiled("cublasGemmEx (emulated)", 0,
                      [&] { gemm(M, N, K, x, ldx, w, y, y_f32, ldy, alpha, beta); });
  });
  if (e != cudaSuccess)
    return set_error(NSN_E_BACKEND, "cublasGemmEx(M=%d N=%d K=%d) failed: %s", M, N, K,
                     cudaGetErrorString(e));
  return NSN_OK;
}

}  // namespace nsn
