// decode_profile.ts: a steady decode loop on a synthetic model, for profilers (nsys, ncu) and
// quick A/B timings on the GPU machine (e.g. NSN_CUDA_GRAPHS=0 vs 1).
//
//   deno run -A tools/decode_profile.ts [--model llama-3-8b] [--batch 1] [--ctx 512]
//     [--kv-bits 16] [--steps 64]
//
// Prints the median ms per decode step after 8 warm-up steps.
import { parseArgs } from "node:util";
import type { KvBits } from "../engine/types.ts";
import { greedySampling } from "../engine/types.ts";
import { openLibrary } from "../ffi/library.ts";
import { NativeEngine } from "../ffi/native_engine.ts";
import { syntheticSpec } from "../models/synthetic.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string", default: "llama-3-8b" },
    batch: { type: "string", default: "1" },
    ctx: { type: "string", default: "512" },
    "kv-bits": { type: "string", default: "16" },
    steps: { type: "string", default: "64" },
    backend: { type: "string", default: "cuda" },
  },
});
const batch = Number(values.batch), ctx = Number(values.ctx), steps = Number(values.steps);
const bits = Number(values["kv-bits"]) as KvBits;
const lib = await openLibrary();
const e = NativeEngine.create(lib, syntheticSpec(values.model!), {
  backend: values.backend as "cuda" | "cpu",
  maxSeqs: Math.max(batch, 8),
  maxStepTokens: Math.max(2048, ctx),
  kvPoolBytes: 8n << 30n,
});
try {
  await e.initRandom(1n);
  await e.finalize();
  const seqs = Array.from({ length: batch }, () => e.createSeq(bits));
  let next: number[] = [];
  for (const [j, seq] of seqs.entries()) {
    e.setSampling(seq, greedySampling({ nPrompt: ctx }));
    const tokens = Array.from({ length: ctx }, (_, i) => (i * 7919 + j * 104729) % e.vocabSize);
    const r = await e.step([{ seq, tokens, sample: true, wantLogprobs: false }], { topN: 0 });
    next.push(r.outputs[0]!.token);
  }
  const times: number[] = [];
  for (let s = 0; s < steps + 8; s++) {
    const t = performance.now();
    const r = await e.step(
      seqs.map((seq, j) => ({ seq, tokens: [next[j]], sample: true, wantLogprobs: false })),
      { topN: 0 },
    );
    if (s >= 8) times.push(performance.now() - t);
    next = r.outputs.map((o) => o!.token);
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  console.log(
    `decode_profile ${values.model} batch ${batch} ctx ${ctx} kv ${bits}: ${
      ms.toFixed(3)
    } ms/step median over ${steps} steps (min ${times[0].toFixed(3)})`,
  );
} finally {
  e.close();
}
