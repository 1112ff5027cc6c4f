// KV cache events (--kv-events-endpoint) as a router's subscriber sees them: ZeroMQ SUB (our
// ZMTP client, tests/helpers/zmtp_sub.ts, against the server's libzmq PUB socket), three
// frames (topic, 8-byte big-endian sequence number, msgpack [ts, events, dp_rank]) with vLLM's
// BlockStored / BlockRemoved / AllBlocksCleared, against the scheduler with the fake engine and
// through the server.

import assert from "node:assert/strict";
import { decode } from "@msgpack/msgpack";
import { KvEventPublisher } from "../engine/kv_events.ts";
import { chainRoot, windowHash } from "../engine/prefix_cache.ts";
import { startServer } from "../main.ts";
import { prompt, request, setup } from "./helpers/sched.ts";
import { ZmtpSubscriber } from "./helpers/zmtp_sub.ts";

type Event = [string, ...unknown[]];
interface Batch {
  topic: string;
  seq: bigint;
  ts: number;
  events: Event[];
  rank: number;
}

/** A subscriber of `endpoint`, connected once an AllBlocksCleared probe comes through. */
async function subscribe(endpoint: string, probe: () => void) {
  const sub = await ZmtpSubscriber.connect(endpoint, "kv@");
  const next = async (timeoutMs = 10_000): Promise<Batch> => {
    const msg = await sub.receive(timeoutMs);
    if (!msg) throw new Error(`no KV event batch within ${timeoutMs} ms`);
    assert.equal(msg.length, 3, "three frames: topic, sequence number, payload");
    const [topic, seq, payload] = msg;
    const [ts, events, rank] = decode(payload) as [number, Event[], number];
    const s = new DataView(seq.buffer, seq.byteOffset, 8).getBigUint64(0);
    return { topic: new TextDecoder().decode(topic), seq: s, ts, events, rank };
  };
  for (let i = 0;; i++) { // ZeroMQ's slow joiner: resend the probe until one arrives
    probe();
    try {
      const b = await next(100);
      if (b.events.some((e) => e[0] === "AllBlocksCleared")) break;
    } catch (e) {
      if (i > 50) throw e;
    }
  }
  /** Events of the batches that arrive until `until` holds for the events so far. */
  const collect = async (until: (evs: Event[]) => boolean): Promise<Event[]> => {
    const evs: Event[] = [];
    while (!until(evs)) evs.push(...(await next()).events);
    return evs;
  };
  return { sub, next, collect };
}

Deno.test({
  name: "KV events: BlockStored chains, BlockRemoved on eviction, vLLM's frames",
  sanitizeResources: false, // the ZeroMQ addon's sockets and timers are process-wide
  sanitizeOps: false,
  async fn() {
    const pub = await KvEventPublisher.open("tcp://127.0.0.1:*", "host1", "fake", "CPU");
    const { sub, next, collect } = await subscribe(pub.endpoint, () => pub.cleared());
    const { s } = setup({ poolSlabs: 4 }, { maxStepTokens: 512 });
    s.kv.prefix!.events = pub;

    const p = prompt(140, 3);
    const o = request(p, 2, 4);
    s.submit([o.req]);
    await o.out.done;
    const stored = await collect((evs) => evs.filter((e) => e[0] === "BlockStored").length >= 2);
    const blocks = stored.filter((e) => e[0] === "BlockStored");
    const h0 = windowHash(chainRoot(2, ""), p, 0), h1 = windowHash(h0, p, 1);
    assert.deepEqual(blocks[0], [
      "BlockStored",
      [h0],
      null,
      p.slice(0, 64),
      64,
      null,
      "CPU",
      null,
      [["kv_bits=2"]],
    ]);
    assert.deepEqual(blocks[1].slice(1, 4), [[h1], h0, p.slice(64, 128)]);

    // A 16-bit sequence needing all 4 slabs evicts the idle 2-bit windows.
    const big = request(prompt(200, 4), 16, 4);
    s.submit([big.req]);
    await big.out.done;
    const removed = await collect((evs) => evs.some((e) => e[0] === "BlockRemoved"));
    const hashes = removed.filter((e) => e[0] === "BlockRemoved").flatMap((e) => e[1] as number[]);
    assert.ok(hashes.includes(h0) || hashes.includes(h1), `removed ${hashes}`);

    pub.cleared();
    const b = await next();
    assert.equal(b.topic, "kv@host1@fake");
    assert.ok(b.seq > 0n);
    assert.equal(b.rank, 0);
    assert.ok(Math.abs(b.ts - Date.now() / 1000) < 60);
    await s.close();
    await pub.close();
    sub.close();
  },
});

Deno.test({
  name: "KV events: the server publishes with --kv-events-endpoint",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const server = startServer({
      model: "demo",
      backend: "cpu",
      port: 0,
      quiet: true,
      kvEventsEndpoint: "tcp://127.0.0.1:*",
    });
    try {
      await server.ready;
      const pub = server.state.ready!.scheduler.kv.prefix!.events as KvEventPublisher;
      const { sub, collect } = await subscribe(pub.endpoint, () => pub.cleared());
      const r = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "a b c d e f g h ".repeat(20), max_tokens: 2 }),
      });
      assert.equal(r.status, 200);
      await r.body?.cancel();
      const evs = await collect((e) => e.some((x) => x[0] === "BlockStored"));
      const stored = evs.find((e) => e[0] === "BlockStored")!;
      assert.equal(stored[4], 64);
      assert.deepEqual(stored[8], [["kv_bits=16"]]);
      sub.close();
    } finally {
      await server.shutdown();
    }
  },
});
