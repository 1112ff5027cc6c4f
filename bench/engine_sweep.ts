// `deno task bench --engine`: batch size x context length straight through KvEngine (no HTTP,
// no scheduler), in the spirit of llama-bench's tg-at-depth and llama-batched-bench. For each
// kv_bits and context C: prefill B sequences to C tokens in chunked steps, then time K decode
// steps of B tokens (sampling included, as in serving). Alongside, the largest batch whose
// pages for C + K tokens fit the KV pool: the capacity win of 1/2-bit pages.

import type { KvBits, KvEngine, SamplingParams } from "../engine/types.ts";
import { EngineError, greedySampling } from "../engine/types.ts";
import { type DirectChunk, DirectKv, type DirectSeq } from "../engine/direct_kv.ts";
import { rng, summarize } from "./stats.ts";

export interface SweepConfig {
  kvBits: KvBits[];
  batches: number[];
  contexts: number[];
  decodeSteps: number;
  tokenRange: [number, number];
  seed: number;
  onPoint?: () => void;
}

export interface SweepPoint {
  kvBits: KvBits;
  context: number;
  batch: number;
  maxBatch: number; // sequences of context+decodeSteps tokens the pool holds (maxSeqs-capped)
  maxBatchByMemory: number; // the same, before the maxSeqs cap
  kvBytesPerToken: number;
  status: "ok" | "does not fit" | "oom";
  decodeContext: number; // tokens per sequence when the timed decode starts (see runGroup)
  prefillTokPerS: number; // the group's chunked prefill of its largest batch
  decodeTokPerS: number;
  decodeStepMs: { mean: number; median: number; p99: number };
}

const GREEDY: SamplingParams = greedySampling();

/** Sequences of `len` tokens at kvBits that fit the whole pool at once (exact, in slabs). */
export function capacity(engine: KvEngine, kvBits: KvBits, len: number) {
  const info = engine.info();
  const kv = new DirectKv(engine);
  let byMemory = 0;
  for (let step = 1 << 20; step >= 1; step >>= 1) {
    if (kv.fits(kvBits, len, byMemory + step)) byMemory += step;
  }
  return { byMemory, capped: Math.min(byMemory, info.maxSeqs) };
}

/** Appends `n` random tokens to each listed sequence in chunked steps of <= max_step_tokens. */
export async function extend(kv: DirectKv, seqs: DirectSeq[], n: number, tok: () => number) {
  const { maxStepTokens } = kv.engine.info();
  const fed = seqs.map(() => 0);
  while (fed.some((f) => f < n)) {
    let budget = maxStepTokens;
    const inputs: DirectChunk[] = [];
    for (let i = 0; i < seqs.length && budget > 0; i++) {
      const k = Math.min(n - fed[i], budget);
      if (k <= 0) continue;
      inputs.push({ seq: seqs[i], tokens: Array.from({ length: k }, tok) });
      fed[i] += k;
      budget -= k;
    }
    await kv.step(inputs, { topN: 0 });
  }
}

/**
 * Untimed decode steps before the timed ones: lazy allocations, and the CUDA backend's graph for
 * this batch (a batch shape's first step runs eagerly, the second captures the graph).
 */
export const WARMUP_STEPS = 2;

/** WARMUP_STEPS untimed decode steps, then K timed ones. */
export async function timeDecode(
  kv: DirectKv,
  seqs: DirectSeq[],
  steps: number,
  tok: () => number,
) {
  let next = seqs.map(() => tok());
  const times: number[] = [];
  for (let k = 0; k < WARMUP_STEPS + steps; k++) {
    const s = performance.now();
    const res = await kv.step(
      seqs.map((seq, i) => ({ seq, tokens: [next[i]], sample: true })),
      { topN: 0 },
    );
    if (k >= WARMUP_STEPS) times.push(performance.now() - s);
    next = res.outputs.map((o) => o?.token ?? tok());
  }
  const st = summarize(times);
  const total = times.reduce((a, b) => a + b, 0) / 1000;
  return {
    decodeTokPerS: (seqs.length * steps) / total,
    decodeStepMs: { mean: st.mean, median: st.median, p99: st.p99 },
  };
}

