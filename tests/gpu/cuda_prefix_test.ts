// The one-semantics rule and prefix caching on the CUDA backend (deno task test:gpu): with the
// demo model through the real scheduler, a request's greedy tokens are the same whether its
// prompt is prefilled in one chunk or many (--max-step-tokens), or partly served from the
// prefix cache, at kv_bits 16, 2 and 1. Before the rule, 1-bit output changed with the chunking
// from the third token on. The GPU computes in bf16 with different kernels for different
// chunk shapes, so logprobs are compared within a tolerance and printed, tokens exactly.

import assert from "node:assert/strict";
import { KV_BITS, type KvBits } from "../../engine/types.ts";
import { DEMO_DIR, loadModel } from "../../models/loader.ts";
import { run, scheduler, tokens, type Trace } from "../helpers/exactness.ts";
import { GPU_BACKEND, gpuTest } from "./gpu_util.ts";

const haveDemo = await Deno.stat(`${DEMO_DIR}/model.safetensors`).then(() => true, () => false);
const MAX_TOKENS = 48;
const P = tokens(300, 31); // 4 full windows + 44
const Q = [...P.slice(0, 200), ...tokens(60, 32)]; // shares P's first 3 windows
const LOGPROB_TOL = 0.05;

function compare(got: Trace, want: Trace, what: string): number {
  assert.deepEqual(got.tokens, want.tokens, `${what}: greedy tokens differ`);
  return Math.max(...got.logprobs.map((l, i) => Math.abs(l - want.logprobs[i])));
}

if (haveDemo) {
  gpuTest(
    "cuda: greedy output is the same across chunking and prefix-cache hits (16/2/1)",
    async () => {
      using m = await loadModel("demo", {
        backend: GPU_BACKEND,
        maxSeqs: 16,
        maxStepTokens: 512,
        kvPoolBytes: 256n << 20n,
      });
      let worst = 0;
      for (const k of KV_BITS as readonly KvBits[]) {
        const s0 = scheduler(m.engine, { maxStepTokens: 512, prefixCaching: false });
        const [p0] = await run(s0, k, [P], MAX_TOKENS);
        const [q0] = await run(s0, k, [Q], MAX_TOKENS);
        await s0.close();
        for (const steps of [1, 7, 64, 100, 256]) {
          const s = scheduler(m.engine, { maxStepTokens: steps, prefixCaching: false });
          const [p] = await run(s, k, [P], MAX_TOKENS);
          worst = Math.max(worst, compare(p, p0, `kv_bits ${k}, --max-step-tokens ${steps}`));
          await s.close();
        }
        for (const steps of [512, 48]) {
          const s = scheduler(m.engine, { maxStepTokens: steps, prefixCaching: true });
          const [cold] = await run(s, k, [P], MAX_TOKENS);
          const [warm] = await run(s, k, [P], MAX_TOKENS);
          const [q] = await run(s, k, [Q], MAX_TOKENS);
          assert.equal(warm.cached, 256, `kv_bits ${k}: cached tokens of the repeated prompt`);
          assert.equal(q.cached, 192, `kv_bits ${k}: cached tokens of the shared prefix`);
          worst = Math.max(worst, compare(cold, p0, `kv_bits ${k}, steps ${steps}, cold`));
          worst = Math.max(worst, compare(warm, p0, `kv_bits ${k}, steps ${steps}, cache hit`));
          worst = Math.max(worst, compare(q, q0, `kv_bits ${k}, steps ${steps}, shared prefix`));
          await s.close();
        }
      }
      console.log(`worst |logprob difference| of the greedy tokens: ${worst.toExponential(2)}`);
      assert.ok(worst < LOGPROB_TOL, `logprobs differ by ${worst}`);
    },
  );
}
