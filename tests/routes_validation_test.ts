// Every invalid input gets the right status and OpenAI's error shape naming the field.

import assert from "node:assert/strict";
import { createApp } from "../routes/app.ts";
import { AppState } from "../routes/state.ts";
import { makeTestApp } from "./fake_engine.ts";

type Case = [name: string, body: unknown, status: number, param: string | null, match?: RegExp];

const P = { prompt: "hello" };
const CASES: Case[] = [
  ["missing prompt", {}, 400, "prompt"],
  ["empty prompt array", { prompt: [] }, 400, "prompt"],
  ["mixed prompt array", { prompt: ["a", 1] }, 400, "prompt"],
  ["prompt number", { prompt: 5 }, 400, "prompt"],
  ["token id out of vocab", { prompt: [1, 99999] }, 400, "prompt", /invalid token id/],
  ["negative token id", { prompt: [[1, -1]] }, 400, "prompt"],
  ["float token id", { prompt: [1.5] }, 400, "prompt"],
  ["empty token list in list", { prompt: [[1], []] }, 400, "prompt"],
  ["suffix", { ...P, suffix: "x" }, 400, "suffix", /not supported/],
  ["max_tokens negative", { ...P, max_tokens: -1 }, 400, "max_tokens"],
  ["max_tokens string", { ...P, max_tokens: "5" }, 400, "max_tokens"],
  ["max_tokens float", { ...P, max_tokens: 2.5 }, 400, "max_tokens"],
  ["temperature > 2", { ...P, temperature: 2.5 }, 400, "temperature"],
  ["temperature < 0", { ...P, temperature: -0.1 }, 400, "temperature"],
  ["temperature bool", { ...P, temperature: true }, 400, "temperature"],
  ["top_p 0", { ...P, top_p: 0 }, 400, "top_p"],
  ["top_p > 1", { ...P, top_p: 1.1 }, 400, "top_p"],
  ["n 0", { ...P, n: 0 }, 400, "n"],
  ["n 129", { ...P, n: 129 }, 400, "n"],
  ["best_of < n", { ...P, n: 3, best_of: 2 }, 400, "best_of"],
  ["best_of > n streamed", { ...P, best_of: 2, stream: true }, 400, "best_of", /streamed/],
  ["stream string", { ...P, stream: "yes" }, 400, "stream"],
  [
    "stream_options without stream",
    { ...P, stream_options: { include_usage: true } },
    400,
    "stream_options",
  ],
  ["stream_options not object", { ...P, stream: true, stream_options: 1 }, 400, "stream_options"],
  [
    "include_usage not bool",
    { ...P, stream: true, stream_options: { include_usage: 1 } },
    400,
    "include_usage",
  ],
  ["logprobs 21", { ...P, logprobs: 21 }, 400, "logprobs"],
  ["logprobs -1", { ...P, logprobs: -1 }, 400, "logprobs"],
  ["logprobs bool", { ...P, logprobs: true }, 400, "logprobs"],
  ["echo string", { ...P, echo: "true" }, 400, "echo"],
  ["stop number", { ...P, stop: 5 }, 400, "stop"],
  ["stop 5 strings", { ...P, stop: ["a", "b", "c", "d", "e"] }, 400, "stop"],
  ["stop array with number", { ...P, stop: ["a", 1] }, 400, "stop"],
  ["presence_penalty 3", { ...P, presence_penalty: 3 }, 400, "presence_penalty"],
  ["frequency_penalty -3", { ...P, frequency_penalty: -3 }, 400, "frequency_penalty"],
  ["logit_bias array", { ...P, logit_bias: [1] }, 400, "logit_bias"],
  ["logit_bias bad key", { ...P, logit_bias: { abc: 1 } }, 400, "logit_bias"],
  ["logit_bias key out of vocab", { ...P, logit_bias: { "999999": 1 } }, 400, "logit_bias"],
  ["logit_bias value 101", { ...P, logit_bias: { "5": 101 } }, 400, "logit_bias"],
  ["seed float", { ...P, seed: 1.5 }, 400, "seed"],
  ["seed string", { ...P, seed: "1" }, 400, "seed"],
  ["user number", { ...P, user: 5 }, 400, "user"],
  ["top_k -2", { ...P, top_k: -2 }, 400, "top_k"],
  ["min_p 1.5", { ...P, min_p: 1.5 }, 400, "min_p"],
  ["repetition_penalty 0", { ...P, repetition_penalty: 0 }, 400, "repetition_penalty"],
  ["min_tokens > max_tokens", { ...P, max_tokens: 2, min_tokens: 3 }, 400, "min_tokens"],
  ["ignore_eos string", { ...P, ignore_eos: "no" }, 400, "ignore_eos"],
  ["stop_token_ids not array", { ...P, stop_token_ids: 3 }, 400, "stop_token_ids"],
  ["too many stop ids", { ...P, stop_token_ids: [1, 2, 3, 4, 5, 6, 7, 8] }, 400, "stop_token_ids"],
  ["model unknown", { ...P, model: "gpt-4" }, 404, "model", /does not exist/],
  ["model number", { ...P, model: 4 }, 400, "model"],
  ["body array", [1, 2], 400, null],
  [
    "context overflow",
    { prompt: [1, 2, 3, 4, 5], max_tokens: 2044 },
    400,
    "max_tokens",
    /maximum context length is 2048 tokens\. However, you requested 2049 tokens \(5 in the prompt, 2044 in the completion\)/,
  ],
];

