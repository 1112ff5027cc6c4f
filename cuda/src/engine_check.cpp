// engine_check.cpp: nsn_engine_check. Rebuilds, from the sequences alone, what the allocator
// should hold and compares.
#include <string>

#include "engine.h"
#include "kv_layout.h"

using namespace nsn;

nsn_status nsn_engine::check() const {
  std::vector<std::pair<int, int64_t>> owned;
  int32_t live = 0;
  for (size_t i = 0; i < seqs.size(); i++) {
    const Seq& s = seqs[i];
    if (!s.live) {
      if (!s.pages.empty() || s.tail >= 0 || s.len != 0) {
        return set_error(NSN_E_INTERNAL, "check: free slot %zu still holds pages or tokens", i);
      }
      continue;
    }
    live++;
    const size_t want_pages = s.kv_bits == 16 ? (size_t)(s.len + kWindow - 1) / kWindow
                                              : (size_t)s.len / kWindow;
    const bool want_tail = s.kv_bits != 16 && s.len > 0;
    if (s.pages.size() != want_pages || (s.tail >= 0) != want_tail) {
      return set_error(NSN_E_INTERNAL,
                       "check: seq %zu (kv_bits %d, %d tokens) holds %zu pages%s; expected %zu%s", i,
                       s.kv_bits, s.len, s.pages.size(), s.tail >= 0 ? " + tail" : "", want_pages,
                       want_tail ? " + tail" : "");
    }
    if (s.history.size() != (size_t)s.len) {
      return set_error(NSN_E_INTERNAL, "check: seq %zu has %zu history tokens for length %d", i,
                       s.history.size(), s.len);
    }
    for (int64_t off : s.pages) owned.emplace_back(kind_of_bits(s.kv_bits), off);
    if (s.tail >= 0) owned.emplace_back((int)KV_F16, s.tail);
  }
  if (live != seqs_in_use) {
    return set_error(NSN_E_INTERNAL, "check: %d live sequences, counted %d", live, seqs_in_use);
  }
  std::string err;
  if (!pages.check(owned, &err)) return set_error(NSN_E_INTERNAL, "check: %s", err.c_str());
  return NSN_OK;
}
