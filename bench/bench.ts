// `deno task bench`: serving throughput and latency per KV precision, modelled on vLLM's
// `bench serve`; `deno task bench --engine`: decode throughput and capacity straight through
// the engine. Both print a table (stdout), write raw numbers as JSON and a chart as SVG next
// to it, and show a progress bar on stderr.
//
//   deno task bench [--model demo|DIR|synthetic:NAME | --url http://HOST:PORT] [--backend B]
//     [--kv-bits 16,2,1] [--input-len N] [--prefix-len N] [--output-len N]
//     [--num-prompts N|auto] [--concurrency 1,4,16,64] [--request-rate R|inf] [--json FILE]
//   (--prefix-len N: every prompt starts with the same N tokens; the report gives the server's
//   prefix-cache hit rate)
//   deno task bench --engine [--batches 1,8,32] [--contexts 512,2048] [--decode-steps K]
//   deno task bench --kernels [--quick] [--json DIR]   (GPU machine: decode-attention kernels
//     vs torch SDPA; tools/gpu_kernel_tests.sh --bench-only; needs nvcc, a GPU, torch)
//
// Defaults depend on the backend: the CPU ones finish in well under a minute on the demo
// model; the GPU ones are a real sweep on synthetic:llama-3-8b.

import { parseArgs } from "node:util";
import type { KvBits } from "../engine/types.ts";
import { openLibrary } from "../ffi/library.ts";
import type { EngineOptions } from "../ffi/structs.ts";
import { DEMO_DIR, loadModel, readModelDir } from "../models/loader.ts";
import { syntheticSpec } from "../models/synthetic.ts";
import { choiceArg, intArg, intListArg, rateArg } from "./cli_args.ts";
import { parseKvBits } from "./eval.ts";
import { promptsFor, type ServeTarget, sweepServe } from "./serve_sweep.ts";
import { runSweep, type SweepPoint } from "./engine_sweep.ts";
import { formatServe, formatSweep, serveChart, sweepChart } from "./bench_report.ts";
import { num, progressBar, svgPathFor, writeJson, writeText } from "./report.ts";

type Backend = NonNullable<EngineOptions["backend"]>;

export interface BenchDefaults {
  model: string;
  inputLen: number;
  outputLen: number;
  concurrency: number[];
  numPrompts: number | "auto";
  batches: number[];
  contexts: number[];
  decodeSteps: number;
  maxStepTokens?: number; // server's per-step token budget (undefined: the server's default)
}

export const CPU_DEFAULTS: BenchDefaults = {
  model: "demo",
  inputLen: 64,
  outputLen: 32,
  concurrency: [1, 4],
  numPrompts: 8,
  batches: [1, 8],
  contexts: [128, 512],
  decodeSteps: 8,
};

export const GPU_DEFAULTS: BenchDefaults = {
  model: "synthetic:llama-3-8b",
  inputLen: 1024,
  outputLen: 256,
  concurrency: [1, 8, 32, 128, 256],
  numPrompts: "auto",
  batches: [1, 16, 64, 256],
  contexts: [1024, 4096],
  decodeSteps: 32,
  maxStepTokens: 2048,
};

/** Ids the model's tokenizer can produce (for random prompts) and its context length. */
async function modelLimits(model: string): Promise<{ range: [number, number]; context: number }> {
  if (model.startsWith("synthetic:")) {
    const spec = syntheticSpec(model.slice(10));
    return { range: [0, spec.vocabSize], context: spec.maxPosition };
  }
  const { spec, tokenizer } = await readModelDir(model === "demo" ? DEMO_DIR : model);
  return { range: [0, tokenizer.vocabSize], context: spec.maxPosition };
}

/** The context a running server reports (/v1/models max_model_len), or null if it says none. */
async function serverContext(url: string): Promise<number | null> {
  const r = await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(10_000) });
  const j = await r.json().catch(() => null);
  const len = j?.data?.[0]?.max_model_len;
  return typeof len === "number" ? len : null;
}

export interface BenchArgs {
  engine: boolean;
  kernels?: boolean; // decode-attention kernel benchmark (GPU machine)
  quick?: boolean;
  model?: string;
  url?: string;
  backend: Backend;
  threads?: number;
  kvBits: KvBits[];
  inputLen?: number;
  prefixLen?: number;
  outputLen?: number;
  numPrompts?: number | "auto";
  concurrency?: number[];
  requestRate: number;
  batches?: number[];
  contexts?: number[];
  decodeSteps?: number;
  kvPoolMb?: number;
  maxNumSeqs?: number;
  maxStepTokens?: number;
  seed: number;
  json?: string;
  progress?: boolean;
  help?: boolean;
}

