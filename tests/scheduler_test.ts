// The scheduler against the fake engine: continuous batching, chunked prefill, mixed kv_bits,
// exact admission by KV pages, preemption without lost or repeated tokens, cancellation, the
// queue bound, and faults failing only their step. Every step is followed by the page-table
// and reference-count check (debugChecks). Prefix caching: prefix_cache_test.ts.

import assert from "node:assert/strict";
import { QueueFullError } from "../engine/scheduler.ts";
import type { KvBits } from "../engine/types.ts";
import { params, prompt, request, setup } from "./helpers/sched.ts";

/** Reference outputs: each request alone on a roomy engine. */
async function reference(prompts: number[][], kvBits: KvBits[], maxTokens: number) {
  const { s } = setup();
  const outs = prompts.map((p, i) => request(p, kvBits[i], maxTokens));
  s.submit(outs.map((o) => o.req));
  await Promise.all(outs.map((o) => o.out.done));
  await s.close();
  return outs.map((o) => o.out.tokens);
}

Deno.test("continuous batching: a late request joins the running batch; kinds mix", async () => {
  const { e, s } = setup();
  const a = request(prompt(5), 16, 30);
  const b = request(prompt(6, 1), 2, 30);
  s.submit([a.req, b.req]);
  while (a.out.tokens.length < 5) await new Promise((r) => setTimeout(r, 1));
  const c = request(prompt(7, 2), 1, 10);
  s.submit([c.req]);
  await Promise.all([a.out.done, b.out.done, c.out.done]);
  assert.equal(a.out.reason, "length");
  assert.equal(a.out.tokens.length, 30);
  assert.equal(c.out.tokens.length, 10);
  // Some step carried c's prefill (7 tokens) together with a's and b's decodes.
  assert.ok(e.log.some((st) => st.seqs === 3 && st.tokens === 9), JSON.stringify(e.log));
  assert.ok(e.log.some((st) => new Set(st.kinds).size === 3), "a step with all three kv_bits");
  assert.equal(e.seqs.size, 0);
  await s.close();
});

Deno.test("chunked prefill respects the token budget and gives the same tokens", async () => {
  const p = [prompt(150), prompt(37, 3)];
  const ref = await reference(p, [16, 1], 12);
  const { e, s } = setup({}, { maxStepTokens: 16 });
  const outs = p.map((x, i) => request(x, i ? 1 : 16, 12));
  s.submit(outs.map((o) => o.req));
  await Promise.all(outs.map((o) => o.out.done));
  assert.ok(e.log.every((st) => st.tokens <= 16), "no step above the budget");
  assert.ok(e.log.length >= Math.ceil(187 / 16));
  assert.deepEqual(outs.map((o) => o.out.tokens), ref);
  await s.close();
});

Deno.test("the budget is clamped to the engine's maxStepTokens and maxSeqs", () => {
  const { s } = setup({ maxStepTokens: 64, maxSeqs: 40 }, { maxStepTokens: 512, maxNumSeqs: 99 });
  assert.equal(s.opts.maxStepTokens, 64);
  assert.equal(s.opts.maxNumSeqs, 40);
  const open = setup({ maxSeqs: 5000 }, { maxStepTokens: 8, maxNumSeqs: undefined }).s;
  assert.equal(open.opts.maxNumSeqs, 5000, "no cap by default but the engine's slots");
});

Deno.test("by default as many sequences run as the pool holds", async () => {
  // 1-bit, 3 + 60 tokens: each takes only its tail page, so 40 slabs hold 40 sequences.
  const { e, s } = setup({ poolSlabs: 40 }, { maxStepTokens: 64, maxNumSeqs: undefined });
  const outs = Array.from({ length: 60 }, (_, i) => request(prompt(3, i), 1, 60));
  s.submit(outs.map((o) => o.req));
  let peak = 0;
  const poll = setInterval(() => peak = Math.max(peak, s.numRunning), 1);
  await Promise.all(outs.map((o) => o.out.done));
  clearInterval(poll);
  assert.ok(outs.every((o) => o.out.reason === "length" && o.out.tokens.length === 60));
  assert.equal(peak, 40, "the pool, not a fixed cap, bounds the running set");
  assert.ok(e.log.every((st) => st.tokens <= 64));
  await s.close();
});

