// Runs the serving sweep: a server (started in-process, or one at --url), then for each kv_bits
// and each concurrency level one load run (bench/serve_load.ts), preceded by a warm-up request
// per kv_bits so first-call costs (graph capture, lazy allocations) stay out of the figures.

import type { KvBits } from "../engine/types.ts";
import type { ServerOptions } from "../main.ts";
import {
  gaugePeak,
  type LoadResult,
  type PeakWatcher,
  pollPeak,
  runLoad,
  timedRequest,
} from "./serve_load.ts";

export type ServeTarget =
  | { url: string; tokenRange: [number, number] }
  | { server: Partial<ServerOptions> & { model: string }; tokenRange: [number, number] };

export interface ServeSweepConfig {
  kvBits: number[];
  concurrency: number[];
  numPrompts: number | "auto";
  inputLen: number;
  prefixLen?: number; // shared first tokens of every prompt (bench --prefix-len)
  outputLen: number;
  requestRate: number;
  seed: number;
  onDone?: () => void;
}

/** "auto": enough requests that the steady state dominates, bounded for short levels. */
export function promptsFor(n: number | "auto", concurrency: number): number {
  return n === "auto" ? Math.max(8, 2 * concurrency) : n;
}

export interface ServeRun {
  result: LoadResult;
  kvBytesPerToken: number; // NaN when the server does not say
}

interface Running {
  baseUrl: string;
  description: string;
  kvBytesPerToken(kvBits: number): Promise<number>;
  /** Starts watching the number of running sequences; stop() gives the peak (NaN: unknown). */
  peakRunning: () => PeakWatcher;
  stop(): Promise<void>;
}

/** Reads nsn_kv_token_bytes{kv_bits="..."} from /metrics; NaN when the server lacks it. */
async function scrapeTokenBytes(baseUrl: string, kvBits: number): Promise<number> {
  try {
    const res = await fetch(`${baseUrl}/metrics`);
    const text = await res.text();
    if (!res.ok) return NaN;
    const re = new RegExp(`^nsn_kv_token_bytes\\{[^}]*kv_bits="${kvBits}"[^}]*\\}\\s+(\\S+)`, "m");
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

async function start(target: ServeTarget): Promise<Running> {
  if ("url" in target) {
    const peak = gaugePeak(`${target.url}/metrics`, "nsn_requests_running");
    return {
      baseUrl: target.url,
      description: target.url,
      kvBytesPerToken: (kv) => scrapeTokenBytes(target.url, kv),
      peakRunning: peak,
      stop: async () => {},
    };
  }
  // Imported lazily so `bench --engine` and --url runs never load the server's modules.
  const { startServer } = await import("../main.ts");
  const server = startServer({ ...target.server, host: "127.0.0.1", port: 0, quiet: true });
  try {
    await server.ready;
  } catch (e) {
    await server.shutdown();
    throw e;
  }
  const ready = server.state.ready!;
  return {
    baseUrl: server.url,
    description: `${target.server.model} in-process`,
    kvBytesPerToken: (kv) =>
      Promise.resolve(ready.model.engine.info().kinds[kv as KvBits]?.tokenBytes ?? NaN),
    // In-process the scheduler can be read directly, often enough not to miss short peaks.
    peakRunning: pollPeak(() => ready.scheduler.numRunning, 2),
    stop: () => server.shutdown(),
  };
}

export async function sweepServe(
  target: ServeTarget,
  cfg: ServeSweepConfig,
): Promise<{ description: string; runs: ServeRun[] }> {
  const server = await start(target);
  const runs: ServeRun[] = [];
  try {
    const model = await servedModel(server.baseUrl);
    for (const kvBits of cfg.kvBits) {
      const base = {
        baseUrl: server.baseUrl,
        model,
        kvBits,
        inputLen: cfg.inputLen,
        prefixLen: cfg.prefixLen,
        outputLen: cfg.outputLen,
        requestRate: cfg.requestRate,
        tokenRange: target.tokenRange,
      };
      const warm = await timedRequest(
        { ...base, numPrompts: 1, concurrency: 1, seed: -1, outputLen: Math.min(4, cfg.outputLen) },
        Array.from({ length: cfg.inputLen }, (_, i) => target.tokenRange[0] + i),
        performance.now(),
      );
      if (!warm.ok) throw new Error(`warm-up request at kv_bits ${kvBits} failed: ${warm.error}`);
      const kvBytesPerToken = await server.kvBytesPerToken(kvBits);
      for (const concurrency of cfg.concurrency) {
        const numPrompts = promptsFor(cfg.numPrompts, concurrency);
        const result = await runLoad({
          ...base,
          numPrompts,
          concurrency,
          seed: cfg.seed + concurrency,
          peakRunning: server.peakRunning,
          onDone: cfg.onDone,
        });
        runs.push({ result, kvBytesPerToken });
      }
    }
  } finally {
    await server.stop();
  }
  return { description: server.description, runs };
}

/** The id /v1/models lists first, so requests name the model the server actually serves. */
async function servedModel(baseUrl: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${baseUrl}/v1/models`);
    const body = await res.json();
    return body?.data?.[0]?.id;
  } catch {
    return undefined;
  }
}
