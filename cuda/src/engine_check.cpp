// engine_check.cpp: nsn_engine_check. The core keeps no pages (the scheduler owns them and
// checks its own reference counts); what it holds is the sequence slots and their free list.
#include <string>

#include "engine.h"
#include "kv_layout.h"

using namespace nsn;

nsn_status nsn_engine::check() const {
  int32_t live = 0;
  std::vector<uint8_t> on_free_list(seqs.size(), 0);
  for (int32_t slot : free_slots) {
    if (slot < 0 || (size_t)slot >= seqs.size() || on_free_list[slot]) {
      return set_error(NSN_E_INTERNAL, "check: free slot list holds %d twice or out of range", slot);
    }
    on_free_list[slot] = 1;
  }
  for (size_t i = 0; i < seqs.size(); i++) {
    const Seq& s = seqs[i];
    if (s.live == (on_free_list[i] != 0)) {
      return set_error(NSN_E_INTERNAL, "check: slot %zu is %s but %s the free list", i,
                       s.live ? "live" : "free", s.live ? "on" : "not on");
    }
    if (!s.live) continue;
    live++;
    if (s.kv_bits != 16 && s.kv_bits != 2 && s.kv_bits != 1) {
      return set_error(NSN_E_INTERNAL, "check: seq %zu has kv_bits %d", i, s.kv_bits);
    }
    if (s.bias_ids.size() != s.bias_values.size()) {
      return set_error(NSN_E_INTERNAL, "check: seq %zu has %zu bias ids for %zu values", i,
                       s.bias_ids.size(), s.bias_values.size());
    }
  }
  if (live != seqs_in_use) {
    return set_error(NSN_E_INTERNAL, "check: %d live sequences, counted %d", live, seqs_in_use);
  }
  return NSN_OK;
}
