// Error statuses at the HTTP level, each with the OpenAI error body (issue 13 #10): a method a
// known route does not take is a 405 with Allow (was 404), oversized request heads a 431 (was a
// bare 400), and malformed request lines or header fields a 400 with a JSON body (was a bare 400
// or a closed connection).

import assert from "node:assert/strict";
import { rawExchange } from "./helpers/raw_http.ts";
import { assertErrorShape, spawnServer } from "./helpers/server.ts";

/** Raw bytes in, the status and parsed body out (the server closes after such an error). */
async function raw(port: number, request: string): Promise<{ status: number; body: unknown }> {
  const text = await rawExchange(port, request);
  const body = text.slice(text.indexOf("\r\n\r\n") + 4);
  return { status: Number(text.split(" ")[1]), body: JSON.parse(body) };
}

Deno.test("HTTP-level errors: 405, 431 and 400 with OpenAI error bodies", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const port = Number(new URL(srv.url).port);

  const methods: [string, string, string][] = [
    ["PUT", "/v1/completions", "POST"],
    ["GET", "/v1/completions", "POST"],
    ["DELETE", "/v1/chat/completions", "POST"],
    ["POST", "/health", "GET"],
    ["PATCH", "/v1/models", "GET"],
  ];
  for (const [method, path, allow] of methods) {
    const r = await fetch(`${srv.url}${path}`, { method });
    const err = assertErrorShape(await r.json(), `${method} ${path}`);
    assert.equal(r.status, 405, `${method} ${path}`);
    assert.equal(r.headers.get("Allow"), allow);
    assert.equal(err.code, "method_not_allowed");
  }
  const missing = await fetch(`${srv.url}/v1/nope`);
  assert.equal(missing.status, 404);
  await missing.body?.cancel();

  const many = Array.from({ length: 200 }, (_, i) => `X-H${i}: v\r\n`).join("");
  const heads: [string, number, string][] = [
    [`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(100_000)}\r\n\r\n`, 431, "big"],
    [`GET /health HTTP/1.1\r\nHost: x\r\n${many}\r\n`, 431, "200 fields"],
    ["HELLO THERE\r\n\r\n", 400, "request line"],
    ["GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400, "field without colon"],
    ["GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", 400, "field name with a space"],
    ["POST /tokenize HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400, "Content-Length"],
  ];
  for (const [request, status, what] of heads) {
    const r = await raw(port, request);
    assert.equal(r.status, status, what);
    assertErrorShape(r.body, what);
  }
  const ok = await fetch(`${srv.url}/health`);
  assert.equal(ok.status, 200, "the server still serves");
  await ok.body?.cancel();
});
