// deno task eval on the demo model: every perplexity finite and > 1, and the 16-bit decode
// path (one token per step, attention over the paged cache) equal to teacher-forced scoring
// in one prefill per window: the check that decode semantics read the cache right.

import assert from "node:assert/strict";
import { DEFAULT_TEXT, formatEval, runEval } from "../bench/eval.ts";
import { makeWindows } from "../bench/perplexity.ts";

Deno.test("makeWindows: BOS + ctx-1 text tokens, consecutive, short text gives fewer", () => {
  const ids = Array.from({ length: 10 }, (_, i) => 100 + i);
  assert.deepEqual(makeWindows(ids, 4, 5, 1), [[1, 100, 101, 102], [1, 103, 104, 105], [
    1,
    106,
    107,
    108,
  ]]);
  assert.deepEqual(makeWindows(ids, 5, 2, null), [[100, 101, 102, 103, 104], [
    105,
    106,
    107,
    108,
    109,
  ]]);
  assert.throws(() => makeWindows(ids, 20, 1, 1), /too short/);
});

Deno.test({
  name: "eval: demo model, ctx 128, 2 windows, 16/2/1 + rtn",
  sanitizeResources: false, // the native library stays open for the process
  async fn() {
    const rep = await runEval({
      model: "demo",
      text: await Deno.readTextFile(DEFAULT_TEXT),
      ctx: 128,
      windows: 2,
      kvBits: [16, 2, 1],
      baselines: ["rtn"],
      ablations: [],
      ablationBits: [1],
      backend: "cpu",
      progress: false,
    });
    console.log(formatEval(rep));
    const want = ["prefill/16", "nsn/16", "nsn/2", "nsn/1", "rtn/2", "rtn/1"];
    assert.deepEqual(rep.results.map((r) => `${r.variant}/${r.kv_bits}`), want);
    for (const r of rep.results) {
      assert.ok(Number.isFinite(r.ppl) && r.ppl > 1, `${r.variant} ${r.kv_bits}: ppl ${r.ppl}`);
      assert.equal(r.tokens, 2 * 127, `${r.variant} ${r.kv_bits}: tokens`);
      assert.ok(r.kv_bytes_per_token > 0);
    }
    const prefill = rep.results[0].ppl;
    const decode16 = rep.results[1].ppl;
    const rel = Math.abs(decode16 / prefill - 1);
    assert.ok(rel < 1e-3, `16-bit decode ppl ${decode16} vs prefill ${prefill}: rel ${rel}`);
    // Quantized pages are smaller than fp16 ones.
    const bytes = (v: string, kv: number) =>
      rep.results.find((r) => r.variant === v && r.kv_bits === kv)!.kv_bytes_per_token;
    assert.ok(bytes("nsn", 1) < bytes("nsn", 2) && bytes("nsn", 2) < bytes("nsn", 16));
  },
});
