// Summary statistics for latency samples, with the conventions of vLLM's `bench serve`
// (numpy's default percentile: linear interpolation between closest ranks), so figures from
// this bench and from vLLM's can be compared line for line.

export interface Summary {
  mean: number;
  median: number;
  std: number;
  p90: number;
  p99: number;
  n: number;
}

/** Percentile q in [0, 100] of a sorted array, numpy "linear" method; NaN when empty. */
export function percentileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const rank = (q / 100) * (n - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, n - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export function mean(xs: ArrayLike<number>): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s / xs.length;
}

/** Mean, median, population std (numpy's default), p90, p99. Every field is NaN when empty. */
export function summarize(xs: ArrayLike<number>): Summary {
  const sorted = Float64Array.from(xs).sort();
  const m = mean(sorted);
  let v = 0;
  for (const x of sorted) v += (x - m) * (x - m);
  return {
    mean: m,
    median: percentileSorted(sorted, 50),
    std: sorted.length ? Math.sqrt(v / sorted.length) : NaN,
    p90: percentileSorted(sorted, 90),
    p99: percentileSorted(sorted, 99),
    n: sorted.length,
  };
}

/** Deterministic PRNG (mulberry32) so prompts and arrival times repeat across runs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Exponential inter-arrival gap (Poisson process of `rate` per second), in seconds. */
export function poissonGap(rate: number, rand: () => number): number {
  if (!Number.isFinite(rate)) return 0;
  return -Math.log(1 - rand()) / rate;
}
