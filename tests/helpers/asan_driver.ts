// Run by tests/asan_slow_test.ts in a child Deno with the gcc ASan runtime preloaded and
// NSN_LIB=cuda/build/libnsn_asan.so: drives the instrumented library through a realistic
// workload (the demo model's weights, mixed-kv_bits steps, window encodes, logprobs, frees and
// slot reuse) and then every abusive call of abi_abuse.ts. Any ASan/UBSan report aborts the
// process; the parent also scans stderr. Prints "ASAN DRIVER OK" when everything ran.
// With --canary it overflows a buffer on purpose, to prove the sanitizer is live.

import { cacheOf, type DirectChunk, DirectKv } from "../../engine/direct_kv.ts";
import { openLibrary } from "../../ffi/library.ts";
import { loadModel } from "../../models/loader.ts";
import type { NativeEngine } from "../../ffi/native_engine.ts";
import type { KvBits, SamplingParams } from "../../engine/types.ts";
import { NSN_OK } from "../../ffi/symbols.ts";
import { RawEngine, runAbuse, warmUp } from "./abi_abuse.ts";

const path = Deno.env.get("NSN_LIB");
if (!path) throw new Error("NSN_LIB must name the ASan build of libnsn");
const lib = await openLibrary({ path, build: false });
if (Deno.args[0] === "--canary") {
  // The harness's positive control: a 2048-float codebook into a 10-float buffer (the caller
  // breaks the contract here, not the library). ASan must report it, or it is not watching.
  lib.symbols.nsn_codebook(1, new Float32Array(10));
  console.log("canary not caught");
  Deno.exit(0);
}
let t0 = performance.now();
const lap = (what: string) => {
  console.log(`${what} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  t0 = performance.now();
};

function params(i: number, nPrompt: number): SamplingParams {
  return {
    temperature: i % 2 ? 0.8 : 0,
    topP: i % 3 ? 0.9 : 1,
    topK: i % 4 ? 40 : 0,
    minP: i % 5 ? 0.05 : 0,
    presencePenalty: 0.5,
    frequencyPenalty: 0.3,
    repetitionPenalty: 1.1,
    nPrompt,
    minTokens: 2,
    stopIds: [1],
    seed: BigInt(i),
    logitBias: new Map([[5, 3], [7, -100]]),
  };
}

async function workload(engine: NativeEngine, prompt: number[]) {
  const kv = new DirectKv(engine);
  const kinds: KvBits[] = [16, 2, 1, 16, 2, 1];
  const seqs = kinds.map((k, i) => {
    const s = kv.create(k, params(i, prompt.length));
    return { seq: s, tokens: [...prompt.slice(0, prompt.length - i)], done: 0, primed: false };
  });
  // Chunked prefill: 100-token chunks, so windows complete inside and across steps.
  let steps = 0;
  while (seqs.some((s) => !s.primed)) {
    const inputs: DirectChunk[] = [];
    let budget = 256;
    for (const s of seqs) {
      const n = s.primed ? 0 : Math.min(100, s.tokens.length - s.done, budget);
      if (n <= 0) continue;
      const end = s.done + n;
      inputs.push({
        seq: s.seq,
        tokens: s.tokens.slice(s.done, end),
        sample: end === s.tokens.length,
        wantLogprobs: true,
        nextToken: end < s.tokens.length ? s.tokens[end] : undefined,
      });
      budget -= n;
    }
    const r = await kv.step(inputs, { topN: 20, logits: steps === 0 });
    inputs.forEach((inp, i) => {
      const s = seqs.find((x) => x.seq === inp.seq)!;
      s.done += inp.tokens.length;
      if (inp.sample) s.tokens.push(r.outputs[i]!.token), s.primed = true;
    });
    engine.check();
    steps++;
  }
  // Decode 56 steps: prompts of 75..80 tokens cross position 128, so decode steps encode a
  // window (the sequence that replaces the freed one at step 30 stays in its fp16 tail).
  for (let t = 0; t < 56; t++) {
    if (t === 30) {
      // Free one sequence mid-stream and reuse its slot at another precision.
      const victim = seqs.splice(1, 1)[0];
      kv.free(victim.seq);
      const seq = kv.create(1, params(9, prompt.length));
      const r = await kv.step([{ seq, tokens: prompt, sample: true }], { topN: 0 });
      seqs.push({ seq, tokens: [...prompt, r.outputs[0]!.token], done: 0, primed: true });
    }
    const inputs: DirectChunk[] = seqs.map((s) => ({
      seq: s.seq,
      tokens: [s.tokens[s.tokens.length - 1]],
      sample: true,
      wantLogprobs: t % 10 === 0,
    }));
    const r = await kv.step(inputs, { topN: t % 7 });
    seqs.forEach((s, i) => s.tokens.push(r.outputs[i]!.token));
    engine.check();
  }
  for (const s of seqs) {
    for (let layer = 0; layer < engine.spec.nLayers; layer += 5) {
      engine.readKv(cacheOf(s.seq), layer, engine.spec.nKvHeads - 1, 0, s.seq.len);
    }
    kv.free(s.seq);
  }
  engine.check();
}

const model = await loadModel("demo", {
  lib,
  backend: "cpu",
  nThreads: 2,
  maxSeqs: 16,
  maxStepTokens: 256,
  kvPoolBytes: 32 << 20,
  debugChecks: true,
});
try {
  const prompt = model.tokenizer.encode(
    "The old man walked slowly down the road toward the village, where the lights were " +
      "already burning in every window and the smell of bread came from the bakery. ".repeat(3),
  );
  lap(`demo model loaded; prompt of ${prompt.length} tokens`);
  await workload(model.engine, prompt);
  lap("workload done: prefill, 56 decode steps, frees, slot reuse");
} finally {
  model.close();
}

const raw = await RawEngine.create(lib);
try {
  const results = await runAbuse(raw, await warmUp(raw));
  const bad = results.filter((x) => x.status === NSN_OK || x.error === "" || x.damage !== "");
  lap(`${results.length} abusive calls, ${bad.length} not clean`);
  for (const x of bad) console.log(`  not clean: ${x.name}: ${x.status} ${x.error} ${x.damage}`);
  if (bad.length > 0) Deno.exit(3);
} finally {
  raw.destroy();
}
console.log("ASAN DRIVER OK");
