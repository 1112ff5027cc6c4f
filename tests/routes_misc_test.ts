// /v1/models, /health, /tokenize, /detokenize, /tokenizer_info, /metrics and CORS.

import assert from "node:assert/strict";
import type { KvBits } from "../engine/types.ts";
import { BOS, EOS, makeTestApp } from "./fake_engine.ts";

Deno.test("/v1/models lists the model with max_model_len and the KV precisions", async () => {
  const t = makeTestApp();
  const r = await t.app.request("/v1/models");
  const j = await r.json();
  assert.equal(j.object, "list");
  const m = j.data[0];
  assert.equal(m.id, "fake-model");
  assert.equal(m.object, "model");
  assert.equal(m.owned_by, "nsn");
  assert.equal(typeof m.created, "number");
  assert.equal(m.max_model_len, 2048);
  assert.deepEqual(m.kv_bits, [16, 2, 1]);
  assert.deepEqual(m.kv_cache_dtypes, ["fp16", "nsn2", "nsn1"]);
  assert.ok(m.kv_capacity_tokens["1"] >= m.kv_capacity_tokens["16"]);
  assert.equal(m.prefix_caching, true);
  assert.equal((await (await t.app.request("/v1/models/fake")).json()).id, "fake-model");
  const missing = await t.app.request("/v1/models/nope");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "model_not_found");
  await t.close();
});

Deno.test("/health is 200 when ready", async () => {
  const t = makeTestApp();
  const r = await t.app.request("/health");
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { status: "ok" });
  await t.close();
});

Deno.test("/tokenize, /detokenize and /tokenizer_info in vLLM's shapes", async () => {
  const t = makeTestApp();
  const post = async (path: string, body: unknown) => {
    const r = await t.app.request(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: r.status, json: await r.json() };
  };
  let r = await post("/tokenize", { prompt: "hello!" });
  assert.deepEqual(r.json, {
    count: 3,
    max_model_len: 2048,
    tokens: [BOS, 258, 33],
    token_strs: null,
  });
  r = await post("/tokenize", {
    prompt: "hello!",
    add_special_tokens: false,
    return_token_strs: true,
  });
  assert.deepEqual(r.json.tokens, [258, 33]);
  assert.deepEqual(r.json.token_strs, ["hello", "!"]);
  r = await post("/detokenize", { tokens: [BOS, 258, 33, EOS] });
  assert.deepEqual(r.json, { prompt: "<s>hello!</s>" });
  r = await post("/tokenize", { prompt: 5 });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, "prompt");
  r = await post("/detokenize", { tokens: [1, 1e9] });
  assert.equal(r.status, 400);
  assert.equal(r.json.error.param, "tokens");
  const info = await (await t.app.request("/tokenizer_info")).json();
  assert.equal(info.eos_token, "</s>");
  assert.equal(info.bos_token, "<s>");
  await t.close();
});

Deno.test("KV gauges are current while sequences run, and back to zero after", async () => {
  // Issue 13 defect 9: the gauges read 0 under load (a stale engine snapshot while a step was
  // in flight). They come from the scheduler's page pool now.
  const t = makeTestApp({ engine: { stepDelayMs: 5 } });
  const gauge = async (re: RegExp) =>
    Number(re.exec(await (await t.app.request("/metrics")).text())?.[1]);
  const pages = /^nsn_kv_pages_in_use\{kv_bits="16"\} (\d+)$/m,
    bytes = /^nsn_kv_bytes_in_use (\d+)$/m;
  const pending = ["x", "y"].map((c) =>
    t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: c.repeat(100), max_tokens: 40 }),
    })
  );
  const deadline = performance.now() + 10_000;
  while (t.scheduler.steps < 3) {
    assert.ok(performance.now() < deadline, "the requests never ran");
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.equal(await gauge(pages), 4); // two sequences of 101..141 tokens: 2 pages each
  assert.ok(await gauge(bytes) > 0);
  for (const r of await Promise.all(pending)) assert.equal(r.status, 200);
  assert.equal(await gauge(pages), 0);
  await t.close();
});

Deno.test("/metrics: Prometheus text with kv_bits labels", async () => {
  const t = makeTestApp();
  for (const bits of ["16", "2", "1"]) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-KV-Bits": bits },
      body: JSON.stringify({ prompt: "hello", max_tokens: 3 }),
    });
    await r.json();
  }
  const r = await t.app.request("/metrics");
  assert.match(r.headers.get("Content-Type")!, /text\/plain/);
  const text = await r.text();
  const info = t.engine.info();
  for (const name of ["nsn_requests_running", "nsn_requests_waiting", "nsn_kv_bytes_in_use"]) {
    assert.match(text, new RegExp(`^${name} \\d+$`, "m"), name);
  }
  for (const bits of ["16", "2", "1"]) {
    const l = `\\{kv_bits="${bits}"\\}`;
    assert.match(text, new RegExp(`^nsn_kv_pages_in_use${l} 0$`, "m"));
    assert.match(text, new RegExp(`^nsn_kv_pages_total${l} \\d+$`, "m"));
    const tokenBytes = new RegExp(`^nsn_kv_token_bytes${l} (\\d+)$`, "m").exec(text);
    assert.ok(tokenBytes, `nsn_kv_token_bytes for kv_bits ${bits}`);
    assert.equal(Number(tokenBytes[1]), info.kinds[Number(bits) as KvBits].tokenBytes);
    assert.match(text, new RegExp(`^nsn_prompt_tokens_total${l} 2$`, "m"));
    assert.match(text, new RegExp(`^nsn_generation_tokens_total${l} 3$`, "m"));
    assert.match(text, new RegExp(`^nsn_time_to_first_token_seconds_count${l} 1$`, "m"));
    assert.match(text, new RegExp(`^nsn_inter_token_latency_seconds_count${l} 2$`, "m"));
    assert.match(text, new RegExp(`^nsn_e2e_request_latency_seconds_count${l} 1$`, "m"));
  }
  await t.close();
});

Deno.test("CORS is off by default; --cors exposes X-KV-Bits", async () => {
  const off = makeTestApp();
  let r = await off.app.request("/v1/models", { headers: { Origin: "http://a.example" } });
  assert.equal(r.headers.get("Access-Control-Allow-Origin"), null);
  await r.body?.cancel();
  await off.close();
  const on = makeTestApp({ config: { cors: true } });
  r = await on.app.request("/v1/completions", {
    method: "OPTIONS",
    headers: {
      Origin: "http://a.example",
      "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "x-kv-bits,content-type",
    },
  });
  assert.ok(r.status === 204 || r.status === 200);
  assert.equal(r.headers.get("Access-Control-Allow-Origin"), "*");
  assert.match(r.headers.get("Access-Control-Allow-Headers")!, /X-KV-Bits/i);
  r = await on.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: "http://a.example", "X-KV-Bits": "2" },
    body: JSON.stringify({ prompt: "hi", max_tokens: 1 }),
  });
  assert.match(r.headers.get("Access-Control-Expose-Headers")!, /X-KV-Bits/);
  assert.equal(r.headers.get("X-KV-Bits"), "2");
  await r.json();
  await on.close();
});
