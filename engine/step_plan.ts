// One step's plan: which chunk of which sequence goes into engine.step(), and the conversions
// between a plan entry and the engine's SeqInput / StepResult. The scheduler owns the queues;
// these functions only read sequences (deliverPromptLogprobs also records what went out).

import type { PositionLogprob, SeqInput } from "./types.ts";
import type { Sequence } from "./sequence.ts";

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

/** The running sequences' chunks within `maxStepTokens`. */
export function planRunning(running: Sequence[], maxStepTokens: number): Planned[] {
  const plan: Planned[] = [];
  let left = maxStepTokens;
  // Decodes first: one token each keeps every running stream moving.
  for (const seq of running) {
    if (left === 0) break;
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
  const toks = p.seq.tokens;
  const end = p.start + p.chunk;
  return {
    seq: p.seq.slot,
    tokens: toks.slice(p.start, end),
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
