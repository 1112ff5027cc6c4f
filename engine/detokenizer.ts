// Text helpers of the completion layer around models/tokenizer.ts's IncrementalDetokenizer:
// per-token pieces of an echoed prompt, code-point lengths (the unit of text_offset) and a
// memoized token spelling for logprobs.

import { IncrementalDetokenizer, type TextTokenizer } from "../models/tokenizer.ts";

export { IncrementalDetokenizer };

/** Per-token text of a whole id list (echoed prompts): the pieces concatenate to the text. */
export function tokenPieces(
  tok: TextTokenizer,
  ids: readonly number[],
  skipSpecial = true,
): string[] {
  const d = new IncrementalDetokenizer(tok, [], skipSpecial);
  const pieces = ids.map((id) => d.push(id));
  const rest = d.flush();
  if (rest && pieces.length > 0) pieces[pieces.length - 1] += rest;
  return pieces;
}

/** Length in Unicode code points: clients index Python strings, not UTF-16 units. */
export function codePoints(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length - 1; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) n--, i++;
    }
  }
  return n;
}

/** tokenizer.tokenText, memoized: logprobs spell every top-N candidate of every token. */
export function tokenTextFn(tok: TextTokenizer): (id: number) => string {
  const cache = new Map<number, string>();
  return (id) => {
    let s = cache.get(id);
    if (s === undefined) {
      s = tok.tokenText(id);
      if (cache.size > 1 << 17) cache.clear();
      cache.set(id, s);
    }
    return s;
  };
}
