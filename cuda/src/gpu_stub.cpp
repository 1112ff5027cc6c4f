// gpu_stub.cpp: the CUDA backend's entry points in a build without CUDA (no nvcc, or CUDA=0).
#include "backend.h"

namespace nsn {

std::unique_ptr<Backend> make_cuda_backend(const EngineSpec&, nsn_status* st) {
  *st = set_error(NSN_E_NO_DEVICE, "this library was built without CUDA support");
  return nullptr;
}

bool cuda_backend_available() { return false; }

}  // namespace nsn
