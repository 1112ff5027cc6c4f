// Per-layer KV reconstruction error, the first thing to look at when a quantized perplexity
// disagrees with expectations: the same tokens are prefilled into a 16-bit sequence and into
// one sequence per quantized kv_bits (prefill attention is full precision, so every layer sees
// identical K/V inputs), then the cache is read back (nsn_seq_read_kv: dequantized for encoded
// windows, keys post-RoPE) and compared over the completed windows.

import { cacheOf, DirectKv, type DirectSeq } from "../engine/direct_kv.ts";
import type { KvBits } from "../engine/types.ts";
import type { NativeEngine } from "../ffi/native_engine.ts";
import { NSN_WINDOW } from "../ffi/symbols.ts";

export interface LayerError {
  kvBits: KvBits;
  layer: number;
  kRelErr: number; // ||k^ - k|| / ||k|| over all heads and encoded tokens of the layer
  vRelErr: number;
  kCos: number; // mean per-token cosine similarity of k^ with k
  vCos: number;
}

async function prefill(kv: DirectKv, kvBits: KvBits, tokens: number[]): Promise<DirectSeq> {
  const seq = kv.create(kvBits);
  const { maxStepTokens } = kv.engine.info();
  for (let i = 0; i < tokens.length; i += maxStepTokens) {
    await kv.step([{ seq, tokens: tokens.slice(i, i + maxStepTokens) }], { topN: 0 });
  }
  return seq;
}

export async function kvReconstructionError(
  engine: NativeEngine,
  tokens: number[],
  kvBits: readonly KvBits[],
): Promise<LayerError[]> {
  const n = Math.floor(tokens.length / NSN_WINDOW) * NSN_WINDOW;
  if (n === 0) throw new Error(`kv error needs >= ${NSN_WINDOW} tokens, got ${tokens.length}`);
  const { nLayers, nKvHeads, headDim } = engine.spec;
  const out: LayerError[] = [];
  const direct = new DirectKv(engine);
  const ref = await prefill(direct, 16, tokens);
  try {
    for (const kv of kvBits.filter((b) => b !== 16)) {
      const seq = await prefill(direct, kv, tokens);
      try {
        for (let layer = 0; layer < nLayers; layer++) {
          const acc = { kErr: 0, kRef: 0, vErr: 0, vRef: 0, kCos: 0, vCos: 0 };
          for (let h = 0; h < nKvHeads; h++) {
            const a = engine.readKv(cacheOf(ref), layer, h, 0, n);
            const b = engine.readKv(cacheOf(seq), layer, h, 0, n);
            for (let t = 0; t < n; t++) {
              const k = compare(a.k, b.k, t * headDim, headDim);
              const v = compare(a.v, b.v, t * headDim, headDim);
              acc.kErr += k.err;
              acc.kRef += k.ref;
              acc.kCos += k.cos;
              acc.vErr += v.err;
              acc.vRef += v.ref;
              acc.vCos += v.cos;
            }
          }
          const m = n * nKvHeads;
          out.push({
            kvBits: kv,
            layer,
            kRelErr: Math.sqrt(acc.kErr / acc.kRef),
            vRelErr: Math.sqrt(acc.vErr / acc.vRef),
            kCos: acc.kCos / m,
            vCos: acc.vCos / m,
          });
        }
      } finally {
        direct.free(seq);
      }
    }
  } finally {
    direct.free(ref);
  }
  return out;
}

/** Squared error, squared reference norm and cosine of one token vector. */
function compare(ref: Float32Array, got: Float32Array, off: number, d: number) {
  let err = 0;
  let rr = 0;
  let gg = 0;
  let rg = 0;
  for (let i = off; i < off + d; i++) {
    const x = ref[i];
    const y = got[i];
    err += (x - y) * (x - y);
    rr += x * x;
    gg += y * y;
    rg += x * y;
  }
  return { err, ref: rr, cos: rr > 0 && gg > 0 ? rg / Math.sqrt(rr * gg) : 1 };
}
