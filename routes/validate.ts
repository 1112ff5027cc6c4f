// Request body -> CompletionRequest. Every OpenAI /v1/completions field plus vLLM's sampling
// extensions; unknown fields are ignored (like vLLM), null means "default" (the spec marks
// most fields nullable), and anything of the wrong type or out of range is a 400 naming the
// field in `param`.

import { type CompletionRequest, REQUEST_DEFAULTS } from "../engine/sampling_params.ts";
import { KV_BITS, type KvBits } from "../engine/types.ts";
import { ApiError, badRequest } from "./errors.ts";
import {
  allowOnly,
  type Body,
  boolean,
  integer,
  isObject,
  logitBias,
  number,
  present,
  show,
  stops,
  tokenId,
} from "./validate_fields.ts";
import { prompts } from "./validate_prompt.ts";
import { beamOf } from "./beam_validate.ts";
import { truncate, truncationOf } from "./truncation.ts";
import { promptLogprobsOf, refuseUnhonoured } from "./vllm_extras.ts";

export { show } from "./validate_fields.ts";

export interface ValidationContext {
  modelIds: string[]; // served id first, then aliases
  vocabSize: number;
  maxModelLen: number;
  /** Text prompt -> ids, BOS included when the model uses one (off the event loop). */
  encode: (text: string) => Promise<number[]>;
  eosIds: number[];
  maxStopIds: number;
  /** Most tokens one sequence of this kind fits in the KV pool. */
  capacityTokens: (kvBits: KvBits) => number;
  /** The seed of a request that sends none (--seed), or null for a random one. */
  defaultSeed?: () => number | null;
}

const MAX_SEQUENCES = 4096; // prompts x best_of in one request
// Logprob entries one request may return: each is a JS object of ~100-400 bytes until sent.
export const MAX_LOGPROB_ENTRIES = 1 << 19;

/** X-KV-Bits header -> kv_bits; absent means the server default, anything else exact. */
export function parseKvBits(header: string | undefined | null, fallback: KvBits): KvBits {
  if (header === undefined || header === null) return fallback;
  const v = Number(header.trim());
  if (!/^\s*(16|2|1)\s*$/.test(header) || !KV_BITS.includes(v as KvBits)) {
    throw badRequest(
      "X-KV-Bits",
      `Invalid X-KV-Bits header ${show(header)}: allowed values are 16, 2 and 1.`,
    );
  }
  return v as KvBits;
}

function checkModel(b: Body, ctx: ValidationContext): void {
  if (!present(b, "model")) return; // like vLLM: the served model
  if (typeof b.model !== "string") throw badRequest("model", "'model' must be a string.");
  if (!ctx.modelIds.includes(b.model)) {
    throw new ApiError(
      404,
      `The model ${show(b.model)} does not exist. This server serves \`${ctx.modelIds[0]}\`.`,
      "model",
      "model_not_found",
    );
  }
}

