// The GPU sampler against the procedure of cuda/src/sampling.h, run in TS (gpu_util.ts
// referenceSample) on the GPU's own logits of the same step: so the comparison is exact up to
// libm ulps and the order of double sums, independent of bf16 noise. Plus properties that need
// no reference: logit_bias forcing a token, the min_tokens ban, top_k = 1 = greedy, the draw
// depending only on (seed, position), and the raw logprob/top-N of the sampled row.

import { PagedEngine } from "../helpers/paged_engine.ts";
import assert from "node:assert/strict";
import type { SamplingParams } from "../../engine/types.ts";
import type { NsnLibrary } from "../../ffi/library.ts";
import { NativeEngine } from "../../ffi/native_engine.ts";
import {
  argmax,
  GPU_BACKEND,
  gpuTest,
  greedyParams,
  logSoftmax,
  randomTokens,
  referenceSample,
  tinySpec,
} from "./gpu_util.ts";

const SPEC = tinySpec({ vocabSize: 4096 }); // a larger vocab exercises the block-wide passes

const CASES: [string, Partial<SamplingParams>][] = [
  ["temperature 1", { temperature: 1 }],
  ["temperature 0.7, top_k 40", { temperature: 0.7, topK: 40 }],
  ["top_p 0.9", { temperature: 1, topP: 0.9 }],
  ["top_k 50 + top_p 0.8 + min_p 0.05", { temperature: 0.9, topK: 50, topP: 0.8, minP: 0.05 }],
  ["min_p 0.2", { temperature: 1.3, minP: 0.2 }],
  ["penalties", {
    temperature: 0.8,
    repetitionPenalty: 1.3,
    presencePenalty: 0.5,
    frequencyPenalty: 0.7,
  }],
  ["greedy + penalties + bias", {
    repetitionPenalty: 1.5,
    frequencyPenalty: 1,
    logitBias: new Map([[7, 2.5], [100, -3], [2000, 1.25]]),
  }],
  ["top_p 0.5 + logit bias", {
    temperature: 0.6,
    topP: 0.5,
    logitBias: new Map([[42, 4], [43, 3.5]]),
  }],
];

/** The random-weight model both sampler tests draw from. */
async function samplerEngine(lib: NsnLibrary): Promise<PagedEngine> {
  const e = NativeEngine.create(lib, SPEC, {
    backend: GPU_BACKEND,
    maxSeqs: 16,
    maxStepTokens: 512,
    kvPoolBytes: 64n << 20n,
  });
  try {
    await e.initRandom(3n);
    await e.finalize();
    return new PagedEngine(e);
  } catch (err) {
    e.close();
    throw err;
  }
}

gpuTest("cuda sampler = sampling.h procedure on the same logits", async (lib) => {
  const e = await samplerEngine(lib);
  try {
    const V = SPEC.vocabSize;
    let total = 0, agree = 0;
    const misses: string[] = [];
    for (const [name, over] of CASES) {
      for (let seed = 0; seed < 6; seed++) {
        const prompt = randomTokens(20 + seed, 100 + seed, 0, 300);
        // Output tokens already present so the frequency/presence penalties count something.
        const nPrompt = 12;
        const params = greedyParams(nPrompt, { ...over, seed: BigInt(1000 + seed) });
        const seq = e.createSeq(16);
        e.setSampling(seq, params);
        const r = await e.step([{ seq, tokens: prompt, sample: true, wantLogprobs: false }], {
          topN: 4,
          logits: true,
        });
        const z = r.logits!.subarray((prompt.length - 1) * V, prompt.length * V);
        const want = referenceSample(Float32Array.from(z), params, prompt);
        const got = r.outputs[0]!;
        total++;
        if (got.token === want) agree++;
        else misses.push(`${name} seed ${seed}: gpu ${got.token} reference ${want}`);
        const lp = logSoftmax(z);
        assert.ok(Math.abs(got.logprob - lp[got.token]) < 1e-4, "raw logprob of the sampled id");
        assert.equal(got.top[0].id, argmax(z));
        e.freeSeq(seq);
      }
    }
    console.log(`GPU sampler vs reference procedure: ${agree}/${total} identical draws`);
    if (misses.length) console.log(`  differing: ${misses.join("; ")}`);
    assert.ok(agree >= total - 1, `${total - agree} draws differ from the reference procedure`);
  } finally {
    e.close();
  }
});

gpuTest(
  "cuda sampler: bias forces, min_tokens bans, top_k 1 is greedy, draws depend on (seed, pos)",
  async (lib) => {
    const e = await samplerEngine(lib);
    try {
      const V = SPEC.vocabSize;
      const prompt = randomTokens(30, 77, 0, 300);
      const draw = async (
        over: Partial<SamplingParams>,
        tokens = prompt,
        nPrompt = prompt.length,
      ) => {
        const seq = e.createSeq(16);
        e.setSampling(seq, greedyParams(nPrompt, over));
        const r = await e.step([{ seq, tokens, sample: true, wantLogprobs: false }], {
          topN: 0,
          logits: true,
        });
        e.freeSeq(seq);
        return { token: r.outputs[0]!.token, z: r.logits!.subarray((tokens.length - 1) * V) };
      };
      const forced = await draw({ temperature: 1.5, logitBias: new Map([[1234, 100]]), seed: 5n });
      assert.equal(forced.token, 1234);
      const banned = await draw({ logitBias: new Map([[777, 100]]), stopIds: [777], minTokens: 3 });
      assert.notEqual(banned.token, 777, "stop id banned before min_tokens outputs");
      // Once enough outputs exist (positions >= n_prompt count as outputs) the ban lifts.
      const lifted = await draw(
        { logitBias: new Map([[777, 100]]), stopIds: [777], minTokens: 3 },
        prompt,
        20,
      );
      assert.equal(lifted.token, 777);
      const g = await draw({ temperature: 0.8, topK: 1, seed: 9n });
      assert.equal(g.token, argmax(g.z));
      // The same seed at the same position gives the same token, batch company aside.
      const a = await draw({ temperature: 1, seed: 123n });
      const seqs = [0, 1, 2].map(() => e.createSeq(16));
      seqs.forEach((s, i) =>
        e.setSampling(
          s,
          greedyParams(prompt.length, { temperature: 1, seed: i === 1 ? 123n : 55n }),
        )
      );
      const r = await e.step(
        seqs.map((seq, i) => ({
          seq,
          tokens: i === 1 ? prompt : prompt.slice(0, 10 + i),
          sample: true,
          wantLogprobs: false,
        })),
        { topN: 0 },
      );
      assert.equal(r.outputs[1]!.token, a.token);
      seqs.forEach((s) => e.freeSeq(s));
    } finally {
      e.close();
    }
  },
);
