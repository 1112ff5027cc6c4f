// Perplexity through a KvEngine, two ways:
//  - decodePerplexity: DECODE semantics. Every window is a sequence fed one token per step, so
//    each prediction attends over the cache exactly as generation would: quantized K/V for
//    completed 64-token windows, the exact fp16 tail for the rest. All windows of all kv_bits
//    run as parallel sequences of the same steps (mixed kv_bits share a batch), so a whole
//    eval costs ctx-1 steps instead of windows x ctx.
//  - prefillPerplexity: teacher forcing, one prefill per window. Prefill attention runs in full
//    precision, so this hides quantization error; it is the reference the 16-bit decode must
//    match (a check of the decode path) and the "no quantization at all" point.
//
// A window is [BOS] + (ctx-1) text tokens when the model prepends BOS, else ctx text tokens;
// windows take consecutive, non-overlapping slices of the text; every position but the last
// predicts its successor, so a window scores ctx-1 tokens.

import { type DirectChunk, DirectKv, type DirectSeq } from "../engine/direct_kv.ts";
import type { KvBits, KvEngine, SamplingParams } from "../engine/types.ts";
import { greedySampling } from "../engine/types.ts";
import { NSN_WINDOW } from "../ffi/symbols.ts";

export interface PplResult {
  nll: number; // summed negative log-likelihood (nats)
  tokens: number; // predictions scored
  ppl: number; // exp(nll / tokens)
  /** Mean NLL per 64-token block of positions: where in the context the error appears. */
  nllByBlock: number[];
}

/** BOS (when the model uses one) + consecutive text slices; fewer windows if the text is short. */
export function makeWindows(
  textIds: readonly number[],
  ctx: number,
  nWindows: number,
  bos: number | null,
): number[][] {
  if (!Number.isInteger(ctx) || ctx < 2) throw new Error(`ctx must be an integer >= 2, got ${ctx}`);
  const take = bos === null ? ctx : ctx - 1;
  const out: number[][] = [];
  for (let w = 0; w < nWindows && (w + 1) * take <= textIds.length; w++) {
    const slice = textIds.slice(w * take, (w + 1) * take);
    out.push(bos === null ? slice : [bos, ...slice]);
  }
  if (out.length === 0) {
    throw new Error(`text has ${textIds.length} tokens: too short for one window of ${ctx}`);
  }
  return out;
}

const GREEDY: SamplingParams = greedySampling();

class Accumulator {
  nll = 0;
  tokens = 0;
  #blockSum: number[] = [];
  #blockN: number[] = [];

  add(logprob: number, position: number, what: string): void {
    if (!Number.isFinite(logprob)) {
      throw new Error(`${what}: non-finite logprob ${logprob} at position ${position}`);
    }
    this.nll -= logprob;
    this.tokens++;
    const b = Math.floor(position / NSN_WINDOW);
    this.#blockSum[b] = (this.#blockSum[b] ?? 0) - logprob;
    this.#blockN[b] = (this.#blockN[b] ?? 0) + 1;
  }

  result(): PplResult {
    return {
      nll: this.nll,
      tokens: this.tokens,
      ppl: Math.exp(this.nll / this.tokens),
      nllByBlock: this.#blockSum.map((s, i) => s / this.#blockN[i]),
    };
  }
}

/** How many sequences of `len` tokens at `kvBits` may run at once in this engine's pool. */
export function seqsThatFit(engine: KvEngine, kvBits: KvBits, len: number): number {
  const info = engine.info();
  const kv = new DirectKv(engine);
  let byMemory = 0;
  for (let step = 1 << 20; step >= 1; step >>= 1) {
    if (kv.fits(kvBits, len, byMemory + step)) byMemory += step;
  }
  return Math.max(1, Math.min(byMemory, info.maxSeqs, info.maxStepTokens));
}

export interface DecodeOptions {
  /** Called after every engine step with the number of (sequence, token) predictions it made. */
  onStep?: (predictions: number) => void;
}

/**
 * Decode-semantics perplexity of the same windows at several kv_bits at once. Windows are
 * grouped so each group fits the KV pool; a group's sequences all advance one token per step.
 */