export const BENCH_USAGE = `Usage:
  deno task bench [--model demo|DIR|synthetic:NAME | --url http://HOST:PORT] [--backend B]
    [--kv-bits 16,2,1] [--input-len N] [--prefix-len N] [--output-len N] [--num-prompts N|auto]
    [--concurrency 1,4,16,64] [--request-rate R|inf] [--seed N] [--json FILE] [--no-progress]
    [--threads N] [--kv-pool-mb N] [--max-num-seqs N] [--max-step-tokens N]
  deno task bench --engine [--batches 1,8,32] [--contexts 512,2048] [--decode-steps K]
  deno task bench --kernels [--quick] [--json DIR]

Serving mode (the default) starts the server on --model (or measures the one at --url) and
sends --num-prompts random prompts of --input-len tokens, each asking --output-len tokens,
at every --concurrency and every --kv-bits, like vLLM's \`bench serve\` (--prefix-len N: every
prompt starts with the same N tokens, and the report gives the prefix-cache hit rate). --engine measures
decode throughput straight through the engine; --kernels runs the GPU kernel benchmark.
--backend auto|cpu|cuda picks the defaults too: CPU ones finish in under a minute on the demo
model, GPU ones sweep synthetic:llama-3-8b. Results: a table on stdout, JSON (--json, default
.data/bench/<kind>.json) and an SVG chart beside it; a progress bar on stderr.`;

