// Generates the two NSNQuant codebooks and writes them as C++ data:
//
//   deno run -A tools/gen_codebooks.ts           # writes cuda/src/quant/codebooks.cpp
//   deno run -A tools/gen_codebooks.ts --check   # regenerates in memory; exit 1 if it differs
//
// C1: 256 centroids in R^8 fitted by k-means to N(0, I8) samples (1-bit codes).
// C2: 256 centroids fitted to |N(0, I8)| samples, the positive orthant (2-bit: index + 8 signs).
//
// Determinism: our own integer PRNG (xoshiro128**), Box-Muller in float64 (V8's Math.log/cos/sin
// are fdlibm ports, identical on every platform), a fixed iteration budget and exact ties broken
// by the lowest index. The same run therefore gives the same bytes anywhere.
//
// No cosine fine-tune: the encoder rescales each token by s2' (error orthogonal to the token), so
// what matters is the cosine of the whole d-vector, which for mean-of-cell centroids is
// sqrt(1 - MSE / E|x|^2): minimizing the L2 distortion is already the right objective.

import { parseArgs } from "node:util";

export const DIM = 8;
export const K = 256;
/** Training samples (log2) and the Lloyd iteration cap of one codebook. */
export interface Recipe {
  log2: number;
  iters: number;
}
// C2 (2-bit) as first generated (2^17 samples, 40 iterations). C1 (1-bit) is fitted on 8x more
// samples: the 2^17-sample fit was over-fitted, and a better fit is worth 0.4-1.3 points of
// 1-bit perplexity (cuda/src/quant/README.md, "Fidelity: where 1-bit loses"). ~5 min.
export const RECIPE_C1: Recipe = { log2: 20, iters: 150 };
export const RECIPE_C2: Recipe = { log2: 17, iters: 40 };
const SEED_C1 = 0x4e534e31; // "NSN1"
const SEED_C2 = 0x4e534e32; // "NSN2"
const SEED_EVAL = 0x4556414c; // "EVAL": fresh samples for the printed quality numbers

const fromFileUrl = (u: string | URL): string => decodeURIComponent(new URL(u).pathname);
const OUT_PATH = fromFileUrl(new URL("../cuda/src/quant/codebooks.cpp", import.meta.url));

/** xoshiro128** seeded through splitmix32: 32-bit integer arithmetic only. */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  nextU32(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }
  /** Uniform in the open interval (0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo + 0.5) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** n samples of N(0, I_dim) by Box-Muller, row-major [n][dim]. */
export function gaussian(n: number, seed: number, dim = DIM): Float64Array {
  const rng = new Rng(seed);
  const out = new Float64Array(n * dim);
  for (let i = 0; i < out.length; i += 2) {
    const r = Math.sqrt(-2 * Math.log(rng.uniform()));
    const phi = 2 * Math.PI * rng.uniform();
    out[i] = r * Math.cos(phi);
    if (i + 1 < out.length) out[i + 1] = r * Math.sin(phi);
  }
  return out;
}

/** Index of the centroid minimizing |c|^2 - 2<x, c> (= L2 distance up to |x|^2); lowest on ties. */
function nearest(x: Float64Array, xo: number, c: Float64Array, cnorm: Float64Array): number {
  let best = 0;
  let bestD = Infinity;
  const x0 = x[xo], x1 = x[xo + 1], x2 = x[xo + 2], x3 = x[xo + 3];
  const x4 = x[xo + 4], x5 = x[xo + 5], x6 = x[xo + 6], x7 = x[xo + 7];
  for (let k = 0, co = 0; k < K; k++, co += DIM) {
    const dot = x0 * c[co] + x1 * c[co + 1] + x2 * c[co + 2] + x3 * c[co + 3] +
      x4 * c[co + 4] + x5 * c[co + 5] + x6 * c[co + 6] + x7 * c[co + 7];
    const dist = cnorm[k] - 2 * dot;
    if (dist < bestD) {
      bestD = dist;
      best = k;
    }
  }
  return best;
}

function sqDist(a: Float64Array, ao: number, b: Float64Array, bo: number): number {
  let s = 0;
  for (let j = 0; j < DIM; j++) {
    const t = a[ao + j] - b[bo + j];
    s += t * t;
  }
  return s;
}

function norms(c: Float64Array): Float64Array {
  const out = new Float64Array(K);
  for (let k = 0; k < K; k++) out[k] = sqDist(c, k * DIM, new Float64Array(DIM), 0);
  return out;
}

