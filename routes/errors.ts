// The one place errors become HTTP responses, always in OpenAI's shape:
// {"error": {"message", "type", "param", "code"}} plus optional llama.cpp-style hints
// (n_ctx, n_prompt_tokens) that clients use to trim their context.

import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { QueueFullError, ShutdownError } from "../engine/scheduler.ts";
import { EngineError } from "../engine/types.ts";

export interface ErrorBody {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
  [hint: string]: unknown;
}

/** An error the client caused or should see as is. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly hints: Record<string, unknown> = {},
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** 400 naming the offending field. */
export function badRequest(param: string | null, message: string, code: string | null = null) {
  return new ApiError(400, message, param, code);
}

const TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "invalid_request_error",
  404: "invalid_request_error",
  413: "invalid_request_error",
  429: "requests",
  500: "server_error",
  503: "server_error",
};

/** Maps anything thrown to (status, body, extra headers). */
export function toErrorResponse(err: unknown): {
  status: ContentfulStatusCode;
  body: { error: ErrorBody };
  headers: Record<string, string>;
} {
  let e: ApiError;
  if (err instanceof ApiError) e = err;
  else if (err instanceof QueueFullError) {
    e = new ApiError(429, err.message, null, "rate_limit_exceeded", {}, {
      "Retry-After": String(err.retryAfterSeconds),
    });
  } else if (err instanceof ShutdownError) {
    e = new ApiError(503, err.message, null, "shutting_down");
  } else if (err instanceof HTTPException) {
    e = new ApiError(err.status as ContentfulStatusCode, err.message || "HTTP error");
  } else if (err instanceof EngineError) {
    e = new ApiError(500, `The engine failed: ${err.message}`, null, err.code);
  } else {
    console.error("unhandled error:", err);
    e = new ApiError(500, "Internal server error", null, "internal_error");
  }
  const body: ErrorBody = {
    message: e.message,
    type: TYPES[e.status] ?? (e.status >= 500 ? "server_error" : "invalid_request_error"),
    param: e.param,
    code: e.code,
    ...e.hints,
  };
  return { status: e.status, body: { error: body }, headers: e.headers };
}

/** Hono onError handler. */
export function onError(err: unknown, c: Context): Response {
  const { status, body, headers } = toErrorResponse(err);
  for (const [k, v] of Object.entries(headers)) c.header(k, v);
  return c.json(body, status);
}

export function notFound(c: Context): Response {
  return onError(
    new ApiError(404, `Not found: ${c.req.method} ${c.req.path}`, null, "not_found"),
    c,
  );
}
