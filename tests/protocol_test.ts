// The HTTP protocol routers, probes and clients rely on (routes/protocol.ts, routes/health.ts):
// which paths the API key guards, /version and /ping, X-Request-Id, and the JSON media type.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../main.ts";
import { VERSION } from "../routes/health.ts";
import { OPEN_PATHS } from "../routes/protocol.ts";
import { makeTestApp } from "./fake_engine.ts";

const JSON_TYPE = { "Content-Type": "application/json" };

Deno.test("--api-key guards /v1/* and the tokenizer routes; probes and /metrics stay open", async () => {
  const t = makeTestApp({ config: { apiKey: "k" } });
  assert.deepEqual([...OPEN_PATHS].sort(), ["/health", "/metrics", "/ping", "/version"]);
  for (const path of OPEN_PATHS) {
    const r = await t.app.request(path);
    assert.equal(r.status, 200, path);
    await r.body?.cancel();
  }
  for (const path of ["/v1/models", "/tokenizer_info"]) {
    const r = await t.app.request(path);
    assert.equal(r.status, 401, path);
    assert.equal((await r.json()).error.code, "invalid_api_key");
    const ok = await t.app.request(path, { headers: { Authorization: "Bearer k" } });
    assert.equal(ok.status, 200, path);
    await ok.body?.cancel();
  }
  await t.close();
});

Deno.test("/version names the server's version; /ping answers like /health", async () => {
  const t = makeTestApp();
  assert.deepEqual(await (await t.app.request("/version")).json(), { version: VERSION });
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
  const ping = await t.app.request("/ping");
  assert.equal(ping.status, 200);
  assert.deepEqual(await ping.json(), { status: "ok" });
  await t.close();
});

Deno.test("a body that is not declared JSON is refused with 415 naming Content-Type", async () => {
  const t = makeTestApp();
  const body = JSON.stringify({ prompt: "hi", max_tokens: 1 });
  const cases: [string, number][] = [
    ["application/x-www-form-urlencoded", 415],
    ["text/plain", 415],
    ["multipart/form-data", 415],
    ["application/json", 200],
    ["application/json; charset=utf-8", 200],
    ["Application/JSON", 200],
  ];
  for (const [type, status] of cases) {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": type },
      body,
    });
    assert.equal(r.status, status, type);
    const j = await r.json();
    if (status === 415) {
      assert.equal(j.error.param, "Content-Type");
      assert.equal(j.error.code, "unsupported_media_type");
    }
  }
  await t.close();
});

Deno.test("X-Request-Id becomes the response id, is echoed back, and a bad one is a 400", async () => {
  const t = makeTestApp();
  const post = (headers: Record<string, string>, stream = false) =>
    t.app.request("/v1/completions", {
      method: "POST",
      headers: { ...JSON_TYPE, ...headers },
      body: JSON.stringify({ prompt: "hi", max_tokens: 2, stream }),
    });
  let r = await post({ "X-Request-Id": "router-42" });
  assert.equal(r.headers.get("X-Request-Id"), "router-42");
  assert.equal((await r.json()).id, "cmpl-router-42");
  r = await post({ "X-Request-Id": "router-43" }, true);
  const ids = (await r.text()).split("\n\n").filter((b) => b.startsWith("data: {"))
    .map((b) => JSON.parse(b.slice(6)).id);
  assert.ok(ids.length > 0);
  assert.deepEqual(new Set(ids), new Set(["cmpl-router-43"]));
  r = await post({ "X-Request-Id": "has space" });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.param, "X-Request-Id");
  r = await post({});
  assert.equal(r.headers.get("X-Request-Id"), null);
  assert.match((await r.json()).id, /^cmpl-[0-9a-f]{32}$/);
  await t.close();
});

Deno.test("openai client: X-Request-Id in the id and in the request's log line", async () => {
  const lines: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  const srv = startServer({ model: "demo", port: 0, backend: "cpu", logLevel: "info" });
  try {
    await srv.ready;
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const r = await client.completions.create(
      { model: "demo", prompt: "Once", max_tokens: 3, temperature: 0 },
      { headers: { "X-Request-Id": "trace-7" } },
    );
    assert.equal(r.id, "cmpl-trace-7");
    const line = lines.find((l) => l.includes("request cmpl-trace-7"));
    assert.ok(line, lines.join("\n"));
    assert.match(line, / INFO request cmpl-trace-7 \/v1\/completions kv_bits=16 /);
    assert.match(
      line,
      /prompt_tokens=\d+ completion_tokens=3 ttft_ms=\d+ total_ms=\d+ status=length/,
    );
  } finally {
    console.error = orig;
    await srv.shutdown();
  }
});
