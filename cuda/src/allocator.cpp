// allocator.cpp: slab/page bookkeeping of the KV pool (see allocator.h).
#include "allocator.h"

#include <stdio.h>

#include <algorithm>

namespace nsn {

void PageAllocator::init(uint64_t arena_bytes, const uint64_t page_bytes[kKinds]) {
  max_per_slab_ = 0;
  for (int k = 0; k < kKinds; k++) {
    page_bytes_[k] = page_bytes[k];
    per_slab_[k] = page_bytes[0] / page_bytes[k];
    max_per_slab_ = std::max(max_per_slab_, (uint32_t)per_slab_[k]);
    in_use_[k] = free_in_partial_[k] = 0;
    partial_[k].clear();
  }
  const uint64_t n = arena_bytes / page_bytes[0];
  slab_kind_.assign(n, -1);
  slab_used_.assign(n, 0);
  page_used_.assign(n * max_per_slab_, 0);
  free_slabs_.clear();
  for (uint64_t s = 0; s < n; s++) free_slabs_.insert(free_slabs_.end(), (int32_t)s);
}

uint64_t PageAllocator::pages_free_now(int kind) const {
  return free_in_partial_[kind] + free_slabs_.size() * per_slab_[kind];
}

bool PageAllocator::fits(const uint64_t need[kKinds]) const {
  uint64_t slabs = 0;
  for (int k = 0; k < kKinds; k++) {
    if (need[k] > free_in_partial_[k]) {
      slabs += (need[k] - free_in_partial_[k] + per_slab_[k] - 1) / per_slab_[k];
    }
  }
  return slabs <= free_slabs_.size();
}

int64_t PageAllocator::alloc(int kind) {
  int32_t slab;
  if (!partial_[kind].empty()) {
    slab = *partial_[kind].begin();
  } else {
    if (free_slabs_.empty()) return -1;
    slab = *free_slabs_.begin();
    free_slabs_.erase(free_slabs_.begin());
    slab_kind_[slab] = (int8_t)kind;
    partial_[kind].insert(slab);
    free_in_partial_[kind] += per_slab_[kind];
  }
  uint8_t* used = &page_used_[(uint64_t)slab * max_per_slab_];
  uint32_t idx = 0;
  while (used[idx]) idx++;  // a partial slab has a free page below per_slab_
  used[idx] = 1;
  slab_used_[slab]++;
  in_use_[kind]++;
  free_in_partial_[kind]--;
  if (slab_used_[slab] == per_slab_[kind]) partial_[kind].erase(slab);
  return (int64_t)(slab * page_bytes_[0] + idx * page_bytes_[kind]);
}

void PageAllocator::free(int kind, int64_t offset) {
  const int32_t slab = (int32_t)((uint64_t)offset / page_bytes_[0]);
  const uint32_t idx = (uint32_t)(((uint64_t)offset % page_bytes_[0]) / page_bytes_[kind]);
  page_used_[(uint64_t)slab * max_per_slab_ + idx] = 0;
  if (slab_used_[slab] == per_slab_[kind]) partial_[kind].insert(slab);
  slab_used_[slab]--;
  in_use_[kind]--;
  free_in_partial_[kind]++;
  if (slab_used_[slab] == 0) {
    // An empty slab returns to the common pool so another kind can use its memory.
    partial_[kind].erase(slab);
    free_in_partial_[kind] -= per_slab_[kind];
    slab_kind_[slab] = -1;
    free_slabs_.insert(slab);
  }
}

bool PageAllocator::check(const std::vector<std::pair<int, int64_t>>& owned,
                          std::string* err) const {
  char msg[256];
  auto fail = [&](const char* what) {
    *err = what;
    return false;
  };
  const uint64_t n = slab_kind_.size();
  std::vector<uint8_t> seen(page_used_.size(), 0);
  uint64_t owned_per_kind[kKinds] = {};
  for (const auto& [kind, off] : owned) {
    if (kind < 0 || kind >= kKinds || off < 0 || (uint64_t)off >= n * page_bytes_[0]) {
      snprintf(msg, sizeof msg, "page offset %lld (kind %d) outside the arena", (long long)off,
               kind);
      return fail(msg);
    }
    const uint64_t slab = (uint64_t)off / page_bytes_[0], in = (uint64_t)off % page_bytes_[0];
    if (slab_kind_[slab] != kind) {
      snprintf(msg, sizeof msg, "page %lld of kind %d lies in slab %llu owned by kind %d",
               (long long)off, kind, (unsigned long long)slab, slab_kind_[slab]);
      return fail(msg);
    }
    if (in % page_bytes_[kind] != 0 || in / page_bytes_[kind] >= per_slab_[kind]) {
      snprintf(msg, sizeof msg, "page offset %lld is not a page boundary of kind %d",
               (long long)off, kind);
      return fail(msg);
    }
    const uint64_t i = slab * max_per_slab_ + in / page_bytes_[kind];
    if (seen[i]) {
      snprintf(msg, sizeof msg, "page %lld (kind %d) is owned twice", (long long)off, kind);
      return fail(msg);
    }
    if (!page_used_[i]) {
      snprintf(msg, sizeof msg, "page %lld (kind %d) is owned but marked free", (long long)off,
               kind);
      return fail(msg);
    }
    seen[i] = 1;
    owned_per_kind[kind]++;
  }
  uint64_t used_per_kind[kKinds] = {}, partial_free[kKinds] = {}, n_free = 0;
  for (uint64_t s = 0; s < n; s++) {
    const int kind = slab_kind_[s];
    uint32_t used = 0;
    for (uint32_t i = 0; i < max_per_slab_; i++) {
      const uint8_t u = page_used_[s * max_per_slab_ + i];
      if (u && (kind < 0 || i >= per_slab_[kind])) {
        snprintf(msg, sizeof msg, "slab %llu marks page %u used beyond its kind (%d)",
                 (unsigned long long)s, i, kind);
        return fail(msg);
      }
      if (u && !seen[s * max_per_slab_ + i]) {
        snprintf(msg, sizeof msg, "page %u of slab %llu (kind %d) is in use but owned by no sequence",
                 i, (unsigned long long)s, kind);
        return fail(msg);
      }
      used += u;
    }
    if (used != slab_used_[s]) {
      snprintf(msg, sizeof msg, "slab %llu counts %u pages in use, its pages say %u",
               (unsigned long long)s, slab_used_[s], used);
      return fail(msg);
    }
    const bool is_free = free_slabs_.count((int32_t)s) != 0;
    if (kind < 0) {
      if (!is_free) {
        snprintf(msg, sizeof msg, "slab %llu has no owner but is not on the free list",
                 (unsigned long long)s);
        return fail(msg);
      }
      n_free++;
      continue;
    }
    if (is_free || used == 0) {
      snprintf(msg, sizeof msg, "slab %llu of kind %d is empty or on the free list",
               (unsigned long long)s, kind);
      return fail(msg);
    }
    const bool partial = used < per_slab_[kind];
    if (partial != (partial_[kind].count((int32_t)s) != 0)) {
      snprintf(msg, sizeof msg, "slab %llu of kind %d (%u of %llu used) has a wrong partial mark",
               (unsigned long long)s, kind, used, (unsigned long long)per_slab_[kind]);
      return fail(msg);
    }
    used_per_kind[kind] += used;
    partial_free[kind] += per_slab_[kind] - used;
  }
  if (n_free != free_slabs_.size()) return fail("the free-slab list holds owned slabs");
  for (int k = 0; k < kKinds; k++) {
    if (used_per_kind[k] != in_use_[k] || owned_per_kind[k] != in_use_[k] ||
        partial_free[k] != free_in_partial_[k]) {
      snprintf(msg, sizeof msg,
               "kind %d: %llu pages counted in use, %llu in slabs, %llu owned by sequences; "
               "%llu free in partial slabs, counted %llu",
               k, (unsigned long long)in_use_[k], (unsigned long long)used_per_kind[k],
               (unsigned long long)owned_per_kind[k], (unsigned long long)partial_free[k],
               (unsigned long long)free_in_partial_[k]);
      return fail(msg);
    }
  }
  return true;
}

}  // namespace nsn
