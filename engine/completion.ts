// One /v1/completions request in flight: its prompts x best_of candidates become sequences in
// the scheduler, and each candidate's tokens become text (incremental detokenization, stop
// strings held back across token boundaries) and legacy logprobs. Streaming reads chunks from
// events(); non-streaming awaits result(), which also ranks best_of candidates.

import { AsyncQueue } from "./async_queue.ts";
import { startBeams } from "./completion_beams.ts";
import type { ChatLogprobs } from "./chat_logprobs.ts";
import { Choice, type PromptInfo } from "./completion_choice.ts";
import { codePoints, tokenPieces } from "./detokenizer.ts";
import { type LegacyLogprobs, type LogprobsFormat, LogprobsWriter } from "./logprobs.ts";
import type { ServingModel } from "./model.ts";
import type { PromptLogprobs } from "./prompt_logprobs.ts";
import { type CompletionRequest, samplingParamsFor } from "./sampling_params.ts";
import type { Scheduler } from "./scheduler.ts";
import type { FinishReason, SeqRequest, Sequence } from "./sequence.ts";

export interface ChoiceChunk {
  index: number;
  text: string;
  logprobs: ChoiceLogprobs | null;
  finish_reason: "stop" | "length" | null;
  /** return_token_ids: the prompt's ids (a choice's first chunk, or the whole choice). */
  prompt_token_ids?: number[];
  /** return_token_ids: the generated ids this chunk carries (every one, stop string's too). */
  token_ids?: number[];
  /** prompt_logprobs (a choice's first chunk, or the whole choice). */
  prompt_logprobs?: PromptLogprobs;
}

/** Legacy for /v1/completions; chat when CompletionDeps.logprobsFormat says so. */
export type ChoiceLogprobs = LegacyLogprobs | ChatLogprobs;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens served from the prefix cache (OpenAI's and vLLM's field). */
  prompt_tokens_details: { cached_tokens: number };
}

export type StreamEvent =
  | { type: "chunk"; chunk: ChoiceChunk; usage?: Usage }
  | { type: "usage"; usage: Usage }
  | { type: "error"; error: Error };

export interface CompletionResult {
  choices: ChoiceChunk[];
  usage: Usage;
}

export interface CompletionDeps {
  model: ServingModel;
  scheduler: Scheduler;
  tokenText: (id: number) => string;
  /** The client's X-Request-Id: the response id becomes cmpl-<it> (as vLLM names it). */
  requestId?: string | null;
  /** Called once when every choice has finished (the request log line). */
  onDone?: (run: CompletionRun) => void;
  /** The logprobs shape to write (default: the legacy completions one). */
  logprobsFormat?: (tokenText: (id: number) => string, topN: number) => LogprobsFormat<
    ChoiceLogprobs
  >;
}

export class CompletionRun {
  readonly id: string;
  readonly created = Math.floor(Date.now() / 1000);
  readonly startedAt = performance.now();
  /** performance.now() of the first generated token of any choice. */
  firstTokenAt: number | null = null;
  /** How each candidate ended, in candidate order (the request log's status). */
  readonly reasons: FinishReason[] = [];
  readonly req: CompletionRequest;
  readonly promptTokens: number;
  readonly deps: CompletionDeps;
  readonly writer: LogprobsFormat<ChoiceLogprobs> | null;
  /** How logprobs name a token: its text, or token_id:N (return_tokens_as_token_ids). */
  readonly tokenText: (id: number) => string;
  #choices: Choice[] = [];
  #seqs: Sequence[] = [];
  /** use_beam_search: cancels the searches; their cached prompt tokens (usage). */
  #beams: { cancel(): void; cachedTokens(): number } | null = null;
  #queue = new AsyncQueue<StreamEvent>();
  #remaining: number;
  #error: Error | null = null;
  #done: Promise<void>;
  #resolveDone!: () => void;