export async function validateCompletion(
  body: unknown,
  kvBits: KvBits,
  ctx: ValidationContext,
): Promise<CompletionRequest> {
  if (!isObject(body)) {
    throw badRequest(null, "The request body must be a JSON object.");
  }
  const b: Body = body;
  const d = REQUEST_DEFAULTS;
  checkModel(b, ctx);
  if (present(b, "suffix")) {
    throw badRequest("suffix", "'suffix' is not supported by this server.");
  }
  refuseUnhonoured(b);
  if (present(b, "user") && typeof b.user !== "string") {
    throw badRequest("user", "'user' must be a string.");
  }
  const stream = boolean(b, "stream", false);
  let includeUsage = false;
  let continuousUsage = false;
  if (present(b, "stream_options")) {
    const so = b.stream_options;
    if (typeof so !== "object" || Array.isArray(so)) {
      throw badRequest("stream_options", "'stream_options' must be an object.");
    }
    if (!stream) {
      throw badRequest("stream_options", "'stream_options' is only allowed with stream=true.");
    }
    includeUsage = boolean(so as Body, "include_usage", false);
    // As vLLM: usage in every chunk only together with include_usage.
    continuousUsage = includeUsage && boolean(so as Body, "continuous_usage_stats", false);
  }
  const n = integer(b, "n", d.n, 1, 128);
  const bestOf = integer(b, "best_of", n, 1, 128);
  if (bestOf < n) throw badRequest("best_of", `'best_of' (${bestOf}) must be >= n (${n}).`);
  if (stream && bestOf > n && b.use_beam_search !== true) {
    throw badRequest("best_of", "'best_of' greater than 'n' cannot be streamed.");
  }
  const maxTokensGiven = present(b, "max_tokens");
  let maxTokens = integer(b, "max_tokens", d.maxTokens, 0, 1 << 30);
  const topK = integer(b, "top_k", d.topK, -1, ctx.vocabSize);
  const minTokens = integer(b, "min_tokens", d.minTokens, 0, 1 << 30);
  const stopTokenIds = present(b, "stop_token_ids")
    ? (Array.isArray(b.stop_token_ids) ? b.stop_token_ids : [null]).map((x) =>
      tokenId(x, "stop_token_ids", ctx.vocabSize)
    )
    : [];
  const ignoreEos = boolean(b, "ignore_eos", d.ignoreEos);
  const nStopIds = new Set([...(ignoreEos ? [] : ctx.eosIds), ...stopTokenIds]).size;
  if (nStopIds > ctx.maxStopIds) {
    throw badRequest("stop_token_ids", `At most ${ctx.maxStopIds} stop token ids (EOS included).`);
  }
  const seed = present(b, "seed") ? b.seed : null;
  if (seed !== null && (typeof seed !== "number" || !Number.isSafeInteger(seed))) {
    throw badRequest("seed", `'seed' must be an integer, got ${show(seed)}.`);
  }
  const cacheSalt = present(b, "cache_salt") ? b.cache_salt : null;
  if (cacheSalt !== null && (typeof cacheSalt !== "string" || cacheSalt === "")) {
    throw badRequest(
      "cache_salt",
      `'cache_salt' must be a non-empty string, got ${show(cacheSalt)}.`,
    );
  }
  const req: CompletionRequest = {
    prompts: [],
    promptTexts: [],
    kvBits,
    n,
    bestOf,
    maxTokens,
    echo: boolean(b, "echo", d.echo),
    logprobs: present(b, "logprobs") ? integer(b, "logprobs", 0, 0, 20) : null,
    stop: stops(b),
    stream,
    includeUsage,
    continuousUsage,
    tokensAsIds: boolean(b, "return_tokens_as_token_ids", false),
    returnTokenIds: boolean(b, "return_token_ids", false),
    promptLogprobs: promptLogprobsOf(b),
    temperature: number(b, "temperature", d.temperature, 0, 2),
    topP: number(b, "top_p", d.topP, 0, 1, true),
    topK: topK < 0 ? 0 : topK,
    minP: number(b, "min_p", d.minP, 0, 1),
    presencePenalty: number(b, "presence_penalty", d.presencePenalty, -2, 2),
    frequencyPenalty: number(b, "frequency_penalty", d.frequencyPenalty, -2, 2),
    repetitionPenalty: number(b, "repetition_penalty", d.repetitionPenalty, 0, 2, true),
    minTokens,
    ignoreEos,
    stopTokenIds,
    logitBias: allowOnly(b, ctx.vocabSize, logitBias(b, ctx.vocabSize)),
    seed: (seed as number | null) ?? ctx.defaultSeed?.() ?? null,
    cacheSalt: cacheSalt as string | null,
    beam: null,
  };
  req.beam = beamOf(b, req);

  // Counted before any tokenization: a list of 100k prompts is refused cheaply.
  const listed = Array.isArray(b.prompt) && typeof b.prompt[0] !== "number";
  if ((listed ? (b.prompt as unknown[]).length : 1) * bestOf > MAX_SEQUENCES) {
    throw badRequest(
      "prompt",
      `At most ${MAX_SEQUENCES} sequences (prompts x best_of) per request.`,
    );
  }
  const cut = truncationOf(b, ctx.maxModelLen);
  const p = await prompts(b, ctx, cut !== null);
  req.prompts = cut ? p.ids.map((ids) => truncate(ids, cut)) : p.ids;
  // A truncated prompt echoes as its remaining tokens decode, not as the text sent.
  req.promptTexts = p.texts.map((t, i) => req.prompts[i] === p.ids[i] ? t : null);
  const longest = Math.max(...req.prompts.map((x) => x.length));
  // Like vLLM: an omitted max_tokens shrinks to what the context leaves.
  if (!maxTokensGiven) maxTokens = Math.max(0, Math.min(maxTokens, ctx.maxModelLen - longest));
  req.maxTokens = maxTokens;
  if (longest + maxTokens > ctx.maxModelLen) {
    throw new ApiError(
      400,
      `This model's maximum context length is ${ctx.maxModelLen} tokens. However, you ` +
        `requested ${longest + maxTokens} tokens (${longest} in the prompt, ${maxTokens} in ` +
        `the completion). Please reduce the length of the prompt or completion.`,
      maxTokensGiven ? "max_tokens" : "prompt",
      "context_length_exceeded",
      { n_ctx: ctx.maxModelLen, n_prompt_tokens: longest },
    );
  }
  const cap = ctx.capacityTokens(kvBits);
  if (longest + maxTokens > cap) {
    throw new ApiError(
      400,
      `The KV cache pool holds at most ${cap} tokens per sequence at kv_bits ${kvBits}. ` +
        `However, you requested ${longest + maxTokens} tokens (${longest} in the prompt, ` +
        `${maxTokens} in the completion). Use fewer bits (X-KV-Bits) or a shorter request.`,
      "max_tokens",
      "kv_cache_capacity_exceeded",
      { n_ctx: cap, n_prompt_tokens: longest },
    );
  }
  if (req.logprobs !== null) {
    // Every generated (and echoed) token of every candidate carries 1 + logprobs entries.
    const tokens = p.ids.reduce((a, ids) => a + (req.echo ? ids.length : 0) + maxTokens, 0);
    const entries = tokens * bestOf * (req.logprobs + 1);
    if (entries > MAX_LOGPROB_ENTRIES) {
      throw badRequest(
        "logprobs",
        `This request would return ${entries} logprob entries (tokens x candidates x ` +
          `(1 + logprobs)); at most ${MAX_LOGPROB_ENTRIES} per request. Lower n, best_of, ` +
          `max_tokens or logprobs.`,
      );
    }
  }
  if (minTokens > maxTokens) {
    throw badRequest("min_tokens", `'min_tokens' (${minTokens}) must be <= max_tokens.`);
  }
  return req;
}
