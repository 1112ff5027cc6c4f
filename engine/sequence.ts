// One sequence as the scheduler sees it: the token history (prompt + generated), how much of
// it is in the KV cache, and where its results go. A choice of a completion request is one
// Sequence; n / best_of make several.

import type { KvBits, PositionLogprob, SamplingParams, SeqOutput } from "./types.ts";

export type SeqStatus = "waiting" | "running" | "finished";
export type FinishReason = "stop" | "length" | "abort" | "error";

/** Receives a sequence's results, synchronously, as the scheduler applies a step. */
export interface SeqSink {
  /**
   * A newly sampled token (never repeated, even after a preemption's recompute). Returning true
   * finishes the sequence with "stop" at once (a stop string matched).
   */
  onToken(out: SeqOutput): boolean | void;
  /** Logprobs of prompt positions [start, start + list.length): the following token's. */
  onPromptLogprobs(start: number, list: PositionLogprob[]): void;
  /** Called exactly once. `error` is set with reason "error". */
  onFinish(reason: FinishReason, error?: Error): void;
}

export interface SeqRequest {
  prompt: number[];
  kvBits: KvBits;
  params: SamplingParams;
  /** Generated tokens allowed; 0 = run the prompt only (prompt logprobs). */
  maxTokens: number;
  /** Collect logprobs of every prompt position (echo + logprobs). */
  promptLogprobs: boolean;
  /** Top-N per position / sampled token, 0..20. */
  topN: number;
  sink: SeqSink;
  /** vLLM's cache_salt: sequences with different salts never share cached pages. */
  cacheSalt?: string;
  /** Index, in the same submit() call, of the choice whose prompt pages this one shares. */
  shareWith?: number;
}

let nextId = 1;

export class Sequence {
  readonly id = nextId++;
  readonly kvBits: KvBits;
  readonly params: SamplingParams;
  readonly nPrompt: number;
  readonly maxTokens: number;
  readonly promptLogprobs: boolean;
  readonly topN: number;
  readonly sink: SeqSink;
  /** Prompt then generated tokens. */
  readonly tokens: number[];
  status: SeqStatus = "waiting";
  readonly salt: string;
  /** Engine slot while running, else -1. */
  slot = -1;
  /** The choice of the same request whose prompt pages this one shares (n / best_of). */
  leader: Sequence | null = null;
  /** Page table while running (kv_cache.ts): pages of kind kvBits, window by window. */
  pages: number[] = [];
  /** kv_bits 1/2: the fp16 tail page while running, else -1. */
  tail = -1;
  /** Prefix-cache hashes of the leading complete windows registered or found so far. */
  hashes: number[] = [];
  /** Prompt tokens served from the prefix cache at the first admission (usage). */
  cachedTokens = 0;
  /** Tokens of `tokens` already in the KV cache (reset to 0 by a preemption). */
  numComputed = 0;
  /** Prompt positions whose logprobs were delivered (kept across preemptions). */
  promptLogprobsDone = 0;
  /** Set by cancel(); the scheduler frees the sequence before its next step. */
  cancelled = false;
  preemptions = 0;
  /** The prompt was counted once in the metrics (a recompute does not count again). */
  promptCounted = false;
  readonly arrival = performance.now();
  lastTokenTime = 0;

  constructor(req: SeqRequest) {
    this.kvBits = req.kvBits;
    this.params = req.params;
    this.nPrompt = req.prompt.length;
    this.maxTokens = req.maxTokens;
    this.promptLogprobs = req.promptLogprobs;
    this.topN = req.topN;
    this.sink = req.sink;
    this.salt = req.cacheSalt ?? "";
    this.tokens = [...req.prompt];
  }

  get numGenerated(): number {
    return this.tokens.length - this.nPrompt;
  }

  /** Tokens still to be fed before the next sample (the whole history after a preemption). */
  get pending(): number {
    return this.tokens.length - this.numComputed;
  }
}
