// The client side of `deno task bench`: one load run against /v1/completions, measured the way
// vLLM's `bench serve` measures (docs/reference/openai-serving.md section 5.1):
//   TTFT  send -> first streamed chunk;  ITL  every gap between consecutive chunks, pooled;
//   TPOT  per request (E2EL - TTFT) / (output_tokens - 1), only when output_tokens > 1;
//   E2EL  send -> end of the stream;  throughputs = totals / (first send -> last completion).
// Output token counts come from the server's usage (stream_options.include_usage), else from
// the number of chunks.

import { poissonGap, rng, summarize, type Summary } from "./stats.ts";

export interface LoadConfig {
  baseUrl: string; // e.g. http://127.0.0.1:8000
  model?: string;
  kvBits: number; // sent as X-KV-Bits
  inputLen: number;
  /** Every prompt starts with the same this many tokens (a shared system prompt); 0 = none. */
  prefixLen?: number;
  outputLen: number;
  numPrompts: number;
  concurrency: number; // max requests in flight (Infinity = unbounded)
  requestRate: number; // Poisson arrivals per second (Infinity = all at once)
  tokenRange: [number, number]; // prompt ids drawn uniformly from [lo, hi)
  seed: number;
  headers?: Record<string, string>;
  /** Watches the server's running sequences during the run (peakRunningSeqs). */
  peakRunning?: () => PeakWatcher;
  onDone?: () => void; // after each request, for a progress bar
}

export interface RequestRecord {
  ok: boolean;
  error?: string;
  promptTokens: number;
  cachedTokens: number; // usage.prompt_tokens_details.cached_tokens (0 when absent)
  outputTokens: number;
  ttftMs: number;
  e2elMs: number;
  itlMs: number[];
  chunkTimesMs: number[]; // arrival times relative to the run's start
  startMs: number;
}

export interface LoadResult {
  kvBits: number;
  concurrency: number;
  requestRate: number;
  completed: number;
  failed: number;
  errors: string[]; // first few distinct messages
  durationS: number;
  totalInput: number;
  totalOutput: number;
  /** Prompt tokens the server served from its prefix cache, as a share of totalInput. */
  prefixHitRate: number;
  requestThroughput: number;
  outputThroughput: number;
  totalTokenThroughput: number;
  peakOutputThroughput: number; // busiest 1 s of token arrivals (see peakRate)
  peakConcurrentRequests: number; // client side: requests in flight
  meanConcurrency: number; // sum of E2EL / duration (SGLang's "Concurrency")
  peakRunningSeqs: number; // server side, from /metrics nsn_requests_running; NaN if absent
  ttft: Summary;
  tpot: Summary;
  itl: Summary;
  e2el: Summary;
}

/**
 * Random token-id prompts, deterministic per seed (vLLM's "random" dataset, minus decoding).
 * With prefixLen, every prompt starts with the same prefixLen tokens (--prefix-len).
 */
export function randomPrompts(
  n: number,
  len: number,
  range: [number, number],
  seed: number,
  prefixLen = 0,
) {
  const rand = rng(seed);
  const [lo, hi] = range;
  const draw = (k: number) => Array.from({ length: k }, () => lo + Math.floor(rand() * (hi - lo)));
  const prefix = draw(Math.min(prefixLen, len));
  return Array.from({ length: n }, () => [...prefix, ...draw(len - prefix.length)]);
}

