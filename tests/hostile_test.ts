// Hostile input against the real server (demo model, CPU backend, engine debug checks on):
// >= 500 generated malformed requests (tests/hostile_requests.ts) must each get a 4xx in the
// OpenAI error shape, quickly; then the server must still serve, with every KV page free.
// A second, smaller set is odd but valid (bad bytes inside strings, odd header spacing): those
// must not 5xx. Raw fetch throughout, since the point is bodies and headers no SDK would send.

import assert from "node:assert";
import { AppState } from "../routes/state.ts";
import { generateHostileRequests, type HostileRequest } from "./hostile_requests.ts";
import {
  assertErrorShape,
  assertServes,
  sleep,
  type SpawnedServer,
  spawnServer,
  waitPagesFree,
} from "./helpers/server.ts";

const API_KEY = "sk-hostile-test-key";
// No hostile request may take longer: a refusal is cheap, whatever the body. A request that
// needs this long is a stall that a client could repeat to take the server down.
const PER_REQUEST_MS = 15_000;
// An error response never needs to quote megabytes of the client's input back at it.
const MAX_ERROR_BYTES = 16 * 1024;

interface Outcome {
  req: HostileRequest;
  status: number; // 0: no response (timeout, connection error)
  ms: number;
  problem: string | null;
}

async function send(srv: SpawnedServer, req: HostileRequest): Promise<Outcome> {
  const headers = new Headers();
  for (const [k, v] of req.headers) headers.append(k, v);
  if (req.auth) headers.set("Authorization", srv.auth.Authorization);
  const t0 = performance.now();
  const done = (status: number, problem: string | null): Outcome => ({
    req,
    status,
    ms: performance.now() - t0,
    problem,
  });
  let res: Response;
  let text: string;
  try {
    res = await fetch(srv.url + req.path, {
      method: req.method,
      headers,
      body: req.body,
      signal: AbortSignal.timeout(PER_REQUEST_MS),
    });
    text = await res.text();
  } catch (e) {
    return done(0, `no response: ${(e as Error).name}: ${(e as Error).message}`);
  }
  const s = res.status;
  if (req.status !== undefined ? s !== req.status : s < 400 || s >= 500) {
    return done(s, `status ${s} (want ${req.status ?? "4xx"}): ${text.slice(0, 200)}`);
  }
  if (text.length > MAX_ERROR_BYTES) {
    return done(s, `error body of ${text.length} bytes echoes the input: ${text.slice(0, 120)}`);
  }
  if (!res.headers.get("content-type")?.includes("application/json")) {
    return done(s, `content-type ${res.headers.get("content-type")}`);
  }
  try {
    assertErrorShape(JSON.parse(text), req.name);
  } catch (e) {
    return done(s, `bad error shape: ${(e as Error).message}: ${text.slice(0, 200)}`);
  }
  return done(s, null);
}

/** After a stall, wait for the server to come back so one slow case does not fail the rest. */
async function waitHealthy(srv: SpawnedServer): Promise<void> {
  const end = Date.now() + 120_000;
  while (Date.now() < end) {
    const r = await fetch(`${srv.url}/health`, { signal: AbortSignal.timeout(2_000) })
      .catch(() => null);
    await r?.body?.cancel();
    if (r?.status === 200) return;
    await sleep(200);
  }
  throw new Error("the server stopped answering /health");
}

