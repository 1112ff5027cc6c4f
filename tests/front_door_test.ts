// The front door's keep-alive clock (net/front_door.ts) against a scripted upstream, so the
// timing is exact rather than left to load. The HTTP server counts a request answered when it
// has written the response to the unix socket, which can be a moment before the door reads
// those bytes. A request that took longer than the idle timeout must not be cut off in that
// gap (seen in CI: "connection closed before message completed" on a slow non-streaming call).

import assert from "node:assert/strict";
import { FrontDoor } from "../net/front_door.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("a slow answer whose bytes lag its completion still reaches the client", async () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/up.sock`;
  const upstream = Deno.listen({ transport: "unix", path });
  let answered = 0;
  const serving = (async () => {
    const conn = await upstream.accept();
    const buf = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) head += dec.decode(buf.subarray(0, (await conn.read(buf))!));
    await sleep(1000); // the work: longer than the idle timeout, with no bytes moving
    answered = 1; // "completed" fires ...
    await sleep(150); // ... a moment before the door reads the response
    const body = "done";
    await conn.write(
      enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
    );
    await sleep(100);
    conn.close();
  })();
  const door = new FrontDoor({
    hostname: "127.0.0.1",
    port: 0,
    upstreamPath: () => path,
    maxConnections: 8,
    headerTimeoutMs: 400,
    idleTimeoutMs: 400,
    writeTimeoutMs: 1000,
    maxHeadBytes: 8192,
    onOpen: () => {},
    onClose: () => {},
    answered: () => answered,
    onClientGone: () => {},
    log: () => {},
  });
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: door.addr.port });
    await client.write(enc.encode("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await client.read(buf).catch(() => null);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
      if (text.endsWith("done")) break;
    }
    client.close();
    assert.match(text, /^HTTP\/1.1 200 OK[\s\S]*done$/, `the client got ${JSON.stringify(text)}`);
  } finally {
    await serving;
    await door.close();
    await door.drain(0);
    upstream.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
