// nsn_math.cuh: small device helpers shared by the KV kernels (kv_encode.cu,
// decode_attention*.cu): warp reductions, the warp-level FWHT, fp16 packing, and thin wrappers
// over the sm_80+/sm_90 instructions the decode kernel is built from (cp.async, ldmatrix,
// movmatrix, mma.m16n8k16). No kernels live here.
#pragma once
#include <cuda_fp16.h>
#include <stdint.h>
#include <string.h>

// Dynamic shared memory and kernel launches go through these two macros so the kernels also
// build for the CPU emulator of cuda/tests/gpu/cuda_emu.h (NSN_EMU), which runs them in tests
// on machines without a GPU.
#ifdef NSN_EMU
#define NSN_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(nsn_emu::smem_base())
// The emulator copies the arguments at launch (a lambda capturing by value), as a launch does:
// a launch recorded into an emulated CUDA graph replays with them (cuda_emu_runtime.h).
#define NSN_LAUNCH(kernel, grid, block, smem, stream, ...) \
  nsn_emu::launch_async(stream, #kernel, grid, block, smem, [=] { kernel(__VA_ARGS__); })
#else
#define NSN_DYNAMIC_SMEM(type, name) extern __shared__ __align__(128) type name[]
#define NSN_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#endif

namespace nsn {
namespace gpu {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// Normalized FWHT of one d = 32*E vector held by a warp, lane L owning elements [L*E, L*E+E).
// The butterflies run in the same order (h = 1, 2, 4, ...) and with the same float operations as
// the CPU's fwht(), so results are bitwise identical to it.
template <int E>
__device__ __forceinline__ void warp_fwht(float (&x)[E], int lane) {
#pragma unroll
  for (int h = 1; h < E; h <<= 1) {
#pragma unroll
    for (int j = 0; j < E; j++) {
      if (!(j & h)) {
        const float a = x[j], b = x[j + h];
        x[j] = __fadd_rn(a, b);
        x[j + h] = __fsub_rn(a, b);
      }
    }
  }
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {
    const bool lower = !(lane & m);
#pragma unroll
    for (int j = 0; j < E; j++) {
      const float other = __shfl_xor_sync(kFull, x[j], m);
      x[j] = lower ? __fadd_rn(x[j], other) : __fsub_rn(other, x[j]);
    }
  }
  const float norm = 1.0f / sqrtf((float)(32 * E));
#pragma unroll
  for (int j = 0; j < E; j++) x[j] = __fmul_rn(x[j], norm);
}

// Bit moves between fp16 pairs and words go through memcpy (no type punning of locals).
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  uint32_t w;
  memcpy(&w, &h, 4);
  return w;
}
__device__ __forceinline__ float2 unpack_half2(uint32_t w) {
  __half2 h;
  memcpy(&h, &w, 4);
  return __half22float2(h);
}

#ifndef NSN_EMU
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// 16-byte async global->shared copy; with valid == false the destination is zero-filled.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid = true) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ldmatrix: lanes 8i..8i+7 give the 16-byte row addresses of 8x8 matrix i; register i of every
// lane receives its fragment of matrix i (row lane/4, elements 2*(lane%4), +1; .trans: the
// transposed matrix).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Transposes an 8x8 fp16 matrix held in the ldmatrix fragment layout.
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}
// c[16x8] += a[16x16] * b[16x8], fp16 inputs, fp32 accumulators.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#else
// cuda_emu.h provides smem_addr, cp_async16, cp_async_commit, cp_async_wait, ldmatrix_x4(_trans),
// movmatrix_trans and mma_16816 with the same signatures.
#endif

// Byte k (0..3) of w, zero-extended (PRMT on the GPU).
__device__ __forceinline__ uint32_t byte_of(uint32_t w, int k) {
#ifdef NSN_EMU
  return (w >> (8 * k)) & 0xffu;
#else
  return __byte_perm(w, 0u, 0x4440u | (uint32_t)k);
#endif
}
// The same with the selector in a register: sel = byte_selector(k), computed once per lane.
__device__ __forceinline__ uint32_t byte_selector(int k) { return 0x4440u | (uint32_t)k; }
__device__ __forceinline__ uint32_t byte_sel(uint32_t w, uint32_t sel) {
#ifdef NSN_EMU
  return (w >> (8 * (sel & 3u))) & 0xffu;
#else
  return __byte_perm(w, 0u, sel);
#endif
}
// 2^x with one MUFU.EX2 (ex2.approx.ftz: ~2 ulp, results below 2^-126 flush to 0). For softmax
// weights 2^(s - max) <= 1, where a flushed denormal is as good as the exact tiny value.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef NSN_EMU
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
// Cross-block handoff (split-KV): a fence, a global counter increment, and loads that bypass L1
// (data other SMs wrote). The emulator runs blocks one after another: plain operations.
__device__ __forceinline__ void thread_fence() {
#ifndef NSN_EMU
  __threadfence();
#endif
}
__device__ __forceinline__ int atomic_add_int(int* p, int v) {
#ifdef NSN_EMU
  const int o = *p;
  *p = o + v;
  return o;
#else
  return atomicAdd(p, v);
#endif
}
__device__ __forceinline__ float load_cg(const float* p) {
#ifdef NSN_EMU
  return *p;
#else
  return __ldcg(p);
#endif
}
// Prefetch of the 128-byte line holding p into L1 (a hint: no effect in the emulator).
__device__ __forceinline__ void prefetch_l1(const void* p) {
#ifndef NSN_EMU
  asm volatile("prefetch.global.L1 [%0];" ::"l"(p));
#else
  (void)p;
#endif
}
// Shared-memory atomic minimum (the emulator's threads switch only at barriers: a plain update).
__device__ __forceinline__ void atomic_min_int(int* p, int v) {
#ifdef NSN_EMU
  if (v < *p) *p = v;
#else
  atomicMin(p, v);
#endif
}
// High 32 bits of the 64-bit product a * b.
__device__ __forceinline__ uint32_t mul_hi(uint32_t a, uint32_t b) {
#ifdef NSN_EMU
  return (uint32_t)(((uint64_t)a * b) >> 32);
#else
  return __umulhi(a, b);
#endif
}

// The 4-bit asymmetric quantizer of quant_internal.h, on the device (same float operations).
__device__ __forceinline__ float u4_value(float mn, float step, int code) {
  return __fmaf_rn((float)code, step, mn);
}
__device__ __forceinline__ int uniform_code_dev(float mn, float step, float v, int levels) {
  if (!(step > 0.0f)) return 0;
  float c = rintf(__fdiv_rn(__fsub_rn(v, mn), step));
  c = c < 0.0f ? 0.0f : c > (float)levels ? (float)levels : c;
  return (int)c;
}
__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(*reinterpret_cast<const __half*>(p));
}

}  // namespace gpu
}  // namespace nsn
