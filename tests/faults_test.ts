// Faults: a KV pool far too small for the offered load (preemption or a clean 429/503, never a
// crash), an error inside a native step (nsn_engine_inject_fault: the requests of that step
// fail with a 500 OpenAI error, the server keeps serving), a model that cannot load (clear
// message, non-zero exit), and SIGINT/SIGTERM with streams in flight (drain, exit 0).

import assert from "node:assert";
import { startServer } from "../main.ts";
import { openLibrary } from "../ffi/library.ts";
import type { NativeEngine } from "../ffi/native_engine.ts";
import { EngineError } from "../engine/types.ts";
import { readSse, type SseResult } from "./helpers/sse.ts";
import {
  assertErrorShape,
  assertServes,
  sleep,
  type SpawnedServer,
  spawnServer,
  waitPagesFree,
} from "./helpers/server.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const KV = ["16", "2", "1"];
const DEMO = `${ROOT}models/demo`;

function post(url: string, body: unknown, kv = "16", signal?: AbortSignal) {
  return fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-KV-Bits": kv },
    body: JSON.stringify(body),
    signal: signal ?? AbortSignal.timeout(60_000),
  });
}

/** A completed non-streaming response: every choice ended for a reason and has its tokens. */
async function checkCompletion(res: Response, maxTokens: number, what: string) {
  const body = await res.json();
  if (res.status !== 200) {
    assert(
      [429, 503].includes(res.status),
      `${what}: status ${res.status} ${JSON.stringify(body)}`,
    );
    assertErrorShape(body, what);
    return res.status;
  }
  const c = body.choices[0];
  assert.strictEqual(c.finish_reason, "length", `${what}: ${JSON.stringify(c)}`);
  assert.strictEqual(body.usage.completion_tokens, maxTokens, what);
  assert(c.text.length > 0, `${what}: empty text`);
  return 200;
}

Deno.test("faults: KV pool exhaustion preempts or refuses cleanly", async () => {
  // 2 MiB: ~5 fp16 pages, one 16-bit sequence of 256 tokens fills it (the log says so).
  await using srv = await spawnServer({ args: ["--kv-pool-mb", "2"] });
  const long = { prompt: "The dog ran into the house and", ignore_eos: true, temperature: 0 };
  const jobs: Promise<number>[] = [];
  for (let i = 0; i < 14; i++) {
    const kv = ["16", "2", "1"][i % 3];
    const maxTokens = kv === "16" ? 200 : 160;
    const body = { ...long, max_tokens: maxTokens, stream: i % 2 === 1, seed: i };
    jobs.push(
      post(srv.url, body, kv).then(async (res) => {
        const what = `request ${i} (kv ${kv})`;
        if (!body.stream || res.status !== 200) return checkCompletion(res, maxTokens, what);
        const r = await readSse(res);
        assert.deepStrictEqual(r.problems, [], what);
        assert.strictEqual(r.finishReason, "length", what);
        return 200;
      }),
    );
  }
  // Beyond what one sequence can ever hold: refused up front, not admitted and failed later.
  const tooBig = await post(srv.url, { ...long, max_tokens: 400 });
  const err = assertErrorShape(await tooBig.json(), "too big");
  assert.strictEqual(tooBig.status, 400);
  assert.strictEqual(err.code, "kv_cache_capacity_exceeded");

  const statuses = await Promise.all(jobs);
  const preemptions = await srv.metric("nsn_preemptions_total");
  console.log(`pool exhaustion: statuses ${statuses.join(",")}; preemptions ${preemptions}`);
  assert(statuses.filter((s) => s === 200).length > 0, "nothing completed");
  assert(preemptions > 0 || statuses.some((s) => s !== 200), "no preemption and no refusal");
  await assertServes(srv.url);
  await waitPagesFree(srv);
});

/** Runs fn between two steps: the native engine refuses calls while a step is in flight. */
async function betweenSteps(fn: () => void): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof EngineError && e.code === "state")) throw e;
      await sleep(0);
    }
  }
  throw new Error("no gap between steps");
}

