// decode_profile.ts: a steady decode loop on a synthetic model, for profilers (nsys, ncu) and
// quick A/B timings on the GPU machine (e.g. NSN_CUDA_GRAPHS=0 vs 1). The prefill and the
// timed decode are bench --engine's (bench/engine_sweep.ts: extend, timeDecode).
//
//   deno run -A tools/decode_profile.ts [--model llama-3-8b] [--batch 1] [--ctx 512]
//     [--kv-bits 16] [--steps 64] [--backend cuda] [--pool-gb 8]
//
// Prints the median and p99 ms per decode step.
import { DirectKv } from "../engine/direct_kv.ts";
import { parseArgs } from "node:util";
import type { KvBits } from "../engine/types.ts";
import { greedySampling } from "../engine/types.ts";
import { openLibrary } from "../ffi/library.ts";
import { NativeEngine } from "../ffi/native_engine.ts";
import { syntheticSpec } from "../models/synthetic.ts";
import { extend, timeDecode } from "../bench/engine_sweep.ts";
import { rng } from "../bench/stats.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "llama-3-8b" },
    batch: { type: "string", default: "1" },
    ctx: { type: "string", default: "512" },
    "kv-bits": { type: "string", default: "16" },
    steps: { type: "string", default: "64" },
    backend: { type: "string", default: "cuda" },
    "pool-gb": { type: "string", default: "8" },
  },
});
const batch = Number(values.batch), ctx = Number(values.ctx), steps = Number(values.steps);
const bits = Number(values["kv-bits"]) as KvBits;
const lib = await openLibrary();
const e = NativeEngine.create(lib, syntheticSpec(values.model!), {
  backend: values.backend as "cuda" | "cpu",
  maxSeqs: Math.max(batch, 8),
  maxStepTokens: Math.max(2048, ctx),
  kvPoolBytes: BigInt(Math.round(Number(values["pool-gb"]) * 1024)) << 20n,
});
try {
  await e.initRandom(1n);
  await e.finalize();
  const rand = rng(1);
  const tok = () => Math.floor(rand() * e.vocabSize);
  const kv = new DirectKv(e);
  const seqs = Array.from(
    { length: batch },
    () => kv.create(bits, greedySampling({ nPrompt: ctx })),
  );
  await extend(kv, seqs, ctx, tok);
  const { decodeStepMs: ms } = await timeDecode(kv, seqs, steps, tok);
  console.log(
    `decode_profile ${values.model} batch ${batch} ctx ${ctx} kv ${bits}: ${
      ms.median.toFixed(3)
    } ms/step median over ${steps} steps (p99 ${ms.p99.toFixed(3)})`,
  );
} finally {
  e.close();
}
