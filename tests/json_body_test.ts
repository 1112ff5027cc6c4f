// Request bodies parsed as JSON (routes/json_body.ts): a large body is parsed on a worker, so a
// hostile one (27 MiB of nested arrays held the event loop 2.3 s) never stalls other requests,
// and bodies beyond the value limits are a 400 before they reach the event loop.

import assert from "node:assert/strict";
import {
  INLINE_JSON_BYTES,
  MAX_JSON_DEPTH,
  MAX_JSON_MEMBERS,
  MAX_JSON_VALUES,
  parseJsonBody,
} from "../routes/json_body.ts";
import { ApiError } from "../routes/errors.ts";
import { assertHealthUnstalled } from "./helpers/health_stall.ts";
import { spawnServer } from "./helpers/server.ts";

const enc = new TextEncoder();
const buf = (s: string) => enc.encode(s).buffer as ArrayBuffer;

async function refusal(s: string): Promise<string> {
  try {
    await parseJsonBody(buf(s));
  } catch (e) {
    assert(e instanceof ApiError, String(e));
    assert.equal(e.status, 400);
    return e.message;
  }
  throw new Error("parsed");
}

Deno.test("JSON bodies: small and large parse alike; bad JSON and values past the limits are 400s", async () => {
  const large = { prompt: Array.from({ length: INLINE_JSON_BYTES / 2 }, (_, i) => i % 1000) };
  const text = JSON.stringify(large);
  assert(text.length > INLINE_JSON_BYTES); // the worker's path
  assert.deepEqual(await parseJsonBody(buf(text)), large);
  assert.deepEqual(await parseJsonBody(buf('{"a":[1,"x",null]}')), { a: [1, "x", null] });
  assert.match(await refusal('{"a":'), /not valid JSON/);
  assert.match(await refusal(`{"a":[${"1,".repeat(INLINE_JSON_BYTES)}`), /not valid JSON/);
  const values = `{"prompt":[${"1,".repeat(MAX_JSON_VALUES)}1]}`;
  assert.match(await refusal(values), new RegExp(`more than ${MAX_JSON_VALUES} JSON values`));
  const members = Array.from({ length: MAX_JSON_MEMBERS + 1 }, (_, i) => `"${i}":1`).join(",");
  assert.match(await refusal(`{"logit_bias":{${members}}}`), /members/);
  const deep = (n: number) => `{"a":${"[".repeat(n)}${"]".repeat(n)}}`;
  assert.match(await refusal(deep(1_000_000)), /levels of nesting/);
  assert.match(await refusal(" ".repeat(INLINE_JSON_BYTES) + deep(MAX_JSON_DEPTH + 1)), /nesting/);
  // At the limits exactly: accepted.
  const padded = " ".repeat(INLINE_JSON_BYTES) + deep(MAX_JSON_DEPTH);
  assert.equal(JSON.stringify(await parseJsonBody(buf(padded))), deep(MAX_JSON_DEPTH));
  const ok = Array.from({ length: MAX_JSON_MEMBERS }, (_, i) => `"${i}":1`).join(",");
  const parsed = await parseJsonBody(buf(`{"logit_bias":{${ok}}}`)) as Record<string, object>;
  assert.equal(Object.keys(parsed.logit_bias).length, MAX_JSON_MEMBERS);
});

Deno.test("the JSON worker ends when idle: a process that used it exits on its own", async () => {
  const mod = new URL("../routes/json_body.ts", import.meta.url).href;
  const code = `import { parseJsonBody } from "${mod}";
    const v = await parseJsonBody(new TextEncoder().encode(JSON.stringify({ a: "x".repeat(1 << 20) })).buffer);
    console.log(v.a.length);`;
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).trim(), String(1 << 20));
  assert(performance.now() - t0 < 20_000);
});

Deno.test("/health answers promptly while a 12 MiB body of nested arrays is parsed (a 400)", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const body = `{"prompt":[${"[1],".repeat(3_000_000)}[1]],"max_tokens":1}`;
  const work = fetch(`${srv.url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
  }).then(async (r) => {
    const text = await r.text();
    assert.equal(r.status, 400, text);
    assert.match(JSON.parse(text).error.message, /JSON values/);
  });
  await assertHealthUnstalled(srv.url, work, "while a 12 MiB body of 3M arrays is parsed");
});
