// One candidate of a completion run: the SeqSink that turns its sequence's tokens into text
// (incremental detokenization, stop strings held back across token boundaries) and logprobs
// (in the run's format), and hands each released piece to its CompletionRun.

import type { ChoiceChunk, ChoiceLogprobs, CompletionRun } from "./completion.ts";
import { codePoints, IncrementalDetokenizer } from "./detokenizer.ts";
import type { LogprobEntry } from "./logprobs.ts";
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

  /**
   * Hands a released piece to the run. Only a non-streaming choice keeps it for final(): a
   * stream's pieces are gone once sent, so a long stream with n and logprobs holds no more
   * than what is unsent and what stop matching looks back at.
   */
  #send(text: string, entries: LogprobEntry[], finish: "stop" | "length" | null): void {
    const keep = !this.#run.req.stream;
    if (keep) this.#text += text;
    let piece: ChoiceLogprobs | null = null;
    if (this.#run.writer && this.#logprobs) {
      piece = this.#run.writer.empty();
      for (const e of entries) this.#run.writer.append(piece, e);
      if (keep) this.#run.writer.concat(this.#logprobs, piece);
    }
    this.#run.emit({ index: this.#index, text, logprobs: piece, finish_reason: finish });
  }
}
