// /v1/completions over the fake engine: stop strings across token boundaries, UTF-8 split over
// tokens, n / best_of ordering, echo + logprobs shapes (lm-evaluation-harness), SSE framing and
// include_usage, seeds, 429 backpressure, cancellation and engine faults.

import assert from "node:assert/strict";
import { EOS, FakeTokenizer, makeTestApp, type TestAppOptions } from "./fake_engine.ts";

const tok = new FakeTokenizer();

/** An app whose engine emits `text`'s tokens, then EOS. */
function scripted(text: string, opts: TestAppOptions = {}) {
  const ids = tok.encode(text);
  return makeTestApp({
    ...opts,
    engine: { ...opts.engine, nextToken: (_h, _p, nOut) => ids[nOut] ?? EOS },
  });
}

type App = ReturnType<typeof makeTestApp>;

async function complete(t: App, body: Record<string, unknown>, headers: HeadersInit = {}) {
  const r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: r.status, headers: r.headers, json: await r.json() };
}

interface Sse {
  contentType: string | null;
  events: unknown[]; // parsed data payloads, "[DONE]" kept as a string
  raw: string;
}

async function stream(t: App, body: Record<string, unknown>, headers: HeadersInit = {}) {
  const r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(r.status, 200);
  const raw = await r.text();
  const blocks = raw.split("\n\n");
  assert.equal(blocks.pop(), "", "the stream ends with a blank line");
  const events = blocks.map((b) => {
    assert.ok(b.startsWith("data: ") && !b.includes("\n"), `one data line per event: ${b}`);
    const d = b.slice(6);
    return d === "[DONE]" ? d : JSON.parse(d);
  });
  return { contentType: r.headers.get("Content-Type"), events, raw } as Sse;
}

// deno-lint-ignore no-explicit-any
type Chunk = any;

function streamedText(s: Sse, index = 0): string {
  return (s.events.slice(0, -1) as Chunk[])
    .flatMap((e) => e.choices)
    .filter((c: Chunk) => c.index === index)
    .map((c: Chunk) => c.text)
    .join("");
}

Deno.test("stop strings across token boundaries, excluded from the text", async () => {
  const cases: [string, string[], string, string][] = [
    // [generated text, stop, expected text, finish_reason]
    ["xx hello world yy", ["lo wo"], "xx hel", "stop"], // spans the "hello" and " world" tokens
    ["xx hello world yy", ["zz", "o w", "hello"], "xx ", "stop"], // earliest match wins
    ["abc hel", ["help"], "abc hel", "stop"], // held text released at EOS
    ["abcSTOPdef", ["STOP"], "abc", "stop"],
    ["aaab", ["aab"], "a", "stop"],
    ["no match here", ["zzz"], "no match here", "stop"],
  ];
  for (const [gen, stop, want, reason] of cases) {
    const t = scripted(gen);
    const body = { prompt: "q", max_tokens: 50, stop };
    const r = await complete(t, body);
    assert.equal(r.json.choices[0].text, want, `${gen} / ${stop}`);
    assert.equal(r.json.choices[0].finish_reason, reason);
    const s = await stream(t, body);
    assert.equal(streamedText(s), want, `streamed ${gen} / ${stop}`);
    const chunks = (s.events.slice(0, -1) as Chunk[]).map((e) => e.choices[0]);
    assert.equal(chunks.at(-1).finish_reason, reason);
    assert.ok(chunks.slice(0, -1).every((c: Chunk) => c.finish_reason === null));
    await t.close();
  }
});

Deno.test("held text is released when max_tokens ends the sequence", async () => {
  const t = scripted("abc hel more"); // "ab" is one token
  const r = await complete(t, { prompt: "q", max_tokens: 6, stop: ["help"] });
  assert.equal(r.json.choices[0].text, "abc hel");
  assert.equal(r.json.choices[0].finish_reason, "length");
  await t.close();
});

