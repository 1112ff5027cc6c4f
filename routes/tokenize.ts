// /tokenize, /detokenize and /tokenizer_info in vLLM's shapes, which lm-evaluation-harness
// detects to use the server as a remote tokenizer.

import { Hono } from "hono";
import { encodePrompt } from "../engine/model.ts";
import { badRequest } from "./errors.ts";
import { readJson } from "./json_body.ts";
import type { AppState } from "./state.ts";

/** Characters one /tokenize prompt may have (~1 s of tokenizer work). */
export const MAX_TOKENIZE_CHARS = 2 << 20;

export function tokenizeRoutes(state: AppState): Hono {
  const app = new Hono();
  app.post("/tokenize", async (c) => {
    const r = state.requireReady();
    const b = await readJson(c);
    if (typeof b.prompt !== "string") throw badRequest("prompt", "'prompt' must be a string.");
    if (b.prompt.length > MAX_TOKENIZE_CHARS) {
      throw badRequest(
        "prompt",
        `'prompt' has ${b.prompt.length} characters; /tokenize takes at most ` +
          `${MAX_TOKENIZE_CHARS}. Split the text.`,
      );
    }
    const special = b.add_special_tokens ?? true;
    if (typeof special !== "boolean") {
      throw badRequest("add_special_tokens", "'add_special_tokens' must be a boolean.");
    }
    const tokens = await encodePrompt(r.model, b.prompt, special);
    const out: Record<string, unknown> = {
      count: tokens.length,
      max_model_len: r.scheduler.opts.maxModelLen,
      tokens,
    };
    // vLLM's shape: the field is always there, null unless strings were asked for.
    out.token_strs = b.return_token_strs === true ? tokens.map(r.tokenText) : null;
    return c.json(out);
  });
  app.post("/detokenize", async (c) => {
    const r = state.requireReady();
    const b = await readJson(c);
    const vocab = r.model.engine.vocabSize;
    const ok = Array.isArray(b.tokens) &&
      b.tokens.every((t) => Number.isInteger(t) && t >= 0 && t < vocab);
    if (!ok) {
      throw badRequest("tokens", `'tokens' must be an array of token ids in [0, ${vocab}).`);
    }
    // Special tokens stay in the text, as vLLM's /detokenize writes them.
    return c.json({ prompt: r.model.tokenizer.decode(b.tokens as number[], false) });
  });
  app.get("/tokenizer_info", (c) => {
    const r = state.requireReady();
    const m = r.model;
    return c.json({
      tokenizer_class: "PreTrainedTokenizerFast",
      bos_token: m.bosId === null ? null : r.tokenText(m.bosId),
      eos_token: m.eosIds.length > 0 ? r.tokenText(m.eosIds[0]) : null,
      pad_token: null,
      chat_template: null,
      model_max_length: r.scheduler.opts.maxModelLen,
      vocab_size: m.engine.vocabSize,
    });
  });
  return app;
}
