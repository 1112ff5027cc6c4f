// The legacy completions logprobs object: four parallel arrays, one entry per returned token.
// top_logprobs holds the top-N of the raw distribution plus the chosen token when it is not
// among them (so up to N+1 entries); -inf becomes -9999.0 like vLLM, since JSON has no
// infinities; an unknown logprob (the first prompt token) is null.

import type { TopLogprob } from "./types.ts";

export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

export function emptyLogprobs(): LegacyLogprobs {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}

export function clampLogprob(x: number): number | null {
  if (Number.isNaN(x)) return null;
  return x === -Infinity ? -9999 : x;
}

/** One entry; `top` null means no distribution is known (the first prompt token). */
export interface LogprobEntry {
  id: number;
  logprob: number; // NaN = unknown
  top: TopLogprob[] | null;
  offset: number; // code points into the returned text
}

/**
 * Builds one response's logprobs object of type L, piece by piece (each streamed chunk gets a
 * piece; the whole choice is the concatenation). /v1/completions writes the legacy shape,
 * /v1/chat/completions the chat shape (chat_logprobs.ts).
 */
export interface LogprobsFormat<L> {
  empty(): L;
  append(into: L, e: LogprobEntry): void;
  concat(a: L, b: L): void;
}

export class LogprobsWriter implements LogprobsFormat<LegacyLogprobs> {
  #tokenText: (id: number) => string;
  #topN: number;

  constructor(tokenText: (id: number) => string, topN: number) {
    this.#tokenText = tokenText;
    this.#topN = topN;
  }

  empty(): LegacyLogprobs {
    return emptyLogprobs();
  }

  concat(a: LegacyLogprobs, b: LegacyLogprobs): void {
    concatLogprobs(a, b);
  }

  append(into: LegacyLogprobs, e: LogprobEntry): void {
    const text = this.#tokenText(e.id);
    into.tokens.push(text);
    into.token_logprobs.push(e.top === null ? null : clampLogprob(e.logprob));
    into.text_offset.push(e.offset);
    if (e.top === null) {
      into.top_logprobs.push(null);
      return;
    }
    // A null prototype: a token spelled "__proto__" must stay an ordinary key.
    const top: Record<string, number> = Object.create(null);
    for (const t of e.top.slice(0, this.#topN)) {
      const key = this.#tokenText(t.id);
      if (!(key in top)) top[key] = clampLogprob(t.logprob) ?? -9999;
    }
    if (!(text in top)) top[text] = clampLogprob(e.logprob) ?? -9999;
    into.top_logprobs.push(top);
  }
}

/** Concatenates `b` onto `a` (streamed pieces into a whole). */
export function concatLogprobs(a: LegacyLogprobs, b: LegacyLogprobs): void {
  a.tokens.push(...b.tokens);
  a.token_logprobs.push(...b.token_logprobs);
  a.top_logprobs.push(...b.top_logprobs);
  a.text_offset.push(...b.text_offset);
}
