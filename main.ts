// The server's CLI. Binds the port first (so /health can say 503 while the model loads), then
// loads the model (models/loader.ts builds the native library when needed), then serves the
// OpenAI completions and chat completions API. SIGINT/SIGTERM: stop accepting, let in-flight
// requests finish for a grace period, cancel the rest, close the engine, exit 0.

import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { ServingModel } from "./engine/model.ts";
import type { KvEventPublisher } from "./engine/kv_events.ts";
import { Scheduler } from "./engine/scheduler.ts";
import { KV_BITS, type KvBits } from "./engine/types.ts";
import { type LoadedModel, loadModel } from "./models/loader.ts";
import { createApp } from "./routes/app.ts";
import { AppState } from "./routes/state.ts";

export interface ServerOptions {
  model: string; // directory, "demo" or "synthetic:NAME"
  host: string;
  port: number; // 0 = any free port
  kvBits: KvBits; // default for requests without X-KV-Bits
  backend: "auto" | "cpu" | "cuda";
  maxNumSeqs?: number; // default: as many as the KV pool holds
  maxModelLen?: number; // default: the model's max position
  maxQueue: number;
  maxStepTokens: number;
  kvPoolMb?: number; // default: the backend's (CPU 256 MiB, CUDA 90% of free memory)
  apiKey?: string;
  cors: boolean;
  threads?: number;
  graceMs: number; // how long shutdown waits for in-flight requests
  debugChecks: boolean; // native invariant checks after every step (tests)
  prefixCaching: boolean; // automatic prefix caching (--no-prefix-caching turns it off)
  kvEventsEndpoint?: string; // publish KV cache events (vLLM format, ZeroMQ PUB) here
  quiet: boolean;
}

export const DEFAULTS: ServerOptions = {
  model: "demo",
  host: "127.0.0.1",
  port: 8000,
  kvBits: 16,
  backend: "auto",
  maxQueue: 1024,
  maxStepTokens: 512,
  cors: false,
  graceMs: 10_000,
  debugChecks: false,
  prefixCaching: true,
  quiet: false,
};

export interface RunningServer {
  url: string;
  port: number;
  state: AppState;
  /** Resolves once the model serves; rejects when it failed to load. */
  ready: Promise<void>;
  /** Stops accepting, waits up to graceMs for in-flight work, cancels the rest, closes. */
  shutdown(): Promise<void>;
}

function modelId(name: string): string {
  if (name === "demo" || name.startsWith("synthetic:")) return name;
  return basename(resolve(name)) || name;
}

function toServingModel(name: string, m: LoadedModel): ServingModel {
  const id = modelId(name);
  return {
    id,
    aliases: [...new Set([name, resolve(name)])].filter((a) => a !== id),
    engine: m.engine,
    tokenizer: m.tokenizer,
    bosId: m.spec.bosId,
    addBos: m.spec.addBos,
    eosIds: m.spec.eosIds,
    chatTemplate: m.chatTemplate,
    created: Math.floor(Date.now() / 1000),
  };
}

/**
 * DEFAULTS overridden by the fields of `partial` that are set: a field present but `undefined`
 * (`{ maxNumSeqs: undefined }`, as option objects built from optional flags often carry) keeps
 * its default instead of overwriting it.
 */
export function resolveOptions(partial: Partial<ServerOptions> = {}): ServerOptions {
  const given = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  return { ...DEFAULTS, ...given };
}

