// allocator.h: the paged KV pool's bookkeeping (no memory of its own: pages are arena offsets).
//
// The arena is cut into slabs of slab_bytes = one fp16 page. A slab belongs to one page kind at
// a time and holds floor(slab_bytes / page_bytes(kind)) pages of it (one fp16 page, about 8-14
// quantized pages). Pages of a kind come from that kind's partially used slabs first (lowest
// slab first), then from the lowest free slab; a slab whose pages are all free again goes back
// to the free-slab list. So kinds trade memory at slab granularity and never fragment each other.
#pragma once
#include <stdint.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace nsn {

constexpr int kKinds = 3;  // KV_F16, KV_Q2, KV_Q1

class PageAllocator {
 public:
  // page_bytes[kind]; the fp16 page size is the slab size. The arena holds
  // floor(arena_bytes / slab_bytes) slabs.
  void init(uint64_t arena_bytes, const uint64_t page_bytes[kKinds]);

  uint64_t slab_bytes() const { return page_bytes_[0]; }
  int32_t n_slabs() const { return (int32_t)slab_kind_.size(); }
  uint64_t pages_per_slab(int kind) const { return per_slab_[kind]; }
  uint64_t pages_in_use(int kind) const { return in_use_[kind]; }
  uint64_t slabs_in_use() const { return slab_kind_.size() - free_slabs_.size(); }
  // Pages of `kind` allocatable right now (if no other kind takes a slab first).
  uint64_t pages_free_now(int kind) const;
  // Whether need[kind] pages of every kind can be allocated together.
  bool fits(const uint64_t need[kKinds]) const;

  // Arena offset of a new page, or -1 when the pool is exhausted.
  int64_t alloc(int kind);
  void free(int kind, int64_t offset);

  // Verifies the internal structures and that `owned` (kind, offset) lists every page in use
  // exactly once. On failure writes a message naming the first problem.
  bool check(const std::vector<std::pair<int, int64_t>>& owned, std::string* err) const;

 private:
  uint64_t page_bytes_[kKinds] = {};
  uint64_t per_slab_[kKinds] = {};
  uint64_t in_use_[kKinds] = {};
  uint64_t free_in_partial_[kKinds] = {};  // free pages inside partially used slabs
  uint32_t max_per_slab_ = 0;
  std::vector<int8_t> slab_kind_;       // [n_slabs] owner kind, -1 = free slab
  std::vector<uint32_t> slab_used_;     // [n_slabs] pages in use
  std::vector<uint8_t> page_used_;      // [n_slabs][max_per_slab_] 1 = page in use
  std::set<int32_t> free_slabs_;        // slabs owned by no kind
  std::set<int32_t> partial_[kKinds];   // slabs of a kind with at least one free page
};

}  // namespace nsn