/**
 * One (kv_bits, context) group. Prefilling every batch size from scratch would cost the sum of
 * the batches x context tokens (minutes on a GPU at 8B scale), so the largest batch is
 * prefilled once and each batch size, ascending, decodes the first B of those sequences.
 * Decoding lengthens them, so before batch i the newly included sequences catch up: all B
 * sequences then hold exactly context + i x (K + WARMUP_STEPS) tokens, reported as decodeContext.
 */
async function runGroup(
  engine: KvEngine,
  kvBits: KvBits,
  context: number,
  batches: number[],
  cfg: SweepConfig,
): Promise<
  Pick<SweepPoint, "decodeContext" | "prefillTokPerS" | "decodeTokPerS" | "decodeStepMs">[]
> {
  const rand = rng(cfg.seed + context * 31 + kvBits);
  const [lo, hi] = cfg.tokenRange;
  const tok = () => lo + Math.floor(rand() * (hi - lo));
  const kv = new DirectKv(engine);
  const seqs: DirectSeq[] = [];
  try {
    const bMax = Math.max(...batches);
    for (let i = 0; i < bMax; i++) seqs.push(kv.create(kvBits, GREEDY));
    const t0 = performance.now();
    await extend(kv, seqs, context, tok);
    const prefillTokPerS = (bMax * context) / ((performance.now() - t0) / 1000);
    const out = [];
    let prev = 0;
    for (const [i, b] of batches.entries()) {
      const drift = i * (cfg.decodeSteps + WARMUP_STEPS);
      if (drift > 0) await extend(kv, seqs.slice(prev, b), drift, tok);
      prev = b;
      const d = await timeDecode(kv, seqs.slice(0, b), cfg.decodeSteps, tok);
      out.push({ decodeContext: context + drift, prefillTokPerS, ...d });
      cfg.onPoint?.();
    }
    return out;
  } finally {
    for (const s of seqs) kv.free(s);
  }
}

export async function runSweep(engine: KvEngine, cfg: SweepConfig): Promise<SweepPoint[]> {
  const out: SweepPoint[] = [];
  const nan = { mean: NaN, median: NaN, p99: NaN };
  const batches = [...new Set(cfg.batches)].sort((a, b) => a - b);
  for (const kvBits of cfg.kvBits) {
    for (const context of cfg.contexts) {
      // The longest a sequence gets: context + one (K + warm-up) drift per batch size.
      const longest = context + batches.length * (cfg.decodeSteps + WARMUP_STEPS);
      const cap = capacity(engine, kvBits, longest);
      const base = {
        kvBits,
        context,
        maxBatch: cap.capped,
        maxBatchByMemory: cap.byMemory,
        kvBytesPerToken: engine.info().kinds[kvBits].tokenBytes,
      };
      const miss = { prefillTokPerS: NaN, decodeTokPerS: NaN, decodeStepMs: nan };
      const fits = longest <= engine.maxPosition ? batches.filter((b) => b <= cap.capped) : [];
      let results: Awaited<ReturnType<typeof runGroup>> | null = null;
      if (fits.length) {
        try {
          results = await runGroup(engine, kvBits, context, fits, cfg);
        } catch (e) {
          // Slab fragmentation can make a "fitting" batch fail; report it, keep sweeping.
          if (!(e instanceof EngineError && e.code === "oom")) throw e;
        }
      }
      for (const batch of batches) {
        const i = fits.indexOf(batch);
        if (i >= 0 && results) out.push({ ...base, batch, status: "ok", ...results[i] });
        else {
          const status = i >= 0 ? "oom" : "does not fit";
          out.push({ ...base, batch, status, decodeContext: NaN, ...miss });
          if (i < 0 || !results) cfg.onPoint?.();
        }
      }
    }
  }
  return out;
}
