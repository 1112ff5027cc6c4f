// Reads every request body up front, at most maxBytes of it: a larger one is a 413, and one that
// cannot be read to its end (a chunked body cut mid-chunk, a Content-Length the client never
// sent in full) is the client's fault, a 400, never the 500 of an error thrown mid-handler.

import type { MiddlewareHandler } from "hono";
import { ApiError, badRequest } from "./errors.ts";

function tooLarge(maxBytes: number): ApiError {
  return new ApiError(
    413,
    `The request body exceeds ${maxBytes} bytes.`,
    null,
    "request_too_large",
  );
}

export function bodyLimit(maxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (!raw.body || raw.method === "GET" || raw.method === "HEAD") return next();
    const declared = raw.headers.get("content-length");
    if (declared !== null && !raw.headers.has("transfer-encoding") && +declared > maxBytes) {
      throw tooLarge(maxBytes);
    }
    const reader = raw.body.getReader();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      let got: ReadableStreamReadResult<Uint8Array>;
      try {
        got = await reader.read();
      } catch {
        throw badRequest(null, "The request body ended early or could not be read.");
      }
      if (got.done) break;
      size += got.value.length;
      if (size > maxBytes) {
        reader.cancel().catch(() => {});
        throw tooLarge(maxBytes);
      }
      chunks.push(got.value);
    }
    const body = new Uint8Array(size);
    let at = 0;
    for (const ch of chunks) body.set(ch, at), at += ch.length;
    c.req.raw = new Request(raw, { body });
    return next();
  };
}
