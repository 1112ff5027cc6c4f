// engine.h: the engine core's state behind the nsn_* ABI: the backend, the page allocator and
// the sequences' page tables. The ABI functions live in engine.cpp (lifecycle, weights,
// sequences, info), engine_step.cpp (nsn_step) and engine_check.cpp (invariants).
#pragma once
#include <stdint.h>

#include <exception>
#include <memory>
#include <new>
#include <vector>

#include "allocator.h"
#include "backend.h"

namespace nsn {

struct Seq {
  bool live = false;
  int32_t kv_bits = 16;
  int32_t len = 0;                 // tokens in the cache
  std::vector<int64_t> pages;      // kv_bits 16: fp16 page of every window (the partial last one
                                   // too); kv_bits 1/2: quantized page of every complete window
  int64_t tail = -1;               // kv_bits 1/2: fp16 page of the current window's exact tokens,
                                   // taken with the first token and kept while the seq lives
  std::vector<int32_t> history;    // [len] every token fed, for penalties
  nsn_sampling sampling{};
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
};

// New pages appending n_new tokens to a sequence of cur_len tokens takes (nsn_pages_needed).
struct PageNeed {
  uint64_t quant;  // pages of the sequence's quantized kind (0 for kv_bits 16)
  uint64_t fp16;
};
PageNeed pages_needed(int32_t kv_bits, int64_t cur_len, int64_t n_new);

// Runs an ABI function body; no C++ exception crosses into the caller (Deno).
template <class F>
nsn_status guarded(F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return set_error(NSN_E_OOM, "out of host memory");
  } catch (const std::exception& ex) {
    return set_error(NSN_E_INTERNAL, "internal error: %s", ex.what());
  } catch (...) {
    return set_error(NSN_E_INTERNAL, "internal error: unknown exception");
  }
}

// The sampling parameters a new sequence starts with: greedy, every filter and penalty off.
nsn_sampling default_sampling();

}  // namespace nsn

struct nsn_engine {
  nsn::EngineSpec spec;  // resolved options
  std::unique_ptr<nsn::Backend> backend;
  bool finalized = false;
  uint64_t arena_bytes = 0;
  uint64_t page_bytes[nsn::kKinds] = {};
  nsn::PageAllocator pages;
  std::vector<nsn::Seq> seqs;  // [max_seqs] slots
  int32_t seqs_in_use = 0;
  int32_t faults_pending = 0;  // nsn_engine_inject_fault

  // nsn_engine_check's work, also run after every step under debug_checks.
  nsn_status check() const;
};
