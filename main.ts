// The server's CLI. Binds the port first (so /health can say 503 while the model loads), then
// loads the model (models/loader.ts builds the native library when needed), then serves the
// OpenAI completions and chat completions API. SIGINT/SIGTERM: stop accepting, let in-flight
// requests finish for a grace period, cancel the rest, close the engine, exit 0.

import { basename, resolve } from "node:path";
import { parseArgs } from "node:util";
import { LOG_LEVELS, Logger, type LogLevel } from "./engine/log.ts";
import { combineObservers } from "./engine/metrics.ts";
import type { ServingModel } from "./engine/model.ts";
import type { KvEventPublisher } from "./engine/kv_events.ts";
import { Scheduler } from "./engine/scheduler.ts";
import { StatsLogger } from "./engine/stats_log.ts";
import { KV_BITS, type KvBits } from "./engine/types.ts";
import { raiseFdLimit } from "./ffi/fd_limit.ts";
import { openLibrary } from "./ffi/library.ts";
import { readChatTemplateFile } from "./models/chat_template.ts";
import { intArg } from "./bench/cli_args.ts";
import { type LoadedModel, loadModel } from "./models/loader.ts";
import { FrontDoor } from "./net/front_door.ts";
import { HttpServer } from "./net/http_server.ts";
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
  maxConnections?: number; // default: what the open-file limit allows, at most 1024
  headerTimeoutMs: number; // a request head must arrive within this
  keepAliveMs: number; // an idle connection is closed after this
  writeTimeoutMs: number; // a client that reads nothing for this long is dropped
  debugChecks: boolean; // native invariant checks after every step (tests)
  prefixCaching: boolean; // automatic prefix caching (--no-prefix-caching turns it off)
  kvEventsEndpoint?: string; // publish KV cache events (vLLM format, ZeroMQ PUB) here
  quiet: boolean; // errors only (tests, benchmarks)
  logLevel: LogLevel;
  servedModelNames?: string[]; // names clients send as `model`; the first is reported
  chatTemplate?: string; // a Jinja file that replaces the model's chat template
  seed?: number; // requests without a seed draw theirs from a stream seeded with this
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
  headerTimeoutMs: 10_000,
  keepAliveMs: 30_000,
  writeTimeoutMs: 30_000,
  debugChecks: false,
  prefixCaching: true,
  quiet: false,
  logLevel: "info",
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