  /** Submits every sequence at once; throws QueueFullError when the queue cannot take them. */
  constructor(deps: CompletionDeps, req: CompletionRequest, signal?: AbortSignal) {
    this.id = `cmpl-${deps.requestId ?? crypto.randomUUID().replaceAll("-", "")}`;
    this.deps = deps;
    this.req = req;
    this.promptTokens = req.prompts.reduce((a, p) => a + p.length, 0);
    const format = deps.logprobsFormat ?? ((t, n) => new LogprobsWriter(t, n));
    this.tokenText = req.tokensAsIds ? (id: number) => `token_id:${id}` : deps.tokenText;
    this.writer = req.logprobs === null ? null : format(this.tokenText, req.logprobs);
    this.#done = new Promise((r) => this.#resolveDone = r);
    const promptLogprobs = (req.echo && req.logprobs !== null) || req.promptLogprobs !== null;
    const runEngine = req.maxTokens > 0 || promptLogprobs;
    const seqReqs: SeqRequest[] = [];
    req.prompts.forEach((ids, p) => {
      const info = this.#promptInfo(ids, req.promptTexts[p]);
      const leader = seqReqs.length; // the prompt's first candidate prefills it for all
      for (let c = 0; c < req.bestOf; c++) {
        const choice = new Choice(this, info, p * req.n + c);
        this.#choices.push(choice);
        if (!runEngine) continue;
        seqReqs.push({
          cacheSalt: req.cacheSalt ?? undefined,
          shareWith: leader,
          prompt: ids,
          kvBits: req.kvBits,
          params: samplingParamsFor(req, ids.length, c, deps.model.eosIds),
          maxTokens: req.maxTokens,
          promptLogprobs,
          topN: Math.max(req.logprobs ?? 0, req.promptLogprobs ?? 0),
          sink: choice,
        });
      }
    });
    this.#remaining = this.#choices.length;
    if (runEngine && req.beam) {
      this.#beams = startBeams(this, this.#choices, deps.model.eosIds);
      this.#listen(signal);
    } else if (runEngine) {
      this.#seqs = deps.scheduler.submit(seqReqs);
      this.#listen(signal);
    } else {
      for (const c of this.#choices) c.onFinish("length");
    }
  }

  #listen(signal?: AbortSignal): void {
    if (signal?.aborted) this.cancel();
    else if (signal) {
      // Deno.serve also aborts the signal after a successful response: stop listening then.
      const onAbort = () => this.cancel();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#done.then(() => signal.removeEventListener("abort", onAbort));
    }
  }

  /** The client is gone: every sequence is freed within one step. */
  cancel(): void {
    for (const s of this.#seqs) this.deps.scheduler.cancel(s);
    this.#beams?.cancel();
  }

  /** Chunks as they are produced (streaming), then usage when asked, then the end. */
  events(): AsyncIterable<StreamEvent> {
    return this.#queue;
  }

  /** The whole response (non-streaming); rejects with the first candidate's failure. */
  async result(): Promise<CompletionResult> {
    await this.#done;
    if (this.#error) throw this.#error;
    const { n } = this.req;
    const choices: ChoiceChunk[] = [];
    this.req.prompts.forEach((_, p) => {
      const cands = this.#choices.slice(p * this.req.bestOf, (p + 1) * this.req.bestOf);
      // Highest cumulative logprob first; the sort is stable, so ties keep generation order.
      if (this.req.bestOf > n) cands.sort((a, b) => b.cumLogprob - a.cumLogprob);
      cands.slice(0, n).forEach((c, i) => choices.push(c.final(p * n + i)));
    });
    return { choices, usage: this.usage() };
  }

  usage(): Usage {
    const completion = this.#choices.reduce((a, c) => a + c.completionTokens, 0);
    // Each prompt counts once, as in prompt_tokens: its first candidate's cache hit (the
    // others share that candidate's pages).
    let cached = this.#beams?.cachedTokens() ?? 0;
    for (let i = 0; i < this.#seqs.length; i += this.req.bestOf) {
      cached += this.#seqs[i].cachedTokens;
    }
    return {
      prompt_tokens: this.promptTokens,
      completion_tokens: completion,
      total_tokens: this.promptTokens + completion,
      prompt_tokens_details: { cached_tokens: cached },
    };
  }

  emit(chunk: ChoiceChunk): void {
    if (!this.req.stream) return;
    // continuous_usage_stats: the usage as of this chunk, taken now rather than when written.
    const usage = this.req.continuousUsage ? this.usage() : undefined;
    this.#queue.push({ type: "chunk", chunk, usage });
  }

  /** The first token of any choice marks the request's time to first token. */
  tokenArrived(): void {
    this.firstTokenAt ??= performance.now();
  }

  /** The first error of any candidate, once the run has failed. */
  get error(): Error | null {
    return this.#error;
  }

  choiceDone(choice: Choice, reason: FinishReason): void {
    this.reasons.push(reason);
    if (choice.error && !this.#error) {
      this.#error = choice.error;
      this.cancel();
      this.#queue.push({ type: "error", error: choice.error });
      this.#queue.close();
    }
    if (--this.#remaining > 0) return;
    if (this.req.includeUsage && !this.#error) {
      this.#queue.push({ type: "usage", usage: this.usage() });
    }
    this.#queue.close();
    this.#resolveDone();
    this.deps.onDone?.(this);
  }

  #promptInfo(ids: number[], text: string | null): PromptInfo {
    const info: PromptInfo = { ids, echoText: "", echoCp: 0, offsets: [] };
    if (!this.req.echo) return info;
    const tok = this.deps.model.tokenizer;
    if (this.req.logprobs !== null) {
      const pieces = tokenPieces(tok, ids, false); // an echoed prompt keeps its specials
      let at = 0;
      for (const p of pieces) info.offsets.push(at), at += codePoints(p);
      info.echoText = text ?? pieces.join("");
    } else {
      info.echoText = text ?? tok.decode(ids, false); // token ids echo as decoded: specials kept
    }
    info.echoCp = codePoints(info.echoText);
    return info;
  }
}