Deno.test("a character split over byte tokens streams whole", async () => {
  // "é" as two byte tokens (the tokenizer's "é" piece is avoided by encoding bytes by hand).
  const ids = [120, 0xc3, 0xa9, 121, 0xe2, 0x82, 0xac];
  const t = makeTestApp({ engine: { nextToken: (_h, _p, n) => ids[n] ?? EOS } });
  const s = await stream(t, { prompt: "q", max_tokens: 20 });
  const texts = (s.events.slice(0, -1) as Chunk[]).map((e) => e.choices[0].text);
  assert.equal(texts.join(""), "xéy€");
  assert.ok(texts.every((x) => !x.includes("\uFFFD")), JSON.stringify(texts));
  const r = await complete(t, { prompt: "q", max_tokens: 20, logprobs: 0 });
  assert.equal(r.json.choices[0].text, "xéy€");
  // text_offset counts characters of the returned text; partial bytes spell "bytes:\xNN".
  assert.deepEqual(r.json.choices[0].logprobs.text_offset, [0, 1, 1, 2, 3, 3, 3, 4]);
  assert.equal(r.json.choices[0].logprobs.tokens[1], "bytes:\\xc3");
  await t.close();
});

Deno.test("EOS ends with stop unless ignore_eos; usage counts every token", async () => {
  const t = scripted("ab");
  let r = await complete(t, { prompt: "q", max_tokens: 10 });
  assert.equal(r.json.choices[0].text, "ab");
  assert.equal(r.json.choices[0].finish_reason, "stop");
  // "ab" (one token) and EOS.
  assert.deepEqual(r.json.usage, {
    prompt_tokens: 2,
    completion_tokens: 2,
    total_tokens: 4,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  r = await complete(t, { prompt: "q", max_tokens: 5, ignore_eos: true });
  assert.equal(r.json.choices[0].finish_reason, "length");
  assert.equal(r.json.usage.completion_tokens, 5);
  await t.close();
});

Deno.test("n and several prompts: prompt-major indices, echo shows which prompt", async () => {
  const t = makeTestApp();
  const r = await complete(t, {
    prompt: ["ab", "cd", "hello"],
    n: 2,
    max_tokens: 3,
    echo: true,
    seed: 7,
  });
  const ch = r.json.choices;
  assert.deepEqual(ch.map((c: Chunk) => c.index), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual(ch.map((c: Chunk) => c.text.slice(0, 2)), ["ab", "ab", "cd", "cd", "he", "he"]);
  assert.deepEqual(r.json.usage, {
    prompt_tokens: 2 + 2 + 2,
    completion_tokens: 18,
    total_tokens: 24,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  // Streaming interleaves the indices but yields the same texts.
  const s = await stream(t, {
    prompt: ["ab", "cd", "hello"],
    n: 2,
    max_tokens: 3,
    echo: true,
    seed: 7,
  });
  for (let i = 0; i < 6; i++) assert.equal(streamedText(s, i), ch[i].text);
  await t.close();
});

Deno.test("seeds: same seed same text; choice i uses seed+i", async () => {
  const t = makeTestApp();
  const body = { prompt: "hello", max_tokens: 12, temperature: 1, seed: 41 };
  const a = await complete(t, body);
  const b = await complete(t, body);
  assert.equal(a.json.choices[0].text, b.json.choices[0].text);
  const n2 = await complete(t, { ...body, seed: 40, n: 2 });
  assert.equal(n2.json.choices[1].text, a.json.choices[0].text);
  const other = await complete(t, { ...body, seed: 1234 });
  assert.notEqual(other.json.choices[0].text, a.json.choices[0].text);
  await t.close();
});

Deno.test("best_of returns the n candidates with the highest cumulative logprob", async () => {
  const t = makeTestApp();
  const body = { prompt: ["ab", "cd"], max_tokens: 6, temperature: 1, seed: 3, logprobs: 0 };
  const all = await complete(t, { ...body, n: 5 });
  const best = await complete(t, { ...body, n: 2, best_of: 5 });
  const sum = (c: Chunk) => c.logprobs.token_logprobs.reduce((a: number, b: number) => a + b, 0);
  assert.equal(best.json.choices.length, 4);
  for (let p = 0; p < 2; p++) {
    const cands = all.json.choices.slice(p * 5, p * 5 + 5).map(sum).sort((a: number, b: number) =>
      b - a
    );
    const got = best.json.choices.slice(p * 2, p * 2 + 2);
    assert.deepEqual(got.map((c: Chunk) => c.index), [p * 2, p * 2 + 1]);
    assert.deepEqual(got.map(sum), cands.slice(0, 2));
  }
  assert.equal(best.json.usage.completion_tokens, 2 * 5 * 6); // every candidate was generated
  await t.close();
});

Deno.test("echo + logprobs + max_tokens 0 (lm-eval loglikelihood): prompt scored", async () => {
  const t = makeTestApp();
  const prompt = [97, 98, 258, 100]; // "a" "b" "hello" "d"
  const r = await complete(t, { prompt, max_tokens: 0, echo: true, logprobs: 1, temperature: 0 });
  const c = r.json.choices[0];
  assert.equal(c.text, "abhellod");
  assert.equal(c.finish_reason, "length");
  assert.deepEqual(c.logprobs.tokens, ["a", "b", "hello", "d"]);
  assert.deepEqual(c.logprobs.text_offset, [0, 1, 2, 7]);
  assert.equal(c.logprobs.token_logprobs[0], null);
  assert.equal(c.logprobs.top_logprobs[0], null);
  for (let i = 1; i < 4; i++) {
    const lp = c.logprobs.token_logprobs[i];
    assert.equal(lp, t.engine.logprobOf(prompt, i, prompt[i]));
    const top = c.logprobs.top_logprobs[i];
    assert.ok(Object.keys(top).length <= 2 && top[c.logprobs.tokens[i]] === lp);
  }
  assert.deepEqual(r.json.usage, {
    prompt_tokens: 4,
    completion_tokens: 0,
    total_tokens: 4,
    prompt_tokens_details: { cached_tokens: 0 },
  });

  // The current lm-eval form: max_tokens 1, read token_logprobs[ctxlen:-1].
  const r1 = await complete(t, {
    prompt: [prompt, prompt.slice(0, 2)],
    max_tokens: 1,
    echo: true,
    logprobs: 1,
    temperature: 0,
  });
  const c1 = r1.json.choices[0];
  assert.equal(c1.logprobs.tokens.length, 5);
  assert.deepEqual(c1.logprobs.token_logprobs.slice(0, 4), c.logprobs.token_logprobs);
  assert.equal(c1.logprobs.text_offset[4], 8);
  assert.equal(r1.json.choices[1].logprobs.tokens.length, 3);
  await t.close();
});

Deno.test("logprobs without echo: one entry per token, top-N plus the chosen one", async () => {
  const t = makeTestApp();
  const r = await complete(t, {
    prompt: "hello",
    max_tokens: 5,
    logprobs: 3,
    temperature: 1,
    seed: 9,
  });
  const lp = r.json.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.tokens.join(""), r.json.choices[0].text);
  lp.top_logprobs.forEach((top: Record<string, number>, i: number) => {
    const n = Object.keys(top).length;
    assert.ok(n >= 3 && n <= 4, `top ${i} has ${n}`);
    assert.equal(top[lp.tokens[i]], lp.token_logprobs[i]);
  });
  assert.deepEqual(lp.text_offset, [0, 1, 2, 3, 4]);
  const none = await complete(t, { prompt: "hello", max_tokens: 2 });
  assert.equal(none.json.choices[0].logprobs, null);
  await t.close();
});

Deno.test("SSE framing; include_usage gives exactly one trailing usage chunk", async () => {
  const t = makeTestApp();
  const body = { prompt: "hello", max_tokens: 4, n: 2 };
  const plain = await stream(t, body);
  assert.equal(plain.contentType, "text/event-stream");
  assert.equal(plain.events.at(-1), "[DONE]");
  assert.ok(!plain.raw.includes('"usage"'), "no usage unless asked");
  for (const e of plain.events.slice(0, -1) as Chunk[]) {
    assert.equal(e.object, "text_completion");
    assert.ok(
      e.id.startsWith("cmpl-") && typeof e.created === "number" && e.model === "fake-model",
    );
    assert.equal(e.choices.length, 1);
    assert.deepEqual(Object.keys(e.choices[0]).sort(), [
      "finish_reason",
      "index",
      "logprobs",
      "text",
    ]);
  }
  const withUsage = await stream(t, { ...body, stream_options: { include_usage: true } });
  const ev = withUsage.events as Chunk[];
  const usageChunks = ev.filter((e) => e !== "[DONE]" && e.usage);
  assert.equal(usageChunks.length, 1);
  assert.equal(ev.at(-2), usageChunks[0]);
  assert.deepEqual(usageChunks[0].choices, []);
  assert.deepEqual(usageChunks[0].usage, {
    prompt_tokens: 2,
    completion_tokens: 8,
    total_tokens: 10,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  assert.ok(ev.slice(0, -2).every((e) => e.usage === null));
  await t.close();
});

Deno.test("the last token's text streams with finish_reason: max_tokens chunks, no empty one", async () => {
  const t = makeTestApp();
  for (const n of [1, 2]) {
    const s = await stream(t, { prompt: "hello", max_tokens: 5, n });
    for (let i = 0; i < n; i++) {
      const chunks = (s.events.slice(0, -1) as Chunk[]).flatMap((e) => e.choices)
        .filter((c: Chunk) => c.index === i);
      assert.equal(chunks.length, 5, JSON.stringify(chunks));
      assert.ok(chunks.every((c: Chunk) => c.text !== ""), JSON.stringify(chunks));
      assert.deepEqual(chunks.map((c: Chunk) => c.finish_reason), [
        null,
        null,
        null,
        null,
        "length",
      ]);
    }
  }
  await t.close();
});

Deno.test("a full queue answers 429 with Retry-After", async () => {
  const t = makeTestApp({ engine: { stepDelayMs: 2 }, scheduler: { maxNumSeqs: 1, maxQueue: 1 } });
  const body = { prompt: "hello", max_tokens: 20 };
  const rs = await Promise.all(Array.from({ length: 4 }, () => complete(t, body)));
  const limited = rs.filter((r) => r.status === 429);
  assert.ok(limited.length >= 1, rs.map((r) => r.status).join(","));
  assert.ok(Number(limited[0].headers.get("Retry-After")) >= 1);
  assert.equal(limited[0].json.error.code, "rate_limit_exceeded");
  assert.ok(rs.some((r) => r.status === 200));
  await t.close();
});

async function pagesInUse(t: App): Promise<number[]> {
  const text = await (await t.app.request("/metrics")).text();
  return [...text.matchAll(/^nsn_kv_pages_in_use\{kv_bits="\d+"\} (\d+)$/gm)].map((m) =>
    Number(m[1])
  );
}

Deno.test("client disconnects free the sequences: non-streaming and streaming", async () => {
  const t = makeTestApp({ engine: { stepDelayMs: 2 } });
  const ac = new AbortController();
  const req = new Request("http://x/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "hello", max_tokens: 1000, n: 3 }),
    signal: ac.signal,
    headers: { "Content-Type": "application/json", "X-KV-Bits": "2" },
  });
  const pending = t.app.request(req);
  while (t.engine.seqs.size < 3) await new Promise((r) => setTimeout(r, 1));
  ac.abort();
  await pending;
  while (t.scheduler.numRunning > 0) await new Promise((r) => setTimeout(r, 1));
  assert.equal(t.engine.seqs.size, 0);

  const r = await t.app.request("/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "hello", max_tokens: 1000, stream: true }),
    headers: { "Content-Type": "application/json", "X-KV-Bits": "1" },
  });
  const reader = r.body!.getReader();
  await reader.read();
  await reader.read();
  await reader.cancel();
  while (t.scheduler.numRunning > 0) await new Promise((r) => setTimeout(r, 1));
  assert.equal(t.engine.seqs.size, 0);
  assert.deepEqual(await pagesInUse(t), [0, 0, 0]);
  await t.close();
});

Deno.test("an engine fault fails that request with a 500; the next one succeeds", async () => {
  const t = makeTestApp();
  t.engine.injectFault(1);
  const r = await complete(t, { prompt: "hello", max_tokens: 3 });
  assert.equal(r.status, 500);
  assert.equal(r.json.error.type, "server_error");
  assert.match(r.json.error.message, /injected fault/);
  t.engine.injectFault(1);
  const s = await stream(t, { prompt: "hello", max_tokens: 3 });
  assert.equal(s.events.at(-1), "[DONE]");
  assert.match((s.events.at(-2) as Chunk).error.message, /injected fault/);
  const ok = await complete(t, { prompt: "hello", max_tokens: 3 });
  assert.equal(ok.status, 200);
  await t.close();
});
