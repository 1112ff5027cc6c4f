// The typed form of one /v1/completions request (routes/validate.ts builds it) and the
// per-choice SamplingParams the engine receives.

import type { BeamOptions } from "./beam_search.ts";
import type { KvBits, SamplingParams } from "./types.ts";

export interface CompletionRequest {
  /** One entry per prompt, already tokenized (BOS included when the model uses one). */
  prompts: number[][];
  /** The prompt as the client wrote it, when it was a string (echo returns it verbatim). */
  promptTexts: (string | null)[];
  kvBits: KvBits;
  n: number;
  /** Candidates generated per prompt (>= n); the n with the highest cumulative logprob win. */
  bestOf: number;
  maxTokens: number;
  echo: boolean;
  /** Top-N logprobs per token (0..20); null = no logprobs. */
  logprobs: number | null;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
  /** stream_options.continuous_usage_stats: every chunk carries the usage so far. */
  continuousUsage: boolean;
  /** return_tokens_as_token_ids: logprobs name tokens `token_id:N` instead of their text. */
  tokensAsIds: boolean;
  /** return_token_ids: choices carry prompt_token_ids and token_ids. */
  returnTokenIds: boolean;
  /** prompt_logprobs: top-N per prompt position (0..20), or null for none. */
  promptLogprobs: number | null;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  minTokens: number;
  ignoreEos: boolean;
  stopTokenIds: number[];
  logitBias: Map<number, number>;
  seed: number | null;
  /** vLLM's cache_salt: requests with different salts never share prefix-cache pages. */
  cacheSalt: string | null;
  /** use_beam_search: the search's width and scoring; n (= bestOf) beams are returned. */
  beam: BeamOptions | null;
}

/** Defaults of every optional field, as OpenAI documents them (vLLM for the extensions). */
export const REQUEST_DEFAULTS: Omit<CompletionRequest, "prompts" | "promptTexts" | "kvBits"> = {
  n: 1,
  bestOf: 1,
  maxTokens: 16,
  echo: false,
  logprobs: null,
  stop: [],
  stream: false,
  includeUsage: false,
  continuousUsage: false,
  tokensAsIds: false,
  returnTokenIds: false,
  promptLogprobs: null,
  temperature: 1,
  topP: 1,
  topK: 0,
  minP: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  minTokens: 0,
  ignoreEos: false,
  stopTokenIds: [],
  logitBias: new Map(),
  seed: null,
  cacheSalt: null,
  beam: null,
};

function randomSeed(): bigint {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (BigInt(words[0]) << 32n) | BigInt(words[1]);
}

/**
 * Sampling parameters of candidate `i` of one prompt. A request seed s gives candidate i the
 * stream s+i, so the same prompt with the same seed reproduces whatever else is batched.
 */
export function samplingParamsFor(
  req: CompletionRequest,
  nPrompt: number,
  candidate: number,
  eosIds: number[],
): SamplingParams {
  const stopIds = [...new Set([...(req.ignoreEos ? [] : eosIds), ...req.stopTokenIds])];
  return {
    temperature: req.temperature,
    topP: req.topP,
    topK: req.topK,
    minP: req.minP,
    presencePenalty: req.presencePenalty,
    frequencyPenalty: req.frequencyPenalty,
    repetitionPenalty: req.repetitionPenalty,
    nPrompt,
    minTokens: req.minTokens,
    stopIds,
    seed: req.seed === null
      ? randomSeed()
      : BigInt.asUintN(64, BigInt(req.seed) + BigInt(candidate)),
    logitBias: req.logitBias,
  };
}