/** Binds the port and starts loading the model in the background (see `ready`). */
export function startServer(partial: Partial<ServerOptions> = {}): RunningServer {
  const opts = resolveOptions(partial);
  const log = (msg: string) => opts.quiet || console.error(msg);
  const state = new AppState({
    defaultKvBits: opts.kvBits,
    apiKey: opts.apiKey,
    cors: opts.cors,
  });
  const app = createApp(state);
  const server = Deno.serve(
    { hostname: opts.host, port: opts.port, onListen: () => {} },
    app.fetch,
  );
  const port = server.addr.port;
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${port}`;
  log(`listening on ${url} (loading ${opts.model}: /health answers 503 until ready)`);

  let loaded: LoadedModel | null = null;
  let scheduler: Scheduler | null = null;
  let events: KvEventPublisher | null = null;
  let closing = false;
  const ready = (async () => {
    const t0 = performance.now();
    loaded = await loadModel(opts.model, {
      backend: opts.backend,
      nThreads: opts.threads,
      maxSeqs: opts.maxNumSeqs,
      maxStepTokens: opts.maxStepTokens,
      kvPoolBytes: opts.kvPoolMb === undefined ? undefined : BigInt(opts.kvPoolMb) << 20n,
      debugChecks: opts.debugChecks,
    });
    if (closing) return;
    const model = toServingModel(opts.model, loaded);
    scheduler = new Scheduler(loaded.engine, {
      maxNumSeqs: opts.maxNumSeqs,
      maxStepTokens: opts.maxStepTokens,
      maxQueue: opts.maxQueue,
      maxModelLen: opts.maxModelLen ?? loaded.spec.maxPosition,
      prefixCaching: opts.prefixCaching,
      debugChecks: opts.debugChecks,
    }, state.metrics.observer());
    const info = loaded.engine.info();
    if (opts.kvEventsEndpoint) {
      if (!scheduler.kv.prefix) throw new Error("--kv-events-endpoint needs prefix caching on");
      // Imported here: the ZeroMQ addon loads only when events are asked for.
      const { KvEventPublisher } = await import("./engine/kv_events.ts");
      const medium = info.backend === "cuda" ? "GPU" : "CPU";
      events = await KvEventPublisher.open(
        opts.kvEventsEndpoint,
        Deno.hostname(),
        model.id,
        medium,
      );
      events.cleared();
      scheduler.kv.prefix.events = events;
      log(`KV cache events on ${events.endpoint} (topic kv@${Deno.hostname()}@${model.id})`);
    }
    state.setReady(model, scheduler);
    const caps = KV_BITS.map((k) => `${k}-bit ${scheduler!.capacityTokens(k)}`).join(", ");
    log(
      `ready: ${model.id} on ${info.backend} (${info.deviceName}) in ` +
        `${((performance.now() - t0) / 1000).toFixed(1)} s; KV pool ` +
        `${(info.kvPoolBytes / 2 ** 20).toFixed(0)} MiB, tokens per sequence: ${caps}; ` +
        `prefix caching ${opts.prefixCaching ? "on" : "off"}`,
    );
  })();
  ready.catch((e) => state.loadError = e instanceof Error ? e.message : String(e));

  const shutdown = async () => {
    if (closing) return;
    closing = true;
    state.draining = true;
    const stopped = server.shutdown(); // no new connections; in-flight ones continue
    const s = scheduler as Scheduler | null;
    if (s) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((r) => timer = setTimeout(r, opts.graceMs));
      await Promise.race([s.drain(), grace]);
      clearTimeout(timer);
      await s.close(); // cancels whatever is left; their responses end
    }
    await stopped;
    await ready.catch(() => {});
    await (events as KvEventPublisher | null)?.close();
    (loaded as LoadedModel | null)?.close();
  };
  return { url, port, state, ready, shutdown };
}

const USAGE = `Usage: deno task start [options]

  --model DIR|demo|synthetic:NAME   model to serve (default demo)
  --host HOST                       address to bind (default 127.0.0.1)
  --port N                          port (default 8000; 0 = any free port)
  --kv-bits 16|2|1                  KV precision when a request sends no X-KV-Bits (default 16)
  --backend auto|cpu|cuda           compute backend (default auto: CUDA when present)
  --max-num-seqs N                  running sequences at most (default: what the KV pool holds)
  --max-model-len N                 context length (default: the model's)
  --max-queue N                     waiting sequences before 429 (default 1024)
  --max-step-tokens N               tokens per forward step (default 512)
  --kv-pool-mb N                    KV cache pool (default: CPU 256 MiB, CUDA 90% of free)
  --api-key KEY                     require "Authorization: Bearer KEY" (not on /health)
  --cors                            allow cross-origin requests (exposes X-KV-Bits)
  --threads N                       CPU threads (default: all cores)
  --grace-seconds N                 shutdown waits this long for in-flight requests (default 10)
  --no-prefix-caching               recompute shared prompt prefixes (default: reuse them)
  --kv-events-endpoint tcp://H:P    publish KV cache events for routers (vLLM format, ZeroMQ)
  --debug-checks                    verify page tables and reference counts every step (slow)
  --help                            this text`;

function intFlag(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}`);
  return n;
}

/** Flags -> options; throws with a message for anything wrong. */
export function parseCli(args: string[]): Partial<ServerOptions> | "help" {
  const { values } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      "kv-bits": { type: "string" },
      backend: { type: "string" },
      "max-num-seqs": { type: "string" },
      "max-model-len": { type: "string" },
      "max-queue": { type: "string" },
      "max-step-tokens": { type: "string" },
      "kv-pool-mb": { type: "string" },
      "api-key": { type: "string" },
      cors: { type: "boolean" },
      threads: { type: "string" },
      "grace-seconds": { type: "string" },
      "debug-checks": { type: "boolean" },
      "no-prefix-caching": { type: "boolean" },
      "kv-events-endpoint": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return "help";
  const out: Partial<ServerOptions> = {};
  const set = <K extends keyof ServerOptions>(k: K, v: ServerOptions[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  set("model", values.model);
  set("host", values.host);
  set("port", intFlag("port", values.port, 0));
  if (values["kv-bits"] !== undefined) {
    const k = Number(values["kv-bits"]);
    if (!KV_BITS.includes(k as KvBits)) throw new Error("--kv-bits must be 16, 2 or 1");
    out.kvBits = k as KvBits;
  }
  if (values.backend !== undefined) {
    if (!["auto", "cpu", "cuda"].includes(values.backend)) {
      throw new Error("--backend must be auto, cpu or cuda");
    }
    out.backend = values.backend as ServerOptions["backend"];
  }
  set("maxNumSeqs", intFlag("max-num-seqs", values["max-num-seqs"], 1));
  set("maxModelLen", intFlag("max-model-len", values["max-model-len"], 1));
  set("maxQueue", intFlag("max-queue", values["max-queue"], 1));
  set("maxStepTokens", intFlag("max-step-tokens", values["max-step-tokens"], 1));
  set("kvPoolMb", intFlag("kv-pool-mb", values["kv-pool-mb"], 1));
  set("apiKey", values["api-key"]);
  set("cors", values.cors);
  set("threads", intFlag("threads", values.threads, 1));
  set("debugChecks", values["debug-checks"]);
  if (values["no-prefix-caching"]) out.prefixCaching = false;
  set("kvEventsEndpoint", values["kv-events-endpoint"]);
  const grace = intFlag("grace-seconds", values["grace-seconds"], 0);
  if (grace !== undefined) out.graceMs = grace * 1000;
  return out;
}

async function main(): Promise<void> {
  let parsed: Partial<ServerOptions> | "help";
  try {
    parsed = parseCli(Deno.args);
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (parsed === "help") {
    console.log(USAGE);
    return;
  }
  let srv: RunningServer;
  try {
    srv = startServer(parsed);
  } catch (e) {
    console.error(`error: cannot listen: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
  let stopping = false;
  const onSignal = () => {
    if (stopping) Deno.exit(1); // a second signal: do not wait
    stopping = true;
    console.error("shutting down (again to force)...");
    srv.shutdown().then(() => Deno.exit(0), () => Deno.exit(1));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    await srv.ready;
  } catch (e) {
    console.error(`error: the model failed to load: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}

if (import.meta.main) await main();
