// One /v1/completions request in flight: its prompts x best_of candidates become sequences in
// the scheduler, and each candidate's tokens become text (incremental detokenization, stop
// strings held back across token boundaries) and legacy logprobs. Streaming reads chunks from
// events(); non-streaming awaits result(), which also ranks best_of candidates.

import { AsyncQueue } from "./async_queue.ts";
import { codePoints, IncrementalDetokenizer, tokenPieces } from "./detokenizer.ts";
import {
  concatLogprobs,
  emptyLogprobs,
  type LegacyLogprobs,
  type LogprobEntry,
  LogprobsWriter,
} from "./logprobs.ts";
import type { ServingModel } from "./model.ts";
import { type CompletionRequest, samplingParamsFor } from "./sampling_params.ts";
import type { Scheduler } from "./scheduler.ts";
import type { FinishReason, SeqRequest, SeqSink, Sequence } from "./sequence.ts";
import { StopMatcher } from "./stop.ts";
import type { PositionLogprob, SeqOutput } from "./types.ts";

export interface ChoiceChunk {
  index: number;
  text: string;
  logprobs: LegacyLogprobs | null;
  finish_reason: "stop" | "length" | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type StreamEvent =
  | { type: "chunk"; chunk: ChoiceChunk }
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
}

interface PromptInfo {
  ids: number[];
  echoText: string;
  echoCp: number; // code points of echoText: where generated text_offsets start
  offsets: number[]; // text_offset of each prompt token (echo + logprobs only)
}

export class CompletionRun {
  readonly id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  readonly created = Math.floor(Date.now() / 1000);
  readonly req: CompletionRequest;
  readonly promptTokens: number;
  readonly deps: CompletionDeps;
  readonly writer: LogprobsWriter | null;
  #choices: Choice[] = [];
  #seqs: Sequence[] = [];
  #queue = new AsyncQueue<StreamEvent>();
  #remaining: number;
  #error: Error | null = null;
  #done: Promise<void>;
  #resolveDone!: () => void;

  /** Submits every sequence at once; throws QueueFullError when the queue cannot take them. */
  constructor(deps: CompletionDeps, req: CompletionRequest, signal?: AbortSignal) {
    this.deps = deps;
    this.req = req;
    this.promptTokens = req.prompts.reduce((a, p) => a + p.length, 0);
    this.writer = req.logprobs === null ? null : new LogprobsWriter(deps.tokenText, req.logprobs);
    this.#done = new Promise((r) => this.#resolveDone = r);
    const promptLogprobs = req.echo && req.logprobs !== null;
    const runEngine = req.maxTokens > 0 || promptLogprobs;
    const seqReqs: SeqRequest[] = [];
    req.prompts.forEach((ids, p) => {
      const info = this.#promptInfo(ids, req.promptTexts[p]);
      for (let c = 0; c < req.bestOf; c++) {
        const choice = new Choice(this, info, p * req.n + c);
        this.#choices.push(choice);
        if (!runEngine) continue;
        seqReqs.push({
          prompt: ids,
          kvBits: req.kvBits,
          params: samplingParamsFor(req, ids.length, c, deps.model.eosIds),
          maxTokens: req.maxTokens,
          promptLogprobs,
          topN: req.logprobs ?? 0,
          sink: choice,
        });
      }
    });
    this.#remaining = this.#choices.length;
    if (runEngine) {
      this.#seqs = deps.scheduler.submit(seqReqs);
      if (signal?.aborted) this.cancel();
      else if (signal) {
        // Deno.serve also aborts the signal after a successful response: stop listening then.
        const onAbort = () => this.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
        this.#done.then(() => signal.removeEventListener("abort", onAbort));
      }
    } else {
      for (const c of this.#choices) c.onFinish("length");
    }
  }

  /** The client is gone: every sequence is freed within one step. */
  cancel(): void {
    for (const s of this.#seqs) this.deps.scheduler.cancel(s);
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
    return {
      prompt_tokens: this.promptTokens,
      completion_tokens: completion,
      total_tokens: this.promptTokens + completion,
    };
  }

  emit(chunk: ChoiceChunk): void {
    if (this.req.stream) this.#queue.push({ type: "chunk", chunk });
  }

  choiceDone(choice: Choice): void {
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
  }

  #promptInfo(ids: number[], text: string | null): PromptInfo {
    const info: PromptInfo = { ids, echoText: "", echoCp: 0, offsets: [] };
    if (!this.req.echo) return info;
    const tok = this.deps.model.tokenizer;
    if (this.req.logprobs !== null) {
      const pieces = tokenPieces(tok, ids);
      let at = 0;
      for (const p of pieces) info.offsets.push(at), at += codePoints(p);
      info.echoText = text ?? pieces.join("");
    } else {
      info.echoText = text ?? tok.decode(ids, true);
    }
    info.echoCp = codePoints(info.echoText);
    return info;
  }
}

/** One candidate: turns its sequence's tokens into text and logprobs. */
class Choice implements SeqSink {
  completionTokens = 0;
  cumLogprob = 0;
  error: Error | null = null;
  #run: CompletionRun;
  #prompt: PromptInfo;
  #index: number;
  #detok: IncrementalDetokenizer;
  #stop: StopMatcher;
  #pending: LogprobEntry[] = []; // generated tokens whose text is not released yet
  #promptLp: PositionLogprob[] = [];
  #genCp = 0; // code points generated (released + held)
  #releasedCp = 0;
  #echoed = false;
  #finished = false;
  #text = "";
  #logprobs: LegacyLogprobs | null;
  #finishReason: "stop" | "length" | null = null;

