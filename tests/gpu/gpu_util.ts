// Helpers of the GPU tests (tests/gpu/*_test.ts): open the library, decide whether a CUDA
// device is there, build CPU/CUDA engine pairs holding the same synthetic model, and small
// numeric helpers. Without a GPU every GPU test is skipped with one clear message; with
// NSN_TEST_GPU=1 (deno task test:gpu) a missing GPU is an error instead.

import { PagedEngine } from "../helpers/paged_engine.ts";
import { greedySampling, type KvBits, type SamplingParams } from "../../engine/types.ts";
import { type NsnLibrary, openLibrary } from "../../ffi/library.ts";
import { NativeEngine } from "../../ffi/native_engine.ts";
import type { EngineOptions } from "../../ffi/structs.ts";
import type { ModelSpec } from "../../models/config.ts";
import { syntheticSpec } from "../../models/synthetic.ts";

const REQUIRED = Deno.env.get("NSN_TEST_GPU") === "1";
// Debugging the tests themselves on a machine without a GPU: NSN_TEST_GPU_AS_CPU=1 runs them
// with the CPU backend standing in for CUDA (every comparison then holds trivially or nearly).
const AS_CPU = Deno.env.get("NSN_TEST_GPU_AS_CPU") === "1";
/** The backend the GPU tests put under test. */
export const GPU_BACKEND: "cuda" | "cpu" = AS_CPU ? "cpu" : "cuda";

async function probe(): Promise<{ lib: NsnLibrary | null; why: string }> {
  try {
    const lib = await openLibrary();
    if (lib.cudaAvailable() || AS_CPU) return { lib, why: "" };
    return { lib: null, why: "libnsn reports no CUDA support or no visible CUDA device" };
  } catch (e) {
    return { lib: null, why: `libnsn could not be opened: ${(e as Error).message}` };
  }
}

const probed = await probe();
export const gpuLib: NsnLibrary | null = probed.lib;
if (!gpuLib) {
  const msg = `tests/gpu: GPU tests skipped: ${probed.why}`;
  if (REQUIRED) console.error(`${msg} (NSN_TEST_GPU=1: failing)`);
  else console.warn(msg);
}

/** A Deno test that needs the CUDA backend; skipped (or failed under NSN_TEST_GPU=1) without it. */
export function gpuTest(name: string, fn: (lib: NsnLibrary) => Promise<void>): void {
  if (!gpuLib && REQUIRED) {
    Deno.test(name, () => {
      throw new Error(`NSN_TEST_GPU=1 but ${probed.why}`);
    });
    return;
  }
  Deno.test({ name, ignore: !gpuLib, fn: () => fn(gpuLib!) });
}

/** syntheticSpec("tiny") with overrides (other head dims, deeper models, rope variants). */
export function tinySpec(over: Partial<ModelSpec> = {}): ModelSpec {
  return { ...syntheticSpec("tiny"), ...over };
}

export interface EnginePair {
  cpu: PagedEngine;
  gpu: PagedEngine;
  close(): void;
  [Symbol.dispose](): void;
}

/** The same synthetic model (init_random with one seed) on the CPU and the CUDA backend. */
export async function enginePair(
  lib: NsnLibrary,
  spec: ModelSpec,
  seed = 7n,
  opts: EngineOptions = {},
): Promise<EnginePair> {
  const make = async (backend: "cpu" | "cuda") => {
    const e = NativeEngine.create(lib, spec, {
      backend,
      maxSeqs: 8,
      maxStepTokens: 512,
      kvPoolBytes: 64n << 20n,
      debugChecks: true,
      ...opts,
    });
    await e.initRandom(seed);
    await e.finalize();
    return new PagedEngine(e);
  };
  const cpu = await make("cpu");
  const gpu = await make(GPU_BACKEND);
  const close = () => {
    cpu.close();
    gpu.close();
  };
  return { cpu, gpu, close, [Symbol.dispose]: close };
}

