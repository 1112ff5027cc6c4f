// use_beam_search on /v1/completions (and chat) through the official openai client, which
// sends vLLM's fields as extra body fields: n beams returned of a best_of-wide search, ranked,
// with logprobs; width 1 is greedy; what beam search cannot combine with is a 400 naming it;
// no page stays referenced afterwards.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { KV_BITS } from "../engine/types.ts";
import { makeTestApp } from "./fake_engine.ts";
import { clientFor } from "./helpers/openai_client.ts";

const BASE = { model: "fake-model", prompt: "hello world", max_tokens: 8, temperature: 0 };

function noPagesHeld(t: ReturnType<typeof makeTestApp>) {
  const { kv } = t.state.ready!.scheduler;
  for (const k of KV_BITS) assert.equal(kv.pool.pagesInUse(k) - kv.pool.pagesIdle(k), 0);
  t.state.ready!.scheduler.check();
}

Deno.test("use_beam_search: n best of best_of beams, ranked, with logprobs; width 1 is greedy", async () => {
  const t = makeTestApp({ scheduler: { debugChecks: true } });
  const client = clientFor(t);
  const r = await client.completions.create({
    ...BASE,
    n: 2,
    best_of: 4,
    logprobs: 2,
    use_beam_search: true,
    length_penalty: 1.0,
  } as never);
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.notEqual(r.choices[0].text, r.choices[1].text);
  const cum = r.choices.map((c) => c.logprobs!.token_logprobs!.reduce((a, x) => a + x, 0));
  assert.ok(cum[0] >= cum[1], `${cum}`); // same length: the score orders as the logprob sum
  for (const c of r.choices) {
    assert.equal(c.finish_reason, "length");
    assert.equal(c.logprobs!.tokens!.length, 8);
    assert.equal(Object.keys(c.logprobs!.top_logprobs![0]).length, 2);
  }
  assert.equal(r.usage!.completion_tokens, 16);
  const greedy = await client.completions.create(BASE);
  const one = await client.completions.create({ ...BASE, use_beam_search: true } as never);
  assert.equal(one.choices[0].text, greedy.choices[0].text);
  const chat = await client.chat.completions.create({
    model: "fake-model",
    messages: [{ role: "user", content: "hello" }],
    max_tokens: 5,
    n: 3,
    use_beam_search: true,
  } as never);
  assert.equal(chat.choices.length, 3);
  assert.equal(new Set(chat.choices.map((c) => c.message.content)).size, 3);
  noPagesHeld(t);
  await t.close();
});

Deno.test("use_beam_search refuses streaming, sampling and what changes the distribution", async () => {
  const t = makeTestApp();
  const client = clientFor(t);
  const cases: [Record<string, unknown>, string][] = [
    [{ stream: true }, "stream"],
    [{ temperature: 0.7 }, "temperature"],
    [{ stop: ["x"] }, "stop"],
    [{ presence_penalty: 0.5 }, "presence_penalty"],
    [{ n: 11 }, "n"],
    [{ n: 2, best_of: 12 }, "best_of"],
    [{ length_penalty: "long" }, "length_penalty"],
  ];
  for (const [extra, param] of cases) {
    const err = await client.completions.create(
      { ...BASE, use_beam_search: true, ...extra } as never,
    ).then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.BadRequestError, `${param}: ${err}`);
    assert.equal(err.param, param);
    assert.match(err.message, new RegExp(param));
  }
  await t.close();
});

Deno.test("a client gone mid-search frees the beams' pages", async () => {
  const t = makeTestApp({ engine: { stepDelayMs: 3 }, scheduler: { debugChecks: true } });
  const ac = new AbortController();
  const res = Promise.resolve(t.app.request("/v1/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ ...BASE, max_tokens: 300, n: 3, use_beam_search: true }),
    signal: ac.signal,
  }));
  await new Promise((r) => setTimeout(r, 60));
  assert.ok(t.state.ready!.scheduler.numRunning > 0, "the search is running");
  ac.abort();
  await res.then((r) => r.body?.cancel(), () => {});
  const sched = t.state.ready!.scheduler;
  await sched.drain();
  const steps = sched.steps;
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(sched.steps, steps, "no round after the cancel");
  assert.ok(steps < 100, `${steps} steps: the 300-token search stopped early`);
  noPagesHeld(t);
  await t.close();
});