/** Sends one streaming completion and times its chunks. Never throws. */
export async function timedRequest(
  cfg: LoadConfig,
  prompt: number[],
  t0: number,
): Promise<RequestRecord> {
  const rec: RequestRecord = {
    ok: false,
    promptTokens: prompt.length,
    cachedTokens: 0,
    outputTokens: 0,
    ttftMs: NaN,
    e2elMs: NaN,
    itlMs: [],
    chunkTimesMs: [],
    startMs: performance.now() - t0,
  };
  const start = performance.now();
  let last = start;
  let chunks = 0;
  let usageTokens: number | null = null;
  try {
    const res = await fetch(`${cfg.baseUrl}/v1/completions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-kv-bits": String(cfg.kvBits),
        ...cfg.headers,
      },
      body: JSON.stringify({
        model: cfg.model,
        prompt,
        max_tokens: cfg.outputLen,
        ignore_eos: true,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    if (!res.ok || !res.body) {
      rec.error = `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`;
      return rec;
    }
    const decoder = new TextDecoder();
    let buf = "";
    for await (const bytes of res.body) {
      buf += decoder.decode(bytes, { stream: true });
      let sep: number;
      while ((sep = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, sep);
        buf = buf.slice(sep + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const msg = JSON.parse(data);
          if (msg.error) throw new Error(msg.error.message ?? JSON.stringify(msg.error));
          if (msg.usage?.completion_tokens !== undefined) {
            usageTokens = msg.usage.completion_tokens;
            rec.cachedTokens = msg.usage.prompt_tokens_details?.cached_tokens ?? 0;
          }
          if (!Array.isArray(msg.choices) || msg.choices.length === 0) continue;
          // A text-less chunk that only carries finish_reason is a terminator, not a token
          // (vLLM's server folds it into the last token's chunk; counting it would add a
          // near-zero ITL per request). Text-less chunks without it are held-back tokens.
          const c = msg.choices[0];
          if (!c.text && c.finish_reason) continue;
          const now = performance.now();
          if (chunks === 0) rec.ttftMs = now - start;
          else rec.itlMs.push(now - last);
          rec.chunkTimesMs.push(now - t0);
          last = now;
          chunks++;
        }
      }
    }
    rec.e2elMs = performance.now() - start;
    rec.outputTokens = usageTokens ?? chunks;
    rec.ok = chunks > 0;
    if (!rec.ok) rec.error = "stream ended without a token";
  } catch (e) {
    rec.error = e instanceof Error ? e.message : String(e);
  }
  return rec;
}

export interface PeakWatcher {
  stop(): Promise<number>;
}

/** Samples `read` every `ms` milliseconds and keeps the maximum. */
export function pollPeak(read: () => number, ms: number): () => PeakWatcher {
  return () => {
    let peak = read();
    const timer = setInterval(() => peak = Math.max(peak, read()), ms);
    return {
      stop: () => {
        clearInterval(timer);
        return Promise.resolve(peak);
      },
    };
  };
}

/** Polls a Prometheus text endpoint for a gauge (summed over labels) and keeps its maximum. */
export function gaugePeak(url: string, name: string): () => PeakWatcher {
  const re = new RegExp(`^${name}(\\{[^}]*\\})?\\s+([0-9.eE+-]+)`, "gm");
  return () => {
    let peak = NaN;
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          const res = await fetch(url);
          const text = await res.text();
          const values = res.ok ? [...text.matchAll(re)].map((m) => Number(m[2])) : [];
          if (values.length) {
            const sum = values.reduce((a, b) => a + b, 0);
            peak = Number.isFinite(peak) ? Math.max(peak, sum) : sum;
          }
        } catch { /* the gauge is optional */ }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    return {
      stop: async () => {
        running = false;
        await loop;
        return peak;
      },
    };
  };
}

/** One load run: numPrompts requests, at most `concurrency` in flight, Poisson arrivals. */
export async function runLoad(cfg: LoadConfig): Promise<LoadResult> {
  const prompts = randomPrompts(
    cfg.numPrompts,
    cfg.inputLen,
    cfg.tokenRange,
    cfg.seed,
    cfg.prefixLen,
  );
  const arrivals = rng(cfg.seed ^ 0x5eed);
  const gauge = cfg.peakRunning?.() ?? { stop: () => Promise.resolve(NaN) };
  const records: RequestRecord[] = [];
  let inFlight = 0;
  let peakInFlight = 0;
  const waiters: (() => void)[] = [];
  const t0 = performance.now();
  const tasks: Promise<void>[] = [];
  for (const prompt of prompts) {
    const gap = poissonGap(cfg.requestRate, arrivals);
    if (gap > 0) await new Promise((r) => setTimeout(r, gap * 1000));
    while (inFlight >= cfg.concurrency) await new Promise<void>((r) => waiters.push(r));
    inFlight++;
    peakInFlight = Math.max(peakInFlight, inFlight);
    tasks.push(
      timedRequest(cfg, prompt, t0).then((rec) => {
        records.push(rec);
        inFlight--;
        waiters.shift()?.();
        cfg.onDone?.();
      }),
    );
  }
  await Promise.all(tasks);
  const durationS = (performance.now() - t0) / 1000;
  const peakRunning = await gauge.stop();
  return summarizeRun(cfg, records, durationS, peakInFlight, peakRunning);
}

export function summarizeRun(
  cfg: Pick<LoadConfig, "kvBits" | "concurrency" | "requestRate">,
  records: RequestRecord[],
  durationS: number,
  peakInFlight: number,
  peakRunning: number,
): LoadResult {
  const ok = records.filter((r) => r.ok);
  const totalInput = ok.reduce((s, r) => s + r.promptTokens, 0);
  const totalOutput = ok.reduce((s, r) => s + r.outputTokens, 0);
  // Token arrivals: a chunk may carry several tokens, so each chunk weighs its share.
  const arrivals: [number, number][] = ok.flatMap((r) =>
    r.chunkTimesMs.map((t): [number, number] => [t, r.outputTokens / r.chunkTimesMs.length])
  );
  const errors = [...new Set(records.filter((r) => !r.ok).map((r) => r.error ?? "?"))];
  return {
    kvBits: cfg.kvBits,
    concurrency: cfg.concurrency,
    requestRate: cfg.requestRate,
    completed: ok.length,
    failed: records.length - ok.length,
    errors: errors.slice(0, 5),
    durationS,
    totalInput,
    totalOutput,
    prefixHitRate: ok.reduce((s, r) => s + r.cachedTokens, 0) / totalInput,
    requestThroughput: ok.length / durationS,
    outputThroughput: totalOutput / durationS,
    totalTokenThroughput: (totalInput + totalOutput) / durationS,
    peakOutputThroughput: peakRate(arrivals, Math.min(1000, durationS * 1000)),
    peakConcurrentRequests: peakInFlight,
    meanConcurrency: ok.reduce((s, r) => s + r.e2elMs, 0) / 1000 / durationS,
    peakRunningSeqs: peakRunning,
    ttft: summarize(ok.map((r) => r.ttftMs)),
    tpot: summarize(
      ok.filter((r) => r.outputTokens > 1).map((r) => (r.e2elMs - r.ttftMs) / (r.outputTokens - 1)),
    ),
    itl: summarize(ok.flatMap((r) => r.itlMs)),
    e2el: summarize(ok.map((r) => r.e2elMs)),
  };
}

/**
 * Highest output rate (tokens/s) over any window of `windowMs` (sliding). vLLM counts tokens in
 * fixed 1-second buckets, which reads below the mean when a run lasts under a second; a
 * window of min(1 s, duration) keeps the figure comparable for long runs and sane for short.
 */
export function peakRate(arrivals: [number, number][], windowMs: number): number {
  if (arrivals.length === 0 || !(windowMs > 0)) return NaN;
  const a = [...arrivals].sort((x, y) => x[0] - y[0]);
  let best = 0;
  let sum = 0;
  let lo = 0;
  for (let hi = 0; hi < a.length; hi++) {
    sum += a[hi][1];
    while (a[hi][0] - a[lo][0] > windowMs) sum -= a[lo++][1];
    best = Math.max(best, sum);
  }
  return best / (windowMs / 1000);
}