Deno.test("faults: a failing native step fails its requests with 500, others go on", async () => {
  // In-process: the test needs the engine handle to inject the fault (see the report for the
  // hook a spawned server would need).
  const srv = startServer({ port: 0, backend: "cpu", quiet: true });
  try {
    await srv.ready;
    const engine = srv.state.ready!.model.engine as NativeEngine;

    // Idle server, fault armed: the next step carries these requests, and fails.
    await betweenSteps(() => engine.injectFault(1));
    const failing = await Promise.all(
      ["16", "2", "1"].map((kv) => post(srv.url, { prompt: "The dog", max_tokens: 8 }, kv)),
    );
    const statuses = [];
    for (const res of failing) {
      const body = await res.json();
      statuses.push(res.status);
      if (res.status === 200) continue; // admitted after the failed step: served normally
      assert.strictEqual(res.status, 500, JSON.stringify(body));
      const err = assertErrorShape(body, "fault");
      assert.strictEqual(err.type, "server_error");
      assert.match(String(err.message), /injected fault/);
    }
    assert(statuses.includes(500), `no request failed: ${statuses}`);

    // Mid-stream: the streams of the failing step get an error event, then [DONE]. 1500 tokens
    // each: no stream can be over before the fault is armed, however fast the engine.
    const streams = ["16", "2", "1"].map((kv) =>
      post(srv.url, { prompt: "Once", max_tokens: 1500, ignore_eos: true, stream: true }, kv)
    );
    const readers = streams.map(async (p) => readSse(await p));
    await sleep(300);
    await betweenSteps(() => engine.injectFault(1));
    const results: SseResult[] = await Promise.all(readers);
    for (const r of results) {
      assert(r.done, "stream without [DONE]");
      const errored = r.problems.some((p) => p.startsWith("error event"));
      assert(errored || r.finishReason === "length", `stream neither failed nor finished`);
    }
    assert(results.some((r) => r.problems.some((p) => p.includes("injected fault"))));

    await assertServes(srv.url);
    const sched = srv.state.ready!.scheduler;
    sched.check(); // page tables, reference counts and the native slots intact after the faults
    // Only the prefix cache's idle pages are left.
    for (const k of [16, 2, 1] as const) {
      const pool = sched.kv.pool;
      for (let id = 0; id < pool.geometry.nSlabs * pool.geometry.perSlab[k]; id++) {
        assert.ok(pool.refs(k, id) <= 0, `page ${k}:${id} still referenced`);
      }
    }
  } finally {
    await srv.shutdown();
  }
});