/** Assigns every sample of x to its nearest centroid of c; returns how many assignments changed. */
export function assignNearest(x: Float64Array, c: Float64Array, assign: Int32Array): number {
  const cn = norms(c);
  let changed = 0;
  for (let i = 0; i < x.length / DIM; i++) {
    const a = nearest(x, i * DIM, c, cn);
    if (a !== assign[i]) changed++;
    assign[i] = a;
  }
  return changed;
}

/** k-means++ seeding: each next centre drawn with probability proportional to D^2. */
function seedPlusPlus(x: Float64Array, rng: Rng): Float64Array {
  const n = x.length / DIM;
  const c = new Float64Array(K * DIM);
  const d2 = new Float64Array(n).fill(Infinity);
  let pick = rng.nextU32() % n;
  for (let k = 0; k < K; k++) {
    c.set(x.subarray(pick * DIM, pick * DIM + DIM), k * DIM);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const d = sqDist(x, i * DIM, c, k * DIM);
      if (d < d2[i]) d2[i] = d;
      total += d2[i];
    }
    let target = rng.uniform() * total;
    pick = n - 1;
    for (let i = 0; i < n; i++) {
      target -= d2[i];
      if (target <= 0) {
        pick = i;
        break;
      }
    }
  }
  return c;
}

/** Lloyd iterations until no assignment changes or `maxIters`; empty cells take the worst sample. */
function kmeans(x: Float64Array, seed: number, maxIters: number): Float64Array {
  const n = x.length / DIM;
  const c = seedPlusPlus(x, new Rng(seed ^ 0x5eed));
  const assign = new Int32Array(n).fill(-1);
  for (let it = 0; it < maxIters; it++) {
    let changed = assignNearest(x, c, assign);
    const sum = new Float64Array(K * DIM);
    const cnt = new Int32Array(K);
    for (let i = 0; i < n; i++) {
      cnt[assign[i]]++;
      for (let j = 0; j < DIM; j++) sum[assign[i] * DIM + j] += x[i * DIM + j];
    }
    for (let k = 0; k < K; k++) {
      if (cnt[k] === 0) {
        let worst = 0, worstD = -1;
        for (let i = 0; i < n; i++) {
          const d = sqDist(x, i * DIM, c, assign[i] * DIM);
          if (d > worstD) [worst, worstD] = [i, d];
        }
        c.set(x.subarray(worst * DIM, worst * DIM + DIM), k * DIM);
        changed++;
        continue;
      }
      for (let j = 0; j < DIM; j++) c[k * DIM + j] = sum[k * DIM + j] / cnt[k];
    }
    if (changed === 0) break;
  }
  return c;
}

/** Rounds to float32 and orders centroids by (norm, then coordinates) so the table reads well. */
export function finish(c: Float64Array): Float32Array {
  const rows = Array.from({ length: K }, (_, k) => Array.from(c.subarray(k * DIM, k * DIM + DIM)));
  const nrm = (r: number[]) => r.reduce((s, v) => s + v * v, 0);
  const lex = (a: number[], b: number[]) => {
    const j = a.findIndex((v, i) => v !== b[i]);
    return j < 0 ? 0 : a[j] - b[j];
  };
  rows.sort((a, b) => nrm(a) - nrm(b) || lex(a, b));
  return Float32Array.from(rows.flat());
}

export function buildCodebooks(
  r1: Recipe = RECIPE_C1,
  r2: Recipe = RECIPE_C2,
): { c1: Float32Array; c2: Float32Array } {
  const c1 = finish(kmeans(gaussian(1 << r1.log2, SEED_C1), SEED_C1, r1.iters));
  const abs = gaussian(1 << r2.log2, SEED_C2).map(Math.abs);
  const c2 = finish(kmeans(abs, SEED_C2, r2.iters));
  return { c1, c2 };
}

