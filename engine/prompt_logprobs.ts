// vLLM's prompt_logprobs on a completion choice: per prompt position, null for the first
// token, then a map token id -> {logprob, rank, decoded_token} holding the prompt's own token
// and the top-N alternatives. rank is the 1-based place in the engine's top list; a prompt
// token outside that list gets rank null (vLLM's Logprob allows it), since the engine ranks
// only the top N.

import type { PositionLogprob } from "./types.ts";

export interface VllmLogprob {
  logprob: number;
  rank: number | null;
  decoded_token: string;
}

export type PromptLogprobs = (Record<string, VllmLogprob> | null)[];

// -inf is not JSON; the legacy logprobs clamp it the same way.
const finite = (x: number) => (Number.isFinite(x) ? x : -9999);

/** `positions[i]` scores `ids[i + 1]`; `topN` of its alternatives are listed. */
export function promptLogprobs(
  ids: readonly number[],
  positions: readonly (PositionLogprob | undefined)[],
  topN: number,
  tokenText: (id: number) => string,
): PromptLogprobs {
  const out: PromptLogprobs = [null];
  for (let i = 1; i < ids.length; i++) {
    const p = positions[i - 1];
    const entry: Record<string, VllmLogprob> = {};
    const top = p?.top.slice(0, topN) ?? [];
    const at = p?.top.findIndex((t) => t.id === ids[i]) ?? -1;
    entry[ids[i]] = {
      logprob: finite(p?.logprob ?? NaN),
      rank: at >= 0 ? at + 1 : null,
      decoded_token: tokenText(ids[i]),
    };
    top.forEach((t, r) => {
      entry[t.id] ??= { logprob: finite(t.logprob), rank: r + 1, decoded_token: tokenText(t.id) };
    });
    out.push(entry);
  }
  return out;
}
