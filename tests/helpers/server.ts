// Spawns the real server (`deno run -A main.ts`) on a free port for black-box tests: hostile
// input, load, shutdown. A child process (not startServer in the test's own isolate) because
// those tests need what only a separate process shows: its RSS, its exit code, its stderr, its
// reaction to signals, and a client that does not share the server's event loop.

import assert from "node:assert";

const ROOT = new URL("../../", import.meta.url).pathname;
const MAIN = `${ROOT}main.ts`;

export interface SpawnOptions {
  /** Extra CLI flags (--port 0 --backend cpu are always passed). */
  args?: string[];
  /** Engine invariant checks after every step (needs main.ts's --debug-checks flag). */
  debugChecks?: boolean;
  env?: Record<string, string>;
  /** How long the model may take to load (the first run may build libnsn). */
  readyTimeoutMs?: number;
  /** Flags for deno itself (before main.ts), e.g. --v8-flags=... */
  denoFlags?: string[];
  /** Passed as --api-key; the helper's own requests (/metrics) then send it. */
  apiKey?: string;
  /** Runs the server under `prlimit --nofile=N:N` (soft and hard open-file limits). */
  maxOpenFiles?: number;
  /** With maxOpenFiles: a higher hard limit (the soft one stays maxOpenFiles). */
  maxOpenFilesHard?: number;
}

export interface SpawnedServer extends AsyncDisposable {
  url: string;
  pid: number;
  /** The Authorization header when the server requires an API key, else {}. */
  auth: Record<string, string>;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** The exit status, once the process ended. */
  status: Promise<Deno.CommandStatus>;
  /** The KV pages in use per kv_bits, from GET /metrics. */
  pagesInUse(): Promise<Record<string, number>>;
  /** A sample from /metrics; a counter never incremented is absent: `fallback` then, or throw. */
  metric(name: string, labels?: string, fallback?: number): Promise<number>;
  /** The server process's resident set size in KiB (/proc/PID/status VmRSS). */
  rssKib(): number;
  signal(sig: Deno.Signal): void;
  /** SIGTERM, then SIGKILL after timeoutMs; resolves with the exit status. */
  stop(timeoutMs?: number): Promise<Deno.CommandStatus>;
}

let debugFlag: boolean | null = null;

/** Whether main.ts has the --debug-checks flag (engine debug_checks: nsn_engine_check per step). */
export async function debugChecksSupported(): Promise<boolean> {
  debugFlag ??= (await Deno.readTextFile(MAIN)).includes('"debug-checks"');
  return debugFlag;
}