/** Reconstruction of fresh samples; returns mean cosine per 8-vector and per 128-vector, MSE. */
export function evaluate(cb: Float32Array, signed: boolean, n = 1 << 14) {
  const x = gaussian(n, SEED_EVAL);
  const c = Float64Array.from(cb);
  const cn = norms(c);
  const rec = new Float64Array(x.length);
  const ax = new Float64Array(DIM);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < DIM; j++) ax[j] = signed ? Math.abs(x[i * DIM + j]) : x[i * DIM + j];
    const k = nearest(ax, 0, c, cn);
    for (let j = 0; j < DIM; j++) {
      const s = signed && x[i * DIM + j] < 0 ? -1 : 1;
      rec[i * DIM + j] = s * c[k * DIM + j];
    }
  }
  const cosOver = (len: number) => {
    let sum = 0;
    const m = x.length / len;
    for (let v = 0; v < m; v++) {
      let xy = 0, xx = 0, yy = 0;
      for (let j = v * len; j < (v + 1) * len; j++) {
        xy += x[j] * rec[j];
        xx += x[j] * x[j];
        yy += rec[j] * rec[j];
      }
      sum += xy / Math.sqrt(xx * yy);
    }
    return sum / m;
  };
  let se = 0;
  for (let j = 0; j < x.length; j++) se += (x[j] - rec[j]) ** 2;
  return { cos8: cosOver(DIM), cos128: cosOver(128), mse: se / x.length };
}

/** 9 significant digits round-trip any float32 through a C++ float literal. */
function fmt(v: number): string {
  if (Object.is(v, -0) || v === 0) return "0.0f";
  const s = v.toPrecision(9);
  return (s.includes("e") || s.includes(".") ? s : s + ".0") + "f";
}

function table(name: string, cb: Float32Array): string {
  const lines = [];
  for (let k = 0; k < K; k++) {
    const row = Array.from(cb.subarray(k * DIM, (k + 1) * DIM), fmt).join(", ");
    lines.push(`    ${row},  // ${k}`);
  }
  return `const float ${name}[256 * 8] = {\n${lines.join("\n")}\n};\n`;
}

export function render(
  c1: Float32Array,
  c2: Float32Array,
  r1: Recipe = RECIPE_C1,
  r2: Recipe = RECIPE_C2,
): string {
  return `// codebooks.cpp: GENERATED by tools/gen_codebooks.ts; do not edit by hand.
// Regenerate: deno run -A tools/gen_codebooks.ts    Verify: deno run -A tools/gen_codebooks.ts --check
// kCodebook1: 256 k-means centroids of N(0, I8) samples (NSN 1-bit, code = index).
// kCodebook2: 256 k-means centroids of |N(0, I8)| samples (NSN 2-bit, code = index + 8 sign bits).
// k-means++ seeding; C1: 2^${r1.log2} training samples, <= ${r1.iters} Lloyd iterations;
// C2: 2^${r2.log2} samples, <= ${r2.iters} iterations.
#include "nsn_quant.h"

namespace nsn {

${table("kCodebook1", c1)}
${table("kCodebook2", c2)}
}  // namespace nsn
`;
}

if (import.meta.main) {
  // Experiments: --c1-train-log2 N / --c1-iters N change C1's recipe, --out FILE writes there.
  const { values: f } = parseArgs({
    args: Deno.args,
    options: {
      check: { type: "boolean", default: false },
      "c1-train-log2": { type: "string" },
      "c1-iters": { type: "string" },
      out: { type: "string" },
    },
  });
  const check = f.check;
  const r1: Recipe = {
    log2: Number(f["c1-train-log2"] ?? RECIPE_C1.log2),
    iters: Number(f["c1-iters"] ?? RECIPE_C1.iters),
  };
  if (![r1.log2, r1.iters].every((v) => Number.isInteger(v) && v > 0) || r1.log2 > 24) {
    console.error("--c1-train-log2 (1..24) and --c1-iters take positive integers");
    Deno.exit(2);
  }
  const outPath = f.out ?? OUT_PATH;
  const t0 = performance.now();
  const { c1, c2 } = buildCodebooks(r1);
  const text = render(c1, c2, r1);
  const e1 = evaluate(c1, false), e2 = evaluate(c2, true);
  const d = (v: number) => v.toFixed(4);
  console.log(
    `C1 (1-bit): cos/8-vector ${d(e1.cos8)}  cos/128-vector ${d(e1.cos128)}  MSE ${d(e1.mse)}`,
  );
  console.log(
    `C2 (2-bit): cos/8-vector ${d(e2.cos8)}  cos/128-vector ${d(e2.cos128)}  MSE ${d(e2.mse)}`,
  );
  console.log(`built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (check) {
    let old = "";
    try {
      old = Deno.readTextFileSync(outPath);
    } catch { /* missing file counts as a difference */ }
    if (old !== text) {
      console.error(`${outPath} differs from a fresh generation: run tools/gen_codebooks.ts`);
      Deno.exit(1);
    }
    console.log(`${outPath} matches`);
  } else {
    Deno.writeTextFileSync(outPath, text);
    console.log(`wrote ${outPath}`);
  }
}
