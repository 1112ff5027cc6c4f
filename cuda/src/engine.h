// engine.h: the engine core's state behind the nsn_* ABI: the backend, the arena's page-id
// geometry and the sequence slots (kv_bits + sampling parameters). The pages themselves are
// the caller's: every step names each row's page table, and the core only checks the ids
// against the arena. The ABI functions live in engine.cpp (lifecycle, weights, sequences,
// info), engine_step.cpp (nsn_step) and engine_check.cpp (invariants).
#pragma once
#include <stdint.h>

#include <exception>
#include <memory>
#include <new>
#include <vector>

#include "backend.h"

namespace nsn {

constexpr int kKinds = 3;  // KV_F16, KV_Q2, KV_Q1

struct Seq {
  bool live = false;
  int32_t kv_bits = 16;
  nsn_sampling sampling{};
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
};

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

// Whether the sampling parameters read earlier tokens (repetition/presence/frequency).
bool has_penalty(const nsn_sampling& s);

// Page tables a row needs for a cache of `end` tokens (nsn_seq_input's rule).
inline int32_t table_pages(int32_t kv_bits, int64_t end) {
  return (int32_t)(kv_bits == 16 ? (end + 63) / 64 : end / 64);
}

}  // namespace nsn

struct nsn_engine {
  nsn::EngineSpec spec;  // resolved options
  std::unique_ptr<nsn::Backend> backend;
  bool finalized = false;
  uint64_t arena_bytes = 0;
  uint64_t n_slabs = 0;                      // arena_bytes / page_bytes[0]
  uint64_t page_bytes[nsn::kKinds] = {};
  uint64_t per_slab[nsn::kKinds] = {};       // pages of a kind in one slab
  std::vector<nsn::Seq> seqs;                // [max_seqs] slots
  std::vector<int32_t> free_slots;           // slots not live, the next one to take last
  int32_t seqs_in_use = 0;
  int32_t faults_pending = 0;  // nsn_engine_inject_fault

  // Number of page ids of a kind: valid ids are [0, page_ids(kind)).
  uint64_t page_ids(int kind) const { return n_slabs * per_slab[kind]; }
  // Arena byte offset of a valid page id.
  int64_t page_offset(int kind, int32_t id) const {
    const uint64_t i = (uint64_t)id;
    return (int64_t)((i / per_slab[kind]) * page_bytes[0] + (i % per_slab[kind]) * page_bytes[kind]);
  }

  // nsn_engine_check's work, also run after every step under debug_checks.
  nsn_status check() const;
};
