// cuda_emu_runtime.h: the CUDA runtime API for the CPU emulator (included by cuda_emu.h), so that
// the whole CUDA backend (backend_cuda*.cu: memory, plan upload, the forward pass, CUDA graphs)
// runs on a machine without a GPU (tools/emu_backend.sh).
//
// - Device memory is host memory. cudaMalloc returns 256-byte aligned blocks filled with
//   garbage (byte 0xCD; NSN_EMU_FILL=0x00..0xFF picks another, 0xFF makes every fp32/fp16 a NaN)
//   so reads of memory nobody wrote show up. The device has 2 GiB (cudaMemGetInfo: 2 GiB minus
//   what is allocated; NSN_EMU_DEVICE_MB changes it), one device, 132 SMs (NSN_EMU_SMS).
// - Every stream operation (kernel launch, async copy and memset, cuBLAS GEMM) runs at once, in
//   order, on the calling thread: streams are ordered and synchronous, events are not emulated.
// - Stream capture is emulated: between cudaStreamBeginCapture and cudaStreamEndCapture the
//   operations a thread issues on the capturing stream are recorded (kernel arguments copied at
//   launch, as a graph does) instead of run; cudaGraphLaunch replays them. As on a GPU,
//   synchronous calls (cudaMalloc, cudaFree, cudaMemcpy, cudaMemset, cudaStreamSynchronize,
//   cudaDeviceSynchronize) and launches on the legacy stream during a capture fail and
//   invalidate it (cudaStreamEndCapture then returns cudaErrorStreamCaptureInvalidated).
// - Errors are per thread: cudaGetLastError returns (and clears) the last failure.
#pragma once

#include <malloc.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>

