// A request body that ends early is the client's fault: a 400 (or a closed connection), never a
// 500. A chunked body cut mid-chunk used to surface as "unhandled error: BadResource" and a 500
// (issue 13 #5); the same cut with Content-Length was already a 400.

import assert from "node:assert/strict";
import { spawnServer } from "./helpers/server.ts";

/** Sends raw bytes, half-closes, returns the status line (or "" when the server just closed). */
async function rawStatus(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    await conn.closeWrite();
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.split("\r\n")[0];
  } finally {
    conn.close();
  }
}

const JSON_START = '{"prompt": "Once upon a time", "max_tokens": 2, "te';

Deno.test("a truncated request body is a 400 or a closed connection, never a 500", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const port = Number(new URL(srv.url).port);
  for (const path of ["/v1/completions", "/v1/chat/completions", "/tokenize"]) {
    const head = `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n`;
    const requests = {
      "chunked, cut mid-chunk": `${head}Transfer-Encoding: chunked\r\n\r\n100\r\n${JSON_START}`,
      "chunked, no last chunk": `${head}Transfer-Encoding: chunked\r\n\r\n` +
        `${JSON_START.length.toString(16)}\r\n${JSON_START}\r\n`,
      "Content-Length, cut": `${head}Content-Length: 500\r\n\r\n${JSON_START}`,
    };
    for (const [what, req] of Object.entries(requests)) {
      const status = await rawStatus(port, req);
      assert(status === "" || / 400 /.test(status), `${path} ${what}: ${status}`);
    }
  }
  await srv.stop();
  assert.doesNotMatch(srv.stderr(), /unhandled error|BadResource/);
});