  constructor(run: CompletionRun, prompt: PromptInfo, index: number) {
    this.#run = run;
    this.#prompt = prompt;
    this.#index = index;
    this.#detok = new IncrementalDetokenizer(run.deps.model.tokenizer, prompt.ids);
    this.#stop = new StopMatcher(run.req.stop);
    this.#logprobs = run.writer ? emptyLogprobs() : null;
  }

  onPromptLogprobs(start: number, list: PositionLogprob[]): void {
    for (let i = 0; i < list.length; i++) this.#promptLp[start + i] = list[i];
  }

  onToken(out: SeqOutput): boolean {
    this.completionTokens++;
    this.cumLogprob += out.logprob;
    this.#echo();
    const delta = this.#detok.push(out.token);
    this.#pending.push({
      id: out.token,
      logprob: out.logprob,
      top: out.top,
      offset: this.#prompt.echoCp + this.#genCp,
    });
    this.#genCp += codePoints(delta);
    const r = this.#stop.push(delta);
    this.#out(r.release, r.stopped ? "stop" : null);
    return r.stopped;
  }

  onFinish(reason: FinishReason, error?: Error): void {
    if (this.#finished) return;
    if (reason === "error") this.error = error ?? new Error("generation failed");
    // A matched stop string already ended the text in onToken.
    if ((reason === "stop" || reason === "length") && this.#finishReason === null) {
      this.#echo();
      const tail = this.#detok.flush();
      this.#genCp += codePoints(tail);
      const r = this.#stop.push(tail);
      if (r.stopped) this.#out(r.release, "stop");
      else this.#out(r.release + this.#stop.flush(), reason, true);
    }
    this.#finished = true;
    this.#run.choiceDone(this);
  }

  /** This candidate as a complete choice (non-streaming). */
  final(index: number): ChoiceChunk {
    return {
      index,
      text: this.#text,
      logprobs: this.#logprobs,
      finish_reason: this.#finishReason,
    };
  }

  /** The echoed prompt (and its logprobs) goes out before the first generated text. */
  #echo(): void {
    if (this.#echoed) return;
    this.#echoed = true;
    if (!this.#run.req.echo) return;
    const entries: LogprobEntry[] = this.#prompt.ids.map((id, i) => {
      const lp = i > 0 ? this.#promptLp[i - 1] : undefined;
      return {
        id,
        logprob: lp?.logprob ?? NaN,
        top: lp?.top ?? null,
        offset: this.#prompt.offsets[i] ?? 0,
      };
    });
    this.#send(this.#prompt.echoText, entries, null);
  }

  /**
   * Releases text: the generated tokens that start inside it go out with it. With a finish
   * reason the choice ends; `all` also sends zero-width tokens at the very end (EOS).
   */
  #out(text: string, finish: "stop" | "length" | null, all = false): void {
    this.#releasedCp += codePoints(text);
    const limit = this.#prompt.echoCp + this.#releasedCp;
    let k = 0;
    while (k < this.#pending.length && (all || this.#pending[k].offset < limit)) k++;
    const entries = this.#pending.splice(0, k);
    if (finish) this.#pending = []; // tokens of the stop string are not returned
    if (text === "" && entries.length === 0 && !finish) return;
    this.#finishReason = finish;
    this.#send(text, entries, finish);
  }

  #send(text: string, entries: LogprobEntry[], finish: "stop" | "length" | null): void {
    this.#text += text;
    let piece: LegacyLogprobs | null = null;
    if (this.#run.writer && this.#logprobs) {
      piece = emptyLogprobs();
      for (const e of entries) this.#run.writer.append(piece, e);
      concatLogprobs(this.#logprobs, piece);
    }
    this.#run.emit({ index: this.#index, text, logprobs: piece, finish_reason: finish });
  }
}