Deno.test("admission by KV memory: 1-bit sequences pack far denser than 16-bit", async () => {
  // 40 slabs. A 16-bit sequence of 640-670 tokens takes 11 slabs; a 1-bit one 10-11 quantized
  // pages (13 per slab) plus its fp16 tail page.
  const maxRunning: Record<number, number> = {};
  for (const bits of [16, 1] as KvBits[]) {
    const { e, s } = setup({ poolSlabs: 40 });
    const outs = Array.from({ length: 12 }, (_, i) => request(prompt(640, i), bits, 30));
    s.submit(outs.map((o) => o.req));
    let peak = 0;
    const poll = setInterval(() => peak = Math.max(peak, s.numRunning), 1);
    await Promise.all(outs.map((o) => o.out.done));
    clearInterval(poll);
    maxRunning[bits] = Math.max(peak, ...e.log.map((st) => st.seqs));
    assert.ok(outs.every((o) => o.out.reason === "length" && o.out.tokens.length === 30));
    await s.close();
  }
  assert.ok(maxRunning[16] <= 3, `16-bit ran ${maxRunning[16]} at once`);
  assert.equal(maxRunning[1], 12, `1-bit ran ${maxRunning[1]} at once`);
});

Deno.test("preemption: outputs are identical, nothing lost or repeated", async () => {
  const p = Array.from({ length: 6 }, (_, i) => prompt(40 + i, i));
  const bits: KvBits[] = [16, 16, 2, 16, 1, 16];
  const ref = await reference(p, bits, 120);
  // 6 slabs: all six fit their prompts, but not 160 tokens each at 16 bits.
  const { e, s } = setup({ poolSlabs: 6 });
  // The newest (the likely victim) also wants prompt logprobs: delivered once, recompute or not.
  const outs = p.map((x, i) => request(x, bits[i], 120, { promptLogprobs: i === 5, topN: 1 }));
  const seqs = s.submit(outs.map((o) => o.req));
  await Promise.all(outs.map((o) => o.out.done));
  assert.ok(s.preemptions > 0, "expected preemptions");
  assert.deepEqual(outs.map((o) => o.out.tokens), ref);
  assert.ok(seqs[5].preemptions > 0, "the newest was preempted");
  const last = outs[5].out;
  assert.equal(last.promptLpDelivered, p[5].length - 1);
  last.promptLp.forEach((lp, i) => assert.equal(lp.logprob, e.logprobOf(p[5], i + 1, p[5][i + 1])));
  assert.ok(outs.every((o) => o.out.reason === "length"));
  assert.equal(e.seqs.size, 0);
  await s.close();
});

Deno.test("a sequence larger than the whole pool fails alone", async () => {
  const { e, s } = setup({ poolSlabs: 3 });
  const big = request(prompt(400), 16, 1);
  const small = request(prompt(10), 16, 5);
  s.submit([big.req, small.req]);
  await Promise.all([big.out.done, small.out.done]);
  assert.equal(big.out.reason, "error");
  assert.match(big.out.error!.message, /pool cannot hold/);
  assert.equal(small.out.reason, "length");
  assert.equal(e.seqs.size, 0);
  await s.close();
});