// Odd but valid: the server may accept or refuse these, but never with a 5xx.
function oddValid(): { name: string; headers: [string, string][]; body: BodyInit }[] {
  const ct: [string, string] = ["Content-Type", "application/json"];
  const enc = new TextEncoder();
  const badBytes = new Uint8Array([
    ...enc.encode('{"prompt":"a'),
    0xff,
    0xc0,
    ...enc.encode('b","max_tokens":3}'),
  ]);
  const j = (o: unknown) => JSON.stringify({ max_tokens: 3, ...(o as object) });
  return [
    { name: "lone high surrogate", headers: [ct], body: j({ prompt: "a\ud800b" }) },
    { name: "lone low surrogate", headers: [ct], body: '{"prompt":"\\udc00","max_tokens":3}' },
    { name: "NUL in prompt", headers: [ct], body: j({ prompt: "a\u0000b" }) },
    { name: "invalid UTF-8 in prompt", headers: [ct], body: badBytes },
    { name: "BOM before JSON", headers: [ct], body: "\uFEFF" + j({ prompt: "a" }) },
    {
      name: "text/plain JSON (curl -d)",
      headers: [["Content-Type", "text/plain"]],
      body: j({ prompt: "a" }),
    },
    {
      name: "X-KV-Bits with spaces",
      headers: [ct, ["X-KV-Bits", " 2 "]],
      body: j({ prompt: "a" }),
    },
    { name: "emoji and RTL prompt", headers: [ct], body: j({ prompt: "🙂\u202Eabc\u0301" }) },
    { name: "all-special prompt ids", headers: [ct], body: j({ prompt: [0, 1, 0, 1] }) },
    {
      name: "logit_bias bans EOS, max_tokens 0",
      headers: [ct],
      body: j({ prompt: "a", max_tokens: 0, logit_bias: { "1": -100 } }),
    },
    {
      name: "echo + logprobs 20, max_tokens 0",
      headers: [ct],
      body: j({ prompt: "a b c", max_tokens: 0, echo: true, logprobs: 20 }),
    },
    {
      name: "unknown fields",
      headers: [ct],
      body: j({ prompt: "a", foo: { bar: [1, 2] }, functions: null }),
    },
    {
      name: "stop longer than output",
      headers: [ct],
      body: j({ prompt: "a", stop: ["x".repeat(10_000)] }),
    },
    {
      name: "temperature 2, top_k 1",
      headers: [ct],
      body: j({ prompt: "a", temperature: 2, top_k: 1 }),
    },
  ];
}

Deno.test("hostile requests: each gets a 4xx OpenAI error, the server survives", async () => {
  await using srv = await spawnServer({ apiKey: API_KEY });
  const auth = srv.auth;
  const models = await (await fetch(`${srv.url}/v1/models`, { headers: auth })).json();
  const info = await (await fetch(`${srv.url}/tokenizer_info`, { headers: auth })).json();
  const reqs = generateHostileRequests({
    vocabSize: info.vocab_size,
    maxModelLen: models.data[0].max_model_len,
    bodyLimit: new AppState().config.maxBodyBytes,
    apiKey: API_KEY,
  });
  assert(reqs.length >= 500, `only ${reqs.length} hostile requests`);
  assert.strictEqual(new Set(reqs.map((r) => r.name)).size, reqs.length, "names must be unique");

  const t0 = performance.now();
  const outcomes: Outcome[] = [];
  for (const req of reqs) {
    const o = await send(srv, req);
    outcomes.push(o);
    if (o.status === 0) await waitHealthy(srv);
  }
  const byKind = new Map<string, { n: number; ms: number }>();
  for (const o of outcomes) {
    const k = byKind.get(o.req.kind) ?? { n: 0, ms: 0 };
    byKind.set(o.req.kind, { n: k.n + 1, ms: k.ms + o.ms });
  }
  const slowest = [...outcomes].sort((a, b) => b.ms - a.ms).slice(0, 3);
  console.log(
    `${reqs.length} hostile requests in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
      [...byKind].map(([k, v]) => `${k} ${v.n} (${(v.ms / 1000).toFixed(1)} s)`).join(", ") +
      `; slowest: ` + slowest.map((o) => `${o.req.name} ${o.ms.toFixed(0)} ms`).join(", "),
  );
  const odd = [];
  for (const r of oddValid()) {
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: [...r.headers, ["Authorization", auth.Authorization]],
      body: r.body,
      signal: AbortSignal.timeout(PER_REQUEST_MS),
    }).catch((e) => e as Error);
    if (res instanceof Error) odd.push(`${r.name}: ${res.message}`);
    else {
      const text = await res.text();
      if (res.status >= 500) odd.push(`${r.name}: ${res.status} ${text.slice(0, 200)}`);
    }
  }

  await assertServes(srv.url, auth);
  await waitPagesFree(srv);
  const failed = outcomes.filter((o) => o.problem !== null);
  const report = failed.map((o) => `  [${o.req.kind}] ${o.req.name}: ${o.problem}`).join("\n");
  assert.strictEqual(odd.length, 0, `odd-but-valid requests answered 5xx:\n  ${odd.join("\n  ")}`);
  assert.strictEqual(failed.length, 0, `${failed.length} of ${reqs.length} failed:\n${report}`);
  assert.doesNotMatch(srv.stderr(), /unhandled error|panicked|Uncaught/, "server stderr");
});
