// What every route reads: the server's configuration, and the model once it has loaded
// (null before: /health answers 503 and the API routes refuse with 503 too).

import { tokenTextFn } from "../engine/detokenizer.ts";
import { Logger } from "../engine/log.ts";
import { ServerMetrics } from "../engine/metrics.ts";
import type { ServingModel } from "../engine/model.ts";
import type { Scheduler } from "../engine/scheduler.ts";
import type { KvBits } from "../engine/types.ts";
import { ApiError } from "./errors.ts";

export interface ServerConfig {
  defaultKvBits: KvBits;
  /** Names served as `model` (--served-model-name); the first is reported. Default: the id. */
  servedModelNames?: string[];
  apiKey?: string;
  cors: boolean;
  /** --seed: requests without a seed draw theirs from a stream seeded with this. */
  seed?: number;
  maxBodyBytes: number;
}

export interface ReadyModel {
  model: ServingModel;
  scheduler: Scheduler;
  tokenText: (id: number) => string;
  /** The seed of a request that sends none: the --seed stream's next, or null (random). */
  nextSeed: () => number | null;
}

export class AppState {
  readonly config: ServerConfig;
  readonly metrics: ServerMetrics;
  ready: ReadyModel | null = null;
  /** Why the model could not be loaded (health keeps answering 503 with it). */
  loadError: string | null = null;
  /** Set on shutdown: new completions get 503 while in-flight ones finish. */
  draining = false;
  /** Request lines and warnings; tests leave it at warnings only. */
  log: Logger;

  constructor(config: Partial<ServerConfig> = {}, log = new Logger("warning")) {
    this.config = { defaultKvBits: 16, cors: false, maxBodyBytes: 32 << 20, ...config };
    this.log = log;
    this.metrics = new ServerMetrics(() =>
      this.ready
        ? {
          modelName: this.ready.model.id,
          numRunning: this.ready.scheduler.numRunning,
          numWaiting: this.ready.scheduler.numWaiting,
          engine: this.ready.model.engine,
          defaultKvBits: this.config.defaultKvBits,
          kv: this.ready.scheduler.kv,
        }
        : null
    );
  }

  /** Makes the model servable: builds nothing, only publishes what the caller built. */
  setReady(model: ServingModel, scheduler: Scheduler): void {
    const seeds = this.config.seed === undefined ? null : seedStream(this.config.seed);
    this.ready = {
      model,
      scheduler,
      tokenText: tokenTextFn(model.tokenizer),
      nextSeed: () => seeds?.() ?? null,
    };
  }

  /** The loaded model, or a 503 the client's SDK will retry. */
  requireReady(): ReadyModel {
    if (this.ready) return this.ready;
    throw new ApiError(
      503,
      this.loadError ? `The model failed to load: ${this.loadError}` : "The model is loading.",
      null,
      "model_loading",
    );
  }
}

/** A deterministic stream of 32-bit seeds (mulberry32), one per request that sends none. */
function seedStream(seed: number): () => number {
  let a = (seed >>> 0) ^ Math.floor(seed / 2 ** 32);
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}