/** Runs main.ts with args, returns once /health says 200 (or throws with the server's stderr). */
export async function spawnServer(opts: SpawnOptions = {}): Promise<SpawnedServer> {
  const args = ["run", "-A", ...(opts.denoFlags ?? []), MAIN, "--port", "0", "--backend", "cpu"];
  args.push(...(opts.args ?? []));
  if (opts.apiKey) args.push("--api-key", opts.apiKey);
  const auth: Record<string, string> = opts.apiKey
    ? { Authorization: `Bearer ${opts.apiKey}` }
    : {};
  if (opts.debugChecks ?? true) {
    if (await debugChecksSupported()) args.push("--debug-checks");
    else console.warn("main.ts has no --debug-checks flag: engine invariants are not checked");
  }
  const [cmd, cmdArgs] = opts.maxOpenFiles
    ? ["prlimit", [
      `--nofile=${opts.maxOpenFiles}:${opts.maxOpenFilesHard ?? opts.maxOpenFiles}`,
      Deno.execPath(),
      ...args,
    ]]
    : [Deno.execPath(), args];
  const child = new Deno.Command(cmd, {
    args: cmdArgs,
    cwd: ROOT,
    env: opts.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  let resolveUrl!: (url: string) => void;
  const urlSeen = new Promise<string>((r) => resolveUrl = r);
  const pump = (async () => {
    const dec = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += dec.decode(chunk, { stream: true });
      const m = log.match(/listening on (http:\/\/\S+)/);
      if (m) resolveUrl(m[1]);
    }
  })();
  const status = child.status.then(async (s) => {
    await pump.catch(() => {});
    return s;
  });
  const kill = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  };

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 240_000);
  const exited = status.then((s) => {
    throw new Error(`server exited with ${s.code} before it was ready:\n${log}`);
  });
  exited.catch(() => {});
  let url: string;
  try {
    url = await Promise.race([urlSeen, exited, timeout(deadline, () => log)]);
    for (;;) {
      const r = await fetch(`${url}/health`).catch(() => null);
      await r?.body?.cancel();
      if (r?.status === 200) break;
      if (Date.now() > deadline) throw new Error(`server not ready in time:\n${log}`);
      await Promise.race([sleep(100), exited]);
    }
  } catch (e) {
    kill("SIGKILL");
    await status;
    throw e;
  }

  const metric = async (name: string, labels = "", fallback?: number): Promise<number> => {
    const text = await (await fetch(`${url}/metrics`, { headers: auth })).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}${labels} `));
    if (!line && fallback !== undefined) return fallback;
    assert(line, `metric ${name}${labels} missing from /metrics`);
    return Number(line.slice(line.lastIndexOf(" ") + 1));
  };
  const stop = async (timeoutMs = 15_000) => {
    kill("SIGTERM");
    const timer = setTimeout(() => kill("SIGKILL"), timeoutMs);
    const s = await status;
    clearTimeout(timer);
    return s;
  };
  return {
    url,
    pid: child.pid,
    auth,
    stderr: () => log,
    status,
    metric,
    async pagesInUse() {
      const out: Record<string, number> = {};
      for (const k of ["16", "2", "1"]) {
        out[k] = await metric("nsn_kv_pages_in_use", `{kv_bits="${k}"}`);
      }
      return out;
    },
    rssKib: () => {
      const s = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      return Number(s.match(/VmRSS:\s+(\d+)/)![1]);
    },
    signal: kill,
    stop,
    async [Symbol.asyncDispose]() {
      await stop(5_000);
    },
  };
}

/**
 * Waits until no KV page is in use. Pages of a cancelled sequence are freed before the next
 * step, so right after a burst of disconnects the count may lag by one step.
 */
export async function waitPagesFree(srv: SpawnedServer, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  let pages = await srv.pagesInUse();
  while (Object.values(pages).some((n) => n !== 0) && Date.now() < end) {
    await sleep(100);
    pages = await srv.pagesInUse();
  }
  assert.deepStrictEqual(pages, { "16": 0, "2": 0, "1": 0 }, "KV pages still in use");
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function timeout(deadline: number, log: () => string): Promise<never> {
  return new Promise((_, reject) => {
    const t = setTimeout(
      () => reject(new Error(`server did not start in time:\n${log()}`)),
      Math.max(0, deadline - Date.now()),
    );
    Deno.unrefTimer(t);
  });
}

/** Asserts the OpenAI error shape {"error": {message, type, param, code}}; returns the error. */
export function assertErrorShape(body: unknown, what: string): Record<string, unknown> {
  assert(typeof body === "object" && body !== null, `${what}: body is not an object`);
  const err = (body as Record<string, unknown>).error as Record<string, unknown> | undefined;
  assert(typeof err === "object" && err !== null, `${what}: no "error" object`);
  assert(typeof err.message === "string" && err.message.length > 0, `${what}: error.message`);
  assert(typeof err.type === "string" && err.type.length > 0, `${what}: error.type`);
  assert("param" in err && (err.param === null || typeof err.param === "string"), `${what}: param`);
  assert("code" in err && (err.code === null || typeof err.code === "string"), `${what}: code`);
  return err;
}

/** A valid request still works: proves the server survived whatever came before. */
export async function assertServes(url: string, headers: Record<string, string> = {}) {
  for (const kv of ["16", "2", "1"]) {
    const r = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-KV-Bits": kv, ...headers },
      body: JSON.stringify({ prompt: "The dog", max_tokens: 4, temperature: 0 }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = await r.json();
    assert.strictEqual(r.status, 200, `valid request at kv_bits ${kv}: ${JSON.stringify(body)}`);
    assert.strictEqual(body.choices?.[0]?.finish_reason !== undefined, true);
  }
}

/** POST a JSON body. */
export function postJson(url: string, path: string, body: unknown): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}
