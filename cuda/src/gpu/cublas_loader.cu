// cublas_loader.cu: the one translation unit that talks to libcublas, through dlopen.
// Enum values (cuBLAS docs; cudaDataType_t comes from library_types.h of the CUDA runtime):
//   cublasOperation_t  CUBLAS_OP_N = 0, CUBLAS_OP_T = 1
//   cublasComputeType_t CUBLAS_COMPUTE_32F = 68
//   cublasGemmAlgo_t   CUBLAS_GEMM_DEFAULT = -1
//   cublasMath_t       CUBLAS_DEFAULT_MATH = 0
//   cublasStatus_t     CUBLAS_STATUS_SUCCESS = 0
#include "cublas_loader.cuh"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <library_types.h>

#include <mutex>

#include "../backend.h"

namespace nsn {
namespace {

typedef int cublasStatus;  // cublasStatus_t
constexpr int kOpN = 0, kOpT = 1, kCompute32F = 68, kGemmDefault = -1, kDefaultMath = 0;

typedef cublasStatus (*PFN_create)(CublasHandle*);
typedef cublasStatus (*PFN_destroy)(CublasHandle);
typedef cublasStatus (*PFN_setStream)(CublasHandle, cudaStream_t);
typedef cublasStatus (*PFN_setMathMode)(CublasHandle, int);
typedef cublasStatus (*PFN_setWorkspace)(CublasHandle, void* workspace, size_t bytes);
typedef cublasStatus (*PFN_gemmEx)(CublasHandle, int transa, int transb, int m, int n, int k,
                                   const void* alpha, const void* A, cudaDataType_t Atype, int lda,
                                   const void* B, cudaDataType_t Btype, int ldb, const void* beta,
                                   void* C, cudaDataType_t Ctype, int ldc, int computeType,
                                   int algo);

struct Api {
  void* lib = nullptr;
  PFN_create create = nullptr;
  PFN_destroy destroy = nullptr;
  PFN_setStream set_stream = nullptr;
  PFN_setMathMode set_math_mode = nullptr;
  PFN_setWorkspace set_workspace = nullptr;
  PFN_gemmEx gemm_ex = nullptr;
  nsn_status status = NSN_E_NO_DEVICE;
  char error[512] = "cuBLAS not loaded";
};

Api g_api;
std::once_flag g_once;

void load_once() {
  // The loader's search path first; then the usual toolkit locations, for machines whose
  // ld.so.cache does not list the CUDA libraries.
  const char* names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
  for (const char* n : names) {
    g_api.lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
    if (g_api.lib) break;
  }
  const char* first_error = g_api.lib ? nullptr : dlerror();
  char first[256] = "";
  if (first_error) snprintf(first, sizeof first, "%s", first_error);
  const char* homes[] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"};
  for (const char* home : homes) {
    for (const char* n : names) {
      if (g_api.lib || !home || !*home) break;
      char path[512];
      snprintf(path, sizeof path, "%s/lib64/%s", home, n);
      g_api.lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
  }
  if (!g_api.lib) {
    snprintf(g_api.error, sizeof g_api.error, "dlopen(libcublas.so.13/.12/.so) failed: %s",
             first[0] ? first : "not found");
    return;
  }
  struct Sym {
    const char* name;
    void** slot;
  } syms[] = {
      {"cublasCreate_v2", (void**)&g_api.create},
      {"cublasDestroy_v2", (void**)&g_api.destroy},
      {"cublasSetStream_v2", (void**)&g_api.set_stream},
      {"cublasSetMathMode", (void**)&g_api.set_math_mode},
      {"cublasSetWorkspace_v2", (void**)&g_api.set_workspace},
      {"cublasGemmEx", (void**)&g_api.gemm_ex},
  };
  for (auto& s : syms) {
    *s.slot = dlsym(g_api.lib, s.name);
    if (!*s.slot) {
      snprintf(g_api.error, sizeof g_api.error, "libcublas lacks symbol %s", s.name);
      return;
    }
  }
  g_api.status = NSN_OK;
}

}  // namespace

nsn_status cublas_load() {
  std::call_once(g_once, load_once);
  if (g_api.status != NSN_OK) return set_error(g_api.status, "%s", g_api.error);
  return NSN_OK;
}

nsn_status cublas_create(CublasHandle* out, cudaStream_t stream) {
  nsn_status st = cublas_load();
  if (st != NSN_OK) return st;
  CublasHandle h = nullptr;
  int rc = g_api.create(&h);
  if (rc != 0) return set_error(NSN_E_BACKEND, "cublasCreate_v2 failed (status %d)", rc);
  rc = g_api.set_stream(h, stream);
  if (rc == 0) rc = g_api.set_math_mode(h, kDefaultMath);
  if (rc != 0) {
    g_api.destroy(h);
    return set_error(NSN_E_BACKEND, "cublasSetStream_v2/cublasSetMathMode failed (status %d)", rc);
  }
  *out = h;
  return NSN_OK;
}

void cublas_destroy(CublasHandle h) {
  if (h && g_api.destroy) g_api.destroy(h);
}

nsn_status cublas_set_workspace(CublasHandle h, void* workspace, size_t bytes) {
  const int rc = g_api.set_workspace(h, workspace, bytes);
  if (rc != 0) return set_error(NSN_E_BACKEND, "cublasSetWorkspace_v2 failed (status %d)", rc);
  return NSN_OK;
}

nsn_status gemm_xwT(CublasHandle h, int M, int N, int K, const __nv_bfloat16* x, int ldx,
                    const __nv_bfloat16* w, void* y, bool y_f32, int ldy, float alpha, float beta) {
  if (M == 0) return NSN_OK;
  // Column-major view: y^T [N x M] = w [N x K] (w stored row-major = w^T col-major, so op T)
  // times x^T [K x M] (x row-major = x^T col-major, op N).
  const int rc = g_api.gemm_ex(h, kOpT, kOpN, N, M, K, &alpha, w, CUDA_R_16BF, K, x, CUDA_R_16BF,
                               ldx, &beta, y, y_f32 ? CUDA_R_32F : CUDA_R_16BF, ldy, kCompute32F,
                               kGemmDefault);
  if (rc != 0)
    return set_error(NSN_E_BACKEND, "cublasGemmEx(M=%d N=%d K=%d) failed (status %d)", M, N, K, rc);
  return NSN_OK;
}

}  // namespace nsn
