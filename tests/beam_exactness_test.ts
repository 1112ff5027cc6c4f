// Beam search on the demo model (CPU backend), where each round re-prefills a beam's partial
// window into its own page and shares the complete ones: width 1 is bitwise the greedy decode
// (tokens and logprobs) at kv_bits 16, 2 and 1, across window boundaries; wider searches are
// deterministic, and give the same beams whether full windows are shared (prefix caching) or
// recomputed. No page stays referenced.

import assert from "node:assert/strict";
import { type Beam, BeamSearch } from "../engine/beam_search.ts";
import type { Scheduler } from "../engine/scheduler.ts";
import { KV_BITS, type KvBits } from "../engine/types.ts";
import { DEMO_DIR, loadModel } from "../models/loader.ts";
import { run, scheduler, tokens } from "./helpers/exactness.ts";

const haveDemo = await Deno.stat(`${DEMO_DIR}/model.safetensors`).then(() => true, () => false);
const P = tokens(56, 21); // decoding 16 tokens crosses the window boundary at 64

async function beams(s: Scheduler, k: KvBits, width: number, maxTokens: number) {
  const b = new BeamSearch(s, {
    prompt: P,
    kvBits: k,
    maxTokens,
    stopIds: [],
    logprobs: 0,
    beam: { width, lengthPenalty: 1, earlyStopping: false },
  });
  const got = await b.run();
  for (const kind of KV_BITS) {
    assert.equal(s.kv.pool.pagesInUse(kind) - s.kv.pool.pagesIdle(kind), 0, `kv_bits ${kind}`);
  }
  s.check();
  return got;
}

const trace = (b: Beam[]) => b.map((x) => ({ t: x.outs.map((o) => o.token), lp: x.cumLogprob }));

Deno.test({
  name: "CPU beam search: width 1 = greedy bitwise; width 3 deterministic, sharing exact (16/2/1)",
  ignore: !haveDemo,
  async fn() {
    using m = await loadModel("demo", { backend: "cpu", nThreads: 2, maxSeqs: 8 });
    for (const k of KV_BITS) {
      const s = scheduler(m.engine, { maxStepTokens: 512, prefixCaching: true });
      const [greedy] = await run(s, k, [P], 16);
      const [one] = await beams(s, k, 1, 16);
      assert.deepEqual(one.outs.map((o) => o.token), greedy.tokens, `kv_bits ${k}: tokens`);
      assert.deepEqual(one.outs.map((o) => o.logprob), greedy.logprobs, `kv_bits ${k}: logprobs`);
      const three = trace(await beams(s, k, 3, 16));
      assert.equal(new Set(three.map((b) => b.t.join())).size, 3);
      assert.deepEqual(trace(await beams(s, k, 3, 16)), three, `kv_bits ${k}: deterministic`);
      await s.close();
      const cold = scheduler(m.engine, { maxStepTokens: 512, prefixCaching: false });
      assert.deepEqual(trace(await beams(cold, k, 3, 16)), three, `kv_bits ${k}: no sharing`);
      await cold.close();
    }
  },
});
