// What /v1/completions and /v1/chat/completions share: admission (ready, not draining,
// X-KV-Bits), submitting a validated request to the scheduler, and the SSE loop (keep-alive
// pings, error event, `data: [DONE]`). Each route only says how its body validates and how its
// chunks look.

import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { type ChoiceChunk, type CompletionDeps, CompletionRun } from "../engine/completion.ts";
import { encodePrompt } from "../engine/model.ts";
import { requestLine } from "../engine/stats_log.ts";
import type { CompletionRequest } from "../engine/sampling_params.ts";
import type { KvBits } from "../engine/types.ts";
import { ApiError, toErrorResponse } from "./errors.ts";
import { requestId } from "./protocol.ts";
import type { AppState, ReadyModel } from "./state.ts";
import { readJson } from "./json_body.ts";
import { parseKvBits, type ValidationContext } from "./validate.ts";

const PING_MS = 15_000;

// SamplingParams.stopIds holds at most 8 ids (the native nsn_sampling array).
const MAX_STOP_IDS = 8;

export function validationContext(r: ReadyModel): ValidationContext {
  return {
    modelIds: [r.model.id, ...r.model.aliases],
    vocabSize: r.model.engine.vocabSize,
    maxModelLen: r.scheduler.opts.maxModelLen,
    encode: (text) => encodePrompt(r.model, text, true),
    eosIds: r.model.eosIds,
    maxStopIds: MAX_STOP_IDS,
    capacityTokens: (k) => r.scheduler.capacityTokens(k),
    defaultSeed: r.nextSeed,
  };
}

export type Validator = (
  body: unknown,
  kvBits: KvBits,
  r: ReadyModel,
) => Promise<CompletionRequest>;

/**
 * Validates the body and submits every choice. The client's disconnect (request signal, or
 * the SSE stream's abort) cancels the sequences, during prefill as well as decode.
 */
export async function startRun(
  c: Context,
  state: AppState,
  validate: Validator,
  deps: Pick<CompletionDeps, "logprobsFormat"> = {},
): Promise<{ r: ReadyModel; req: CompletionRequest; run: CompletionRun }> {
  const r = state.requireReady();
  if (state.draining) {
    throw new ApiError(503, "The server is shutting down.", null, "shutting_down");
  }
  const kvBits = parseKvBits(c.req.header("X-KV-Bits"), state.config.defaultKvBits);
  const req = await validate(await readJson(c), kvBits, r);
  c.header("X-KV-Bits", String(kvBits));
  const path = c.req.path;
  const run = new CompletionRun(
    {
      model: r.model,
      scheduler: r.scheduler,
      tokenText: r.tokenText,
      requestId: requestId(c),
      onDone: (run) => state.log.info(requestLine(run, path)),
      ...deps,
    },
    req,
    c.req.raw.signal,
  );
  return { r, req, run };
}

/**
 * The SSE response: `prelude` events first, then one event per chunk (`chunk` builds its
 * object), the usage chunk when asked, then `data: [DONE]`. `head` (id, object, created,
 * model) goes into every event.
 */
export function streamRun(
  c: Context,
  run: CompletionRun,
  head: Record<string, unknown>,
  chunk: (choice: ChoiceChunk) => unknown,
  prelude: unknown[] = [],
): Response {
  // The spec: with include_usage every chunk carries usage: null, the last one the totals.
  const usageNull = run.req.includeUsage ? { usage: null } : {};
  return streamSSE(c, async (stream) => {
    stream.onAbort(() => run.cancel());
    for (const choice of prelude) {
      await stream.writeSSE({ data: JSON.stringify({ ...head, choices: [choice], ...usageNull }) });
    }
    const events = run.events()[Symbol.asyncIterator]();
    let next = events.next();
    for (;;) {
      // A comment line now and then keeps proxies from timing out a long queue or prefill.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ping = new Promise<"ping">((r) => timer = setTimeout(() => r("ping"), PING_MS));
      const got = await Promise.race([next, ping]);
      clearTimeout(timer);
      if (got === "ping") {
        await stream.write(": ping\n\n");
        continue;
      }
      if (got.done) break;
      next = events.next();
      const ev = got.value;
      let data: unknown;
      if (ev.type === "chunk") {
        const usage = ev.usage ? { usage: ev.usage } : usageNull;
        data = { ...head, choices: [chunk(ev.chunk)], ...usage };
      } else if (ev.type === "usage") {
        data = { ...head, choices: [], usage: ev.usage };
      } else {
        data = toErrorResponse(ev.error).body; // like vLLM: an error event, then [DONE]
      }
      await stream.writeSSE({ data: JSON.stringify(data) });
    }
    await stream.writeSSE({ data: "[DONE]" });
  });
}
