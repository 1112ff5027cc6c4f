// What every route shares about the HTTP protocol itself, as in vLLM's server: which paths the
// API key guards, the request id a router or client sends (X-Request-Id), and the JSON media
// type that request bodies must declare.

import type { Context, MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";

/** Readable without the API key: probes and scrapers hold no key. */
export const OPEN_PATHS: readonly string[] = ["/health", "/ping", "/version", "/metrics"];

export function apiKeyGuard(key: string): MiddlewareHandler {
  return async (c, next) => {
    if (!OPEN_PATHS.includes(c.req.path) && c.req.header("Authorization") !== `Bearer ${key}`) {
      throw new ApiError(401, "Incorrect API key provided.", null, "invalid_api_key");
    }
    await next();
  };
}

// Printable ASCII without spaces, as ids are written in logs and response ids.
const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

/** The client's X-Request-Id (checked), or null when it sent none. */
export function requestId(c: Context): string | null {
  const id = c.req.header("X-Request-Id");
  if (id === undefined) return null;
  if (!REQUEST_ID.test(id)) {
    throw new ApiError(
      400,
      "Invalid X-Request-Id header: 1 to 128 printable ASCII characters without spaces.",
      "X-Request-Id",
    );
  }
  return id;
}

/** Echoes X-Request-Id on the response, errors included. */
export const echoRequestId: MiddlewareHandler = async (c, next) => {
  const id = c.req.header("X-Request-Id");
  if (id !== undefined && REQUEST_ID.test(id)) c.header("X-Request-Id", id);
  await next();
};

/**
 * A body must say it is JSON (application/json or a +json type), as vLLM requires: a form
 * post (curl -d without -H) is refused with 415 instead of being read as JSON by chance. A
 * request with no Content-Type at all is read as JSON.
 */
export const requireJson: MiddlewareHandler = async (c, next) => {
  const type = c.req.header("Content-Type");
  if (c.req.method === "POST" && type !== undefined) {
    const media = type.split(";")[0].trim().toLowerCase();
    if (media !== "application/json" && !/^application\/[\w.+-]+\+json$/.test(media)) {
      throw new ApiError(
        415,
        `Unsupported Content-Type ${JSON.stringify(type.slice(0, 100))}: request bodies must be ` +
          "JSON (Content-Type: application/json).",
        "Content-Type",
        "unsupported_media_type",
      );
    }
  }
  await next();
};
