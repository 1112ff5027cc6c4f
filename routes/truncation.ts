// vLLM's truncate_prompt_tokens and truncation_side: a prompt longer than k tokens keeps its
// last k (side "left", the default) or its first k ("right"); -1 means the model's context.

import { badRequest } from "./errors.ts";
import { type Body, present } from "./validate_fields.ts";

export interface Truncation {
  tokens: number;
  side: "left" | "right";
}

/** The truncation a request asks for, or null (checked: -1 or 1..maxModelLen). */
export function truncationOf(b: Body, maxModelLen: number): Truncation | null {
  const side = present(b, "truncation_side") ? b.truncation_side : "left";
  if (side !== "left" && side !== "right") {
    throw badRequest("truncation_side", `'truncation_side' must be "left" or "right".`);
  }
  if (!present(b, "truncate_prompt_tokens")) return null;
  const k = b.truncate_prompt_tokens;
  if (typeof k !== "number" || !Number.isInteger(k) || k === 0 || k < -1 || k > maxModelLen) {
    throw badRequest(
      "truncate_prompt_tokens",
      `'truncate_prompt_tokens' must be -1 (the context, ${maxModelLen}) or an integer in ` +
        `[1, ${maxModelLen}].`,
    );
  }
  return { tokens: k === -1 ? maxModelLen : k, side };
}

export function truncate(ids: number[], t: Truncation): number[] {
  if (ids.length <= t.tokens) return ids;
  return t.side === "left" ? ids.slice(ids.length - t.tokens) : ids.slice(0, t.tokens);
}
