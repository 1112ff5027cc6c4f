// The prompt field: its four shapes (string, string[], int[], int[][]) -> token id lists, with
// text tokenization bounded by the context length rather than by the body size, and the text
// of one request bounded as a whole (MAX_PROMPT_CHARS) so that it cannot keep the tokenizer
// worker busy for long.

import { ApiError, badRequest } from "./errors.ts";
import type { ValidationContext } from "./validate.ts";
import { type Body, tokenId } from "./validate_fields.ts";

/**
 * Tokenizes a text prompt, but never a huge one whole: a prefix that already exceeds the
 * context proves the prompt too long, so the work stays bounded by the context length and
 * not by the body size (up to 32 MiB of text).
 */
async function encodeBounded(text: string, ctx: ValidationContext): Promise<number[]> {
  for (let len = ctx.maxModelLen * 16; len < text.length; len *= 2) {
    const n = (await ctx.encode(text.slice(0, len))).length;
    if (n > ctx.maxModelLen + 1) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${ctx.maxModelLen} tokens. However, the ` +
          `prompt alone is longer than ${n - 1} tokens (${text.length} characters). Please ` +
          `reduce the length of the prompt.`,
        "prompt",
        "context_length_exceeded",
        { n_ctx: ctx.maxModelLen },
      );
    }
  }
  return ctx.encode(text);
}

/** Characters of text prompt in one request, all prompts together. */
export const MAX_PROMPT_CHARS = 4 << 20;

function checkTotalChars(texts: string[]): void {
  const total = texts.reduce((a, t) => a + t.length, 0);
  if (total > MAX_PROMPT_CHARS) {
    throw badRequest(
      "prompt",
      `The prompts of one request hold at most ${MAX_PROMPT_CHARS} characters in all; this ` +
        `one has ${total}. Split it into several requests.`,
    );
  }
}

/** The four prompt shapes -> token id lists (+ the original strings, for echo). */
export async function prompts(
  b: Body,
  ctx: ValidationContext,
  truncated = false, // a prompt that will be truncated may be longer than the context
): Promise<{ ids: number[][]; texts: (string | null)[] }> {
  const p = b.prompt;
  if (p === undefined || p === null) throw badRequest("prompt", "'prompt' is required.");
  const enc = (text: string) => truncated ? ctx.encode(text) : encodeBounded(text, ctx);
  let ids: number[][];
  let texts: (string | null)[];
  if (typeof p === "string") {
    checkTotalChars([p]);
    ids = [await enc(p)];
    texts = [p];
  } else if (Array.isArray(p) && p.length > 0) {
    if (p.every((x) => typeof x === "string")) {
      checkTotalChars(p as string[]);
      // One at a time: other requests' prompts queue in the worker between these.
      ids = [];
      for (const text of p as string[]) ids.push(await enc(text));
      texts = p as string[];
    } else if (p.every((x) => typeof x === "number")) {
      ids = [p.map((x) => tokenId(x, "prompt", ctx.vocabSize))];
      texts = [null];
    } else if (p.every((x) => Array.isArray(x))) {
      ids = (p as unknown[][]).map((inner) =>
        inner.map((x) => tokenId(x, "prompt", ctx.vocabSize))
      );
      texts = ids.map(() => null);
    } else {
      throw badRequest(
        "prompt",
        "'prompt' must be a string, an array of strings, an array of token ids, or an array " +
          "of token id arrays.",
      );
    }
  } else {
    throw badRequest(
      "prompt",
      Array.isArray(p) ? "'prompt' must not be empty." : "'prompt' must be a string or an array.",
    );
  }
  if (ids.some((x) => x.length === 0)) throw badRequest("prompt", "A prompt is empty.");
  return { ids, texts };
}
