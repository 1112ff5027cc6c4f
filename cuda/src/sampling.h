// sampling.h: logprobs and token sampling, the CPU reference the CUDA backend mirrors.
//
// Given the fp32 logits z[vocab] after the last position of a sequence's chunk, the token for
// position P (= tokens in the sequence before it) is drawn as follows.
//
// Raw logprobs (reported, never affected by sampling parameters, like vLLM):
//   lse = max(z) + log(sum_i exp(z_i - max(z)))   (the sum in double)
//   logprob(i) = z_i - lse. Top-N lists are ordered by logit, descending, lower id first on ties;
//   unused slots of a top-N array hold id -1 and logprob NaN.
// Processed logits, in this order:
//   1. logit_bias: z[id] += bias for each (id, bias) pair given (repeated ids add up).
//   2. repetition_penalty r (when r != 1), once per distinct token found at positions < P
//      (prompt or output): z = z > 0 ? z / r : z * r.
//   3. For each distinct token with c > 0 occurrences at output positions (n_prompt <= pos < P):
//      z -= frequency_penalty * c + presence_penalty.
//   4. While the output count max(0, P - n_prompt) < min_tokens, every stop id gets -inf.
// Choice:
//   5. temperature == 0: argmax of z, lowest id on ties. Done.
//   6. Otherwise z_i /= temperature. Candidates: ids with finite z, ranked by (z desc, id asc);
//      p_i = exp(z_i - z_max) in fp32, so the best candidate has p = 1.
//   7. top_k > 0: keep the top_k best ranked candidates.
//   8. top_p < 1: S = sum of kept p (double, in rank order); keep the shortest rank prefix whose
//      running sum reaches top_p * S (at least one token).
//   9. min_p > 0: keep candidates with p_i >= min_p (that is, p >= min_p * p_max).
//  10. u = sample_uniform(seed, P) (random.h: a 24-bit uniform from splitmix64(seed ^
//      splitmix64(P)), so a draw depends only on the seed and the position, never on the
//      batch). S' = sum of kept p (double, in id order); walk the kept tokens in increasing id
//      order accumulating p (double) and return the first whose running sum exceeds u * S'
//      (the last kept token if rounding leaves none).
//   If no candidate is finite (everything banned), the result is the argmax of step 5.
#pragma once
#include <stdint.h>

#include <vector>

#include "../include/nsn.h"

namespace nsn {

// log-sum-exp of z[vocab].
float logsumexp(const float* z, int32_t vocab);

// The n (<= NSN_MAX_TOP_N) highest logits: ids[n] and logprobs z - lse; slots from n up to
// `slots` get -1 / NaN.
void top_logprobs(const float* z, int32_t vocab, float lse, int32_t n, int32_t slots, int32_t* ids,
                  float* logprobs);

// Everything one draw needs. The sequence's tokens are history[0..history_len) followed by
// chunk[0..chunk_len); the drawn token goes to position P = history_len + chunk_len.
struct SampleInput {
  const float* logits;  // [vocab] raw
  int32_t vocab;
  const nsn_sampling* params;
  const int32_t* bias_ids;
  const float* bias_values;
  int32_t n_bias;
  const int32_t* history;
  int32_t history_len;
  const int32_t* chunk;
  int32_t chunk_len;
};

// Reusable buffers of one sampling thread (sized on first use).
struct SampleScratch {
  std::vector<float> z;
  std::vector<int32_t> order;
  std::vector<int32_t> seen, out_count;  // [vocab], all zero between calls
  std::vector<int32_t> touched;
  std::vector<uint8_t> kept;  // [vocab], all zero between calls
};

int32_t sample_token(const SampleInput& in, SampleScratch& s);

}  // namespace nsn
