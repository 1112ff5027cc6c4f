// check.h: abort-on-failure wrappers for the GPU test and benchmark programs (not the library,
// which never exits).
#pragma once
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
