// Exactness on the CPU backend (the reference), with the demo model through the real
// scheduler: a request's greedy tokens and their logprobs are bitwise the same whether its
// prompt is prefilled in one chunk or many (--max-step-tokens), preempted and recomputed, or
// partly served from the prefix cache (its own earlier run, or another prompt sharing its
// first windows), at kv_bits 16, 2 and 1. Before the one-semantics rule (nsn.h), 1/2-bit
// output changed with the chunking.

import assert from "node:assert/strict";
import { KV_BITS, type KvBits } from "../engine/types.ts";
import { DEMO_DIR, loadModel } from "../models/loader.ts";
import { run, scheduler, tokens, type Trace } from "./helpers/exactness.ts";

const haveDemo = await Deno.stat(`${DEMO_DIR}/model.safetensors`).then(() => true, () => false);
const MAX_TOKENS = 40; // decoding crosses a window boundary (150 + 40 > 192)
const P = tokens(150, 11);
const Q = [...P.slice(0, 130), ...tokens(40, 12)]; // shares P's first two windows

function same(got: Trace, want: Trace, what: string) {
  assert.deepEqual(got.tokens, want.tokens, `${what}: tokens`);
  assert.deepEqual(got.logprobs, want.logprobs, `${what}: logprobs`);
}

async function demo(kvPoolBytes?: bigint) {
  return await loadModel("demo", { backend: "cpu", nThreads: 2, maxSeqs: 8, kvPoolBytes });
}

Deno.test({
  name: "CPU exactness: chunking, prefix-cache hits and preemption change nothing (16/2/1 bits)",
  ignore: !haveDemo,
  async fn(t) {
    using m = await demo();
    const ref = new Map<KvBits, Trace[]>();
    for (const k of KV_BITS) {
      const s = scheduler(m.engine, { maxStepTokens: 512, prefixCaching: false });
      ref.set(k, [(await run(s, k, [P], MAX_TOKENS))[0], (await run(s, k, [Q], MAX_TOKENS))[0]]);
      await s.close();
    }

    await t.step("--max-step-tokens 7, 64 and 100", async () => {
      for (const k of KV_BITS) {
        for (const steps of [7, 64, 100]) {
          const s = scheduler(m.engine, { maxStepTokens: steps, prefixCaching: false });
          const [p, q] = await run(s, k, [P, Q], MAX_TOKENS); // batched together, too
          same(p, ref.get(k)![0], `kv_bits ${k}, max_step_tokens ${steps}, P`);
          same(q, ref.get(k)![1], `kv_bits ${k}, max_step_tokens ${steps}, Q`);
          await s.close();
        }
      }
    });

    await t.step(
      "prefix-cache hits: the same prompt again, and one sharing two windows",
      async () => {
        for (const k of KV_BITS) {
          for (const steps of [512, 48]) {
            const s = scheduler(m.engine, { maxStepTokens: steps, prefixCaching: true });
            const [cold] = await run(s, k, [P], MAX_TOKENS);
            const [warm] = await run(s, k, [P], MAX_TOKENS);
            const [q] = await run(s, k, [Q], MAX_TOKENS);
            assert.equal(cold.cached, 0);
            assert.equal(warm.cached, 128, `kv_bits ${k}`);
            assert.equal(q.cached, 128, `kv_bits ${k}`);
            same(cold, ref.get(k)![0], `kv_bits ${k}, steps ${steps}, cold`);
            same(warm, ref.get(k)![0], `kv_bits ${k}, steps ${steps}, cache hit`);
            same(q, ref.get(k)![1], `kv_bits ${k}, steps ${steps}, shared prefix`);
            await s.close();
          }
        }
      },
    );

    await t.step("preemption and recompute", async () => {
      const info = m.engine.info();
      for (const k of KV_BITS) {
        // Two prompts whose pages fill the pool exactly at admission (kv_bits 1/2: two tail
        // slabs and one slab of quantized pages): the first to reach its next window preempts
        // the other, which is freed and later recomputed (from its cached windows, with
        // prefix caching on).
        const per = info.kinds[k].pagesPerSlab;
        const [a, b] = k === 16 ? [2, 2] : [Math.ceil(per / 2), per - Math.ceil(per / 2)];
        const r1 = tokens(64 * a + 22, 21), r2 = tokens(64 * b + 42, 22);
        const s0 = scheduler(m.engine, { maxStepTokens: 512, prefixCaching: false });
        const want = [
          (await run(s0, k, [r1], MAX_TOKENS))[0],
          (await run(s0, k, [r2], MAX_TOKENS))[0],
        ];
        await s0.close();
        const slabs = k === 16 ? 6 : 3;
        using small = await demo(BigInt(slabs) * BigInt(info.kinds[16].pageBytes));
        for (const prefixCaching of [false, true]) {
          const s = scheduler(small.engine, { maxStepTokens: 64, prefixCaching });
          const got = await run(s, k, [r1, r2], MAX_TOKENS);
          assert.ok(s.preemptions > 0, `kv_bits ${k}: no preemption happened`);
          same(got[0], want[0], `kv_bits ${k}, preempted run, first`);
          same(got[1], want[1], `kv_bits ${k}, preempted run, second`);
          await s.close();
        }
      }
    });
  },
});
