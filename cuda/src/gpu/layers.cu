// layers.cu: embedding, RMSNorm, bias + RoPE + KV append, SwiGLU, weight conversion, synthetic
// weights (declarations and semantics in layers.cuh).
#include "layers.cuh"

#include <math.h>

#include "../backend.h"
#include "../random.h"
#include "layers_dev.cuh"

namespace nsn {

namespace {

nsn_status check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return set_error(NSN_E_BACKEND, "%s launch: %s", what, cudaGetErrorString(e));
  return NSN_OK;
}

__global__ void embed_kernel(const __nv_bfloat16* __restrict__ table, const int32_t* __restrict__ tokens,
                             int hidden, float* __restrict__ out) {
  const int row = blockIdx.x;
  const __nv_bfloat16* src = table + (size_t)tokens[row] * hidden;
  float* dst = out + (size_t)row * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

// One block (dev::kRmsThreads threads) per row; dynamic shared memory: the 32-float reduction
// buffer of dev::block_sum (dynamic so the CPU emulator of the kernel tests shares it).
__global__ void __launch_bounds__(dev::kRmsThreads)
    rmsnorm_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int hidden,
                   const float* __restrict__ w, float eps, __nv_bfloat16* __restrict__ out) {
  NSN_DYNAMIC_SMEM(float, red);
  const int i = blockIdx.x;
  dev::rmsnorm_row(x + (size_t)(rows ? rows[i] : i) * hidden, hidden, w, eps,
                   out + (size_t)i * hidden, red);
}

// Grid (token, slice): a token's work items (the rotary pairs of its q and k heads, then its v
// elements) are cut into slices of one item per thread, so a decode step with few tokens still
// spreads over many blocks. cos/sin of the position are computed per block (angle in fp32 like
// HF, the cosine and sine in double, as rope.h's rope_cos_sin) and shared by its threads.
__global__ void qkv_rope_append_kernel(QkvRopeArgs a) {
  NSN_DYNAMIC_SMEM(float, cs_sn);  // [d/2] cos, then [d/2] sin
  const int t = blockIdx.x, d = a.head_dim, h2 = d / 2;
  const int i0 = blockIdx.y * blockDim.x, i1 = i0 + blockDim.x;  // this block's items
  const TokenKv tk = a.tok[t];
  const int n_rot_items = (a.n_heads + a.n_kv_heads) * h2;
  for (int i = threadIdx.x; i < h2 && i0 < n_rot_items; i += blockDim.x) {  // blocks of v only skip it
    const float angle = (float)tk.pos * a.inv_freq[i];
    double s, c;
    sincos((double)angle, &s, &c);
    cs_sn[i] = (float)c;
    cs_sn[h2 + i] = (float)s;
  }
  __syncthreads();
  const int width = (a.n_heads + 2 * a.n_kv_heads) * d;
  const float* row = a.qkv + (size_t)t * width;
  auto val = [&](int col) {
    float v = row[col];
    if (a.bias) v += a.bias[col];
    return v;
  };
  // q and k: rotate pairs (i, i + d/2) of every head.
  const int n_rot_heads = a.n_heads + a.n_kv_heads;
  for (int idx = i0 + threadIdx.x; idx < min(i1, n_rot_items); idx += blockDim.x) {
    const int h = idx / h2, i = idx - h * h2;
    const int col = h * d + i;
    const float x0 = val(col), x1 = val(col + h2);
    const float c = cs_sn[i], s = cs_sn[h2 + i];
    const float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
    if (h < a.n_heads) {
      float* q = a.q + ((size_t)t * a.n_heads + h) * d;
      q[i] = y0;
      q[i + h2] = y1;
    } else if (tk.page) {
      __half* kb = (__half*)f16_block(tk.page, tk.layered, a.layer, a.n_kv_heads, d,
                                      h - a.n_heads, 0) + (size_t)tk.slot * d;
      kb[i] = __float2half_rn(y0);
      kb[i + h2] = __float2half_rn(y1);
    }
  }
  if (!tk.page) return;
  const int v0 = n_rot_heads * d;
  const int j0 = max(i0 - n_rot_items, 0), j1 = min(i1 - n_rot_items, a.n_kv_heads * d);
  for (int idx = j0 + threadIdx.x; idx < j1; idx += blockDim.x) {
    const int h = idx / d, i = idx - h * d;
    __half* vb = (__half*)f16_block(tk.page, tk.layered, a.layer, a.n_kv_heads, d, h, 1) +
                 (size_t)tk.slot * d;
    vb[i] = __float2half_rn(val(v0 + idx));
  }
}

__global__ void kv_copy_kernel(const KvCopyJob* __restrict__ jobs, int layer, int n_kv_heads,
                               int d) {
  const KvCopyJob j = jobs[blockIdx.x];
  const int kvh = blockIdx.y >> 1, part = blockIdx.y & 1;
  const uint4* src = (const uint4*)f16_block(j.src, j.src_layered, layer, n_kv_heads, d, kvh, part);
  uint4* dst = (uint4*)f16_block(j.dst, j.dst_layered, layer, n_kv_heads, d, kvh, part);
  const int n16 = j.n_tokens * d * 2 / 16;  // d is a multiple of 8: whole 16-byte units
  for (int i = threadIdx.x; i < n16; i += blockDim.x) dst[i] = src[i];
}

__global__ void swiglu_kernel(const float* __restrict__ gu, int inter, __nv_bfloat16* __restrict__ h) {
  const int row = blockIdx.y;
  const float* g = gu + (size_t)row * 2 * inter;
  const float* u = g + inter;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < inter; i += gridDim.x * blockDim.x) {
    h[(size_t)row * inter + i] = dev::swiglu(g[i], u[i]);
  }
}

