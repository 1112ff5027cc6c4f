// Beam search (engine/beam_search.ts) over the scheduler and the fake engine, whose pages hold
// token ids: a beam that read a wrong shared page would change its output. debugChecks verify
// page tables and reference counts after every step.

import assert from "node:assert/strict";
import { type Beam, BeamAborted, beamScore, BeamSearch } from "../engine/beam_search.ts";
import { QueueFullError, type Scheduler } from "../engine/scheduler.ts";
import { KV_BITS, type KvBits } from "../engine/types.ts";
import { prompt, request, setup } from "./helpers/sched.ts";

function search(s: Scheduler, p: number[], kvBits: KvBits, width: number, maxTokens: number) {
  return new BeamSearch(s, {
    prompt: p,
    kvBits,
    maxTokens,
    stopIds: [],
    logprobs: 0,
    beam: { width, lengthPenalty: 1, earlyStopping: false },
  });
}

/** No page is referenced any more (cached ones may stay idle) and the tables check out. */
function noPagesHeld(s: Scheduler) {
  for (const k of KV_BITS) {
    assert.equal(s.kv.pool.pagesInUse(k) - s.kv.pool.pagesIdle(k), 0, `kv_bits ${k}`);
  }
  s.check();
}

const tokensOf = (b: Beam) => b.outs.map((o) => o.token);

Deno.test("beam width 1 equals greedy, across window boundaries, at 16/2/1 bits", async () => {
  for (const k of KV_BITS) {
    const { s } = setup();
    const p = prompt(100);
    const greedy = request(p, k, 90);
    s.submit([greedy.req]);
    await greedy.out.done;
    const [best, ...rest] = await search(s, p, k, 1, 90).run();
    assert.equal(rest.length, 0);
    assert.deepEqual(tokensOf(best), greedy.out.tokens, `kv_bits ${k}`);
    assert.equal(best.finish, "length");
    noPagesHeld(s);
    await s.close();
  }
});

Deno.test("width k: k distinct beams sorted by score, sharing their parents' full windows", async () => {
  for (const k of KV_BITS) {
    const { e, s } = setup();
    const p = prompt(150);
    const beams = await search(s, p, k, 4, 30).run();
    assert.equal(beams.length, 4);
    const keys = new Set(beams.map((b) => tokensOf(b).join(",")));
    assert.equal(keys.size, 4, "distinct");
    const scores = beams.map((b) => beamScore(p.length, b, 1));
    for (let i = 1; i < scores.length; i++) assert.ok(scores[i - 1] >= scores[i], `${scores}`);
    // Each beam's cumulative logprob is the sum of its tokens'.
    for (const b of beams) {
      const sum = b.outs.reduce((a, o) => a + o.logprob, 0);
      assert.ok(Math.abs(sum - b.cumLogprob) < 1e-9);
    }
    // After the first round only partial windows are recomputed: under 64 tokens a beam.
    const first = e.log[0].tokens; // the prompt, in one step
    const later = e.log.reduce((a, l) => a + l.tokens, 0) - first;
    assert.ok(later <= 29 * 4 * 64, `recomputed ${later} tokens`);
    assert.ok(later < 29 * 4 * p.length, "full windows are shared, not recomputed");
    noPagesHeld(s);
    // The same search again gives the same beams (deterministic).
    const again = await search(s, p, k, 4, 30).run();
    assert.deepEqual(again.map(tokensOf), beams.map(tokensOf), `kv_bits ${k}`);
    await s.close();
  }
});

Deno.test("a stop id finishes a beam; length_penalty and early_stopping rank and cut", async () => {
  const { s } = setup();
  const p = prompt(20);
  const base = { prompt: p, kvBits: 16 as const, maxTokens: 12, logprobs: 2 };
  // A stop id among the first round's candidates: some finished beam holds it.
  const probe = await search(s, p, 16, 2, 1).run();
  const stopId = probe[1].outs[0].token;
  const beam = { width: 3, lengthPenalty: 0.5, earlyStopping: false };
  const beams = await new BeamSearch(s, { ...base, stopIds: [stopId], beam }).run();
  const stopped = beams.filter((b) => b.finish === "stop");
  for (const b of stopped) assert.equal(b.outs.at(-1)!.token, stopId);
  for (const b of beams) assert.ok(b.outs.every((o) => o.top.length === 2));
  const scores = beams.map((b) => beamScore(p.length, b, 0.5));
  for (let i = 1; i < scores.length; i++) assert.ok(scores[i - 1] >= scores[i]);
  const early = await new BeamSearch(s, {
    ...base,
    stopIds: [stopId],
    beam: { ...beam, width: 1, earlyStopping: true },
  }).run();
  assert.equal(early.length, 1);
  noPagesHeld(s);
  await s.close();
});

Deno.test("cancelling mid-search frees every page", async () => {
  for (const k of KV_BITS) {
    const { e, s } = setup({ stepDelayMs: 2 });
    const b = search(s, prompt(130), k, 3, 200);
    const running = b.run();
    while (e.log.length < 5) await new Promise((r) => setTimeout(r, 1));
    b.cancel();
    await assert.rejects(running, BeamAborted);
    await s.drain();
    noPagesHeld(s);
    await s.close();
  }
});

Deno.test("a beam search's later rounds are not refused by a full queue", async () => {
  const { s } = setup({ stepDelayMs: 1 }, { maxQueue: 4, maxNumSeqs: 2 });
  const p = prompt(70);
  const run = search(s, p, 2, 3, 12).run(); // admitted while the queue is empty
  // Fill the queue behind it: its next rounds (3 beams each) would overflow maxQueue.
  const others: ReturnType<typeof request>[] = [];
  while (others.length < 4) {
    const o = request(prompt(20), 2, 40);
    try {
      s.submit([o.req]);
      others.push(o);
    } catch (e) {
      if (!(e instanceof QueueFullError)) throw e;
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  const beams = await run;
  assert.equal(beams.length, 3);
  assert.ok(beams.every((b) => b.outs.length === 12));
  await Promise.all(others.map((o) => o.out.done));
  noPagesHeld(s);
  await s.close();
});
