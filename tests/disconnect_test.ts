// A client that goes away frees its sequences at once, at every stage and for non-streaming
// requests too. Deno.serve aborts request.signal on a disconnect only when it writes to the
// connection or the whole request came in one read: a non-streaming client with a body of a
// few KB that hung up while its request queued, prefilled or decoded was never noticed and ran
// to max_tokens (issue 13 #2). The front door (net/) sees the hang-up and aborts the signal. A
// separate server process, so the client's timeouts fire while the server's event loop is busy.

import assert from "node:assert/strict";
import { sleep, type SpawnedServer, spawnServer } from "./helpers/server.ts";

// ~1,800 tokens on the demo model: a body that does not arrive in the request's first read,
// and a prefill that takes a while on the CPU backend.
const LONG_PROMPT = "hello world ".repeat(600);

function post(url: string, body: unknown, abortMs: number): Promise<unknown> {
  return fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(abortMs),
  }).then((r) => r.text()).catch((e) => e);
}

async function runningAndWaiting(srv: SpawnedServer): Promise<number> {
  return await srv.metric("nsn_requests_running") + await srv.metric("nsn_requests_waiting");
}

/** Polls until nothing runs or waits; returns how long that took (ms), or fails. */
async function settles(srv: SpawnedServer, withinMs: number): Promise<number> {
  const t0 = performance.now();
  let n = await runningAndWaiting(srv);
  while (n > 0 && performance.now() - t0 < withinMs) {
    await sleep(50);
    n = await runningAndWaiting(srv);
  }
  assert.equal(n, 0, `sequences still running or waiting ${withinMs} ms after the disconnects`);
  return performance.now() - t0;
}

Deno.test("non-streaming clients that hang up while queued or prefilling are cancelled at once", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const body = { prompt: LONG_PROMPT, max_tokens: 200, ignore_eos: true };
  const gone = await Promise.all(Array.from({ length: 12 }, () => post(srv.url, body, 400)));
  assert(gone.every((e) => e instanceof Error), "every client should have timed out");
  const ms = await settles(srv, 2_000);
  console.log(`12 abandoned long prompts: nothing running or waiting ${ms.toFixed(0)} ms later`);
});

Deno.test("a non-streaming client that hangs up mid-decode is cancelled at once", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  // A body over a few KB (as real clients send) with a short prompt: decode dominates.
  const body = { prompt: "Once", max_tokens: 2000, ignore_eos: true, user: "x".repeat(4000) };
  assert(await post(srv.url, body, 300) instanceof Error);
  const ms = await settles(srv, 1_000);
  console.log(`max_tokens 2000 abandoned after 0.3 s: cancelled ${ms.toFixed(0)} ms later`);
  await srv.stop();
});

Deno.test("a non-streaming response still parses as one JSON object", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const r = await fetch(`${srv.url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: LONG_PROMPT, max_tokens: 8, user: "x".repeat(4000) }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("Content-Type") ?? "", /application\/json/);
  const out = JSON.parse(await r.text());
  assert.equal(out.object, "text_completion");
  assert.equal(out.usage.completion_tokens, 8);
});
