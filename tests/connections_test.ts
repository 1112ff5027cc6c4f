// Connections as a resource (issue 13 #1): idle sockets used to be kept forever, and at the
// open-file limit accept() failed and the process exited 1 ("Too many open files"), so anyone
// able to open ~300 sockets could stop the server. Now: the server survives fd exhaustion and
// keeps serving the connections it has, caps connections (--max-connections: 503 beyond),
// times out idle keep-alive connections, request heads that never complete, and clients that
// stop reading.

import assert from "node:assert/strict";
import { sleep, type SpawnedServer, spawnServer } from "./helpers/server.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function portOf(srv: SpawnedServer): number {
  return Number(new URL(srv.url).port);
}

/** Reads one response with a Content-Length body from a keep-alive connection. */
async function readResponse(conn: Deno.Conn): Promise<{ status: number; body: string } | null> {
  let text = "";
  const buf = new Uint8Array(16384);
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const len = Number(/content-length: (\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      if (enc.encode(text.slice(end + 4)).length >= len) {
        return { status: Number(text.split(" ")[1]), body: text.slice(end + 4) };
      }
    }
    const n = await conn.read(buf).catch(() => null);
    if (n === null) return null;
    text += dec.decode(buf.subarray(0, n));
  }
}

async function get(conn: Deno.Conn, path: string) {
  await conn.write(enc.encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
  return await readResponse(conn);
}

async function openIdle(port: number, n: number): Promise<Deno.Conn[]> {
  const conns: Deno.Conn[] = [];
  for (let i = 0; i < n; i++) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch {
      break; // the client's own limit
    }
  }
  return conns;
}

async function assertAlive(srv: SpawnedServer): Promise<void> {
  const r = await fetch(`${srv.url}/health`, { signal: AbortSignal.timeout(10_000) });
  await r.body?.cancel();
  assert.equal(r.status, 200);
}

Deno.test("at the open-file limit the server refuses new sockets but lives and serves", async () => {
  // Hard and soft limit 256; no connection cap below it, so accept() itself hits EMFILE.
  await using srv = await spawnServer({
    debugChecks: false,
    maxOpenFiles: 256,
    args: ["--max-connections", "100000"],
  });
  const kept = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  assert.equal((await get(kept, "/health"))?.status, 200);
  const flood = await openIdle(portOf(srv), 400);
  await sleep(500);
  assert.equal((await get(kept, "/v1/models"))?.status, 200, "an open connection still serves");
  for (const c of flood) c.close();
  await sleep(300);
  await assertAlive(srv);
  kept.close();
  assert.doesNotMatch(srv.stderr(), /Uncaught|panicked/);
  // Deno.serve's own accept() never ran out: the refusals left it room. (When it did, it was
  // restarted, and the connections it held could go with it.)
  assert.doesNotMatch(srv.stderr(), /the HTTP server failed/);
});

Deno.test("the soft open-file limit is raised to the hard one at start", async () => {
  await using srv = await spawnServer({
    debugChecks: false,
    maxOpenFiles: 256,
    maxOpenFilesHard: 4096,
  });
  const limits = await Deno.readTextFile(`/proc/${srv.pid}/limits`);
  const [soft, hard] = /Max open files\s+(\d+)\s+(\d+)/.exec(limits)!.slice(1).map(Number);
  assert.deepEqual([soft, hard], [4096, 4096]);
});

Deno.test("--max-connections: a 503 with an OpenAI error beyond it, served again after", async () => {
  await using srv = await spawnServer({ debugChecks: false, args: ["--max-connections", "8"] });
  const flood = await openIdle(portOf(srv), 8);
  await sleep(200);
  const extra = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  const r = await readResponse(extra);
  extra.close();
  assert.equal(r?.status, 503);
  assert.equal(JSON.parse(r!.body).error.code, "too_many_connections");
  for (const c of flood) c.close();
  await sleep(300);
  await assertAlive(srv);
});

Deno.test("a request head that never completes gets a 408; an idle connection is closed", async () => {
  await using srv = await spawnServer({
    debugChecks: false,
    args: ["--header-timeout-seconds", "1", "--keep-alive-seconds", "1"],
  });
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  await slow.write(enc.encode("GET /health HTTP/1.1\r\nHo"));
  const t0 = performance.now();
  const r = await readResponse(slow);
  slow.close();
  assert.equal(r?.status, 408);
  assert.equal(JSON.parse(r!.body).error.code, "request_timeout");
  assert(performance.now() - t0 < 3000);

  const idle = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  assert.equal((await get(idle, "/health"))?.status, 200);
  const t1 = performance.now();
  assert.equal(await idle.read(new Uint8Array(1)), null, "the idle connection was not closed");
  idle.close();
  const waited = performance.now() - t1;
  assert(waited > 800 && waited < 3000, `closed after ${waited.toFixed(0)} ms`);
});

Deno.test("a streaming client that stops reading is dropped and its request cancelled", async () => {
  await using srv = await spawnServer({
    debugChecks: false,
    args: ["--write-timeout-seconds", "1"],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: portOf(srv) });
  const body = JSON.stringify({
    prompt: "Once",
    max_tokens: 1500,
    ignore_eos: true,
    stream: true,
    n: 16,
    logprobs: 20, // 16 x 1500 x 21 logprob entries: just under the per-request bound
  });
  await conn.write(enc.encode(
    `POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${body.length}\r\n\r\n${body}`,
  ));
  // Never read: the socket buffers fill, then the write timeout drops the client.
  const t0 = performance.now();
  let running = 0;
  while (running === 0 && performance.now() - t0 < 10_000) {
    await sleep(50);
    running = await srv.metric("nsn_requests_running");
  }
  assert(running > 0, "the request never ran");
  while (running > 0 && performance.now() - t0 < 30_000) {
    await sleep(200);
    running = await srv.metric("nsn_requests_running") + await srv.metric("nsn_requests_waiting");
  }
  conn.close();
  assert.equal(running, 0, "the request of a client that stopped reading still runs");
  const ms = performance.now() - t0;
  console.log(`a client that stopped reading was cancelled after ${ms.toFixed(0)} ms`);
  assert(ms > 1000, "cancelled before the write timeout: by something else");
  // Aborted, not run to the end with its output piling up.
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const aborted = /nsn_sequences_finished_total\{[^}]*finished_reason="abort"[^}]*\} (\d+)/
    .exec(text)?.[1];
  assert.equal(aborted, "16", "the sequences were not cancelled");
});
