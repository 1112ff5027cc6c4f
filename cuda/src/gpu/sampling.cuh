// sampling.cuh: logprobs and token sampling on the GPU, mirroring the CPU reference procedure
// of ../sampling.h step by step (same order of operations, same tie rules, the same
// counter-based uniform). Only ids and logprobs leave the device.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "../../include/nsn.h"

namespace nsn {

// One row of the fp32 logits buffer that needs logprobs and/or a sampled token.
struct LogitRowJob {
  int32_t next_id;     // id whose raw logprob goes to RowResult::next_logprob, or -1
  int32_t sample_idx;  // index into the SampleJob array, or -1
};

// Everything one draw needs (device copies; arrays live in the step's uploaded plan).
struct SampleJob {
  nsn_sampling params;
  int32_t row;           // logit row (minus the launch's row_base: row of the logits buffer)
  int32_t P;             // position of the drawn token = tokens fed before it
  const int32_t* bias_ids;
  const float* bias_values;
  int32_t n_bias;
  int32_t hist_len;      // tokens at positions [0, hist_len) (history + this chunk)
  const int32_t* hist;   // device [hist_len]; null when no penalty is active
};

struct RowResult {
  float lse;           // log-sum-exp of the raw logits
  float next_logprob;  // raw logprob of LogitRowJob::next_id (NaN when -1)
  int32_t token;       // sampled id (-1 when the row does not sample)
  float token_logprob; // raw logprob of the sampled id
  int32_t top_ids[NSN_MAX_TOP_N];
  float top_logprobs[NSN_MAX_TOP_N];
};

// logits fp32 [n_rows][vocab]. Fills res[i].lse / next_logprob / top_* (top_n <= 20) for
// every row, then draws a token for every SampleJob (its row - row_base indexes logits/res). zscratch fp32 [n_samples][vocab] and
// counts int32 [n_samples][vocab] (all zero between calls; left zero) are the sampler's work
// areas.
nsn_status launch_logprobs_and_sample(const float* logits, int n_rows, int vocab,
                                      const LogitRowJob* rows, int top_n, const SampleJob* samples,
                                      int n_samples, int row_base, float* zscratch, int32_t* counts,
                                      RowResult* res, cudaStream_t stream);

}  // namespace nsn
