/** Deterministic pseudo-random token ids in [lo, hi) (an LCG: the same ids on every machine). */
export function randomTokens(n: number, seed: number, lo = 0, hi = 256): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(lo + (s >>> 8) % (hi - lo));
  }
  return out;
}
