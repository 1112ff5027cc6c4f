// The model-server protocol in one place: the vLLM metric names we export beside our nsn_*
// ones, and which of them each router the field runs reads to pick a replica. engine/metrics.ts
// registers these names, tests/vllm_metrics_test.ts scrapes them, and docs/deploy.md quotes
// ROUTERS, so a router's expectations are written down once.

/** The vLLM names /metrics exports, each as one series labelled model_name. */
export const VLLM = {
  waiting: "vllm:num_requests_waiting",
  running: "vllm:num_requests_running",
  kvUsage: "vllm:kv_cache_usage_perc",
  gpuCacheUsage: "vllm:gpu_cache_usage_perc", // the older name of kvUsage, same value
  cacheConfig: "vllm:cache_config_info",
  promptTokens: "vllm:prompt_tokens_total",
  generationTokens: "vllm:generation_tokens_total",
  ttft: "vllm:time_to_first_token_seconds",
  tpot: "vllm:time_per_output_token_seconds",
  e2e: "vllm:e2e_request_latency_seconds",
  queueTime: "vllm:request_queue_time_seconds",
  prefixQueries: "vllm:gpu_prefix_cache_queries_total", // prompt tokens looked up
  prefixHits: "vllm:gpu_prefix_cache_hits_total", // prompt tokens found in the prefix cache
} as const;

export type VllmName = (typeof VLLM)[keyof typeof VLLM];

/** Prometheus type of each exported vLLM family. */
export const VLLM_TYPES: Record<VllmName, "gauge" | "counter" | "histogram"> = {
  [VLLM.waiting]: "gauge",
  [VLLM.running]: "gauge",
  [VLLM.kvUsage]: "gauge",
  [VLLM.gpuCacheUsage]: "gauge",
  [VLLM.cacheConfig]: "gauge",
  [VLLM.promptTokens]: "counter",
  [VLLM.generationTokens]: "counter",
  [VLLM.ttft]: "histogram",
  [VLLM.tpot]: "histogram",
  [VLLM.e2e]: "histogram",
  [VLLM.queueTime]: "histogram",
  [VLLM.prefixQueries]: "counter",
  [VLLM.prefixHits]: "counter",
};

export interface RouterRead {
  /** The sample name the router looks for (a histogram's family name). */
  metric: string;
  /** What the router does with it. */
  use: string;
  /** False: we do not export it, and what the router then does is said in `use`. */
  exported: boolean;
}

export interface Router {
  name: string;
  /** Where the names were read (the source file of the router). */
  source: string;
  reads: RouterRead[];
}

/** What each router reads from a replica's /metrics, by default configuration. */
export const ROUTERS: Router[] = [
  {
    name: "Gateway API Inference Extension",
    source: "gateway-api-inference-extension: the EPP's default metric flags " +
      "(--total-queued-requests-metric, --total-running-requests-metric, " +
      "--kv-cache-usage-percentage-metric, --lora-info-metric, --cache-info-metric)",
    reads: [
      { metric: VLLM.waiting, use: "queue depth: the queue scorer and saturation", exported: true },
      { metric: VLLM.running, use: "running requests", exported: true },
      {
        metric: VLLM.kvUsage,
        use: "KV cache utilization 0..1: the kv-cache-utilization scorer and saturation " +
          "(releases before v1.0 read vllm:gpu_cache_usage_perc, also exported)",
        exported: true,
      },
      {
        metric: VLLM.cacheConfig,
        use: "labels block_size and num_gpu_blocks: the prefix-cache scorer's block size",
        exported: true,
      },
      {
        metric: "vllm:lora_requests_info",
        use: "LoRA affinity only; we serve no adapters, so the LoRA filter has nothing to match",
        exported: false,
      },
    ],
  },
  {
    name: "vLLM production-stack router",
    source:
      "production-stack: src/vllm_router/stats/engine_stats.py (EngineStats.from_vllm_scrape)",
    reads: [
      { metric: VLLM.running, use: "least-loaded and session routing", exported: true },
      { metric: VLLM.waiting, use: "queued requests", exported: true },
      { metric: VLLM.gpuCacheUsage, use: "KV usage for the dashboard and routing", exported: true },
      {
        metric: "vllm:gpu_prefix_cache_hit_rate",
        use: "prefix-cache hit rate; absent, the router keeps its default 0",
        exported: false,
      },
      { metric: VLLM.prefixHits, use: "prefix-cache hits (tokens)", exported: true },
      { metric: VLLM.prefixQueries, use: "prefix-cache queries (tokens)", exported: true },
    ],
  },
  {
    name: "AIBrix gateway",
    source: "aibrix: pkg/metrics/metrics.go (EngineMetricsNameMapping, engine vllm)",
    reads: [
      { metric: VLLM.running, use: "least-request and throughput routing", exported: true },
      { metric: VLLM.waiting, use: "queue length", exported: true },
      { metric: VLLM.gpuCacheUsage, use: "least-KV-cache routing", exported: true },
      { metric: VLLM.kvUsage, use: "KV usage (newer engines)", exported: true },
      { metric: VLLM.promptTokens, use: "prompt throughput", exported: true },
      { metric: VLLM.generationTokens, use: "generation throughput", exported: true },
      { metric: VLLM.ttft, use: "least-latency routing (TTFT)", exported: true },
      { metric: VLLM.tpot, use: "least-latency routing (TPOT)", exported: true },
      { metric: VLLM.e2e, use: "average end-to-end latency", exported: true },
      { metric: VLLM.queueTime, use: "queue time", exported: true },
    ],
  },
];
