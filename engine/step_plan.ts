// One step's plan: which chunk of which sequence goes into engine.step(), and the conversions
// between a plan entry and the engine's SeqInput / StepResult. The scheduler owns the queues;
// these functions only read sequences (deliverPromptLogprobs also records what went out).

import { hasPenalty, type PositionLogprob, type SeqInput } from "./types.ts";
import type { Sequence } from "./sequence.ts";
import { tablePages } from "./kv_cache.ts";

export interface Planned {
  seq: Sequence;
  start: number; // first position of the chunk
  chunk: number; // tokens fed this step
  sample: boolean;
  wantLogprobs: boolean;
}

export function planChunk(seq: Sequence, n: number): Planned {
  const start = seq.numComputed;
  const end = start + n;
  return {
    seq,
    start,
    chunk: n,
    sample: end === seq.tokens.length && seq.maxTokens > 0,
    // Only prompt positions whose logprobs were not delivered yet (a recompute skips them).
    wantLogprobs: seq.promptLogprobs && seq.promptLogprobsDone < seq.nPrompt - 1 &&
      start < seq.nPrompt - 1,
  };
}

/**
 * The running sequences' chunks within `maxStepTokens`. Decodes first: one token each keeps
 * every running stream moving; when there are more than the budget, they take turns from
 * `rotate` on.
 */
export function planRunning(running: Sequence[], maxStepTokens: number, rotate = 0): Planned[] {
  const plan: Planned[] = [];
  let left = maxStepTokens;
  const n = running.length;
  for (let i = 0; i < n && left > 0; i++) {
    const seq = running[(i + rotate) % n];
    if (seq.pending === 1) plan.push(planChunk(seq, 1)), left--;
  }
  for (const seq of running) {
    if (left === 0) break;
    if (seq.pending > 1) {
      const n = Math.min(seq.pending, left);
      plan.push(planChunk(seq, n));
      left -= n;
    }
  }
  return plan;
}

export function toInput(p: Planned): SeqInput {
  const seq = p.seq, toks = seq.tokens;
  const end = p.start + p.chunk;
  return {
    seq: seq.slot,
    pos0: p.start,
    tokens: toks.slice(p.start, end),
    pages: seq.pages,
    nPages: tablePages(seq.kvBits, end),
    tailPage: seq.tail,
    history: p.sample && hasPenalty(seq.params) ? toks.slice(0, p.start) : undefined,
    sample: p.sample,
    wantLogprobs: p.wantLogprobs,
    nextToken: p.wantLogprobs && end < toks.length ? toks[end] : undefined,
  };
}

export function topNOf(plan: Planned[]): number {
  return plan.reduce((m, p) => Math.max(m, p.seq.topN), 0);
}

/** Hands the prompt logprobs of one planned chunk to its sink, each position once. */
export function deliverPromptLogprobs(
  p: Planned,
  positions: PositionLogprob[] | null | undefined,
): void {
  const seq = p.seq;
  if (p.wantLogprobs && positions) {
    // Position j's logprob is of token j+1; only prompt tokens 1..nPrompt-1 come from here.
    const from = Math.max(seq.promptLogprobsDone, p.start);
    const to = Math.min(p.start + p.chunk, seq.nPrompt - 1);
    if (to > from) {
      seq.sink.onPromptLogprobs(from, positions.slice(from - p.start, to - p.start));
      seq.promptLogprobsDone = to;
    }
  }
}
