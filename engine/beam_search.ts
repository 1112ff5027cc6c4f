// vLLM's beam search for one prompt, over the scheduler. Each round, every live beam runs as
// a one-token sequence whose top-N logprobs (N >= 2 x width) propose its continuations; the
// `width` best by cumulative logprob live on, candidates ending in a stop id finish. At the end
// finished and live beams are ranked by cum_logprob / len^length_penalty (len counts the prompt
// and not a final stop id, as vLLM's get_beam_search_score does).
//
// KV sharing: a beam's sequence is admitted through the prefix cache, so every complete
// 64-token window its parent (or any beam) wrote is shared by reference (pool.retain); only the
// partial window is recomputed into the beam's own page. A round's sequences finish after
// their token, so a dropped beam holds no page once its round ends; with --no-prefix-caching
// each round recomputes every beam's whole history instead.

import type { Scheduler } from "./scheduler.ts";
import type { FinishReason, SeqRequest, Sequence } from "./sequence.ts";
import { greedySampling, type KvBits, type SeqOutput } from "./types.ts";

/** Widest beam: its 2 x width candidates must fit the engine's top-N (NSN_MAX_TOP_N = 20). */
export const MAX_BEAM_WIDTH = 10;

export interface BeamOptions {
  width: number;
  lengthPenalty: number;
  /** Stop once `width` beams have finished (vLLM's early_stopping=true). */
  earlyStopping: boolean;
}

export interface BeamRequest {
  prompt: number[];
  kvBits: KvBits;
  maxTokens: number;
  /** Token ids that finish a beam (EOS unless ignore_eos, stop_token_ids). */
  stopIds: number[];
  /** Top-N logprobs each returned token carries (the request's logprobs, 0 when none). */
  logprobs: number;
  cacheSalt?: string;
  beam: BeamOptions;
}

/** One beam: its generated tokens with their logprobs, and how it ended. */
export interface Beam {
  outs: SeqOutput[];
  cumLogprob: number;
  finish: "stop" | "length" | null;
}

/** The client went away (or the run failed elsewhere) while the search ran. */
export class BeamAborted extends Error {
  constructor() {
    super("beam search cancelled");
    this.name = "BeamAborted";
  }
}

/** vLLM's beam score: the cumulative logprob over the length (prompt included, stop id not). */
export function beamScore(nPrompt: number, beam: Beam, lengthPenalty: number): number {
  const len = nPrompt + beam.outs.length - (beam.finish === "stop" ? 1 : 0);
  return beam.cumLogprob / Math.pow(len, lengthPenalty);
}

export class BeamSearch {
  /** Prompt tokens the first round found in the prefix cache (usage). */
  cachedTokens = 0;
  #scheduler: Scheduler;
  #req: BeamRequest;
  #seqs: Sequence[] = [];
  #cancelled = false;

  constructor(scheduler: Scheduler, req: BeamRequest) {
    this.#scheduler = scheduler;
    this.#req = req;
  }

  /** Stops the search: the round in flight is cancelled (its pages freed within one step). */
  cancel(): void {
    this.#cancelled = true;
    for (const s of this.#seqs) this.#scheduler.cancel(s);
  }

  /** The best `width` beams, best first; rejects with BeamAborted or the round's failure. */
  async run(): Promise<Beam[]> {
    const { prompt, maxTokens, stopIds, beam } = this.#req;
    const maxLen = this.#scheduler.opts.maxModelLen;
    const done: Beam[] = [];
    let live: Beam[] = [{ outs: [], cumLogprob: 0, finish: null }];
    for (let t = 0; t < maxTokens && prompt.length + t < maxLen && live.length > 0; t++) {
      const outs = await this.#round(live, t === 0);
      const next: Beam[] = [];
      live.forEach((b, i) => {
        const top = outs[i].top;
        for (const c of top.slice(0, 2 * beam.width)) {
          const out = { token: c.id, logprob: c.logprob, top: top.slice(0, this.#req.logprobs) };
          const stop = stopIds.includes(c.id);
          const nb: Beam = {
            outs: [...b.outs, out],
            cumLogprob: b.cumLogprob + c.logprob,
            finish: stop ? "stop" : null,
          };
          (stop ? done : next).push(nb);
        }
      });
      // Live beams all have the same length: the cumulative logprob orders them.
      live = next.sort((a, b) => b.cumLogprob - a.cumLogprob).slice(0, beam.width);
      if (beam.earlyStopping && done.length >= beam.width) break;
    }
    for (const b of live) done.push({ ...b, finish: "length" });
    const score = (b: Beam) => beamScore(prompt.length, b, beam.lengthPenalty);
    return done.sort((a, b) => score(b) - score(a)).slice(0, beam.width);
  }

  /** Runs every live beam one token; returns each one's output (its top-N). */
  async #round(live: Beam[], first: boolean): Promise<SeqOutput[]> {
    if (this.#cancelled) throw new BeamAborted();
    const { prompt, kvBits, logprobs, cacheSalt, beam } = this.#req;
    const got: (SeqOutput | null)[] = live.map(() => null);
    const ends: Promise<void>[] = [];
    const reqs: SeqRequest[] = live.map((b, i) => {
      let settle!: (reason: FinishReason, error?: Error) => void;
      ends.push(
        new Promise<void>((resolve, reject) => {
          settle = (reason, error) => {
            if (reason === "length" && got[i]) resolve();
            else reject(reason === "abort" ? new BeamAborted() : error ?? new BeamAborted());
          };
        }),
      );
      return {
        prompt: [...prompt, ...b.outs.map((o) => o.token)],
        kvBits,
        params: greedySampling({ nPrompt: prompt.length }),
        maxTokens: 1,
        promptLogprobs: false,
        topN: Math.min(20, Math.max(2 * beam.width, logprobs)),
        sink: {
          onToken: (out) => void (got[i] = out),
          onPromptLogprobs: () => {},
          onFinish: (reason, error) => settle(reason, error),
        },
        cacheSalt,
      };
    });
    this.#seqs = this.#scheduler.submit(reqs, !first);
    const settled = await Promise.allSettled(ends);
    if (first) this.cachedTokens = this.#seqs[0].cachedTokens;
    this.#seqs = [];
    const failed = settled.find((s) => s.status === "rejected");
    if (this.#cancelled) throw new BeamAborted();
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return got as SeqOutput[];
  }
}
