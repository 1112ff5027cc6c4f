// hadamard.cpp: the normalized fast Walsh-Hadamard transform (Sylvester order).
//
// H[i][j] = (-1)^popcount(i & j) / sqrt(d). It is symmetric and orthonormal, so H = H^T = H^-1:
// the same routine rotates into the code basis (encode, H q) and back out (attn_finish).
// Rotating spreads any outlier channel over all d elements, which makes sub-vectors look alike
// and Gaussian enough for one fixed codebook.
#include <math.h>

#include "nsn_quant.h"

namespace nsn {

void fwht(float* x, int32_t d) {
  for (int32_t h = 1; h < d; h <<= 1) {
    for (int32_t i = 0; i < d; i += 2 * h) {
      for (int32_t j = i; j < i + h; j++) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float norm = 1.0f / sqrtf((float)d);
  for (int32_t i = 0; i < d; i++) x[i] *= norm;
}

}  // namespace nsn
