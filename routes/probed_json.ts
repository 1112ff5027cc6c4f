// The non-streaming response of a completion that takes a while: once it has waited PROBE_MS,
// the 200 and its headers go out, then a space every PROBE_MS until the JSON is ready (leading
// whitespace is valid JSON). Why: Deno.serve notices that a client hung up only when it writes
// to the connection (request.signal stays quiet once the request body came in more than one
// read), so a response that writes nothing for minutes kept an abandoned request running to
// max_tokens. A failed write cancels the body stream, and with it the run.

import type { Context } from "hono";
import { toErrorResponse } from "./errors.ts";

/** How often a waiting response probes its connection: a hang-up is seen within ~2 probes. */
export const PROBE_MS = 200;

const SPACE = new Uint8Array([0x20]);

/**
 * `result` as JSON. Settled within PROBE_MS: an ordinary response, errors with their own
 * status. Later: a 200 already sent, so an error becomes the OpenAI error object as the body.
 * `onGone` runs when the client hangs up before the body is sent.
 */
export async function probedJson(
  c: Context,
  result: Promise<unknown>,
  onGone: () => void,
): Promise<Response> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const early = await Promise.race([
    result.then((value) => ({ value })),
    new Promise<null>((r) => timer = setTimeout(() => r(null), PROBE_MS)),
  ]);
  clearTimeout(timer);
  if (early) return c.json(early.value);

  let interval: ReturnType<typeof setInterval> | undefined;
  let open = true;
  const body = new ReadableStream<Uint8Array>({
    start(ctrl) {
      interval = setInterval(() => ctrl.enqueue(SPACE), PROBE_MS);
      result.then((value) => value, (e) => toErrorResponse(e).body).then((value) => {
        clearInterval(interval);
        if (!open) return;
        ctrl.enqueue(new TextEncoder().encode(JSON.stringify(value)));
        ctrl.close();
      });
    },
    cancel() {
      open = false;
      clearInterval(interval);
      onGone();
    },
  });
  return c.body(body, 200, { "Content-Type": "application/json" });
}
