// Request bodies as JSON. JSON.parse runs on the event loop, and a 27 MiB body of 7M one-element
// arrays held it for 2.3 s (15M token ids: 0.7 s), stalling every other request, /health
// included. So a body above INLINE_JSON_BYTES is parsed on a worker thread, which also refuses
// one beyond MAX_JSON_VALUES values, MAX_JSON_MEMBERS members in an object or MAX_JSON_DEPTH
// levels before it is copied back (receiving that would stall the loop again, or overflow the
// copy's stack); a smaller body parses
// inline in at most a few milliseconds (the worst, nested arrays, ~12 ms per 256 KiB).
// The worker is started on the first large body and ends after IDLE_MS without one, so it holds
// neither memory nor the process (a live worker keeps Deno running) while nobody needs it.

import type { Context } from "hono";
import { badRequest } from "./errors.ts";

export const INLINE_JSON_BYTES = 256 << 10;
/** Values a request body may hold: 2M token ids, beyond any batch one request should carry. */
export const MAX_JSON_VALUES = 1 << 21;
/** Members an object may have: a logit_bias over a whole 128K vocabulary fits. */
export const MAX_JSON_MEMBERS = 1 << 17;
/** Levels of nesting: the API's deepest is 3 (token-id prompts in a list, in the body). */
export const MAX_JSON_DEPTH = 64;
const IDLE_MS = 2000;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

class JsonWorker {
  #worker: Worker | null = null;
  #pending = new Map<number, Pending>();
  #nextId = 0;
  #idle: ReturnType<typeof setTimeout> | undefined;

  parse(body: ArrayBuffer): Promise<unknown> {
    clearTimeout(this.#idle);
    const w = this.#worker ?? this.#start();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      const limits = {
        maxValues: MAX_JSON_VALUES,
        maxMembers: MAX_JSON_MEMBERS,
        maxDepth: MAX_JSON_DEPTH,
      };
      w.postMessage({ id, body, limits }, [body]);
    });
  }

  #start(): Worker {
    const w = new Worker(new URL("./json_worker.ts", import.meta.url), { type: "module" });
    w.onmessage = (e: MessageEvent) => {
      const { id, value, error } = e.data;
      const p = this.#pending.get(id);
      this.#pending.delete(id);
      if (error === "invalid") p?.reject(notJson());
      else if (error === "too_many") p?.reject(tooManyValues());
      else p?.resolve(value);
      this.#maybeStop();
    };
    w.onerror = (e: ErrorEvent) => {
      // Out of memory on a hostile body, say: every body it held is refused, the next starts
      // a fresh worker.
      e.preventDefault();
      this.#stop();
    };
    this.#worker = w;
    return w;
  }

  #maybeStop(): void {
    if (this.#pending.size > 0) return;
    this.#idle = setTimeout(() => this.#stop(), IDLE_MS);
  }

  #stop(): void {
    clearTimeout(this.#idle);
    this.#worker?.terminate();
    this.#worker = null;
    const err = badRequest(null, "The request body could not be parsed.");
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

const worker = new JsonWorker();

function notJson(): Error {
  return badRequest(null, "The request body is not valid JSON.");
}

function tooManyValues(): Error {
  return badRequest(
    null,
    `The request body holds more than ${MAX_JSON_VALUES} JSON values, an object of more than ` +
      `${MAX_JSON_MEMBERS} members or more than ${MAX_JSON_DEPTH} levels of nesting.`,
  );
}

/** The body parsed as JSON, off the event loop when it is large. Bad JSON is a 400. */
export async function parseJsonBody(body: ArrayBuffer): Promise<unknown> {
  if (body.byteLength > INLINE_JSON_BYTES) return await worker.parse(body);
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
