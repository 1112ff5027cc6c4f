// cublas_loader.cuh: cuBLAS loaded at run time (dlopen), so every .cu compiles on machines that
// have nvcc but no cuBLAS headers or libraries (the development machines and CI). Only the few
// entry points the backend needs are declared here, with the enum values of the cuBLAS docs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../../include/nsn.h"

namespace nsn {

// Opaque cuBLAS handle (cublasHandle_t is a pointer to an incomplete struct).
typedef void* CublasHandle;

// Loads libcublas (first of .so.13, .so.12, .so) once per process and resolves the symbols.
// NSN_E_NO_DEVICE with a message when the library or a symbol is missing.
nsn_status cublas_load();

// Creates a handle bound to `stream` (default math mode: no reduced-precision reductions).
nsn_status cublas_create(CublasHandle* out, cudaStream_t stream);
void cublas_destroy(CublasHandle h);
// Gives the handle a device workspace of its own (cublasSetWorkspace_v2; `bytes` of device
// memory, 256-byte aligned, owned by the caller and kept until the handle is destroyed), so
// that cuBLAS never allocates one itself, e.g. inside a CUDA graph capture. Call it after
// cublas_create: setting the stream resets the workspace.
nsn_status cublas_set_workspace(CublasHandle h, void* workspace, size_t bytes);

// y[M][N] = alpha * x[M][K] . w[N][K]^T + beta * y   (row-major; w is an HF Linear weight)
// x, w bf16; compute fp32; y bf16 (y_f32 == false) or fp32 (y_f32 == true). ldx/ldy are the
// row strides of x and y in elements. beta = 1 with an fp32 y fuses the residual add.
nsn_status gemm_xwT(CublasHandle h, int M, int N, int K, const __nv_bfloat16* x, int ldx,
                    const __nv_bfloat16* w, void* y, bool y_f32, int ldy, float alpha, float beta);

}  // namespace nsn