export async function decodePerplexity(
  engine: KvEngine,
  windows: readonly number[][],
  kvBitsList: readonly KvBits[],
  opts: DecodeOptions = {},
): Promise<Map<KvBits, PplResult>> {
  const acc = new Map(kvBitsList.map((kv) => [kv, new Accumulator()]));
  const units = kvBitsList.flatMap((kv) => windows.map((w) => ({ kv, w })));
  const ctx = Math.max(...windows.map((w) => w.length));
  // The tightest kind decides the group size (groups mix kv_bits, like a real batch).
  // Groups mix kinds: each kind's share must fit together, so a mixed group takes 1/n each.
  const cap = Math.max(
    1,
    Math.floor(
      Math.min(...kvBitsList.map((kv) => seqsThatFit(engine, kv, ctx))) / kvBitsList.length,
    ),
  );
  const kv = new DirectKv(engine);
  for (let g = 0; g < units.length; g += cap) {
    const group = units.slice(g, g + cap);
    const seqs: DirectSeq[] = [];
    try {
      for (const u of group) seqs.push(kv.create(u.kv, GREEDY));
      for (let t = 0; t + 1 < ctx; t++) {
        const inputs: DirectChunk[] = [];
        const live: number[] = [];
        group.forEach((u, i) => {
          if (t + 1 >= u.w.length) return;
          live.push(i);
          inputs.push({
            seq: seqs[i],
            tokens: [u.w[t]],
            sample: false,
            wantLogprobs: true,
            nextToken: u.w[t + 1],
          });
        });
        const res = await kv.step(inputs, { topN: 0 });
        live.forEach((i, j) => {
          const u = group[i];
          acc.get(u.kv)!.add(res.positions[j]![0].logprob, t, `kv_bits ${u.kv}`);
        });
        opts.onStep?.(inputs.length);
      }
    } finally {
      for (const s of seqs) kv.free(s);
    }
  }
  return new Map([...acc].map(([kv, a]) => [kv, a.result()]));
}

/**
 * Teacher-forced perplexity: each window in one prefill (chunked only if longer than
 * max_step_tokens); windows are packed into steps up to max_step_tokens tokens.
 */
export async function prefillPerplexity(
  engine: KvEngine,
  windows: readonly number[][],
  kvBits: KvBits = 16,
  opts: DecodeOptions = {},
): Promise<PplResult> {
  const acc = new Accumulator();
  const { maxStepTokens, maxSeqs } = engine.info();
  let next = 0;
  while (next < windows.length) {
    // Pack whole windows into one step; a window longer than the step limit goes alone, chunked.
    const batch: number[] = [];
    let tokens = 0;
    while (
      next < windows.length && batch.length < maxSeqs &&
      (batch.length === 0 || tokens + windows[next].length - 1 <= maxStepTokens)
    ) {
      tokens += windows[next].length - 1;
      batch.push(next++);
    }
    const kv = new DirectKv(engine);
    const seqs = batch.map(() => kv.create(kvBits, GREEDY));
    try {
      const done = batch.map(() => 0); // positions of each window already fed
      while (batch.some((w, i) => done[i] < windows[w].length - 1)) {
        const inputs: DirectChunk[] = [];
        const fed: { i: number; start: number; n: number }[] = [];
        let budget = maxStepTokens;
        batch.forEach((w, i) => {
          const win = windows[w];
          const n = Math.min(win.length - 1 - done[i], budget);
          if (n <= 0) return;
          budget -= n;
          const start = done[i];
          inputs.push({
            seq: seqs[i],
            tokens: win.slice(start, start + n),
            sample: false,
            wantLogprobs: true,
            nextToken: win[start + n],
          });
          fed.push({ i, start, n });
        });
        const res = await kv.step(inputs, { topN: 0 });
        fed.forEach(({ i, start, n }, j) => {
          const pos = res.positions[j]!;
          for (let k = 0; k < n; k++) acc.add(pos[k].logprob, start + k, "prefill");
          done[i] += n;
        });
        opts.onStep?.(fed.reduce((s, f) => s + f.n, 0));
      }
    } finally {
      for (const s of seqs) kv.free(s);
    }
  }
  return acc.result();
}
