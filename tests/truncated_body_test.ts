// A request body that ends early is the client's fault: a 400 (or a closed connection), never a
// 500. A chunked body cut mid-chunk used to surface as "unhandled error: BadResource" and a 500
// (issue 13 #5); the same cut with Content-Length was already a 400.

import assert from "node:assert/strict";
import { rawExchange } from "./helpers/raw_http.ts";
import { spawnServer } from "./helpers/server.ts";

/** The status line of the answer to `request` (half-closed), or "" when the server just closed. */
async function rawStatus(port: number, request: string): Promise<string> {
  return (await rawExchange(port, request, true)).split("\r\n")[0];
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