async function runMain(args: string[], timeoutMs: number) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}main.ts`, "--port", "0", "--backend", "cpu", ...args],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  });
  const out = await cmd.output();
  return { code: out.code, signal: out.signal, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("faults: a model that cannot load exits non-zero with a clear message", async () => {
  await openLibrary(); // build libnsn now, so the children's timeouts measure only the load
  const tmp = await Deno.makeTempDir({ prefix: "nsn_faults_" });
  try {
    const dir = async (name: string, files: Record<string, string | Uint8Array>) => {
      const d = `${tmp}/${name}`;
      await Deno.mkdir(d);
      for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
        await Deno.copyFile(`${DEMO}/${f}`, `${d}/${f}`);
      }
      for (const [f, data] of Object.entries(files)) {
        if (typeof data === "string") await Deno.writeTextFile(`${d}/${f}`, data);
        else await Deno.writeFile(`${d}/${f}`, data);
      }
      return d;
    };
    const config = JSON.parse(await Deno.readTextFile(`${DEMO}/config.json`));
    const weights = await Deno.readFile(`${DEMO}/model.safetensors`);
    const cases: [string, string[], RegExp][] = [
      ["nonexistent dir", ["--model", "/nonexistent/model"], /nonexistent/],
      [
        "broken config.json",
        ["--model", await dir("broken", { "config.json": "{ not json" })],
        /config\.json/,
      ],
      ["config missing fields", [
        "--model",
        await dir("fields", { "config.json": '{"model_type":"llama"}' }),
      ], /config\.json|hidden_size|vocab_size/],
      ["absurd config", [
        "--model",
        await dir("absurd", {
          "config.json": JSON.stringify({ ...config, hidden_size: -256 }),
        }),
      ], /hidden_size/],
      ["no weights", [
        "--model",
        await dir("noweights", {
          "config.json": JSON.stringify(config),
        }),
      ], /safetensors/],
      ["truncated weights", [
        "--model",
        await dir("truncated", {
          "config.json": JSON.stringify(config),
          "model.safetensors": weights.subarray(0, weights.length >> 1),
        }),
      ], /safetensors|truncated|model\.safetensors|bytes/],
      ["bad flag", ["--kv-bits", "3"], /kv-bits/],
    ];
    await Promise.all(cases.map(async ([name, args, pattern]) => {
      const r = await runMain(args, 60_000);
      assert.notStrictEqual(r.code, 0, `${name}: exit 0\n${r.stderr}`);
      assert.strictEqual(r.signal, null, `${name}: killed by ${r.signal} (timeout?)\n${r.stderr}`);
      assert.match(r.stderr, /error/i, `${name}: no error message\n${r.stderr}`);
      assert.match(r.stderr, pattern, `${name}: unclear message\n${r.stderr}`);
      assert.doesNotMatch(
        r.stderr,
        /panicked|Uncaught|Segmentation/,
        `${name}: crash\n${r.stderr}`,
      );
    }));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

async function shutdownWithStreams(sig: Deno.Signal): Promise<string> {
  const grace = 1;
  const srv: SpawnedServer = await spawnServer({ args: ["--grace-seconds", String(grace)] });
  // Short streams finish inside the grace period; long ones (2000 steps: seconds on a CPU) are
  // cut at its end.
  const stream = (maxTokens: number, kv: string) =>
    post(srv.url, { prompt: "The dog", max_tokens: maxTokens, ignore_eos: true, stream: true }, kv);
  const responses = await Promise.all(
    [8, 8, 8, 2000, 2000, 2000].map((n, i) => stream(n, KV[i % 3])),
  );
  for (const res of responses) assert.strictEqual(res.status, 200);
  const streams = responses.map((res) => readSse(res));
  // A non-streaming request cut at the end of the grace period.
  const whole = post(srv.url, { prompt: "The cat", max_tokens: 2000, ignore_eos: true });
  await sleep(300);
  const t0 = performance.now();
  srv.signal(sig);
  await sleep(200);
  // Not accepted any more: a refused connection or a 503, never a new completion.
  const late = await post(srv.url, { prompt: "late", max_tokens: 2 }).catch((e) => e as Error);
  if (!(late instanceof Error)) {
    assert.strictEqual(late.status, 503, `${sig}: a request after the signal got ${late.status}`);
    await late.body?.cancel();
  }
  const results = await Promise.all(streams);
  const ended = (performance.now() - t0) / 1000;
  const cut = await whole.then(
    async (r) => `${r.status} ${await r.text()}`,
    String,
  );
  const status = await srv.status;
  const exited = (performance.now() - t0) / 1000;
  results.slice(0, 3).forEach((r, i) => {
    assert.deepStrictEqual(r.problems, [], `${sig}: short stream ${i}`);
    assert.strictEqual(r.finishReason, "length");
  });
  // Cut streams must end (not hang), and say so: an error event before [DONE]. Ending with
  // [DONE] and no finish_reason looks like success to a client that does not check.
  for (const [i, r] of results.slice(3).entries()) {
    const said = r.problems.some((p) => p.startsWith("error event")) || r.finishReason !== null;
    assert(
      said,
      `${sig}: long stream ${i} cut silently (${r.chunks.length} chunks, done ` +
        `${r.done}, ${r.problems.join("; ")})`,
    );
  }
  // A cut non-streaming request must not look complete either: an error, or (had it finished
  // in time after all) a complete 200.
  const complete = /^200 .*"finish_reason":"length".*"completion_tokens":2000,/;
  const ok = /^(5\d\d .*"error"|TypeError)/.test(cut) || complete.test(cut);
  assert(ok, `${sig}: cut non-streaming request: ${cut.slice(0, 300)}`);
  assert(ended < grace + 5, `${sig}: streams ended ${ended.toFixed(1)} s after the signal`);
  assert.strictEqual(status.code, 0, `${sig}: exit ${status.code}\n${srv.stderr()}`);
  const nCut = results.slice(3).filter((r) => r.finishReason === null).length;
  return `${sig}: ${nCut} of 3 long streams cut, all ended ${ended.toFixed(1)} s after the ` +
    `signal, exit 0 after ${exited.toFixed(1)} s`;
}

Deno.test("faults: SIGINT and SIGTERM drain in-flight streams and exit 0", async () => {
  const lines = await Promise.all([shutdownWithStreams("SIGINT"), shutdownWithStreams("SIGTERM")]);
  console.log(lines.join("; "));
});
