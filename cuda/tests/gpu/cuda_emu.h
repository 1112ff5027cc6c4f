// cuda_emu.h: a small CPU emulator for the KV kernels, so their tests also run on machines
// without a GPU (CI, the development boxes). Force-included (-include) with -DNSN_EMU when
// compiling the .cu files as plain C++ (g++ -x c++); see tools/emu_kernel_tests.sh.
//
// Every CUDA thread is a fiber (ucontext) of one OS thread; blocks run one after another.
// __syncthreads is a barrier over the block's fibers; warp collectives (shuffles, __any_sync,
// ldmatrix, movmatrix, mma.m16n8k16) exchange the 32 lanes' operands through a per-warp buffer
// between two warp barriers and compute each lane's result with the PTX fragment layouts.
// cp.async copies synchronously. Fast enough for the tests' small shapes, not for benchmarks.
#pragma once
#ifndef NSN_EMU
#error "cuda_emu.h is for -DNSN_EMU builds only"
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

using std::max;
using std::min;

namespace nsn_emu {

// ---- fibers ----------------------------------------------------------------------------------
// On x86-64 a fiber switch is a few instructions (the callee-saved registers and the stack
// pointer; nothing here changes the MXCSR or x87 control words, so they are not switched):
// glibc's swapcontext makes a sigprocmask system call per switch, which dominated the run time
// of kernels with many barriers and shuffles. Elsewhere ucontext is used.
#if defined(__x86_64__)
#define NSN_EMU_FAST_SWITCH 1
// Saves this context's registers on its stack and its stack pointer in *save, then continues the
// context whose stack pointer is `load` (saved by an earlier switch or made by make_context).
__attribute__((naked, noinline)) inline void switch_context(void** /*save*/, void* /*load*/) {
  asm volatile(
      "pushq %rbp\n\tpushq %rbx\n\tpushq %r12\n\tpushq %r13\n\tpushq %r14\n\tpushq %r15\n\t"
      "movq %rsp, (%rdi)\n\tmovq %rsi, %rsp\n\t"
      "popq %r15\n\tpopq %r14\n\tpopq %r13\n\tpopq %r12\n\tpopq %rbx\n\tpopq %rbp\n\tret\n\t");
}
// A fresh context on [stack, stack + bytes) that starts in entry() (which must never return).
inline void* make_context(char* stack, size_t bytes, void (*entry)()) {
  uint64_t* top = (uint64_t*)(((uintptr_t)(stack + bytes)) & ~(uintptr_t)63);
  *--top = 0;                  // entry's return address (never used): entry sees rsp = 8 mod 16
  *--top = (uint64_t)entry;    // popped by switch_context's ret
  for (int i = 0; i < 6; i++) *--top = 0;  // rbp rbx r12 r13 r14 r15
  return top;
}
#endif

// A saved context and the switch between two.
#ifdef NSN_EMU_FAST_SWITCH
struct Context {
  void* sp = nullptr;
};
inline void jump(Context& save, const Context& load) { switch_context(&save.sp, load.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void jump(Context& save, const Context& load) { swapcontext(&save.uc, &load.uc); }
#endif

struct Fiber {
  Context ctx;
  char* stack = nullptr;
  bool done = false;
};

struct MmaOperands {  // mma_16816's operands of one warp, unpacked once per mma
  long gen = -1;        // the warp barrier generation they were unpacked in
  float A[16][16], B[16][8];
};

struct Block {
  int n = 0, cur = 0;
  uint3 bid{};
  dim3 bdim, gdim;
  Fiber* f = nullptr;
  Context sched;  // the launching thread's context, resumed when every fiber is done
  int bar_count = 0, done_count = 0;
  long bar_gen = 0;
  int wcount[64] = {0};
  long wgen[64] = {0};
  uint32_t xin[2][64][32][8];  // exchange buffers [warp barrier generation parity][warp][lane]
  MmaOperands mma[64];
  std::vector<uint8_t> smem;
  const std::function<void()>* body = nullptr;
};

// Fiber stacks, kept per OS thread and reused by every launch of that thread: one region
// mapped without reserve (only the pages a kernel touches become resident).
constexpr size_t kStackBytes = 128 << 10;
constexpr int kMaxThreads = 1024;  // per block, as on the GPU
struct StackPool {
  char* region = nullptr;
  size_t bytes = 0;
  std::vector<Fiber> fibers;
  ~StackPool() {
    if (region) munmap(region, bytes);
  }
  Fiber* get(int n) {
    if (!region) {
      bytes = kMaxThreads * kStackBytes;
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (p == MAP_FAILED) {
        fprintf(stderr, "cuda_emu: cannot map the fiber stacks\n");
        abort();
      }
      region = (char*)p;
      char* base = region;
      fibers.resize(kMaxThreads);
      for (int i = 0; i < kMaxThreads; i++) fibers[i].stack = base + (size_t)i * kStackBytes;
    }
    if (n > kMaxThreads) {
      fprintf(stderr, "cuda_emu: %d threads per block > %d\n", n, kMaxThreads);
      abort();
    }
    return fibers.data();
  }
};
inline StackPool& stack_pool() {
  static thread_local StackPool pool;
  return pool;
}

// The block that runs on this OS thread (Deno calls the library from several threads; each runs
// its kernels on its own).
inline Block*& cur_block() {
  static thread_local Block* b = nullptr;
  return b;
}
// The next fiber after `from` that has not finished, in round-robin order (-1: none).
inline int next_fiber(const Block* b, int from) {
  int j = from;
  for (int k = 0; k < b->n; k++) {
    j = j + 1 == b->n ? 0 : j + 1;
    if (!b->f[j].done) return j;
  }
  return -1;
}
// This fiber waits (at a barrier): the next one runs. Fibers switch to each other directly, one
// switch per fiber and barrier.
inline void yield() {
  Block* b = cur_block();
  const int from = b->cur, j = next_fiber(b, from);
  if (j == from) {
    fprintf(stderr, "cuda_emu: deadlock: thread %d waits at a barrier the others have left\n", from);
    abort();
  }
  b->cur = j;
  jump(b->f[from].ctx, b->f[j].ctx);
}
inline int tid() { return cur_block()->cur; }
inline uint8_t* smem_base() { return cur_block()->smem.data(); }

inline void fiber_main() {
  Block* b = cur_block();
  (*b->body)();
  const int from = b->cur, j = next_fiber(b, from);
  b->f[from].done = true;
  b->done_count++;
  static thread_local Context dead;  // this fiber's final state, never resumed
  if (j < 0 || j == from) {
    jump(dead, b->sched);
  } else {
    b->cur = j;
    jump(dead, b->f[j].ctx);
  }
  abort();  // never resumed
}

inline void run_block(Block& b) {
  Block* outer = cur_block();
  cur_block() = &b;
  for (int i = 0; i < b.n; i++) {
    Fiber& fb = b.f[i];
#ifdef NSN_EMU_FAST_SWITCH
    // The stacks are 128 KB apart: their tops would share cache sets. Fiber i's starts
    // 64 * (i % 61) bytes lower.
    fb.ctx.sp = make_context(fb.stack, kStackBytes - 64 * (i % 61), fiber_main);
#else
    getcontext(&fb.ctx.uc);
    fb.ctx.uc.uc_stack.ss_sp = fb.stack;
    fb.ctx.uc.uc_stack.ss_size = kStackBytes;
    fb.ctx.uc.uc_link = nullptr;
    makecontext(&fb.ctx.uc, fiber_main, 0);
#endif
    fb.done = false;
  }
  b.done_count = 0;
  b.cur = 0;
  jump(b.sched, b.f[0].ctx);  // back when the last fiber is done
  cur_block() = outer;
}

// Runs a grid now, block after block, on this OS thread.
inline void launch(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body) {
  if (cur_block()) {
    fprintf(stderr, "cuda_emu: kernel launch from inside a kernel\n");
    abort();
  }
  const int n = (int)(block.x * block.y * block.z);
  if (n <= 0 || n > kMaxThreads) {
    fprintf(stderr, "cuda_emu: bad block size %d\n", n);
    abort();
  }
  std::unique_ptr<Block> bp(new Block);  // ~70 KB: not on the caller's stack
  Block& b = *bp;
  b.n = n;
  b.bdim = block;
  b.gdim = grid;
  b.f = stack_pool().get(n);
  b.body = &body;
  for (unsigned z = 0; z < grid.z; z++) {
    for (unsigned y = 0; y < grid.y; y++) {
      for (unsigned x = 0; x < grid.x; x++) {
        b.bid = make_uint3(x, y, z);
        b.smem.assign(smem + 16, 0xCD);  // garbage, like real shared memory
        b.bar_count = 0;
        run_block(b);
      }
    }
  }
}

// Barriers are compiler memory fences too, as __syncthreads is on the device.
inline void syncthreads() {
  asm volatile("" ::: "memory");
  Block* b = cur_block();
  const long g = b->bar_gen;
  if (++b->bar_count == b->n) {
    b->bar_count = 0;
    b->bar_gen++;
    asm volatile("" ::: "memory");
    return;
  }
  while (b->bar_gen == g) {
    if (b->bar_count + b->done_count == b->n) {
      fprintf(stderr, "cuda_emu: __syncthreads deadlock: %d threads exited, %d wait\n", b->done_count,
              b->bar_count);
      abort();
    }
    yield();
  }
  asm volatile("" ::: "memory");
}
inline void warp_barrier() {
  asm volatile("" ::: "memory");
  Block* b = cur_block();
  const int w = b->cur >> 5;
  const long g = b->wgen[w];
  if (++b->wcount[w] == std::min(32, b->n - 32 * w)) {
    b->wcount[w] = 0;
    b->wgen[w]++;
    asm volatile("" ::: "memory");
    return;
  }
  while (b->wgen[w] == g) yield();
  asm volatile("" ::: "memory");
}
// Deposits n words of this lane, waits for the warp; returns the warp's buffer [32][8]. Two
// buffers alternate with the parity of the warp's barrier generation: a lane deposits into a
// buffer again only after a later barrier of the whole warp, so every lane has finished reading
// it (the readers read before their next barrier) and no second barrier is needed.
inline uint32_t (*exchange(const uint32_t* in, int n))[8] {
  Block* b = cur_block();
  const int w = b->cur >> 5, par = (int)(b->wgen[w] & 1);
  memcpy(b->xin[par][w][b->cur & 31], in, 4 * n);
  warp_barrier();
  return b->xin[par][w];
}
inline void done_reading() {}

template <typename T>
inline T shfl(T v, int src_lane_fn_kind, int arg) {
  static_assert(sizeof(T) <= 8, "shuffle width");
  uint32_t in[2] = {0, 0};
  memcpy(in, &v, sizeof(T));
  uint32_t(*x)[8] = exchange(in, 2);
  const int lane = tid() & 31;
  int src = lane;
  if (src_lane_fn_kind == 0) src = lane ^ arg;                  // xor
  if (src_lane_fn_kind == 1) src = lane + arg < 32 ? lane + arg : lane;  // down
  if (src_lane_fn_kind == 2) src = arg & 31;                    // idx
  if (src_lane_fn_kind == 3) src = lane - arg >= 0 ? lane - arg : lane;  // up
  T r;
  memcpy(&r, x[src], sizeof(T));
  done_reading();
  return r;
}
inline bool any(bool p) {
  uint32_t in = p;
  uint32_t(*x)[8] = exchange(&in, 1);
  bool r = false;
  for (int i = 0; i < 32; i++) r |= x[i][0] != 0;
  done_reading();
  return r;
}

inline uint3 thread_idx() {
  const Block* b = cur_block();
  const unsigned t = (unsigned)b->cur;
  return make_uint3(t % b->bdim.x, (t / b->bdim.x) % b->bdim.y, t / (b->bdim.x * b->bdim.y));
}

inline float h2f(uint16_t h) {
  __half x;
  memcpy(&x, &h, 2);
  return __half2float(x);
}

}  // namespace nsn_emu

#define threadIdx (nsn_emu::thread_idx())
#define blockIdx (nsn_emu::cur_block()->bid)
#define blockDim (nsn_emu::cur_block()->bdim)
#define gridDim (nsn_emu::cur_block()->gdim)
#define __syncthreads() nsn_emu::syncthreads()
#define __syncwarp(...) nsn_emu::warp_barrier()
#define __shfl_xor_sync(mask, v, o) nsn_emu::shfl((v), 0, (o))
#define __shfl_down_sync(mask, v, o) nsn_emu::shfl((v), 1, (o))
#define __shfl_sync(mask, v, l) nsn_emu::shfl((v), 2, (l))
#define __shfl_up_sync(mask, v, o) nsn_emu::shfl((v), 3, (o))
#define __any_sync(mask, p) nsn_emu::any(p)
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__
#define __fadd_rn(a, b) ((a) + (b))
#define __fsub_rn(a, b) ((a) - (b))
#define __fmul_rn(a, b) ((a) * (b))
#define __fdiv_rn(a, b) ((a) / (b))
#define __fmaf_rn(a, b, c) fmaf((a), (b), (c))
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

// The runtime API (memory, streams, graphs, errors) for the launchers, the tests and the backend.
#include "cuda_emu_runtime.h"

// Kernel-side intrinsics of sampling.cu. The emulator's threads switch only at barriers, so
// atomics are plain read-modify-writes.
#undef __shared__
#define __shared__ static thread_local  // one per OS thread: shared by the block's fibers
inline uint32_t __float_as_uint(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
template <class T>
inline T atomicAdd(T* p, T v) {
  const T o = *p;
  *p = o + v;
  return o;
}
template <class T>
inline T atomicOr(T* p, T v) {
  const T o = *p;
  *p = o | v;
  return o;
}
template <class T>
inline T atomicExch(T* p, T v) {
  const T o = *p;
  *p = v;
  return o;
}

namespace nsn {
namespace gpu {

inline uint32_t smem_addr(const void* p) { return (uint32_t)((const uint8_t*)p - nsn_emu::smem_base()); }
inline void cp_async16(uint32_t dst, const void* src, bool valid = true) {
  uint8_t* d = nsn_emu::smem_base() + dst;
  if (valid) {
    memcpy(d, src, 16);
  } else {
    memset(d, 0, 16);
  }
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

inline uint16_t smem_half(uint32_t addr) {
  uint16_t h;
  memcpy(&h, nsn_emu::smem_base() + addr, 2);
  return h;
}
// lane's registers of ldmatrix.x4 (.trans) given the 32 row addresses
inline void ldmatrix_impl(uint32_t (&r)[4], uint32_t addr, bool trans) {
  if (addr % 16) {
    fprintf(stderr, "ldmatrix: misaligned row address %u\n", addr);
    abort();
  }
  uint32_t(*x)[8] = nsn_emu::exchange(&addr, 1);
  const int lane = nsn_emu::tid() & 31, g = lane >> 2, q = lane & 3;
  for (int i = 0; i < 4; i++) {
    uint16_t lo, hi;
    if (!trans) {  // row g, elements 2q, 2q+1
      const uint32_t row = x[8 * i + g][0];
      lo = smem_half(row + 4 * q);
      hi = smem_half(row + 4 * q + 2);
    } else {  // rows 2q, 2q+1, element g
      lo = smem_half(x[8 * i + 2 * q][0] + 2 * g);
      hi = smem_half(x[8 * i + 2 * q + 1][0] + 2 * g);
    }
    r[i] = lo | ((uint32_t)hi << 16);
  }
  nsn_emu::done_reading();
}
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) { ldmatrix_impl(r, addr, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) { ldmatrix_impl(r, addr, true); }
inline uint32_t movmatrix_trans(uint32_t v) {
  uint32_t(*x)[8] = nsn_emu::exchange(&v, 1);
  const int lane = nsn_emu::tid() & 31, g = lane >> 2, q = lane & 3;
  // element M[r][c] sits in lane 4r + c/2, half c%2; we need M^T[g][2q + j] = M[2q + j][g]
  uint32_t out = 0;
  for (int j = 0; j < 2; j++) {
    const int r = 2 * q + j, c = g;
    const uint32_t w = x[4 * r + c / 2][0];
    out |= ((c & 1) ? (w >> 16) : (w & 0xffff)) << (16 * j);
  }
  nsn_emu::done_reading();
  return out;
}
inline void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint32_t in[6] = {a[0], a[1], a[2], a[3], b0, b1};
  uint32_t(*x)[8] = nsn_emu::exchange(in, 6);
  // The first lane past the barrier unpacks the warp's operands for all (no lane switches
  // before done_reading's barrier).
  nsn_emu::Block* blk = nsn_emu::cur_block();
  const int w = blk->cur >> 5;
  nsn_emu::MmaOperands& op = blk->mma[w];
  float(&A)[16][16] = op.A;
  float(&B)[16][8] = op.B;
  if (op.gen != blk->wgen[w]) {
    op.gen = blk->wgen[w];
  for (int l = 0; l < 32; l++) {
    const int g = l >> 2, q = l & 3;
    for (int j = 0; j < 2; j++) {
      A[g][2 * q + j] = nsn_emu::h2f((uint16_t)(x[l][0] >> (16 * j)));
      A[g + 8][2 * q + j] = nsn_emu::h2f((uint16_t)(x[l][1] >> (16 * j)));
      A[g][2 * q + 8 + j] = nsn_emu::h2f((uint16_t)(x[l][2] >> (16 * j)));
      A[g + 8][2 * q + 8 + j] = nsn_emu::h2f((uint16_t)(x[l][3] >> (16 * j)));
      B[2 * q + j][g] = nsn_emu::h2f((uint16_t)(x[l][4] >> (16 * j)));
      B[2 * q + 8 + j][g] = nsn_emu::h2f((uint16_t)(x[l][5] >> (16 * j)));
    }
  }
  }
  const int lane = nsn_emu::tid() & 31, g = lane >> 2, q = lane & 3;
  for (int e = 0; e < 4; e++) {
    const int row = g + 8 * (e >> 1), col = 2 * q + (e & 1);
    float s = c[e];
    for (int k = 0; k < 16; k++) s += A[row][k] * B[k][col];
    c[e] = s;
  }
  nsn_emu::done_reading();
}

}  // namespace gpu
}  // namespace nsn

// WMMA 16x16x16 (prefill_attention.cu). The fragment layout is opaque to the kernels, so every
// lane holds the whole tile. A load ends with a warp barrier, so that all lanes have read before
// any lane stores (a load-mma-store of the same tile then adds once; all lanes store the same).
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  float x[16][16];  // [row][col] of the tile (A: M x K, B: K x N, C: M x N)
};
template <class F>
inline void fill_fragment(F& f, float v) {
  for (auto& r : f.x)
    for (float& e : r) e = v;
}
inline float emu_elt(const __half* p) { return __half2float(*p); }
inline float emu_elt(const float* p) { return *p; }
// Element (r, c) of a row-major tile is p[r * ldm + c]; of a column-major one, p[c * ldm + r].
template <class F, class T>
inline void emu_load(F& f, const T* p, unsigned ldm, bool row_major) {
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) f.x[r][c] = emu_elt(row_major ? p + r * ldm + c : p + c * ldm + r);
  nsn_emu::warp_barrier();
}
template <class Use, class T>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, row_major>& f, const T* p, unsigned ldm) {
  emu_load(f, p, ldm, true);
}
template <class Use, class T>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, col_major>& f, const T* p, unsigned ldm) {
  emu_load(f, p, ldm, false);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t l) {
  emu_load(f, p, ldm, l == mem_row_major);
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t l) {
  for (int r = 0; r < 16; r++)
    for (int c = 0; c < 16; c++) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r][c];
}
template <class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
                     const fragment<matrix_a, 16, 16, 16, __half, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, __half, LB>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[16][16];
  for (int r = 0; r < 16; r++)
    for (int n = 0; n < 16; n++) {
      float s = c.x[r][n];
      for (int k = 0; k < 16; k++) s += a.x[r][k] * b.x[k][n];
      out[r][n] = s;
    }
  memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda
