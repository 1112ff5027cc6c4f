// What every route reads: the server's configuration, and the model once it has loaded
// (null before: /health answers 503 and the API routes refuse with 503 too).

import { tokenTextFn } from "../engine/detokenizer.ts";
import { ServerMetrics } from "../engine/metrics.ts";
import type { ServingModel } from "../engine/model.ts";
import type { Scheduler } from "../engine/scheduler.ts";
import type { KvBits } from "../engine/types.ts";
import { ApiError } from "./errors.ts";

export interface ServerConfig {
  defaultKvBits: KvBits;
  apiKey?: string;
  cors: boolean;
  maxBodyBytes: number;
}

export interface ReadyModel {
  model: ServingModel;
  scheduler: Scheduler;
  tokenText: (id: number) => string;
}

export class AppState {
  readonly config: ServerConfig;
  readonly metrics: ServerMetrics;
  ready: ReadyModel | null = null;
  /** Why the model could not be loaded (health keeps answering 503 with it). */
  loadError: string | null = null;
  /** Set on shutdown: new completions get 503 while in-flight ones finish. */
  draining = false;

  constructor(config: Partial<ServerConfig> = {}) {
    this.config = { defaultKvBits: 16, cors: false, maxBodyBytes: 32 << 20, ...config };
    this.metrics = new ServerMetrics(() =>
      this.ready
        ? {
          numRunning: this.ready.scheduler.numRunning,
          numWaiting: this.ready.scheduler.numWaiting,
          engine: this.ready.model.engine,
          kv: this.ready.scheduler.kv,
        }
        : null
    );
  }

  /** Makes the model servable: builds nothing, only publishes what the caller built. */
  setReady(model: ServingModel, scheduler: Scheduler): void {
    this.ready = { model, scheduler, tokenText: tokenTextFn(model.tokenizer) };
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
