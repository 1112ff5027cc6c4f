// backend_cuda_graphs.cu: CUDA graphs of pure-decode steps: capture, cache (least recently
// used), replay (the class: backend_cuda.cuh).
#include "backend_cuda.cuh"

namespace nsn {
namespace cuda_backend {

// ---- CUDA graphs ---------------------------------------------------------------------------

// The key of this (pure-decode, packed) step. Decode attention plans its work on the device
// from the DecodeSeqs (data) into a workspace whose size depends on n only: a graph captured at
// one context length replays correctly at any other.
CudaBackend::GraphKey CudaBackend::graph_key() const {
  const Sections& S = sec_;
  GraphKey k{};
  k.n = S.n_dec;
  k.encode = S.n_dec_enc > 0;
  return k;
}

// forward_layers as a CUDA graph: replays the one cached under this step's key, else captures
// it first. A failed capture turns graphs off for this backend and runs the step eagerly.
nsn_status CudaBackend::forward_graph(const StepPlan& plan) {
  const GraphKey key = graph_key();
  // The cached graphs all hold the plan buffer's and the workspace's addresses: when either
  // moved, none is valid.
  if (plan_d_.p != graph_plan_ || dec_ws_.p != graph_ws_) {
    drop_graphs();
    graph_plan_ = plan_d_.p;
    graph_ws_ = dec_ws_.p;
  }
  CachedGraph* hit = nullptr;
  for (CachedGraph& g : graphs_)
    if (g.key == key) hit = &g;
  if (!hit) {
    // A key's first step runs eagerly: kernels launched for the first time (lazy module
    // loading, the attention kernel's one-time shared-memory attribute) never do so inside a
    // capture. The second step with the key captures.
    if (std::find(warm_keys_.begin(), warm_keys_.end(), key) == warm_keys_.end()) {
      if (warm_keys_.size() >= 4 * kMaxGraphs) warm_keys_.erase(warm_keys_.begin());
      warm_keys_.push_back(key);
      return forward_layers(plan);
    }
    cudaGraphExec_t exec = nullptr;
    if (capture_graph(plan, &exec) != NSN_OK) {
      // The library never prints: a failed capture shows as graph_steps (nsn_engine_info) no
      // longer growing.
      graphs_on_ = false;
      drop_graphs();
      return forward_layers(plan);
    }
    hit = &cache_graph(key, exec);
  }
  hit->used = ++graph_clock_;
  CK(cudaGraphLaunch(hit->exec, stream_));
  graph_steps_++;
  return NSN_OK;
}

// Captures forward_layers on stream_ and instantiates it. Thread-local mode: Deno calls in from
// arbitrary threads, and only this thread's calls matter to the capture. Whatever fails, the
// capture is ended and the partial graph destroyed: the stream never stays capturing.
nsn_status CudaBackend::capture_graph(const StepPlan& plan, cudaGraphExec_t* out) {
  *out = nullptr;
  cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return set_error(NSN_E_BACKEND, "cuda: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
  }
  const nsn_status st = forward_layers(plan);
  cudaGraph_t graph = nullptr;
  e = cudaStreamEndCapture(stream_, &graph);
  if (st == NSN_OK && e == cudaSuccess) e = cudaGraphInstantiate(out, graph, 0);
  if (graph) cudaGraphDestroy(graph);  // the executable graph is independent of it
  if (st == NSN_OK && e == cudaSuccess) return NSN_OK;
  *out = nullptr;
  cudaGetLastError();  // clear the error the failed capture left behind
  if (st != NSN_OK) return st;
  return set_error(NSN_E_BACKEND, "cuda: graph capture/instantiate: %s", cudaGetErrorString(e));
}

// Adds a graph to the cache, evicting the least recently launched one when full.
CudaBackend::CachedGraph& CudaBackend::cache_graph(const GraphKey& key, cudaGraphExec_t exec) {
  if (graphs_.size() < kMaxGraphs) {
    graphs_.push_back({key, exec, 0});
    return graphs_.back();
  }
  auto older = [](const CachedGraph& a, const CachedGraph& b) { return a.used < b.used; };
  CachedGraph& lru = *std::min_element(graphs_.begin(), graphs_.end(), older);
  cudaGraphExecDestroy(lru.exec);
  lru = {key, exec, 0};
  return lru;
}

void CudaBackend::drop_graphs() {
  for (CachedGraph& g : graphs_) cudaGraphExecDestroy(g.exec);
  graphs_.clear();
  warm_keys_.clear();
}

}  // namespace cuda_backend
}  // namespace nsn
