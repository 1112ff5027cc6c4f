// sm_count.cuh: the current device's SM count, for launch-grid sizing (decode attention's split
// planning, the persistent batch-1 GEMVs). Queried once per device, then cached.
#pragma once
#include <cuda_runtime.h>

#include <atomic>

namespace nsn {
namespace gpu {

// 0 when the device cannot be queried.
inline int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 0;
  int n = cache[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) return 0;
    cache[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}

}  // namespace gpu
}  // namespace nsn
