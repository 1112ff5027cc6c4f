// What an operator reads while the server works: one info line per finished request, and a
// periodic stats line while anything runs or waits (as vLLM logs its throughput every 10 s).

import type { CompletionRun } from "./completion.ts";
import type { KvCache } from "./kv_cache.ts";
import type { Logger } from "./log.ts";
import type { SchedulerObserver } from "./scheduler.ts";
import { KV_BITS, type KvEngine } from "./types.ts";

const ms = (t: number) => t.toFixed(0);

/** `request <id> kv_bits=.. prompt_tokens=.. completion_tokens=.. ttft_ms=.. total_ms=.. status=..` */
export function requestLine(run: CompletionRun, endpoint: string): string {
  const usage = run.usage();
  const now = performance.now();
  const ttft = run.firstTokenAt === null ? "-" : ms(run.firstTokenAt - run.startedAt);
  const reasons = [...new Set(run.reasons)];
  const status = run.error ? `error (${run.error.message.slice(0, 200)})` : reasons.join(",");
  return `request ${run.id} ${endpoint} kv_bits=${run.req.kvBits} ` +
    `prompt_tokens=${usage.prompt_tokens} completion_tokens=${usage.completion_tokens} ` +
    `ttft_ms=${ttft} total_ms=${ms(now - run.startedAt)} status=${status}`;
}

export interface StatsSource {
  numRunning: number;
  numWaiting: number;
  engine: KvEngine;
  kv: KvCache;
}

/** Logs a stats line every `intervalMs` while the server is busy or tokens were made. */
export class StatsLogger {
  #log: Logger;
  #source: () => StatsSource | null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #prompt = 0;
  #generated = 0;
  #last = performance.now();

  constructor(log: Logger, source: () => StatsSource | null, intervalMs = 10_000) {
    this.#log = log;
    this.#source = source;
    if (!log.enabled("info")) return;
    const timer = setInterval(() => this.tick(), intervalMs);
    Deno.unrefTimer(timer); // never keeps the process alive
    this.#timer = timer;
  }

  observer(): SchedulerObserver {
    return {
      onPromptDone: (seq) => this.#prompt += seq.nPrompt,
      onToken: () => this.#generated++,
    };
  }

  /** The stats line now (null when idle and nothing happened since the last one). */
  line(): string | null {
    const s = this.#source();
    const now = performance.now();
    const secs = Math.max(1e-3, (now - this.#last) / 1000);
    const busy = s !== null && (s.numRunning > 0 || s.numWaiting > 0);
    if (!busy && this.#prompt === 0 && this.#generated === 0) return null;
    const info = s?.engine.info();
    const kv = KV_BITS.map((k) => {
      const held = s ? s.kv.pool.pagesInUse(k) - s.kv.pool.pagesIdle(k) : 0;
      const pct = info ? (100 * held * info.kinds[k].pageBytes) / info.kvPoolBytes : 0;
      return `${k}-bit ${pct.toFixed(1)}%`;
    }).join(", ");
    const text = `stats: running ${s?.numRunning ?? 0}, waiting ${s?.numWaiting ?? 0}, ` +
      `prompt ${(this.#prompt / secs).toFixed(1)} tok/s, generation ` +
      `${(this.#generated / secs).toFixed(1)} tok/s, KV pool in use: ${kv}`;
    this.#prompt = 0;
    this.#generated = 0;
    this.#last = now;
    return text;
  }

  tick(): void {
    const text = this.line();
    if (text) this.#log.info(text);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