function assertErrorShape(body: Record<string, unknown>) {
  const e = body.error as Record<string, unknown>;
  assert.ok(e, "has error");
  for (const k of ["message", "type", "param", "code"]) assert.ok(k in e, `error.${k}`);
  assert.equal(typeof e.message, "string");
  assert.equal(typeof e.type, "string");
}

Deno.test("invalid /v1/completions requests: status, type and param", async () => {
  const t = makeTestApp();
  for (const [name, body, status, param, match] of CASES) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const j = await r.json();
    assert.equal(r.status, status, `${name}: ${JSON.stringify(j)}`);
    assertErrorShape(j);
    assert.equal(j.error.param, param, `${name}: param`);
    assert.equal(j.error.type, "invalid_request_error", name);
    if (match) assert.match(j.error.message, match, name);
  }
  await t.close();
});

Deno.test("accepted edge values: nulls, best_of 1, max_tokens 0, unknown fields", async () => {
  const t = makeTestApp();
  const ok = [
    { ...P, max_tokens: null, best_of: null, logprobs: null, stop: null, seed: null, model: null },
    { ...P, best_of: 1, unknown_field: { x: 1 }, user: "u" },
    { ...P, max_tokens: 0 },
    { ...P, model: "fake-model", top_k: -1, min_p: 0.5, repetition_penalty: 1.2, ignore_eos: true },
    { ...P, model: "fake", stop: "x", logit_bias: { "97": -100 }, seed: -5 },
    { prompt: [[1, 2], [3]], n: 2, best_of: 3 },
  ];
  for (const body of ok) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    assert.equal(r.status, 200, `${JSON.stringify(body)}: ${text}`);
  }
  await t.close();
});

Deno.test("omitted max_tokens shrinks to the context left", async () => {
  const t = makeTestApp({ scheduler: { maxModelLen: 20 } });
  const r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: Array.from({ length: 15 }, () => 97), temperature: 0 }),
  });
  const j = await r.json();
  assert.equal(r.status, 200);
  assert.equal(j.usage.completion_tokens, 5);
  assert.equal(j.choices[0].finish_reason, "length");
  await t.close();
});

Deno.test("a request beyond the KV pool at its kv_bits is refused with the capacity", async () => {
  const t = makeTestApp({ engine: { poolSlabs: 4 }, scheduler: { maxModelLen: 4096 } });
  const body = JSON.stringify({ prompt: [1, 2, 3], max_tokens: 300 });
  const r16 = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
  });
  const j = await r16.json();
  assert.equal(r16.status, 400);
  assert.equal(j.error.code, "kv_cache_capacity_exceeded");
  assert.match(j.error.message, /at most 256 tokens per sequence at kv_bits 16/);
  const r1 = await t.app.request("/v1/completions", {
    method: "POST",
    body,
    headers: { "Content-Type": "application/json", "X-KV-Bits": "1" },
  });
  assert.equal(r1.status, 200, await r1.text());
  await t.close();
});

