// Prometheus metrics with a private Registry per app (tests build many apps in one process).
// Gauges read the scheduler and engine when scraped; counters and histograms are fed by the
// scheduler's observer hooks. Every per-request metric carries the kv_bits label, since the
// same server runs fp16, 2-bit and 1-bit sequences side by side.

import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { SchedulerObserver } from "./scheduler.ts";
import { KV_BITS } from "./types.ts";
import {
  VLLM_REQUEST_BUCKETS,
  VLLM_TTFT_BUCKETS,
  VllmMetrics,
  type VllmSource,
} from "./vllm_metrics.ts";

/** What the gauges read when scraped (vLLM's names need the model name and default kv_bits). */
export type MetricsSource = VllmSource;

/** Several observers as one: each hook calls every observer's, in order. */
export function combineObservers(...list: SchedulerObserver[]): SchedulerObserver {
  return {
    onAdmit: (seq) => list.forEach((o) => o.onAdmit?.(seq)),
    onPromptDone: (seq) => list.forEach((o) => o.onPromptDone?.(seq)),
    onToken: (seq, first, since) => list.forEach((o) => o.onToken?.(seq, first, since)),
    onFinish: (seq, reason) => list.forEach((o) => o.onFinish?.(seq, reason)),
    onPreempt: (seq) => list.forEach((o) => o.onPreempt?.(seq)),
    onCacheLookup: (seq, lookup) => list.forEach((o) => o.onCacheLookup?.(seq, lookup)),
  };
}

// vLLM's boundaries, cut where our own series stop (80 s to first token, 8 min per request).
const LATENCY_BUCKETS = VLLM_TTFT_BUCKETS.filter((b) => b <= 80);
const E2E_BUCKETS = VLLM_REQUEST_BUCKETS.filter((b) => b <= 480);

export class ServerMetrics {
  readonly registry = new Registry();
  #source: () => MetricsSource | null;
  #promptTokens: Counter<"kv_bits">;
  #generationTokens: Counter<"kv_bits">;
  #preemptions: Counter;
  #cacheQueries: Counter<"kv_bits">;
  #cacheHits: Counter<"kv_bits">;
  #finished: Counter<"kv_bits" | "finished_reason">;
  #ttft: Histogram<"kv_bits">;
  #itl: Histogram<"kv_bits">;
  #e2e: Histogram<"kv_bits">;
  #vllm: VllmMetrics;

