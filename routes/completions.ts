// POST /v1/completions: validate, submit every choice to the scheduler, then answer with one
// JSON object or an SSE stream of text_completion chunks ending in `data: [DONE]`
// (routes/serving.ts holds what this shares with /v1/chat/completions).

import { Hono } from "hono";
import { startRun, streamRun, validationContext } from "./serving.ts";
import type { AppState } from "./state.ts";
import { validateCompletion } from "./validate.ts";

export function completionsRoutes(state: AppState): Hono {
  const app = new Hono();
  app.post("/v1/completions", async (c) => {
    const { r, req, run } = await startRun(
      c,
      state,
      (body, kvBits, r) => validateCompletion(body, kvBits, validationContext(r)),
    );
    const head = {
      id: run.id,
      object: "text_completion" as const,
      created: run.created,
      model: r.model.id,
    };
    if (req.stream) return streamRun(c, run, head, (choice) => choice);
    const { choices, usage } = await run.result();
    return c.json({ ...head, choices, usage });
  });
  return app;
}
