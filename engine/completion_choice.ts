// One candidate of a completion run: the SeqSink that turns its sequence's tokens into text
// (incremental detokenization, stop strings held back across token boundaries) and logprobs
// (in the run's format), and hands each released piece to its CompletionRun.

import type { ChoiceChunk, ChoiceLogprobs, CompletionRun } from "./completion.ts";
import { codePoints, IncrementalDetokenizer } from "./detokenizer.ts";
import type { LogprobEntry } from "./logprobs.ts";
import { promptLogprobs } from "./prompt_logprobs.ts";
import type { FinishReason, SeqSink } from "./sequence.ts";
import { StopMatcher } from "./stop.ts";
import type { PositionLogprob, SeqOutput } from "./types.ts";

export interface PromptInfo {
  ids: number[];
  echoText: string;
  echoCp: number; // code points of echoText: where generated text_offsets start
  offsets: number[]; // text_offset of each prompt token (echo + logprobs only)
}

/** One candidate: turns its sequence's tokens into text and logprobs. */
export class Choice implements SeqSink {
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
  #logprobs: ChoiceLogprobs | null;
  #finishReason: "stop" | "length" | null = null;
  #held: ChoiceChunk | null = null; // the streamed chunk not sent yet (see #send)
  #genIds: number[] = []; // every generated id (return_token_ids)
  #sentIds = 0; // how many of #genIds went out in chunks
  #sentPromptIds = false;
  #sentFirst = false; // a streamed choice's first chunk went out (prompt_logprobs ride on it)

  constructor(run: CompletionRun, prompt: PromptInfo, index: number) {
    this.#run = run;
    this.#prompt = prompt;
    this.#index = index;
    this.#detok = new IncrementalDetokenizer(run.deps.model.tokenizer, prompt.ids);
    this.#stop = new StopMatcher(run.req.stop);
    this.#logprobs = run.writer ? run.writer.empty() : null;
  }

  onPromptLogprobs(start: number, list: PositionLogprob[]): void {
    for (let i = 0; i < list.length; i++) this.#promptLp[start + i] = list[i];
  }

  onToken(out: SeqOutput): boolean {
    this.#run.tokenArrived();
    this.completionTokens++;
    this.cumLogprob += out.logprob;
    this.#echo();
    this.#genIds.push(out.token);
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
    this.#flush();
    this.#run.choiceDone(this, reason);
  }

  /** This candidate as a complete choice (non-streaming). */
  final(index: number): ChoiceChunk {
    const out: ChoiceChunk = {
      index,
      text: this.#text,
      logprobs: this.#logprobs,
      finish_reason: this.#finishReason,
    };
    return { ...out, ...this.#promptFields(), ...this.#idFields() };
  }

  /** prompt_logprobs, when asked for (the whole choice, or a streamed choice's first chunk). */
  #promptFields(): Partial<ChoiceChunk> {
    const { promptLogprobs: topN } = this.#run.req;
    if (topN === null) return {};
    const ids = this.#prompt.ids;
    return { prompt_logprobs: promptLogprobs(ids, this.#promptLp, topN, this.#run.tokenText) };
  }

  /** return_token_ids: the ids not sent yet (all of them first), the prompt's the first time. */
  #idFields(): Partial<ChoiceChunk> {
    if (!this.#run.req.returnTokenIds) return {};
    const ids = this.#genIds.slice(this.#sentIds);
    this.#sentIds = this.#genIds.length;
    if (this.#sentPromptIds) return { token_ids: ids };
    this.#sentPromptIds = true;
    return { prompt_token_ids: this.#prompt.ids, token_ids: ids };
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

  /**
   * Hands a released piece to the run. Only a non-streaming choice keeps it for final(): a
   * stream's pieces are gone once sent, so a long stream with n and logprobs holds no more
   * than what is unsent and what stop matching looks back at.
   */
  #send(text: string, entries: LogprobEntry[], finish: "stop" | "length" | null): void {
    const keep = !this.#run.req.stream;
    if (keep) this.#text += text;
    const writer = this.#run.writer;
    let piece: ChoiceLogprobs | null = null;
    if (writer && this.#logprobs) {
      piece = writer.empty();
      for (const e of entries) writer.append(piece, e);
      if (keep) writer.concat(this.#logprobs, piece);
    }
    if (keep) return;
    // A chunk waits until the scheduler's synchronous step is over: when the same step ends
    // the choice, its last text and finish_reason go out together in one chunk, as vLLM
    // streams them, instead of text followed by an empty finishing chunk.
    const held = this.#held;
    const first = this.#sentFirst ? {} : this.#promptFields();
    this.#sentFirst = true;
    const ids = this.#idFields();
    if (held) {
      held.text += text;
      if (writer && held.logprobs && piece) writer.concat(held.logprobs, piece);
      held.finish_reason = finish;
      if (ids.token_ids) held.token_ids = [...(held.token_ids ?? []), ...ids.token_ids];
    } else {
      const chunk = { index: this.#index, text, logprobs: piece, finish_reason: finish };
      this.#held = { ...chunk, ...first, ...ids };
      if (!finish) queueMicrotask(() => this.#flush());
    }
    if (finish) this.#flush();
  }

  #flush(): void {
    const held = this.#held;
    this.#held = null;
    if (held) this.#run.emit(held);
  }
}
