// Request bodies as JSON. JSON.parse runs on the event loop, and a 27 MiB body of 7M one-element
// arrays held it for 2.3 s (15M token ids: 0.7 s), stalling every other request, /health
// included. So a body above INLINE_JSON_BYTES is parsed on a worker thread, which also refuses
// one beyond MAX_JSON_VALUES values, MAX_JSON_MEMBERS members in an object or MAX_JSON_DEPTH
// levels before it is copied back (receiving that would stall the loop again, or overflow the
// copy's stack); a smaller body parses inline in at most a few milliseconds (the worst, nested
// arrays, ~12 ms per 256 KiB). The worker is started on the first large body and ends after
// IDLE_MS without one, so it holds neither memory nor the process (a live worker keeps Deno
// running) while nobody needs it.

import type { Context } from "hono";
import { WorkerCalls } from "../models/worker_calls.ts";
import { badRequest } from "./errors.ts";

export const INLINE_JSON_BYTES = 256 << 10;
/** Values a request body may hold: 2M token ids, beyond any batch one request should carry. */
export const MAX_JSON_VALUES = 1 << 21;
/** Members an object may have: a logit_bias over a whole 128K vocabulary fits. */
export const MAX_JSON_MEMBERS = 1 << 17;
/** Levels of nesting: the API's deepest is 3 (token-id prompts in a list, in the body). */
export const MAX_JSON_DEPTH = 64;
const LIMITS = {
  maxValues: MAX_JSON_VALUES,
  maxMembers: MAX_JSON_MEMBERS,
  maxDepth: MAX_JSON_DEPTH,
};
const IDLE_MS = 2000;

class JsonParser {
  #calls: WorkerCalls | null = null;
  #idle: ReturnType<typeof setTimeout> | undefined;

  async parse(body: ArrayBuffer): Promise<unknown> {
    clearTimeout(this.#idle);
    // A worker that failed (out of memory on a hostile body, say) has refused the bodies it
    // held and is gone; the next body starts a fresh one.
    this.#calls ??= new WorkerCalls(new URL("./json_worker.ts", import.meta.url), {
      failure: () => badRequest(null, "The request body could not be parsed."),
      onFailure: () => this.#stop(),
    });
    const calls = this.#calls;
    try {
      const { value, error } = await calls.call({ body, limits: LIMITS }, [body]);
      if (error === "invalid") throw notJson();
      if (error === "too_many") throw beyondLimits();
      return value;
    } finally {
      if (calls === this.#calls && calls.pending === 0) {
        clearTimeout(this.#idle);
        this.#idle = setTimeout(() => this.#stop(), IDLE_MS);
      }
    }
  }

  #stop(): void {
    clearTimeout(this.#idle);
    this.#calls?.close(badRequest(null, "The request body could not be parsed."));
    this.#calls = null;
  }
}

const parser = new JsonParser();

function notJson(): Error {
  return badRequest(null, "The request body is not valid JSON.");
}

function beyondLimits(): Error {
  return badRequest(
    null,
    `The request body holds more than ${MAX_JSON_VALUES} JSON values, an object of more than ` +
      `${MAX_JSON_MEMBERS} members or more than ${MAX_JSON_DEPTH} levels of nesting.`,
  );
}

/** The body parsed as JSON, off the event loop when it is large. Bad JSON is a 400. */
export async function parseJsonBody(body: ArrayBuffer): Promise<unknown> {
  if (body.byteLength > INLINE_JSON_BYTES) return await parser.parse(body);
  try {
    return JSON.parse(new TextDecoder().decode(body));
  } catch {
    throw notJson();
  }
}

/** The request's body, which must be a JSON object (a 400 otherwise). */
export async function readJson(c: Context): Promise<Record<string, unknown>> {
  const body = await parseJsonBody(await c.req.arrayBuffer());
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badRequest(null, "The request body must be a JSON object.");
  }
  return body as Record<string, unknown>;
}