export function parseBenchArgs(args: string[]): BenchArgs {
  const { values: f } = parseArgs({
    args,
    options: {
      engine: { type: "boolean", default: false },
      kernels: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      model: { type: "string" },
      url: { type: "string" },
      backend: { type: "string", default: "auto" },
      threads: { type: "string" },
      "kv-bits": { type: "string", default: "16,2,1" },
      "input-len": { type: "string" },
      "prefix-len": { type: "string" },
      "output-len": { type: "string" },
      "num-prompts": { type: "string" },
      concurrency: { type: "string" },
      "request-rate": { type: "string", default: "inf" },
      batches: { type: "string" },
      contexts: { type: "string" },
      "decode-steps": { type: "string" },
      "kv-pool-mb": { type: "string" },
      "max-num-seqs": { type: "string" },
      "max-step-tokens": { type: "string" },
      seed: { type: "string", default: "0" },
      json: { type: "string" },
      "no-progress": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  const backend = choiceArg("backend", f.backend, ["auto", "cpu", "cuda"] as const);
  if (f.url !== undefined && !/^https?:\/\/[^/]/.test(f.url)) {
    throw new Error(`--url must be http://HOST:PORT, got ${JSON.stringify(f.url)}`);
  }
  if (f.url !== undefined && f.model !== undefined) {
    throw new Error("--url measures a running server; --model starts one: give one of them");
  }
  return {
    help: f.help,
    engine: f.engine,
    kernels: f.kernels,
    quick: f.quick,
    model: f.model,
    url: f.url?.replace(/\/+$/, ""),
    backend,
    threads: intArg("threads", f.threads, 1),
    kvBits: parseKvBits(f["kv-bits"]),
    inputLen: intArg("input-len", f["input-len"], 1),
    prefixLen: intArg("prefix-len", f["prefix-len"], 0),
    outputLen: intArg("output-len", f["output-len"], 1),
    numPrompts: f["num-prompts"] === "auto" ? "auto" : intArg("num-prompts", f["num-prompts"], 1),
    concurrency: intListArg("concurrency", f.concurrency, 1),
    requestRate: rateArg("request-rate", f["request-rate"]),
    batches: intListArg("batches", f.batches, 1),
    contexts: intListArg("contexts", f.contexts, 1),
    decodeSteps: intArg("decode-steps", f["decode-steps"], 1),
    kvPoolMb: intArg("kv-pool-mb", f["kv-pool-mb"], 1),
    maxNumSeqs: intArg("max-num-seqs", f["max-num-seqs"], 1),
    maxStepTokens: intArg("max-step-tokens", f["max-step-tokens"], 1),
    seed: intArg("seed", f.seed, 0)!,
    json: f.json,
    progress: !f["no-progress"],
  };
}

/** CUDA defaults when the run will be on a GPU (asked for, or auto with a device present). */
async function defaultsFor(a: BenchArgs): Promise<BenchDefaults> {
  if (a.backend === "cuda") return GPU_DEFAULTS;
  if (a.backend === "cpu") return CPU_DEFAULTS;
  return (await openLibrary()).cudaAvailable() ? GPU_DEFAULTS : CPU_DEFAULTS;
}

export interface BenchOutput {
  kind: "serve" | "engine";
  text: string;
  json: Record<string, unknown>;
  svg: string;
}

export async function runBench(a: BenchArgs): Promise<BenchOutput> {
  const d = await defaultsFor(a);
  const model = a.model ?? d.model;
  const engineOptions: EngineOptions = {
    backend: a.backend,
    nThreads: a.threads,
    kvPoolBytes: a.kvPoolMb ? a.kvPoolMb * 2 ** 20 : undefined,
    maxSeqs: a.maxNumSeqs,
    maxStepTokens: a.maxStepTokens,
  };
  if (a.engine) {
    using m = await loadModel(model, engineOptions);
    const info = m.engine.info();
    const cfg = {
      kvBits: a.kvBits,
      batches: a.batches ?? d.batches,
      contexts: a.contexts ?? d.contexts,
      decodeSteps: a.decodeSteps ?? d.decodeSteps,
      tokenRange: [0, m.tokenizer.vocabSize] as [number, number],
      seed: a.seed,
    };
    const total = cfg.kvBits.length * cfg.batches.length * cfg.contexts.length;
    const bar = a.progress === false ? null : progressBar("bench --engine", total);
    let points: SweepPoint[];
    try {
      points = await runSweep(m.engine, { ...cfg, onPoint: () => bar?.tick() });
    } finally {
      bar?.stop();
    }
    const head = `engine sweep | model ${model} | ${info.backend} (${info.deviceName}) | ` +
      `KV pool ${num(info.kvPoolBytes / 2 ** 20, 0)} MiB | max seqs ${info.maxSeqs} | ` +
      `${cfg.decodeSteps} decode steps`;
    return {
      kind: "engine",
      text: `${head}\n${formatSweep(points)}`,
      json: { kind: "engine", model, info, config: cfg, points },
      svg: sweepChart(points, `Decode throughput by batch, ${model} (${info.backend})`),
    };
  }

  const cfg = {
    inputLen: a.inputLen ?? d.inputLen,
    prefixLen: a.prefixLen ?? 0,
    outputLen: a.outputLen ?? d.outputLen,
    concurrency: a.concurrency ?? d.concurrency,
    numPrompts: a.numPrompts ?? d.numPrompts,
    requestRate: a.requestRate,
    kvBits: a.kvBits,
    seed: a.seed,
  };
  const limits = a.url ? null : await modelLimits(model);
  const context = a.url ? await serverContext(a.url) : limits!.context;
  if (context !== null && cfg.inputLen + cfg.outputLen > context) {
    throw new Error(
      `--input-len ${cfg.inputLen} + --output-len ${cfg.outputLen} is more than the model's ` +
        `context (${context} tokens${a.url ? ` at ${a.url}` : ` of ${model}`})`,
    );
  }
  const target: ServeTarget = a.url ? { url: a.url, tokenRange: [0, 256] } : {
    server: {
      model,
      backend: a.backend,
      threads: a.threads,
      kvPoolMb: a.kvPoolMb,
      maxNumSeqs: a.maxNumSeqs,
      maxStepTokens: a.maxStepTokens ?? d.maxStepTokens,
    },
    tokenRange: limits!.range,
  };
  const total = cfg.kvBits.length *
    cfg.concurrency.reduce((s, c) => s + promptsFor(cfg.numPrompts, c), 0);
  const bar = a.progress === false ? null : progressBar("bench", total);
  let res;
  try {
    res = await sweepServe(target, { ...cfg, onDone: () => bar?.tick() });
  } finally {
    bar?.stop();
  }
  const head = `serving bench | ${res.description} | input ${cfg.inputLen}` +
    (cfg.prefixLen ? ` (shared prefix ${cfg.prefixLen})` : "") +
    ` | output ${cfg.outputLen} | request rate ${cfg.requestRate}`;
  return {
    kind: "serve",
    text: `${head}\n${formatServe(res.runs)}`,
    json: { kind: "serve", target: res.description, config: cfg, runs: res.runs },
    svg: serveChart(res.runs, `Output throughput by concurrency, ${res.description}`),
  };
}

/** `--kernels`: tools/gpu_kernel_tests.sh --bench-only (ours vs torch SDPA, side by side). */
async function runKernelBench(a: BenchArgs): Promise<void> {
  const root = new URL("..", import.meta.url).pathname;
  const dir = a.json ?? ".data/bench/kernels";
  const args = [`${root}tools/gpu_kernel_tests.sh`, dir, "--bench-only"];
  if (a.quick) args.push("--quick");
  const st = await new Deno.Command("bash", { args, stdout: "inherit", stderr: "inherit" })
    .output();
  if (st.code !== 0) {
    throw new Error(
      `kernel benchmark failed (exit ${st.code}); it needs nvcc, a CUDA GPU and torch`,
    );
  }
  // kernels.json: the rows (ctx, batch, fp16/nsn2/nsn1/sdpa us) and the card's copy GB/s
  await Deno.copyFile(`${dir}/bench.json`, `${dir}/kernels.json`);
  console.log(`\nwrote ${dir}/bench.md and ${dir}/kernels.json`);
}

if (import.meta.main) {
  try {
    const a = parseBenchArgs(Deno.args);
    if (a.help) {
      console.log(BENCH_USAGE);
      Deno.exit(0);
    }
    if (a.kernels) {
      await runKernelBench(a);
      Deno.exit(0);
    }
    const out = await runBench(a);
    console.log(out.text);
    const json = a.json ?? `.data/bench/${out.kind}.json`;
    await writeJson(json, out.json);
    await writeText(svgPathFor(json), out.svg);
    console.log(`\nwrote ${json} and ${svgPathFor(json)}`);
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : e}\n(deno task bench --help)`);
    Deno.exit(1);
  }
}