Deno.test("cancellation frees the pages within one step, queued ones at once", async () => {
  const { e, s } = setup({ stepDelayMs: 3 }, { maxNumSeqs: 1, prefixCaching: false });
  const a = request(prompt(70), 16, 1000);
  const b = request(prompt(5), 2, 1000);
  const [sa, sb] = s.submit([a.req, b.req]);
  while (a.out.tokens.length < 3) await new Promise((r) => setTimeout(r, 1));
  s.cancel(sb); // waiting: no engine call needed
  assert.equal(b.out.reason, "abort");
  const stepsBefore = e.log.length;
  s.cancel(sa);
  await a.out.done;
  assert.equal(a.out.reason, "abort");
  assert.ok(e.log.length - stepsBefore <= 1, "freed within one step");
  assert.equal(e.seqs.size, 0);
  assert.equal(s.kv.pool.pagesInUse(16), 0);
  await s.close();
});

Deno.test("a full queue refuses a whole request; an empty queue takes any size", async () => {
  const { s } = setup({ stepDelayMs: 2 }, { maxQueue: 3, maxNumSeqs: 1 });
  const big = Array.from({ length: 5 }, () => request(prompt(3), 16, 2));
  s.submit(big.map((o) => o.req)); // 5 > 3, but the queue was empty
  assert.throws(() => s.submit([request(prompt(3), 16, 2).req]), QueueFullError);
  await Promise.all(big.map((o) => o.out.done));
  await s.close();
});

Deno.test("a failing step fails only its sequences; serving continues", async () => {
  const { e, s } = setup({ stepDelayMs: 1 }, { maxNumSeqs: 1 });
  const a = request(prompt(5), 16, 50);
  const b = request(prompt(6), 16, 5); // waits: maxNumSeqs 1
  s.submit([a.req, b.req]);
  while (a.out.tokens.length < 2) await new Promise((r) => setTimeout(r, 1));
  e.injectFault(1);
  await a.out.done;
  assert.equal(a.out.reason, "error");
  assert.match(a.out.error!.message, /injected fault/);
  await b.out.done;
  assert.equal(b.out.reason, "length");
  assert.equal(b.out.tokens.length, 5);
  const c = request(prompt(4), 1, 3);
  s.submit([c.req]);
  await c.out.done;
  assert.equal(c.out.reason, "length");
  assert.equal(e.seqs.size, 0);
  await s.close();
});

Deno.test("stop ids, min_tokens and max_model_len end sequences", async () => {
  const EOS_ID = 257;
  const { s } = setup({
    nextToken: (_h, _p, nOut) => (nOut === 2 ? EOS_ID : 120),
  }, { maxModelLen: 20 });
  const stop = request(prompt(5), 16, 10, { params: params(5, { stopIds: [EOS_ID] }) });
  const min = request(prompt(5), 16, 6, { params: params(5, { stopIds: [EOS_ID], minTokens: 4 }) });
  const long = request(prompt(15), 16, 100);
  s.submit([stop.req, min.req, long.req]);
  await Promise.all([stop.out.done, min.out.done, long.out.done]);
  assert.deepEqual(stop.out.tokens, [120, 120, EOS_ID]);
  assert.equal(stop.out.reason, "stop");
  assert.equal(min.out.reason, "length"); // EOS banned at output 2 < min_tokens
  assert.equal(long.out.tokens.length, 5);
  assert.equal(long.out.reason, "length");
  await s.close();
});

Deno.test("prompt logprobs over chunks with max_tokens 0", async () => {
  const p = prompt(45);
  const { e, s } = setup({}, { maxStepTokens: 8 });
  const o = request(p, 2, 0, { promptLogprobs: true, topN: 2 });
  s.submit([o.req]);
  await o.out.done;
  assert.equal(o.out.reason, "length");
  assert.equal(o.out.tokens.length, 0);
  assert.equal(o.out.promptLp.length, p.length - 1);
  for (let i = 0; i < p.length - 1; i++) {
    const lp = o.out.promptLp[i];
    assert.equal(lp.logprob, e.logprobOf(p, i + 1, p[i + 1]), `position ${i}`);
    assert.equal(lp.top.length, 2);
  }
  await s.close();
});
