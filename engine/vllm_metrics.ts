// vLLM's metric names (engine/vllm_names.ts) beside our nsn_* ones, for the routers and
// autoscalers that pick a replica by them. One series per name, labelled model_name, with no
// kv_bits split: routers take the first series they find, so KV usage here is the fraction of
// the whole pool in use, all page kinds together.

import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { SchedulerObserver } from "./scheduler.ts";
import type { KvCache } from "./kv_cache.ts";
import { KV_BITS, type KvBits, type KvEngine } from "./types.ts";
import { VLLM } from "./vllm_names.ts";

export interface VllmSource {
  modelName: string;
  numRunning: number;
  numWaiting: number;
  engine: KvEngine;
  kv: KvCache;
  /** The page kind that num_gpu_blocks counts in (the server's default kv_bits). */
  defaultKvBits: KvBits;
}

// vLLM's bucket boundaries, so dashboards built for it read ours the same way.
// deno-fmt-ignore
export const VLLM_TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40,
  80, 160, 640, 2560,
];
const TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5];
// deno-fmt-ignore
export const VLLM_REQUEST_BUCKETS = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

/** Fraction of the KV pool held by pages of any kind, 0..1. */
export function kvUsage(engine: KvEngine, kv: KvCache): number {
  const info = engine.info();
  if (info.kvPoolBytes <= 0) return 0;
  // Pages a sequence holds; cached pages nobody holds are free to take, as in vLLM.
  const held = (k: KvBits) => kv.pool.pagesInUse(k) - kv.pool.pagesIdle(k);
  const used = KV_BITS.reduce((a, k) => a + held(k) * info.kinds[k].pageBytes, 0);
  return Math.min(1, used / info.kvPoolBytes);
}

export class VllmMetrics {
  #src: () => VllmSource | null;
  #promptTokens: Counter<"model_name">;
  #generationTokens: Counter<"model_name">;
  #ttft: Histogram<"model_name">;
  #tpot: Histogram<"model_name">;
  #e2e: Histogram<"model_name">;
  #queue: Histogram<"model_name">;
  #prefixQueries: Counter<"model_name">;
  #prefixHits: Counter<"model_name">;

  constructor(registry: Registry, source: () => VllmSource | null) {
    this.#src = source;
    const registers = [registry];
    const src = source;
    const gauge = (name: string, help: string, read: (s: VllmSource) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["model_name"],
        registers,
        collect() {
          this.reset(); // one series, under the name the model has now
          const s = src();
          if (s) this.set({ model_name: s.modelName }, read(s));
        },
      });
    gauge(VLLM.running, "Number of requests in model execution batches.", (s) => s.numRunning);
    gauge(VLLM.waiting, "Number of requests waiting to be processed.", (s) => s.numWaiting);
    const usageHelp = "KV-cache usage, all page kinds together. 1 means 100 percent usage.";
    gauge(VLLM.kvUsage, usageHelp, (s) => kvUsage(s.engine, s.kv));
    gauge(VLLM.gpuCacheUsage, `${usageHelp} (older name)`, (s) => kvUsage(s.engine, s.kv));
    new Gauge({
      name: VLLM.cacheConfig,
      help: "Information of the KV cache: block_size tokens per page, num_gpu_blocks pages " +
        "of the default kv_bits that the pool holds.",
      labelNames: ["model_name", "block_size", "num_gpu_blocks", "cache_dtype"],
      registers,
      collect() {
        this.reset();
        const s = src();
        if (!s) return;
        const info = s.engine.info();
        const kind = info.kinds[s.defaultKvBits];
        this.set({
          model_name: s.modelName,
          block_size: 64,
          num_gpu_blocks: Math.floor(info.kvPoolBytes / kind.pageBytes),
          cache_dtype: s.defaultKvBits === 16 ? "fp16" : `nsn${s.defaultKvBits}`,
        }, 1);
      },
    });
    const counter = (name: string, help: string) =>
      new Counter({ name, help, labelNames: ["model_name"], registers });
    this.#promptTokens = counter(VLLM.promptTokens, "Number of prefill tokens processed.");
    this.#generationTokens = counter(VLLM.generationTokens, "Number of generation tokens.");
    this.#prefixQueries = counter(VLLM.prefixQueries, "Prefix-cache queries, in prompt tokens.");
    this.#prefixHits = counter(VLLM.prefixHits, "Prefix-cache hits, in prompt tokens.");
    const histogram = (name: string, help: string, buckets: number[]) =>
      new Histogram({ name, help, labelNames: ["model_name"], buckets, registers });
    this.#ttft = histogram(
      VLLM.ttft,
      "Histogram of time to first token in seconds.",
      VLLM_TTFT_BUCKETS,
    );
    this.#tpot = histogram(
      VLLM.tpot,
      "Histogram of time per output token in seconds.",
      TPOT_BUCKETS,
    );
    this.#e2e = histogram(
      VLLM.e2e,
      "Histogram of end to end request latency in seconds.",
      VLLM_REQUEST_BUCKETS,
    );
    this.#queue = histogram(
      VLLM.queueTime,
      "Histogram of time spent in WAITING phase for request.",
      VLLM_REQUEST_BUCKETS,
    );
  }

  #labels() {
    return { model_name: this.#src()?.modelName ?? "" };
  }

  /** The scheduler's hooks, to be called beside ServerMetrics' own. */
  observer(): Required<SchedulerObserver> {
    return {
      onAdmit: (seq) => {
        if (seq.preemptions === 0) {
          this.#queue.observe(this.#labels(), (performance.now() - seq.arrival) / 1000);
        }
      },
      onPromptDone: (seq) => this.#promptTokens.inc(this.#labels(), seq.nPrompt),
      onToken: (_seq, first, sinceLastMs) => {
        this.#generationTokens.inc(this.#labels());
        (first ? this.#ttft : this.#tpot).observe(this.#labels(), sinceLastMs / 1000);
      },
      onFinish: (seq, reason) => {
        if (reason === "stop" || reason === "length") {
          this.#e2e.observe(this.#labels(), (performance.now() - seq.arrival) / 1000);
        }
      },
      onPreempt: () => {},
      onCacheLookup: (_seq, { queried, hit }) => {
        this.#prefixQueries.inc(this.#labels(), queried);
        this.#prefixHits.inc(this.#labels(), hit);
      },
    };
  }
}