  /** `source` is null while the model loads (the gauges then read 0). */
  constructor(source: () => MetricsSource | null) {
    this.#source = source;
    const registers = [this.registry];
    const src = () => this.#source();
    new Gauge({
      name: "nsn_requests_running",
      help: "Sequences in the running batch.",
      registers,
      collect() {
        this.set(src()?.numRunning ?? 0);
      },
    });
    new Gauge({
      name: "nsn_requests_waiting",
      help: "Sequences waiting for admission (including preempted ones).",
      registers,
      collect() {
        this.set(src()?.numWaiting ?? 0);
      },
    });
    new Gauge({
      name: "nsn_kv_pages_in_use",
      help: "KV cache pages that running sequences hold, per page kind.",
      labelNames: ["kv_bits"],
      registers,
      collect() {
        const pool = src()?.kv.pool;
        for (const k of KV_BITS) {
          this.set({ kv_bits: k }, pool ? pool.pagesInUse(k) - pool.pagesIdle(k) : 0);
        }
      },
    });
    new Gauge({
      name: "nsn_kv_pages_cached",
      help: "KV cache pages no sequence holds, kept by the prefix cache (evictable), per kind.",
      labelNames: ["kv_bits"],
      registers,
      collect() {
        const pool = src()?.kv.pool;
        for (const k of KV_BITS) this.set({ kv_bits: k }, pool?.pagesIdle(k) ?? 0);
      },
    });
    new Gauge({
      name: "nsn_kv_pages_total",
      help: "KV cache pages of each kind: held, cached, and allocatable now.",
      labelNames: ["kv_bits"],
      registers,
      collect() {
        const pool = src()?.kv.pool;
        for (const k of KV_BITS) {
          this.set({ kv_bits: k }, pool ? pool.pagesInUse(k) + pool.pagesFreeNow(k) : 0);
        }
      },
    });
    new Gauge({
      name: "nsn_kv_token_bytes",
      help: "Exact KV cache bytes per token (all layers, K and V, metadata included), per kind.",
      labelNames: ["kv_bits"],
      registers,
      collect() {
        const info = src()?.engine.info();
        this.reset(); // no samples while the model loads: a scraper reads "unknown", not 0
        if (!info) return;
        for (const k of KV_BITS) this.set({ kv_bits: k }, info.kinds[k].tokenBytes);
      },
    });
    new Gauge({
      name: "nsn_kv_bytes_in_use",
      help: "Bytes of the KV arena handed to any page kind.",
      registers,
      collect() {
        const s = src();
        this.set(s ? s.kv.pool.slabsInUse() * s.engine.info().kinds[16].pageBytes : 0);
      },
    });
    this.#cacheQueries = new Counter({
      name: "nsn_prefix_cache_queries_total",
      help: "Prompt tokens looked up in the prefix cache at admission.",
      labelNames: ["kv_bits"],
      registers,
    });
    this.#cacheHits = new Counter({
      name: "nsn_prefix_cache_hits_total",
      help: "Prompt tokens served from the prefix cache (not prefilled).",
      labelNames: ["kv_bits"],
      registers,
    });
    this.#promptTokens = new Counter({
      name: "nsn_prompt_tokens_total",
      help: "Prompt tokens of sequences whose prompt is in the cache, prefix-cache hits included " +
        "(nsn_prefix_cache_hits_total); a preemption's recompute is not counted again.",
      labelNames: ["kv_bits"],
      registers,
    });
    this.#generationTokens = new Counter({
      name: "nsn_generation_tokens_total",
      help: "Tokens generated.",
      labelNames: ["kv_bits"],
      registers,
    });
    this.#preemptions = new Counter({
      name: "nsn_preemptions_total",
      help: "Sequences preempted to make room in the KV cache.",
      registers,
    });
    this.#finished = new Counter({
      name: "nsn_sequences_finished_total",
      help: "Sequences finished, by reason (stop, length, abort, error).",
      labelNames: ["kv_bits", "finished_reason"],
      registers,
    });
    this.#ttft = new Histogram({
      name: "nsn_time_to_first_token_seconds",
      help: "Time from arrival to the first generated token, per sequence.",
      labelNames: ["kv_bits"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#itl = new Histogram({
      name: "nsn_inter_token_latency_seconds",
      help: "Time between consecutive generated tokens of a sequence.",
      labelNames: ["kv_bits"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#e2e = new Histogram({
      name: "nsn_e2e_request_latency_seconds",
      help: "Time from arrival to the end of a sequence that finished normally.",
      labelNames: ["kv_bits"],
      buckets: E2E_BUCKETS,
      registers,
    });
    this.#vllm = new VllmMetrics(this.registry, src);
  }

  /** Hooks for the scheduler: ours by kv_bits, then vLLM's names. */
  observer(): SchedulerObserver {
    return combineObservers(this.#own(), this.#vllm.observer());
  }

  #own(): SchedulerObserver {
    return {
      onPromptDone: (seq) => this.#promptTokens.inc({ kv_bits: seq.kvBits }, seq.nPrompt),
      onToken: (seq, first, sinceLastMs) => {
        const labels = { kv_bits: seq.kvBits };
        this.#generationTokens.inc(labels);
        (first ? this.#ttft : this.#itl).observe(labels, sinceLastMs / 1000);
      },
      onFinish: (seq, reason) => {
        this.#finished.inc({ kv_bits: seq.kvBits, finished_reason: reason });
        if (reason === "stop" || reason === "length") {
          this.#e2e.observe({ kv_bits: seq.kvBits }, (performance.now() - seq.arrival) / 1000);
        }
      },
      onPreempt: () => this.#preemptions.inc(),
      onCacheLookup: (seq, { queried, hit }) => {
        this.#cacheQueries.inc({ kv_bits: seq.kvBits }, queried);
        this.#cacheHits.inc({ kv_bits: seq.kvBits }, hit);
      },
    };
  }

  /** What the gauges read now (null while the model loads). */
  source(): MetricsSource | null {
    return this.#source();
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
