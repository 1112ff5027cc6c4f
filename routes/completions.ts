// POST /v1/completions: validate, submit every choice to the scheduler, then answer with one
// JSON object or an SSE stream of text_completion chunks ending in `data: [DONE]`. The
// client's disconnect (request signal, or the SSE stream's abort) cancels the sequences,
// during prefill as well as decode.

import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { type ChoiceChunk, CompletionRun } from "../engine/completion.ts";
import { encodePrompt } from "../engine/model.ts";
import { ApiError, toErrorResponse } from "./errors.ts";
import type { AppState, ReadyModel } from "./state.ts";
import { readJson } from "./tokenize.ts";
import { parseKvBits, validateCompletion, type ValidationContext } from "./validate.ts";

const PING_MS = 15_000;

// SamplingParams.stopIds holds at most 8 ids (the native nsn_sampling array).
const MAX_STOP_IDS = 8;

function validationContext(r: ReadyModel): ValidationContext {
  return {
    modelIds: [r.model.id, ...r.model.aliases],
    vocabSize: r.model.engine.vocabSize,
    maxModelLen: r.scheduler.opts.maxModelLen,
    encode: (text) => encodePrompt(r.model, text, true),
    eosIds: r.model.eosIds,
    maxStopIds: MAX_STOP_IDS,
    capacityTokens: (k) => r.scheduler.capacityTokens(k),
  };
}

export function completionsRoutes(state: AppState): Hono {
  const app = new Hono();
  app.post("/v1/completions", async (c) => {
    const r = state.requireReady();
    if (state.draining) {
      throw new ApiError(503, "The server is shutting down.", null, "shutting_down");
    }
    const kvBits = parseKvBits(c.req.header("X-KV-Bits"), state.config.defaultKvBits);
    const req = validateCompletion(await readJson(c), kvBits, validationContext(r));
    c.header("X-KV-Bits", String(kvBits));
    const signal = c.req.raw.signal;
    const run = new CompletionRun(
      { model: r.model, scheduler: r.scheduler, tokenText: r.tokenText },
      req,
      signal,
    );
    const head = {
      id: run.id,
      object: "text_completion" as const,
      created: run.created,
      model: r.model.id,
    };

    if (!req.stream) {
      const { choices, usage } = await run.result();
      return c.json({ ...head, choices, usage });
    }

    // The spec: with include_usage every chunk carries usage: null, the last one the totals.
    const usageNull = req.includeUsage ? { usage: null } : {};
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => run.cancel());
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
          const choice: ChoiceChunk = ev.chunk;
          data = { ...head, choices: [choice], ...usageNull };
        } else if (ev.type === "usage") {
          data = { ...head, choices: [], usage: ev.usage };
        } else {
          data = toErrorResponse(ev.error).body; // like vLLM: an error event, then [DONE]
        }
        await stream.writeSSE({ data: JSON.stringify(data) });
      }
      await stream.writeSSE({ data: "[DONE]" });
    });
  });
  return app;
}
