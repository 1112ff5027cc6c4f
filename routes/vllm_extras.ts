// vLLM's request extras that this server cannot honour yet. Clients (RL frameworks,
// evaluators) send them expecting an effect, so each is refused with a 400 naming the field
// rather than ignored; a field sent at its no-op value (false, null, the default) is accepted,
// as are unknown fields with no effect, as vLLM does.

import { ApiError } from "./errors.ts";
import type { Body } from "./validate_fields.ts";

/** Field -> whether the value asks for something, and why we cannot do it. */
const UNHONOURED: Record<string, { asks: (v: unknown) => boolean; why: string }> = {
  guided_json: { asks: () => true, why: "guided decoding is not supported" },
  guided_regex: { asks: () => true, why: "guided decoding is not supported" },
  guided_choice: { asks: () => true, why: "guided decoding is not supported" },
  guided_grammar: { asks: () => true, why: "guided decoding is not supported" },
  structured_outputs: { asks: () => true, why: "guided decoding is not supported" },
};

function refuse(param: string, why: string): ApiError {
  return new ApiError(400, `'${param}' is not supported by this server: ${why}.`, param);
}

/** Throws a 400 naming the first vLLM extra in `b` that asks for what we cannot do. */
export function refuseUnhonoured(b: Body): void {
  for (const [field, { asks, why }] of Object.entries(UNHONOURED)) {
    const v = b[field];
    if (v !== undefined && v !== null && asks(v)) throw refuse(field, why);
  }
}

/** prompt_logprobs: 0..20 alternatives per prompt position; -1 (the whole vocabulary) is refused. */
export function promptLogprobsOf(b: Body): number | null {
  const v = b.prompt_logprobs;
  if (v === undefined || v === null) return null;
  if (v === -1) {
    throw refuse("prompt_logprobs", "-1 (the whole vocabulary) is too many; ask 0 to 20");
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 20) {
    throw new ApiError(400, "'prompt_logprobs' must be an integer in [0, 20].", "prompt_logprobs");
  }
  return v;
}