// The runtime's opaque handle types get a body here.
struct CUstream_st {
  int flags;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

namespace nsn_emu {

inline cudaError_t& last_error() {
  static thread_local cudaError_t e = cudaSuccess;
  return e;
}
inline cudaError_t fail(cudaError_t e) {
  last_error() = e;
  return e;
}

// This thread's stream capture (graph == nullptr: none).
struct Capture {
  cudaStream_t stream = nullptr;
  CUgraph_st* graph = nullptr;
  cudaError_t error = cudaSuccess;
};
inline Capture& capture() {
  static thread_local Capture c;
  return c;
}
// A synchronous API call: not allowed while this thread captures (invalidates the capture).
inline cudaError_t sync_call() {
  Capture& c = capture();
  if (!c.graph) return cudaSuccess;
  c.error = cudaErrorStreamCaptureUnsupported;
  return fail(cudaErrorStreamCaptureUnsupported);
}
// A stream operation: runs now, or is recorded when this thread captures `s`.
inline cudaError_t enqueue(cudaStream_t s, std::function<void()> op) {
  Capture& c = capture();
  if (c.graph) {
    if (s == c.stream) {
      c.graph->ops.push_back(std::move(op));
      return cudaSuccess;
    }
    if (s == nullptr) {  // the legacy stream synchronizes with the capturing one
      c.error = cudaErrorStreamCaptureImplicit;
      return fail(cudaErrorStreamCaptureImplicit);
    }
  }
  op();
  return cudaSuccess;
}
// NSN_EMU_PROFILE=1: at exit, stderr gets the launches, emulated threads and seconds per kernel.
struct Profile {
  struct Row {
    long launches = 0, threads = 0;
    double seconds = 0;
  };
  std::mutex mu;
  std::map<std::string, Row> rows;
  ~Profile() {
    std::vector<std::pair<std::string, Row>> v(rows.begin(), rows.end());
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
    for (auto& r : v)
      fprintf(stderr, "cuda_emu profile: %9.3f s %8ld launches %12ld threads  %s\n", r.second.seconds,
              r.second.launches, r.second.threads, r.first.c_str());
  }
};
inline Profile* profile() {
  static Profile* p = [] {
    const char* e = getenv("NSN_EMU_PROFILE");
    return e && e[0] == '1' ? new Profile : nullptr;
  }();
  return p;
}
struct ProfileAtExit {
  ~ProfileAtExit() { delete profile(); }
};
inline void profile_at_exit() { static ProfileAtExit at_exit; }
// Runs fn, timed under `name` when profiling.
template <class F>
inline void profiled(const char* name, long threads, F&& fn) {
  Profile* p = profile();
  if (!p) return fn();
  profile_at_exit();
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(p->mu);
  Profile::Row& r = p->rows[name];
  r.launches++;
  r.threads += threads;
  r.seconds += dt;
}
inline void profiled_launch(const char* name, dim3 grid, dim3 block, size_t smem,
                            const std::function<void()>& body) {
  profiled(name, (long)grid.x * grid.y * grid.z * block.x * block.y * block.z,
           [&] { launch(grid, block, smem, body); });
}
// NSN_LAUNCH (nsn_math.cuh): the kernel body (a lambda holding copies of the arguments).
template <class F>
inline void launch_async(cudaStream_t s, const char* name, dim3 grid, dim3 block, size_t smem, F body) {
  enqueue(s, [name, grid, block, smem, body]() {
    profiled_launch(name, grid, block, smem, std::function<void()>(body));
  });
}

// ---- device memory -----------------------------------------------------------------------------
inline size_t device_bytes() {
  static const size_t b = [] {
    const char* e = getenv("NSN_EMU_DEVICE_MB");
    return (e && *e ? (size_t)strtoull(e, nullptr, 10) : 2048) << 20;
  }();
  return b;
}
inline int fill_byte() {
  static const int v = [] {
    const char* e = getenv("NSN_EMU_FILL");
    return e && *e ? (int)(strtol(e, nullptr, 0) & 0xff) : 0xCD;
  }();
  return v;
}
inline std::atomic<size_t>& device_used() {
  static std::atomic<size_t> used{0};
  return used;
}
constexpr size_t kHeader = 256;  // the block's size sits in front of it; keeps 256-byte alignment
inline cudaError_t device_malloc(void** p, size_t n) {
  *p = nullptr;
  if (cudaError_t e = sync_call()) return e;
  const size_t want = (n + 255) & ~(size_t)255;
  size_t used = device_used().load();
  do {
    if (want > device_bytes() - used) return fail(cudaErrorMemoryAllocation);
  } while (!device_used().compare_exchange_weak(used, used + want));
  // The exact size: AddressSanitizer (tools/emu_backend.sh SANITIZE=1) reports reads past it.
  void* mem = nullptr;
  char* raw = posix_memalign(&mem, 256, kHeader + (n ? n : 1)) == 0 ? (char*)mem : nullptr;
  if (!raw) {
    device_used() -= want;
    return fail(cudaErrorMemoryAllocation);
  }
  memcpy(raw, &want, sizeof want);
  memset(raw + kHeader, fill_byte(), n);
  *p = raw + kHeader;
  return cudaSuccess;
}
inline cudaError_t device_free(void* p) {
  if (cudaError_t e = sync_call()) return e;
  if (!p) return cudaSuccess;
  char* raw = (char*)p - kHeader;
  size_t want;
  memcpy(&want, raw, sizeof want);
  device_used() -= want;
  free(raw);
  return cudaSuccess;
}
inline cudaError_t mem_get_info(size_t* free_b, size_t* total_b) {
  const size_t used = device_used().load();
  *total_b = device_bytes();
  *free_b = used < *total_b ? *total_b - used : 0;
  return cudaSuccess;
}
inline cudaError_t host_malloc(void** p, size_t n) {
  *p = nullptr;
  return posix_memalign(p, 256, n ? n : 1) == 0 ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
inline cudaError_t memcpy_sync(void* d, const void* s, size_t n) {
  if (cudaError_t e = sync_call()) return e;
  if (n) memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t memset_sync(void* d, int v, size_t n) {
  if (cudaError_t e = sync_call()) return e;
  if (n) memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t memcpy_async(void* d, const void* s, size_t n, cudaStream_t st) {
  return enqueue(st, [d, s, n] {
    if (n) memcpy(d, s, n);
  });
}
inline cudaError_t memset_async(void* d, int v, size_t n, cudaStream_t st) {
  return enqueue(st, [d, v, n] {
    if (n) memset(d, v, n);
  });
}

// ---- devices, streams, graphs ------------------------------------------------------------------
inline cudaError_t get_device_count(int* n) {
  const char* e = getenv("NSN_EMU_NO_DEVICE");  // tests of the "no GPU" paths
  *n = e && e[0] == '1' ? 0 : 1;
  return cudaSuccess;
}
inline cudaError_t set_device(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
// SMs of the emulated device: an H100's / H200's 132, or NSN_EMU_SMS. Grids sized by the SM
// count (decode attention, the batch-1 GEMVs) launch that many blocks, and every emulated
// thread costs: a smaller count runs the same code paths with fewer, longer-running blocks.
inline int sm_count() {
  static const int n = [] {
    const char* e = getenv("NSN_EMU_SMS");
    const int v = e && *e ? atoi(e) : 132;
    return v > 0 ? v : 132;
  }();
  return n;
}
inline cudaError_t props(cudaDeviceProp* p, int) {
  memset(p, 0, sizeof *p);
  strcpy(p->name, "CPU emulator");
  p->multiProcessorCount = sm_count();
  p->totalGlobalMem = device_bytes();
  return cudaSuccess;
}
inline cudaError_t stream_create(cudaStream_t* s, unsigned flags) {
  *s = new CUstream_st{(int)flags};
  return cudaSuccess;
}
inline cudaError_t stream_destroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t stream_sync(cudaStream_t s) {
  Capture& c = capture();
  if (c.graph && (s == c.stream || s == nullptr)) return sync_call();
  return cudaSuccess;
}
inline cudaError_t begin_capture(cudaStream_t s) {
  Capture& c = capture();
  if (c.graph || s == nullptr) return fail(cudaErrorIllegalState);
  c.stream = s;
  c.graph = new CUgraph_st;
  c.error = cudaSuccess;
  return cudaSuccess;
}
inline cudaError_t end_capture(cudaStream_t s, cudaGraph_t* g) {
  Capture& c = capture();
  *g = nullptr;
  if (!c.graph || s != c.stream) return fail(cudaErrorIllegalState);
  CUgraph_st* graph = c.graph;
  const cudaError_t err = c.error;
  c = Capture{};
  if (err != cudaSuccess) {
    delete graph;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *g = graph;
  return cudaSuccess;
}
inline cudaError_t graph_instantiate(cudaGraphExec_t* exec, cudaGraph_t g) {
  *exec = nullptr;
  if (!g) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{g->ops};
  return cudaSuccess;
}
inline cudaError_t graph_launch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!exec) return fail(cudaErrorInvalidValue);
  return enqueue(s, [exec] {
    for (auto& op : exec->ops) op();
  });
}
inline const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory (emulator)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (emulator)";
    case cudaErrorInvalidValue: return "invalid argument (emulator)";
    case cudaErrorIllegalState: return "operation not permitted in this state (emulator)";
    case cudaErrorStreamCaptureUnsupported:
      return "operation not permitted when stream is capturing (emulator)";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture (emulator)";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream (emulator)";
    default: return "cuda error (emulator)";
  }
}

}  // namespace nsn_emu

#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaGetLastError() std::exchange(nsn_emu::last_error(), cudaSuccess)
#define cudaPeekAtLastError() (nsn_emu::last_error())
#define cudaDeviceSynchronize() nsn_emu::stream_sync(nullptr)
#define cudaStreamSynchronize(s) nsn_emu::stream_sync(s)
#define cudaGetErrorString(e) nsn_emu::error_string(e)
#define cudaMalloc(p, n) nsn_emu::device_malloc((void**)(p), (n))
#define cudaFree(p) nsn_emu::device_free((void*)(p))
#define cudaMallocHost(p, n) nsn_emu::host_malloc((void**)(p), (n))
#define cudaFreeHost(p) (free((void*)(p)), cudaSuccess)
#define cudaMemcpy(d, s, n, k) nsn_emu::memcpy_sync((d), (s), (n))
#define cudaMemcpyAsync(d, s, n, k, st) nsn_emu::memcpy_async((d), (s), (n), (st))
#define cudaMemset(d, v, n) nsn_emu::memset_sync((d), (v), (n))
#define cudaMemsetAsync(d, v, n, st) nsn_emu::memset_async((d), (v), (n), (st))
#define cudaMemGetInfo(f, t) nsn_emu::mem_get_info((f), (t))
#define cudaGetDeviceCount(n) nsn_emu::get_device_count(n)
#define cudaSetDevice(d) nsn_emu::set_device(d)
#define cudaGetDevice(p) (*(p) = 0, cudaSuccess)
#define cudaGetDeviceProperties(p, d) nsn_emu::props((p), (d))
#define cudaDeviceGetAttribute(p, attr, d) (*(p) = nsn_emu::sm_count(), cudaSuccess)
#define cudaStreamCreateWithFlags(s, f) nsn_emu::stream_create((s), (f))
#define cudaStreamCreate(s) nsn_emu::stream_create((s), 0)
#define cudaStreamDestroy(s) nsn_emu::stream_destroy(s)
#define cudaStreamBeginCapture(s, mode) nsn_emu::begin_capture(s)
#define cudaStreamEndCapture(s, g) nsn_emu::end_capture((s), (g))
#define cudaGraphInstantiate(e, g, ...) nsn_emu::graph_instantiate((e), (g))
#define cudaGraphLaunch(e, s) nsn_emu::graph_launch((e), (s))
#define cudaGraphDestroy(g) (delete (g), cudaSuccess)
#define cudaGraphExecDestroy(e) (delete (e), cudaSuccess)
