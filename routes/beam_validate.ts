// vLLM's beam-search fields: use_beam_search (width = best_of when given, else n; the n best
// beams are returned), length_penalty and early_stopping. Beam search is greedy and ranks
// beams by raw logprobs, so what would change the distribution or cut the text is refused
// with a 400 naming the field, as is streaming (the beams are known only at the end).

import { type BeamOptions, MAX_BEAM_WIDTH } from "../engine/beam_search.ts";
import type { CompletionRequest } from "../engine/sampling_params.ts";
import { badRequest } from "./errors.ts";
import { type Body, boolean, number, present } from "./validate_fields.ts";

/** Fields beam search cannot combine with, and whether the request uses them. */
const EXCLUDED: [string, (r: CompletionRequest, b: Body) => boolean][] = [
  ["stream", (r) => r.stream],
  ["temperature", (_, b) => present(b, "temperature") && b.temperature !== 0],
  ["stop", (r) => r.stop.length > 0],
  ["prompt_logprobs", (r) => r.promptLogprobs !== null],
  ["echo", (r) => r.echo && r.logprobs !== null],
  ["logit_bias", (r) => r.logitBias.size > 0],
  ["min_tokens", (r) => r.minTokens > 0],
  ["presence_penalty", (r) => r.presencePenalty !== 0],
  ["frequency_penalty", (r) => r.frequencyPenalty !== 0],
  ["repetition_penalty", (r) => r.repetitionPenalty !== 1],
];

const WHY: Record<string, string> = {
  stream: "beam search cannot be streamed (the beams are only known at the end)",
  temperature: "beam search is greedy: temperature must be 0",
  echo: "beam search does not compute prompt logprobs (echo with logprobs)",
};

/**
 * The beam options of `b` (null without use_beam_search), checked against the rest of the
 * request. With beam search, req.bestOf becomes n: the search returns n choices per prompt.
 */
export function beamOf(b: Body, req: CompletionRequest): BeamOptions | null {
  const on = boolean(b, "use_beam_search", false);
  const lengthPenalty = number(b, "length_penalty", 1, -10, 10);
  const earlyStopping = present(b, "early_stopping") && b.early_stopping !== "never"
    ? boolean(b, "early_stopping", false)
    : false;
  if (!on) {
    if (lengthPenalty !== 1 || earlyStopping) {
      const field = lengthPenalty !== 1 ? "length_penalty" : "early_stopping";
      throw badRequest(field, `'${field}' applies only with 'use_beam_search': true.`);
    }
    return null;
  }
  for (const [field, uses] of EXCLUDED) {
    if (!uses(req, b)) continue;
    const why = WHY[field] ?? `beam search ranks beams by the model's raw logprobs`;
    throw badRequest(field, `'${field}' cannot be used with 'use_beam_search': ${why}.`);
  }
  const width = req.bestOf;
  if (width > MAX_BEAM_WIDTH) {
    const field = present(b, "best_of") ? "best_of" : "n";
    throw badRequest(
      field,
      `The beam width ('${field}' = ${width}) is at most ${MAX_BEAM_WIDTH} with beam search.`,
    );
  }
  req.bestOf = req.n;
  return { width, lengthPenalty, earlyStopping };
}