Deno.test("X-KV-Bits: invalid values name the allowed ones; valid ones are echoed", async () => {
  const t = makeTestApp();
  for (const bad of ["4", "8", "x", "16.5", "-1", "0x10", "1e0", ""]) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-KV-Bits": bad },
      body: JSON.stringify(P),
    });
    const j = await r.json();
    assert.equal(r.status, 400, bad);
    assert.equal(j.error.param, "X-KV-Bits");
    assert.match(j.error.message, /16, 2 and 1/);
  }
  for (const good of ["16", "2", "1"]) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-KV-Bits": good },
      body: JSON.stringify({ ...P, max_tokens: 2 }),
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("X-KV-Bits"), good);
    await r.json();
  }
  await t.close();
});

Deno.test("invalid JSON -> 400, body too large -> 413, unknown route -> 404", async () => {
  const t = makeTestApp({ config: { maxBodyBytes: 1000 } });
  let r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{nope",
  });
  assert.equal(r.status, 400);
  assertErrorShape(await r.json());
  r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "x".repeat(2000) }),
  });
  assert.equal(r.status, 413);
  assertErrorShape(await r.json());
  r = await t.app.request("/v1/chat/nothing");
  assert.equal(r.status, 404);
  assertErrorShape(await r.json());
  await t.close();
});

Deno.test("--api-key: 401 without the bearer token, /health stays open", async () => {
  const t = makeTestApp({ config: { apiKey: "sekret" } });
  let r = await t.app.request("/v1/models");
  assert.equal(r.status, 401);
  const j = await r.json();
  assertErrorShape(j);
  assert.equal(j.error.code, "invalid_api_key");
  r = await t.app.request("/v1/models", { headers: { Authorization: "Bearer wrong" } });
  assert.equal(r.status, 401);
  await r.body?.cancel();
  r = await t.app.request("/v1/models", { headers: { Authorization: "Bearer sekret" } });
  assert.equal(r.status, 200);
  await r.body?.cancel();
  r = await t.app.request("/health");
  assert.equal(r.status, 200);
  await r.body?.cancel();
  await t.close();
});

Deno.test("while loading: /health and the API answer 503", async () => {
  const app = createApp(new AppState());
  for (
    const [path, method] of [["/health", "GET"], ["/v1/models", "GET"], ["/v1/completions", "POST"]]
  ) {
    const r = await app.request(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: method === "POST" ? "{}" : undefined,
    });
    assert.equal(r.status, 503, path);
    const j = await r.json();
    assertErrorShape(j);
    assert.equal(j.error.code, "model_loading");
  }
});

Deno.test("errors never echo huge input; a huge text prompt is refused quickly", async () => {
  const t = makeTestApp();
  const cases = [
    { prompt: "hi", max_tokens: "x".repeat(100_000) },
    { prompt: "hi", model: "m".repeat(100_000) },
    { prompt: [Array.from({ length: 50_000 }, () => 1e9)] },
  ];
  for (const body of cases) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    assert.ok(r.status === 400 || r.status === 404);
    assert.ok(text.length < 1000, `error body of ${text.length} bytes`);
  }
  const t0 = performance.now();
  const r = await t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "abc ".repeat(1_000_000) }), // just under MAX_PROMPT_CHARS
  });
  const j = await r.json();
  assert.equal(r.status, 400);
  assert.equal(j.error.code, "context_length_exceeded");
  assert.ok(performance.now() - t0 < 3000, "bounded tokenization");
  await t.close();
});

Deno.test("sampling floats that become 0 in float32 get a 400 naming the field", async () => {
  const t = makeTestApp();
  // The native engine reads these fields as float32, where each value below is 0.
  const bad: [string, number][] = [
    ["top_p", 5e-324],
    ["top_p", 1e-46],
    ["repetition_penalty", 5e-324],
    ["repetition_penalty", 1e-46],
  ];
  for (const [field, v] of bad) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...P, [field]: v, max_tokens: 1 }),
    });
    const j = await r.json();
    assert.equal(r.status, 400, `${field} ${v}: ${JSON.stringify(j)}`);
    assert.equal(j.error.param, field);
    assert.match(j.error.message, /float32/);
  }
  // The same tiny values are fine where 0 is allowed (min_p 0 = off, temperature 0 = greedy).
  for (const field of ["min_p", "temperature", "presence_penalty"]) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...P, [field]: 5e-324, max_tokens: 1 }),
    });
    assert.equal(r.status, 200, `${field}: ${await r.text()}`);
  }
  await t.close();
});