template <typename T>
__device__ inline float to_f32(T v);
template <>
__device__ inline float to_f32<float>(float v) { return v; }
template <>
__device__ inline float to_f32<__half>(__half v) { return __half2float(v); }
template <>
__device__ inline float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__global__ void to_bf16_kernel(const T* __restrict__ src, uint64_t n, __nv_bfloat16* __restrict__ dst) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(to_f32(src[i]));
}

template <typename T>
__global__ void to_f32_kernel(const T* __restrict__ src, uint64_t n, float* __restrict__ dst) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x)
    dst[i] = to_f32(src[i]);
}

__global__ void synthetic_kernel(uint64_t seed, int slot, int layer, float std, uint64_t n,
                                 __nv_bfloat16* __restrict__ dst_bf16, float* __restrict__ dst_f32) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x) {
    const __nv_bfloat16 b = __float2bfloat16_rn(synthetic_normal(seed, slot, layer, i, std));
    if (dst_bf16) dst_bf16[i] = b;
    else dst_f32[i] = __bfloat162float(b);
  }
}

__global__ void fill_kernel(float* __restrict__ dst, uint64_t n, float value) {
  for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < n;
       i += (uint64_t)gridDim.x * blockDim.x)
    dst[i] = value;
}

int grid_for(uint64_t n, int threads) {
  const uint64_t b = (n + threads - 1) / threads;
  return (int)(b < 65535 * 8 ? (b == 0 ? 1 : b) : 65535 * 8);
}

}  // namespace

nsn_status launch_embed(const __nv_bfloat16* table, const int32_t* tokens, int n, int hidden,
                        float* out, cudaStream_t stream) {
  if (n <= 0) return NSN_OK;
  NSN_LAUNCH(embed_kernel, n, 256, 0, stream, table, tokens, hidden, out);
  return check_launch("embed_kernel");
}

nsn_status launch_rmsnorm(const float* x, const int32_t* rows, int n, int hidden, const float* w,
                          float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (n <= 0) return NSN_OK;
  NSN_LAUNCH(rmsnorm_kernel, n, dev::kRmsThreads, 32 * sizeof(float), stream, x, rows, hidden, w, eps, out);
  return check_launch("rmsnorm_kernel");
}

