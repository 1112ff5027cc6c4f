// Greedy generation through a KvEngine, shared by the golden tests (CPU and GPU).
import { greedySampling, type KvBits, type KvEngine } from "../../engine/types.ts";

/** Prefill the prompt in one chunk, then decode one token per step; returns n greedy ids. */
export async function generateGreedy(
  e: KvEngine,
  bits: KvBits,
  ids: number[],
  n: number,
): Promise<number[]> {
  const seq = e.createSeq(bits);
  try {
    e.setSampling(seq, greedySampling({ nPrompt: ids.length }));
    const out: number[] = [];
    let next = ids;
    while (out.length < n) {
      const r = await e.step([{ seq, tokens: next, sample: true, wantLogprobs: false }], {
        topN: 0,
      });
      out.push(r.outputs[0]!.token);
      next = [out[out.length - 1]];
    }
    return out;
  } finally {
    e.freeSeq(seq);
  }
}
