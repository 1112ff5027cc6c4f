// errors.cpp: the process-wide last error message behind nsn_last_error().
//
// Messages live in a small ring: a new error writes the next slot, so the pointer a caller got
// from nsn_last_error() keeps its text while a few later errors come in from other threads.
#include <stdarg.h>
#include <stdio.h>

#include <mutex>

#include "backend.h"

namespace {

constexpr int kRing = 4;
constexpr int kMsgBytes = 1024;

std::mutex g_mutex;
char g_ring[kRing][kMsgBytes];
int g_latest = -1;  // slot of the newest message, -1 before the first error

}  // namespace

namespace nsn {

nsn_status set_error(nsn_status st, const char* fmt, ...) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const int slot = (g_latest + 1) % kRing;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_ring[slot], kMsgBytes, fmt, ap);
  va_end(ap);
  g_latest = slot;
  return st;
}

}  // namespace nsn

extern "C" const char* nsn_last_error(void) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_latest < 0 ? "" : g_ring[g_latest];
}
