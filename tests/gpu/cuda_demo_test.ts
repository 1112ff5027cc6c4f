// The demo model (models/demo) on the CUDA backend against HuggingFace transformers
// (tests/fixtures/demo_*.json, fp32 on CPU) and against the CPU backend. The GPU runs bf16
// activations, so logits carry ~0.1 of absolute noise (the fixture's own note: 0.1-0.3 for bf16
// compute); greedy tokens must equal HF's wherever HF's top-two margin exceeds that noise.

import { PagedEngine } from "../helpers/paged_engine.ts";
import assert from "node:assert/strict";
import { DEMO_DIR, loadModel } from "../../models/loader.ts";
import { GPU_BACKEND, gpuTest, KV_BITS } from "./gpu_util.ts";
import { generateGreedy } from "../helpers/generate.ts";

const LOGITS = new URL("../fixtures/demo_logits.json", import.meta.url).pathname;
const GREEDY = new URL("../fixtures/demo_greedy.json", import.meta.url).pathname;
const ABS_TOL = 0.3; // logits and lse vs HF fp32 (bf16 activations on the GPU)

interface LogitsFixture {
  cases: {
    ids: number[];
    positions: { argmax: number; lse: number; ids: number[]; logits: number[] }[];
  }[];
}
interface GreedyFixture {
  cases: { prompt: string; ids: number[]; continuation: number[] }[];
}

const haveDemo = await Deno.stat(`${DEMO_DIR}/model.safetensors`).then(() => true, () => false);

const prefixMatch = (a: number[], b: number[]) => {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
};

if (!haveDemo) console.warn("tests/gpu: models/demo has no weights: demo GPU tests skipped");

if (haveDemo) {
  gpuTest("cuda demo model: logits vs HF and teacher-forced greedy tokens", async () => {
    using m = await loadModel("demo", {
      backend: GPU_BACKEND,
      maxSeqs: 8,
      maxStepTokens: 512,
      kvPoolBytes: 64n << 20n,
    });
    const e = new PagedEngine(m.engine);
    const V = m.spec.vocabSize;
    const lf: LogitsFixture = JSON.parse(await Deno.readTextFile(LOGITS));
    let worst = 0;
    for (const c of lf.cases) {
      const seq = e.createSeq(16);
      const r = await e.step([{ seq, tokens: c.ids, sample: false, wantLogprobs: false }], {
        topN: 0,
        logits: true,
      });
      c.positions.forEach((pos, t) => {
        const row = r.logits!.subarray(t * V, (t + 1) * V);
        pos.ids.forEach((id, k) => (worst = Math.max(worst, Math.abs(row[id] - pos.logits[k]))));
        const top2 = pos.logits[0] - pos.logits[1];
        let best = 0;
        for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
        if (top2 > ABS_TOL) assert.equal(best, pos.argmax, `argmax at position ${t}`);
      });
      e.freeSeq(seq);
    }
    console.log(`demo GPU logits vs HF: worst |diff| ${worst.toFixed(4)} (tolerance ${ABS_TOL})`);
    assert.ok(worst < ABS_TOL);

    // Teacher-forced: HF's continuation fed as one chunk; each position's GPU argmax must be HF's
    // next token unless the GPU's own margin between the two is within the noise.
    const gf: GreedyFixture = JSON.parse(await Deno.readTextFile(GREEDY));
    let flips = 0, total = 0;
    for (const c of gf.cases) {
      const all = [...c.ids, ...c.continuation];
      const seq = e.createSeq(16);
      const r = await e.step([{ seq, tokens: all, sample: false, wantLogprobs: false }], {
        topN: 0,
        logits: true,
      });
      for (let t = c.ids.length - 1; t < all.length - 1; t++) {
        const row = r.logits!.subarray(t * V, (t + 1) * V);
        let best = 0;
        for (let i = 1; i < V; i++) if (row[i] > row[best]) best = i;
        total++;
        if (best !== all[t + 1]) {
          flips++;
          assert.ok(
            row[best] - row[all[t + 1]] < ABS_TOL,
            `case "${c.prompt}" position ${t}: GPU ${best} vs HF ${all[t + 1]}`,
          );
        }
      }
      e.freeSeq(seq);
    }
    console.log(
      `demo GPU teacher-forced greedy vs HF: ${total - flips}/${total} positions identical`,
    );
  });

  gpuTest(
    "cuda demo model: free-running greedy vs HF and vs the CPU backend, 16/2/1-bit",
    async () => {
      using g = await loadModel("demo", {
        backend: GPU_BACKEND,
        maxSeqs: 8,
        maxStepTokens: 512,
        kvPoolBytes: 64n << 20n,
      });
      using c = await loadModel("demo", {
        backend: "cpu",
        maxSeqs: 8,
        maxStepTokens: 512,
        kvPoolBytes: 64n << 20n,
      });
      const gf: GreedyFixture = JSON.parse(await Deno.readTextFile(GREEDY));
      const lines: string[] = [];
      let hf16 = 0, total = 0;
      for (const bits of KV_BITS) {
        let agreeCpu = 0, agreeHf = 0, n = 0;
        for (const cs of gf.cases) {
          const outG = await generateGreedy(g.engine, bits, cs.ids, cs.continuation.length);
          const outC = await generateGreedy(c.engine, bits, cs.ids, cs.continuation.length);
          agreeCpu += prefixMatch(outG, outC);
          agreeHf += prefixMatch(outG, cs.continuation);
          n += cs.continuation.length;
          if (bits === 16) {
            hf16 += prefixMatch(outG, cs.continuation);
            total += cs.continuation.length;
          }
        }
        lines.push(
          `${bits}-bit: identical prefix with CPU ${agreeCpu}/${n}, with HF ${agreeHf}/${n}`,
        );
      }
      console.log(`demo free-running greedy (GPU):\n  ${lines.join("\n  ")}`);
      // An fp16 cache follows HF until a near-tie (if any) under bf16 noise.
      assert.ok(
        hf16 >= total * 0.5,
        `16-bit greedy left HF's continuation early: ${hf16}/${total}`,
      );
    },
  );
}