export function greedyParams(nPrompt: number, over: Partial<SamplingParams> = {}): SamplingParams {
  return greedySampling({ nPrompt, ...over });
}

export { randomTokens } from "../helpers/random_tokens.ts";

export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row as ArrayLike<number>, (x) => x - lse);
}

export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** max |a - b|, and the largest |b| (the scale errors are judged against). */
export function maxAbsDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
): { err: number; scale: number } {
  let err = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    err = Math.max(err, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return { err, scale };
}

/** ||a - b|| / ||b|| */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

export const KV_BITS: KvBits[] = [16, 2, 1];

// ---- the CPU sampler's procedure (cuda/src/sampling.h) in TS, for the GPU's own logits ----

const MASK64 = (1n << 64n) - 1n;

function splitmix64(x: bigint): bigint {
  x = (x + 0x9e3779b97f4a7c15n) & MASK64;
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return x ^ (x >> 31n);
}

/** random.h sample_uniform(seed, pos). */
export function sampleUniform(seed: bigint, pos: number): number {
  const h = splitmix64(BigInt.asUintN(64, seed) ^ splitmix64(BigInt(pos)));
  return Math.fround(Number(h >> 40n) / 16777216);
}

const f = Math.fround;

/**
 * The token sampling.h draws from raw logits z for position P, given every token before it
 * (history; positions < nPrompt are the prompt). fp32 steps are rounded with Math.fround, sums
 * are doubles in the CPU's order.
 */
export function referenceSample(
  z: Float32Array,
  p: SamplingParams,
  history: number[],
): number {
  const V = z.length;
  const P = history.length;
  const x = Float32Array.from(z);
  for (const [id, b] of p.logitBias) x[id] = f(x[id] + b);
  const rep = p.repetitionPenalty !== 1;
  const freq = p.frequencyPenalty !== 0 || p.presencePenalty !== 0;
  if (rep || freq) {
    const seen = new Map<number, number>();
    history.forEach((t, pos) => seen.set(t, (seen.get(t) ?? 0) + (pos >= p.nPrompt ? 1 : 0)));
    for (const [t, c] of seen) {
      if (rep) {
        x[t] = x[t] > 0 ? f(x[t] / f(p.repetitionPenalty)) : f(x[t] * f(p.repetitionPenalty));
      }
      if (c > 0) x[t] = f(x[t] - f(f(f(p.frequencyPenalty) * c) + f(p.presencePenalty)));
    }
  }
  if (P - p.nPrompt < p.minTokens) { for (const s of p.stopIds) x[s] = -Infinity; }
  const greedy = argmax(x);
  if (p.temperature === 0) return greedy;
  const T = f(p.temperature);
  let order: number[] = [];
  for (let i = 0; i < V; i++) {
    x[i] = f(x[i] / T);
    if (x[i] > -Infinity) order.push(i);
  }
  if (order.length === 0) return greedy;
  const ranked = (a: number, b: number) => (x[b] - x[a]) || (a - b);
  let n = order.length;
  if ((p.topK > 0 && p.topK < n) || p.topP < 1) {
    order.sort(ranked);
    if (p.topK > 0) n = Math.min(n, p.topK);
    order = order.slice(0, n);
  }
  let top = -Infinity;
  for (const t of order) top = Math.max(top, x[t]);
  const prob = (t: number) => f(Math.exp(f(x[t] - top)));
  if (p.topP < 1) {
    let total = 0;
    for (const t of order) total += prob(t);
    const target = f(p.topP) * total;
    let run = 0, keep = 0;
    while (keep < n) {
      run += prob(order[keep++]);
      if (run >= target) break;
    }
    order = order.slice(0, keep);
  }
  const kept = order.filter((t) => !(p.minP > 0 && prob(t) < f(p.minP))).sort((a, b) => a - b);
  let total = 0;
  for (const t of kept) total += prob(t);
  const target = sampleUniform(p.seed, P) * total;
  let run = 0;
  for (const t of kept) {
    run += prob(t);
    if (run > target) return t;
  }
  return kept[kept.length - 1];
}