function toServingModel(name: string, m: LoadedModel, served?: string[]): ServingModel {
  // Like vLLM: with --served-model-name, exactly those names are accepted.
  const names = served?.length ? served : [modelId(name), name, resolve(name)];
  const id = names[0];
  return {
    id,
    aliases: [...new Set(names)].filter((a) => a !== id),
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

// Request line + headers; more is a 431 (hyper's own limit answers a bare 400 or closes).
const MAX_HEAD_BYTES = 64 << 10;

/**
 * Connections the open-file limit leaves room for: each takes three descriptors (the client's
 * socket and both ends of the unix socket to Deno.serve), plus 128 for the model, the engine
 * and the 503s being written beyond the cap (at most MAX_REFUSING at once, net/front_door.ts).
 * More than that would let Deno.serve's own accept() fail, which ends it. Default: that, at
 * most 1024; a larger --max-connections is lowered to it.
 */
function maxConnections(asked: number | undefined, log: (msg: string) => void): number {
  const lim = raiseFdLimit();
  const room = lim ? Math.max(16, Math.floor((lim.soft - 128) / 3)) : Infinity;
  const want = asked ?? Math.min(1024, room);
  if (want <= room) return want;
  log(`--max-connections ${want} lowered to ${room}: the open-file limit is ${lim!.soft}`);
  return room;
}

/** Binds the port and starts loading the model in the background (see `ready`). */
export function startServer(partial: Partial<ServerOptions> = {}): RunningServer {
  const opts = resolveOptions(partial);
  const logger = new Logger(opts.quiet ? "error" : opts.logLevel);
  const log = (msg: string) => logger.info(msg);
  const cores = navigator.hardwareConcurrency;
  if (opts.threads !== undefined && opts.threads > cores) {
    logger.warning(`--threads ${opts.threads} is more than this machine's ${cores} cores`);
  }
  const state = new AppState({
    defaultKvBits: opts.kvBits,
    apiKey: opts.apiKey,
    cors: opts.cors,
    seed: opts.seed,
  }, logger);
  const app = createApp(state);
  // Deno.serve listens on a private unix socket; clients reach it through the front door
  // (net/front_door.ts: connection limit, timeouts, checked request heads).
  const server = new HttpServer(app.fetch, log);
  const door = new FrontDoor({
    hostname: opts.host,
    port: opts.port,
    upstreamPath: () => server.path,
    maxConnections: maxConnections(opts.maxConnections, log),
    headerTimeoutMs: opts.headerTimeoutMs,
    idleTimeoutMs: opts.keepAliveMs,
    writeTimeoutMs: opts.writeTimeoutMs,
    maxHeadBytes: MAX_HEAD_BYTES,
    onOpen: (id) => server.open(id),
    onClose: (id) => server.close(id),
    answered: (id) => server.answered(id),
    onClientGone: (id) => server.clientGone(id),
    log,
  });
  const port = door.addr.port;
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${port}`;
  log(`listening on ${url} (loading ${opts.model}: /health answers 503 until ready)`);

  let loaded: LoadedModel | null = null;
  let scheduler: Scheduler | null = null;
  let events: KvEventPublisher | null = null;
  let closing = false;
  const stats = new StatsLogger(logger, () => state.ready && state.metrics.source());
  const ready = (async () => {
    const t0 = performance.now();
    const lib = await openLibrary({ onBuild: log });
    loaded = await loadModel(opts.model, {
      lib,
      backend: opts.backend,
      nThreads: opts.threads,
      maxSeqs: opts.maxNumSeqs,
      maxStepTokens: opts.maxStepTokens,
      kvPoolBytes: opts.kvPoolMb === undefined ? undefined : BigInt(opts.kvPoolMb) << 20n,
      debugChecks: opts.debugChecks,
    });
    if (closing) return;
    const model = toServingModel(opts.model, loaded, opts.servedModelNames);
    if (opts.chatTemplate) {
      model.chatTemplate = await readChatTemplateFile(opts.chatTemplate, model);
    }
    const context = loaded.spec.maxPosition;
    if (opts.maxModelLen !== undefined && opts.maxModelLen > context) {
      throw new Error(
        `--max-model-len ${opts.maxModelLen} is longer than the model's context (${context} ` +
          `tokens, max_position_embeddings)`,
      );
    }
    scheduler = new Scheduler(loaded.engine, {
      maxNumSeqs: opts.maxNumSeqs,
      maxStepTokens: opts.maxStepTokens,
      maxQueue: opts.maxQueue,
      maxModelLen: opts.maxModelLen ?? context,
      prefixCaching: opts.prefixCaching,
      debugChecks: opts.debugChecks,
    }, combineObservers(state.metrics.observer(), stats.observer()));
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
    stats.stop();
    const stopped = door.close().then(() => server.shutdown()); // in-flight requests go on
    const s = scheduler as Scheduler | null;
    if (s) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((r) => timer = setTimeout(r, opts.graceMs));
      await Promise.race([s.drain(), grace]);
      clearTimeout(timer);
      await s.close(); // cancels whatever is left; their responses end
    }
    await stopped;
    await door.drain(1000);
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
  --api-key KEY                     require "Authorization: Bearer KEY" (not on /health);
                                    default: $NSN_API_KEY; an empty key refuses to start
  --cors                            allow cross-origin requests (exposes X-KV-Bits)
  --threads N                       CPU threads (default: all cores)
  --grace-seconds N                 shutdown waits this long for in-flight requests (default 10)
  --served-model-name NAME [NAME..] names clients send as "model"; the first is reported
                                    (default: the model folder's name)
  --chat-template FILE              Jinja chat template replacing the model's own
  --seed N                          requests without a seed draw theirs from a stream seeded
                                    with N, so a server run is reproducible (default: random)
  --log-level debug|info|warning|error   what the log shows (default info: one line per
                                    request and a stats line every 10 s while busy)
  --max-connections N               open client connections; more get 503 (default: what the
                                    open-file limit allows, at most 1024; the soft limit is
                                    raised to the hard one at start)
  --header-timeout-seconds N        a request's headers must arrive within this (default 10)
  --keep-alive-seconds N            idle connections are closed after this (default 30)
  --write-timeout-seconds N         a client that stops reading is dropped after this (default 30)
  --no-prefix-caching               recompute shared prompt prefixes (default: reuse them)
  --kv-events-endpoint tcp://H:P    publish KV cache events for routers (vLLM format, ZeroMQ)
  --debug-checks                    verify page tables and reference counts every step (slow)
  --help                            this text`;

/** vLLM's `--served-model-name a b c`: the names after the flag up to the next flag. */
function spreadServedNames(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    out.push(args[i]);
    if (args[i] !== "--served-model-name") continue;
    out.push(args[++i] ?? "");
    while (i + 1 < args.length && !args[i + 1].startsWith("-")) {
      out.push("--served-model-name", args[++i]);
    }
  }
  return out;
}

/**
 * The API key from --api-key, else from NSN_API_KEY. An empty key is an error, never "no auth"
 * (`--api-key "$KEY"` with KEY unset must not start an open server), and so is one that an
 * HTTP client cannot send in a header (non-ASCII, whitespace).
 */
function apiKeyOption(flag: string | undefined, env: (name: string) => string | undefined) {
  const [key, from] = flag !== undefined
    ? [flag, "--api-key"]
    : [env("NSN_API_KEY"), "NSN_API_KEY"];
  if (key === undefined) return undefined;
  if (key === "") throw new Error(`${from} is empty: give a key, or leave it unset for no auth`);
  if (!/^[\x21-\x7e]+$/.test(key)) {
    throw new Error(`${from} must be printable ASCII without spaces (it is sent in a header)`);
  }
  return key;
}

/** Flags (and NSN_API_KEY) -> options; throws with a message for anything wrong. */
export function parseCli(
  args: string[],
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): Partial<ServerOptions> | "help" {
  const { values } = parseArgs({
    args: spreadServedNames(args),
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
      "max-connections": { type: "string" },
      "header-timeout-seconds": { type: "string" },
      "keep-alive-seconds": { type: "string" },
      "write-timeout-seconds": { type: "string" },
      "debug-checks": { type: "boolean" },
      "served-model-name": { type: "string", multiple: true },
      "chat-template": { type: "string" },
      seed: { type: "string" },
      "log-level": { type: "string" },
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
  set("port", intArg("port", values.port, 0, 65535));
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
  set("maxNumSeqs", intArg("max-num-seqs", values["max-num-seqs"], 1));
  set("maxModelLen", intArg("max-model-len", values["max-model-len"], 1));
  set("maxQueue", intArg("max-queue", values["max-queue"], 1));
  set("maxStepTokens", intArg("max-step-tokens", values["max-step-tokens"], 1));
  set("kvPoolMb", intArg("kv-pool-mb", values["kv-pool-mb"], 1));
  set("apiKey", apiKeyOption(values["api-key"], env));
  set("cors", values.cors);
  set("threads", intArg("threads", values.threads, 1));
  const names = values["served-model-name"];
  if (names !== undefined) {
    if (names.some((n) => n.trim() === "")) throw new Error("--served-model-name needs a name");
    out.servedModelNames = names;
  }
  set("chatTemplate", values["chat-template"]);
  set("seed", intArg("seed", values.seed, 0));
  const level = values["log-level"];
  if (level !== undefined) {
    if (!LOG_LEVELS.includes(level as LogLevel)) {
      throw new Error(`--log-level must be one of ${LOG_LEVELS.join(", ")}`);
    }
    out.logLevel = level as LogLevel;
  }
  set("debugChecks", values["debug-checks"]);
  if (values["no-prefix-caching"]) out.prefixCaching = false;
  set("kvEventsEndpoint", values["kv-events-endpoint"]);
  const grace = intArg("grace-seconds", values["grace-seconds"], 0);
  if (grace !== undefined) out.graceMs = grace * 1000;
  set("maxConnections", intArg("max-connections", values["max-connections"], 1));
  const seconds = (flag: string, key: "headerTimeoutMs" | "keepAliveMs" | "writeTimeoutMs") => {
    const v = intArg(flag, values[flag as "keep-alive-seconds"], 1);
    if (v !== undefined) out[key] = v * 1000;
  };
  seconds("header-timeout-seconds", "headerTimeoutMs");
  seconds("keep-alive-seconds", "keepAliveMs");
  seconds("write-timeout-seconds", "writeTimeoutMs");
  return out;
}

/** A second SIGINT/SIGTERM within this window is the same Ctrl-C, not a request to force. */
const REPEAT_SIGNAL_MS = 1000;

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
  let stoppingSince: number | null = null;
  const onSignal = () => {
    if (stoppingSince !== null) {
      // Ctrl-C signals the whole process group: under `deno task start` this process gets the
      // terminal's signal and the one deno task forwards, a moment apart. Only a signal that
      // comes later is a person asking to force.
      if (performance.now() - stoppingSince < REPEAT_SIGNAL_MS) return;
      Deno.exit(1); // a second signal: do not wait
    }
    stoppingSince = performance.now();
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
