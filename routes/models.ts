// GET /v1/models and /v1/models/{id}: OpenAI's list shape plus vLLM's max_model_len, the KV
// precisions a request may pick with X-KV-Bits (and how many tokens each fits) and whether
// automatic prefix caching is on.

import { Hono } from "hono";
import { KV_BITS } from "../engine/types.ts";
import { ApiError } from "./errors.ts";
import type { AppState, ReadyModel } from "./state.ts";

function card(r: ReadyModel) {
  const s = r.scheduler;
  return {
    id: r.model.id,
    object: "model",
    created: r.model.created,
    owned_by: "nsn",
    root: r.model.id,
    parent: null,
    max_model_len: s.opts.maxModelLen,
    kv_bits: [...KV_BITS],
    kv_cache_dtypes: KV_BITS.map((k) => (k === 16 ? "fp16" : `nsn${k}`)),
    kv_capacity_tokens: Object.fromEntries(KV_BITS.map((k) => [k, s.capacityTokens(k)])),
    prefix_caching: s.opts.prefixCaching,
  };
}

export function modelsRoutes(state: AppState): Hono {
  const app = new Hono();
  app.get("/v1/models", (c) => c.json({ object: "list", data: [card(state.requireReady())] }));
  app.get("/v1/models/:model{.+}", (c) => {
    const r = state.requireReady();
    const id = c.req.param("model");
    if (id !== r.model.id && !r.model.aliases.includes(id)) {
      throw new ApiError(404, `The model \`${id}\` does not exist.`, "model", "model_not_found");
    }
    return c.json(card(r));
  });
  return app;
}
