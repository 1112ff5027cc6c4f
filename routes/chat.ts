// POST /v1/chat/completions: the messages are rendered with the model's chat template into one
// prompt, which then runs exactly like a /v1/completions prompt (same validation, scheduler,
// stop strings, X-KV-Bits); only the response shapes differ: chat.completion with
// message {role, content}, or chat.completion.chunk events with delta {role, content}.

import { Hono } from "hono";
import { ChatLogprobsWriter } from "../engine/chat_logprobs.ts";
import type { ChoiceChunk } from "../engine/completion.ts";
import { encodePrompt } from "../engine/model.ts";
import type { ChatTemplate } from "../models/chat_template.ts";
import { validateChat } from "./chat_validate.ts";
import { ApiError } from "./errors.ts";
import { startRun, streamRun, validationContext } from "./serving.ts";
import type { AppState, ReadyModel } from "./state.ts";

function requireTemplate(r: ReadyModel): ChatTemplate {
  const t = r.model.chatTemplate;
  if (t) return t;
  // vLLM's wording: the model has no template and none was given.
  throw new ApiError(
    400,
    `The model \`${r.model.id}\` has no chat template (tokenizer_config.json chat_template or ` +
      `chat_template.jinja), so /v1/chat/completions cannot format its messages. Use ` +
      `/v1/completions instead.`,
    null,
    "chat_template_missing",
  );
}

/** Chunk -> chat choice: text becomes delta content; the last one may have no text. */
function deltaChoice(ch: ChoiceChunk) {
  const delta = ch.text !== "" || ch.finish_reason === null ? { content: ch.text } : {};
  return { index: ch.index, delta, logprobs: ch.logprobs, finish_reason: ch.finish_reason };
}

export function chatRoutes(state: AppState): Hono {
  const app = new Hono();
  app.post("/v1/chat/completions", async (c) => {
    const { r, req, run } = await startRun(c, state, (body, kvBits, r) => {
      const template = requireTemplate(r);
      const bos = template.bosToken;
      const ctx = {
        ...validationContext(r),
        // The template already wrote BOS when it starts with its text: no second one.
        encode: (text: string) => encodePrompt(r.model, text, !(bos && text.startsWith(bos))),
      };
      return validateChat(body, kvBits, ctx, template);
    }, { logprobsFormat: (tokenText, n) => new ChatLogprobsWriter(tokenText, n) });
    const head = {
      id: `chat${run.id}`, // chatcmpl-..., as OpenAI and vLLM name them
      created: run.created,
      model: r.model.id,
    };
    if (req.stream) {
      // Like vLLM: every choice first gets its role, with empty content, before any text.
      const roles = Array.from({ length: req.n }, (_, index) => ({
        index,
        delta: { role: "assistant", content: "" },
        logprobs: null,
        finish_reason: null,
      }));
      const chunkHead = { ...head, object: "chat.completion.chunk" };
      return streamRun(c, run, chunkHead, deltaChoice, roles);
    }
    const { choices, usage } = await run.result();
    return c.json({
      id: head.id,
      object: "chat.completion",
      created: head.created,
      model: head.model,
      choices: choices.map((ch) => ({
        index: ch.index,
        message: { role: "assistant", content: ch.text },
        logprobs: ch.logprobs,
        finish_reason: ch.finish_reason,
      })),
      usage,
    });
  });
  return app;
}
