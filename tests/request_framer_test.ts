// net/request_framer.ts: request boundaries on a keep-alive connection (heads split across
// reads, Content-Length and chunked bodies), the connection tag on every head, and refusals.

import assert from "node:assert/strict";
import { type Refusal, RequestFramer } from "../net/request_framer.ts";

const LIMITS = { maxHeadBytes: 1024, maxHeaders: 10 };
const enc = (s: string) => new TextEncoder().encode(s);

/** Feeds `text` in pieces of `step` bytes; returns what was forwarded, or the refusal. */
function run(text: string, step: number): string | Refusal {
  const f = new RequestFramer("x-nsn-conn: 7", LIMITS);
  const bytes = enc(text);
  let out = "";
  for (let i = 0; i < bytes.length; i += step) {
    const r = f.feed(bytes.slice(i, i + step));
    if (!Array.isArray(r)) return r;
    for (const b of r) out += new TextDecoder().decode(b);
  }
  return out;
}

Deno.test("every head of a keep-alive connection is tagged, at any read size", () => {
  const body = "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n";
  const text = "POST /a HTTP/1.1\r\nContent-Length: 4\r\nX-Nsn-Conn: 99\r\n\r\nabcd" +
    "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body +
    "\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
  const want = "POST /a HTTP/1.1\r\nx-nsn-conn: 7\r\nContent-Length: 4\r\n\r\nabcd" +
    "POST /b HTTP/1.1\r\nx-nsn-conn: 7\r\nTransfer-Encoding: chunked\r\n\r\n" + body +
    "GET /c HTTP/1.1\r\nx-nsn-conn: 7\r\nHost: x\r\n\r\n";
  for (const step of [1, 2, 3, 7, 64, 4096]) assert.equal(run(text, step), want, `step ${step}`);
});

Deno.test("refusals: oversized or malformed heads, endless chunk-size lines", () => {
  const cases: [string, number][] = [
    [`GET / HTTP/1.1\r\nX: ${"a".repeat(2000)}\r\n\r\n`, 431],
    [`GET / HTTP/1.1\r\nX: ${"a".repeat(2000)}`, 431], // no end yet, already too long
    [`GET / HTTP/1.1\r\n${"A: b\r\n".repeat(11)}\r\n`, 431],
    ["GET /\r\n\r\n", 400],
    ["GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400],
    ["POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400],
    [`POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n${"0".repeat(5000)}`, 400],
  ];
  for (const [text, status] of cases) {
    const r = run(text, 512);
    assert.equal(typeof r === "string" ? "forwarded" : r.status, status, text.slice(0, 60));
  }
});
