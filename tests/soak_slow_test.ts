// Soak (issue 13): rounds of mixed streaming and non-streaming clients on the CPU backend, some
// hanging up at random moments, some reading slowly, while a flood of idle sockets sits on the
// server. Every answer must be below 500, after each round nothing may run, wait or hold a KV
// page, and RSS must stay flat from round to round. Bounded: about a minute and a half.

import assert from "node:assert/strict";
import { assertRssSettles } from "./helpers/rss.ts";
import { sleep, type SpawnedServer, spawnServer, waitPagesFree } from "./helpers/server.ts";

const ROUNDS = 5;
const CLIENTS = 36;
const IDLE_SOCKETS = 120;

/** A small deterministic generator (mulberry32), so a failing round can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Kind = "stream" | "json" | "stream-abort" | "json-abort" | "slow-reader";

async function client(
  url: string,
  kind: Kind,
  rand: () => number,
  http: Deno.HttpClient,
): Promise<number> {
  const ac = new AbortController();
  if (kind.endsWith("abort")) setTimeout(() => ac.abort(), 50 + rand() * 1500);
  const body = {
    prompt: "Once upon a time ".repeat(1 + Math.floor(rand() * 40)),
    max_tokens: 8 + Math.floor(rand() * 120),
    ignore_eos: true,
    stream: kind !== "json" && kind !== "json-abort",
    n: rand() < 0.2 ? 3 : 1,
    logprobs: rand() < 0.3 ? 5 : undefined,
  };
  try {
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      client: http,
      signal: ac.signal,
      headers: {
        "Content-Type": "application/json",
        "X-KV-Bits": ["16", "2", "1"][kind.length % 3],
      },
      body: JSON.stringify(body),
    });
    const reader = r.body!.getReader();
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
      if (kind === "slow-reader") await sleep(40);
    }
    return r.status;
  } catch (e) {
    if (ac.signal.aborted) return 0; // our own hang-up
    throw e;
  }
}

async function idleSockets(port: number, n: number): Promise<Deno.Conn[]> {
  const out: Deno.Conn[] = [];
  for (let i = 0; i < n; i++) {
    out.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (i % 3 === 0) await out[i].write(new TextEncoder().encode("GET /health HT")); // never ends
  }
  return out;
}

async function settled(srv: SpawnedServer): Promise<void> {
  const end = Date.now() + 15_000;
  let n = -1;
  while (n !== 0 && Date.now() < end) {
    n = await srv.metric("nsn_requests_running") + await srv.metric("nsn_requests_waiting");
    if (n !== 0) await sleep(100);
  }
  assert.equal(n, 0, "requests still running or waiting after the round");
  await waitPagesFree(srv);
}

Deno.test("soak: disconnects, slow readers and idle sockets; no 5xx, nothing leaks", async () => {
  await using srv = await spawnServer({
    debugChecks: false,
    args: ["--header-timeout-seconds", "2", "--keep-alive-seconds", "2"],
  });
  const port = Number(new URL(srv.url).port);
  const kinds: Kind[] = ["stream", "json", "stream-abort", "json-abort", "slow-reader"];
  // A new connection per request: a pooled keep-alive connection that the server closes at its
  // idle timeout just as fetch reuses it is the client's race (as with any server that times out
  // idle connections), not a server failure.
  using http = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const runRound = async (round: number): Promise<number> => {
    const rand = rng(round + 1);
    const idle = await idleSockets(port, IDLE_SOCKETS);
    let statuses: number[] = [];
    try {
      statuses = await Promise.all(
        Array.from(
          { length: CLIENTS },
          (_, i) => client(srv.url, kinds[i % kinds.length], rand, http),
        ),
      );
    } catch (e) {
      console.log("SERVER STDERR:\n" + srv.stderr());
      throw e;
    }
    for (const c of idle) c.close();
    const bad = statuses.filter((s) => s >= 500 || (s !== 0 && s !== 200));
    assert.deepEqual(bad, [], `round ${round}: statuses ${statuses.join(",")}`);
    await settled(srv);
    const mib = srv.rssKib() / 1024;
    console.log(`round ${round}: RSS ${mib.toFixed(0)} MiB`);
    return mib;
  };
  // The first round warms up (JIT, pools); after it RSS must not keep climbing.
  const rss: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const mib = await runRound(round);
    if (round > 0) rss.push(mib);
  }
  let next = ROUNDS;
  await assertRssSettles(rss, 40, () => runRound(next++));
  assert.doesNotMatch(srv.stderr(), /Uncaught|unhandled error|panicked/);
});
