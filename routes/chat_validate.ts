// /v1/chat/completions body -> CompletionRequest. The chat-only fields (messages, boolean
// logprobs + top_logprobs, max_completion_tokens, vLLM's add_generation_prompt and
// chat_template_kwargs) are checked here; the messages are rendered with the model's template,
// and everything else goes through validateCompletion, so both endpoints accept the same
// sampling fields with the same errors. Errors name the chat field in `param`.

import type { CompletionRequest } from "../engine/sampling_params.ts";
import type { KvBits } from "../engine/types.ts";
import type { ChatMessage, ChatTemplate } from "../models/chat_template.ts";
import { ApiError, badRequest } from "./errors.ts";
import { show, validateCompletion, type ValidationContext } from "./validate.ts";
import { type Body, isObject } from "./validate_fields.ts";

/** A content part list -> text; only text parts exist here (no vision or audio models). */
function contentText(content: unknown[], param: string): string {
  const texts = content.map((part, j) => {
    const where = `${param}[${j}]`;
    if (!isObject(part)) throw badRequest(where, `'${where}' must be an object.`);
    if (part.type !== "text") {
      throw badRequest(
        `${where}.type`,
        `Unsupported content part type ${show(part.type)}: this server takes only "text".`,
      );
    }
    if (typeof part.text !== "string") {
      throw badRequest(`${where}.text`, `'${where}.text' must be a string.`);
    }
    return part.text;
  });
  // Like vLLM for templates that expect string content: the parts joined by newlines.
  return texts.join("\n");
}

/** Checks each message; the template sees role, content as text, and the other fields as is. */
export function parseMessages(v: unknown): ChatMessage[] {
  if (v === undefined || v === null) throw badRequest("messages", "'messages' is required.");
  if (!Array.isArray(v)) throw badRequest("messages", "'messages' must be an array.");
  if (v.length === 0) throw badRequest("messages", "'messages' must not be empty.");
  return v.map((m, i) => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw badRequest(at, `'${at}' must be an object.`);
    if (typeof m.role !== "string" || m.role === "") {
      throw badRequest(
        `${at}.role`,
        `'${at}.role' must be a non-empty string, got ${show(m.role)}.`,
      );
    }
    const c = m.content;
    let content: string | null;
    if (typeof c === "string") content = c;
    else if (Array.isArray(c)) content = contentText(c, `${at}.content`);
    else if (c === null && m.role === "assistant") content = null; // OpenAI: with tool_calls
    else {
      throw badRequest(
        `${at}.content`,
        `'${at}.content' must be a string or an array of text parts, got ${show(c)}.`,
      );
    }
    return { ...m, role: m.role, content };
  });
}

function unsupported(b: Body): void {
  for (const field of ["return_token_ids", "prompt_logprobs"]) {
    if (b[field] !== undefined && b[field] !== null && b[field] !== false) {
      throw badRequest(
        field,
        `'${field}' is supported on /v1/completions only, not on chat completions.`,
      );
    }
  }
  if (Array.isArray(b.tools) && b.tools.length > 0) {
    throw badRequest("tools", "'tools' (function calling) is not supported by this server.");
  }
  const rf = b.response_format;
  if (rf !== undefined && rf !== null && !(isObject(rf) && rf.type === "text")) {
    throw badRequest("response_format", 'Only response_format {"type": "text"} is supported.');
  }
}

/** The same error with the chat field's name in `param` (the completions name inside). */
function renamed(e: unknown, names: Record<string, string>): unknown {
  if (!(e instanceof ApiError) || e.param === null || !(e.param in names)) return e;
  return new ApiError(e.status, e.message, names[e.param], e.code, e.hints, e.headers);
}

/** `ctx.encode` must not add BOS in front of a rendering that starts with it (chat.ts). */
export async function validateChat(
  body: unknown,
  kvBits: KvBits,
  ctx: ValidationContext,
  template: ChatTemplate,
): Promise<CompletionRequest> {
  if (!isObject(body)) throw badRequest(null, "The request body must be a JSON object.");
  const b = body;
  unsupported(b);
  const messages = parseMessages(b.messages);
  const present = (k: string) => b[k] !== undefined && b[k] !== null;
  if (present("logprobs") && typeof b.logprobs !== "boolean") {
    throw badRequest("logprobs", `'logprobs' must be a boolean, got ${show(b.logprobs)}.`);
  }
  const top = b.top_logprobs;
  if (present("top_logprobs")) {
    if (typeof top !== "number" || !Number.isInteger(top) || top < 0 || top > 20) {
      throw badRequest("top_logprobs", `'top_logprobs' must be an integer in [0, 20].`);
    }
    if (b.logprobs !== true) {
      throw badRequest("top_logprobs", "'top_logprobs' needs 'logprobs' set to true.");
    }
  }
  if (present("add_generation_prompt") && typeof b.add_generation_prompt !== "boolean") {
    throw badRequest("add_generation_prompt", "'add_generation_prompt' must be a boolean.");
  }
  if (present("chat_template_kwargs") && !isObject(b.chat_template_kwargs)) {
    throw badRequest("chat_template_kwargs", "'chat_template_kwargs' must be an object.");
  }
  let prompt: string;
  try {
    prompt = template.render(
      messages,
      b.add_generation_prompt !== false,
      (b.chat_template_kwargs ?? {}) as Body,
    );
  } catch (e) {
    // What the template raises (e.g. roles that do not alternate) is the request's fault.
    throw badRequest("messages", `The chat template failed: ${(e as Error).message}`);
  }
  const maxKey = present("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  // The completions body the chat one means: no echo, no best_of, no suffix in chat.
  const completion: Body = {
    ...b,
    prompt,
    max_tokens: b[maxKey],
    logprobs: b.logprobs === true ? (top ?? 0) : null,
    echo: undefined,
    best_of: undefined,
    suffix: undefined,
  };
  try {
    return await validateCompletion(completion, kvBits, ctx);
  } catch (e) {
    throw renamed(e, { prompt: "messages", max_tokens: maxKey, logprobs: "top_logprobs" });
  }
}
