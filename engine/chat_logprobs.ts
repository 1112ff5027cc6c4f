// The chat completions logprobs object: {content: [{token, logprob, bytes, top_logprobs}]}.
// Unlike the legacy shape, top_logprobs is an ordered list of exactly the top-N (the chosen
// token is not added when it falls outside them), and `bytes` gives the token's raw UTF-8, so
// a token that is only part of a character ("bytes:\xe2\x80") still says which bytes it holds.

import { clampLogprob, type LogprobEntry, type LogprobsFormat } from "./logprobs.ts";

export interface ChatTopLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
}

export interface ChatLogprobEntry extends ChatTopLogprob {
  top_logprobs: ChatTopLogprob[];
}

export interface ChatLogprobs {
  content: ChatLogprobEntry[];
}

/** The bytes of a token as tokenText() spells it: its UTF-8, or the escaped partial bytes. */
export function tokenBytes(text: string): number[] {
  const m = /^bytes:((?:\\x[0-9a-fA-F]{2})+)$/.exec(text);
  if (m) return m[1].split("\\x").slice(1).map((h) => parseInt(h, 16));
  return [...new TextEncoder().encode(text)];
}

export class ChatLogprobsWriter implements LogprobsFormat<ChatLogprobs> {
  constructor(readonly tokenText: (id: number) => string, readonly topN: number) {}

  empty(): ChatLogprobs {
    return { content: [] };
  }

  append(into: ChatLogprobs, e: LogprobEntry): void {
    // JSON has no -inf and chat logprobs are never null: -9999 like vLLM.
    const one = (id: number, logprob: number): ChatTopLogprob => {
      const token = this.tokenText(id);
      return { token, logprob: clampLogprob(logprob) ?? -9999, bytes: tokenBytes(token) };
    };
    into.content.push({
      ...one(e.id, e.logprob),
      top_logprobs: (e.top ?? []).slice(0, this.topN).map((t) => one(t.id, t.logprob)),
    });
  }

  concat(a: ChatLogprobs, b: ChatLogprobs): void {
    a.content.push(...b.content);
  }
}
