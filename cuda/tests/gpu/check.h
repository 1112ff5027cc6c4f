// check.h: abort-on-failure wrappers for the GPU test and benchmark programs (not the library,
// which never exits), the tests' pass/fail reporter and their random numbers.
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../include/nsn.h"

#define CK(x)                                                                                 \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      fprintf(stderr, "%s:%d: CUDA error %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));  \
      exit(2);                                                                                \
    }                                                                                         \
  } while (0)
#define NK(x)                                                                                     \
  do {                                                                                            \
    nsn_status s_ = (x);                                                                          \
    if (s_ != NSN_OK) {                                                                           \
      fprintf(stderr, "%s:%d: status %d: %s\n", __FILE__, __LINE__, (int)s_, nsn_last_error());   \
      exit(2);                                                                                    \
    }                                                                                             \
  } while (0)

// One test check: prints "ok" or "**FAIL**" and the message; failures are counted in g_fail
// (the program's exit status).
inline int g_fail = 0;
inline void check(bool ok, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "  ok  " : "**FAIL**");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  if (!ok) g_fail++;
}

// xorshift64 with uniform and normal draws (the tests' data).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() { return (float)((next() >> 40) + 0.5) / (float)(1ull << 24); }
  float normal() {
    const float u = uniform(), v = uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
  }
};