nsn_status launch_qkv_rope_append(const QkvRopeArgs& a, cudaStream_t stream) {
  if (a.n <= 0) return NSN_OK;
  if (a.head_dim % 16 != 0 || a.head_dim > 256)
    return set_error(NSN_E_UNSUPPORTED, "qkv_rope_append: head_dim %d", a.head_dim);
  constexpr int kThreads = 256;
  const int items = (a.n_heads + a.n_kv_heads) * (a.head_dim / 2) + a.n_kv_heads * a.head_dim;
  NSN_LAUNCH(qkv_rope_append_kernel, dim3(a.n, (items + kThreads - 1) / kThreads), kThreads,
             a.head_dim * sizeof(float), stream, a);
  return check_launch("qkv_rope_append_kernel");
}

nsn_status launch_kv_copy(const KvCopyJob* jobs, int n_jobs, int layer, int n_kv_heads,
                          int head_dim, cudaStream_t stream) {
  if (n_jobs <= 0) return NSN_OK;
  NSN_LAUNCH(kv_copy_kernel, dim3(n_jobs, n_kv_heads * 2), 128, 0, stream, jobs, layer, n_kv_heads,
             head_dim);
  return check_launch("kv_copy_kernel");
}

nsn_status launch_swiglu(const float* gu, int n, int inter, __nv_bfloat16* h, cudaStream_t stream) {
  if (n <= 0) return NSN_OK;
  const int bx = (inter + 255) / 256;
  NSN_LAUNCH(swiglu_kernel, dim3(bx < 64 ? bx : 64, n), 256, 0, stream, gu, inter, h);
  return check_launch("swiglu_kernel");
}

nsn_status launch_to_bf16(const void* src, int dtype, uint64_t n, __nv_bfloat16* dst,
                          cudaStream_t stream) {
  if (n == 0) return NSN_OK;
  if (dtype == NSN_BF16) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, n * 2, cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess)
      return set_error(NSN_E_BACKEND, "cudaMemcpyAsync (bf16 weight): %s", cudaGetErrorString(e));
    return NSN_OK;
  }
  if (dtype == NSN_F32)
    NSN_LAUNCH((to_bf16_kernel<float>), grid_for(n, 256), 256, 0, stream, (const float*)src, n, dst);
  else if (dtype == NSN_F16)
    NSN_LAUNCH((to_bf16_kernel<__half>), grid_for(n, 256), 256, 0, stream, (const __half*)src, n, dst);
  else
    return set_error(NSN_E_INVALID, "to_bf16: dtype %d", dtype);
  return check_launch("to_bf16_kernel");
}

nsn_status launch_to_f32(const void* src, int dtype, uint64_t n, float* dst, cudaStream_t stream) {
  if (n == 0) return NSN_OK;
  if (dtype == NSN_F32) {
    const cudaError_t e = cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToDevice, stream);
    if (e != cudaSuccess)
      return set_error(NSN_E_BACKEND, "cudaMemcpyAsync (f32 weight): %s", cudaGetErrorString(e));
    return NSN_OK;
  }
  if (dtype == NSN_F16)
    NSN_LAUNCH((to_f32_kernel<__half>), grid_for(n, 256), 256, 0, stream, (const __half*)src, n, dst);
  else if (dtype == NSN_BF16)
    NSN_LAUNCH((to_f32_kernel<__nv_bfloat16>), grid_for(n, 256), 256, 0, stream, (const __nv_bfloat16*)src, n, dst);
  else
    return set_error(NSN_E_INVALID, "to_f32: dtype %d", dtype);
  return check_launch("to_f32_kernel");
}

nsn_status launch_synthetic(uint64_t seed, int slot, int layer, float std, uint64_t n,
                            __nv_bfloat16* dst_bf16, float* dst_f32, cudaStream_t stream) {
  if (n == 0) return NSN_OK;
  if ((dst_bf16 == nullptr) == (dst_f32 == nullptr))
    return set_error(NSN_E_INTERNAL, "synthetic: exactly one destination expected");
  NSN_LAUNCH(synthetic_kernel, grid_for(n, 256), 256, 0, stream, seed, slot, layer, std, n, dst_bf16, dst_f32);
  return check_launch("synthetic_kernel");
}

nsn_status launch_fill(float* dst, uint64_t n, float value, cudaStream_t stream) {
  if (n == 0) return NSN_OK;
  NSN_LAUNCH(fill_kernel, grid_for(n, 256), 256, 0, stream, dst, n, value);
  return check_launch("fill_kernel");
}

}  // namespace nsn
