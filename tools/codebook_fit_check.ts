// Is the shipped 1-bit codebook (C1 in cuda/src/quant/codebooks.cpp) a good k-means fit to
// N(0, I8)? Compares its quantization MSE on many fresh Gaussian samples with a codebook fitted
// afresh with other samples, sizes and Lloyd iterations (D^2 seeding on a subsample and Lloyd,
// as tools/gen_codebooks.ts does on its RECIPE_C1 samples).
//
//   deno run -A tools/codebook_fit_check.ts [--train-log2 19] [--iters 200] [--eval-log2 20]
//                                           [--seed N] [--out FILE]   (FILE: a codebooks.cpp with the refit C1
//                                                           and the shipped C2, for experiments)
//
// Prints MSE per element, the mean cosine per 8- and 128-vector, and the train-vs-held-out MSE
// of the shipped table on its own training set (overfitting shows as a gap between the two).

import { assignNearest, DIM, finish, gaussian, K, RECIPE_C1, render } from "./gen_codebooks.ts";

const SEED_C1 = 0x4e534e31; // gen_codebooks.ts's C1 training seed
const SEED_FRESH = 0x46524553; // "FRES": held-out samples, not used by gen_codebooks.ts

function arg(name: string, def: number): number {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Number(Deno.args[i + 1]) : def;
}

const fromFileUrl = (u: string | URL): string => decodeURIComponent(new URL(u).pathname);
const CB_PATH = fromFileUrl(new URL("../cuda/src/quant/codebooks.cpp", import.meta.url));

/** The float table `name` [256 * 8] parsed from codebooks.cpp. */
function parseTable(src: string, name: string): Float32Array {
  const start = src.indexOf(`const float ${name}[256 * 8] = {`);
  if (start < 0) throw new Error(`${name} not found in ${CB_PATH}`);
  const body = src.slice(src.indexOf("{", start) + 1, src.indexOf("};", start));
  const vals = body.split("\n").map((l) => l.replace(/\/\/.*$/, "")).join(" ")
    .split(",").map((s) => s.trim()).filter((s) => s.length).map((s) => parseFloat(s));
  if (vals.length !== K * DIM) throw new Error(`${name}: ${vals.length} values`);
  return Float32Array.from(vals);
}

/** MSE per element and mean cosine per 8-vector and per 128-vector of x coded with c. */
function quality(x: Float64Array, cb: Float32Array | Float64Array) {
  const c = Float64Array.from(cb);
  const n = x.length / DIM;
  const a = new Int32Array(n).fill(-1);
  assignNearest(x, c, a);
  let se = 0, cos8 = 0, cos128 = 0;
  let xy = 0, xx = 0, yy = 0;
  for (let i = 0; i < n; i++) {
    let pxy = 0, pxx = 0, pyy = 0;
    for (let j = 0; j < DIM; j++) {
      const v = x[i * DIM + j], r = c[a[i] * DIM + j];
      se += (v - r) ** 2;
      pxy += v * r;
      pxx += v * v;
      pyy += r * r;
    }
    cos8 += pxy / Math.sqrt(pxx * pyy);
    xy += pxy;
    xx += pxx;
    yy += pyy;
    if ((i + 1) % (128 / DIM) === 0) {
      cos128 += xy / Math.sqrt(xx * yy);
      xy = xx = yy = 0;
    }
  }
  return { mse: se / x.length, cos8: cos8 / n, cos128: cos128 / (n / (128 / DIM)) };
}

/** k-means++ seeding on a subsample, then Lloyd until no assignment changes or `iters`. */
function fit(x: Float64Array, iters: number, seedX: Float64Array): { c: Float64Array; it: number } {
  // Seed from the shipped generator's idea (D^2 sampling), on the first 2^15 samples for speed.
  const m = Math.min(seedX.length / DIM, 1 << 15);
  const c = new Float64Array(K * DIM);
  const d2 = new Float64Array(m).fill(Infinity);
  let state = 12345;
  const rnd = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 4294967296);
  let pick = 0;
  for (let k = 0; k < K; k++) {
    c.set(seedX.subarray(pick * DIM, pick * DIM + DIM), k * DIM);
    let total = 0;
    for (let i = 0; i < m; i++) {
      let d = 0;
      for (let j = 0; j < DIM; j++) d += (seedX[i * DIM + j] - c[k * DIM + j]) ** 2;
      if (d < d2[i]) d2[i] = d;
      total += d2[i];
    }
    let t = rnd() * total;
    pick = m - 1;
    for (let i = 0; i < m; i++) {
      t -= d2[i];
      if (t <= 0) {
        pick = i;
        break;
      }
    }
  }
  const n = x.length / DIM;
  const a = new Int32Array(n).fill(-1);
  let it = 0;
  for (; it < iters; it++) {
    const changed = assignNearest(x, c, a);
    const sum = new Float64Array(K * DIM), cnt = new Int32Array(K);
    for (let i = 0; i < n; i++) {
      cnt[a[i]]++;
      for (let j = 0; j < DIM; j++) sum[a[i] * DIM + j] += x[i * DIM + j];
    }
    for (let k = 0; k < K; k++) {
      if (cnt[k] > 0) { for (let j = 0; j < DIM; j++) c[k * DIM + j] = sum[k * DIM + j] / cnt[k]; }
    }
    if (changed === 0) break;
  }
  return { c, it };
}

if (import.meta.main) {
  const trainLog2 = arg("--train-log2", 19);
  const iters = arg("--iters", 200);
  const evalLog2 = arg("--eval-log2", 20);
  const outI = Deno.args.indexOf("--out");
  const src = Deno.readTextFileSync(CB_PATH);
  const shipped = parseTable(src, "kCodebook1");
  const fresh = gaussian(1 << evalLog2, SEED_FRESH);
  const f = (v: number) => v.toFixed(4);
  const show = (name: string, q: { mse: number; cos8: number; cos128: number }) =>
    console.log(
      `${name.padEnd(44)} MSE/elem ${f(q.mse)}  cos/8 ${f(q.cos8)}  cos/128 ${f(q.cos128)}`,
    );
  const trained = gaussian(1 << RECIPE_C1.log2, SEED_C1);
  show(`shipped C1 on its 2^${RECIPE_C1.log2} training samples`, quality(trained, shipped));
  show(`shipped C1 on 2^${evalLog2} held-out samples`, quality(fresh, shipped));
  const t0 = performance.now();
  const train = gaussian(1 << trainLog2, (SEED_C1 ^ 0x1234567) + arg("--seed", 0));
  const { c, it } = fit(train, iters, train);
  const secs = ((performance.now() - t0) / 1000).toFixed(0);
  console.log(`refit: 2^${trainLog2} samples, ${it} Lloyd iterations (cap ${iters}), ${secs} s`);
  show(`refit C1 on its training samples`, quality(train, c));
  show(`refit C1 on 2^${evalLog2} held-out samples`, quality(fresh, c));
  if (outI >= 0) {
    Deno.writeTextFileSync(Deno.args[outI + 1], render(finish(c), parseTable(src, "kCodebook2")));
    console.log(`wrote ${Deno.args[outI + 1]} (refit C1, shipped C2)`);
  }
}
