// Greedy generation through a KvEngine, shared by the golden tests (CPU and GPU).
import { DirectKv } from "../../engine/direct_kv.ts";
import { greedySampling, type KvBits, type KvEngine } from "../../engine/types.ts";

/** Prefill the prompt in one chunk, then decode one token per step; returns n greedy ids. */
export async function generateGreedy(
  e: KvEngine,
  bits: KvBits,
  ids: number[],
  n: number,
): Promise<number[]> {
  const kv = new DirectKv(e);
  const seq = kv.create(bits, greedySampling({ nPrompt: ids.length }));
  try {
    const out: number[] = [];
    let next = ids;
    while (out.length < n) {
      const r = await kv.step([{ seq, tokens: next, sample: true }], { topN: 0 });
      out.push(r.outputs[0]!.token);
      next = [out[out.length - 1]];
    }
    return out;
  } finally {
    kv.free(seq);
  }
}
