// The operator's log: --log-level filtering and the periodic stats line (engine/stats_log.ts).

import assert from "node:assert/strict";
import { Logger } from "../engine/log.ts";
import { StatsLogger } from "../engine/stats_log.ts";
import { makeTestApp } from "./fake_engine.ts";

Deno.test("Logger: lines at or above the level, as `<ISO time> <LEVEL> <message>`", () => {
  const lines: string[] = [];
  const log = new Logger("warning", (l) => lines.push(l));
  log.debug("d");
  log.info("i");
  log.warning("w");
  log.error("e");
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING w$/);
  assert.match(lines[1], / ERROR e$/);
});

Deno.test("stats line: running, waiting, tokens/s and KV use per kv_bits while busy; none idle", async () => {
  const t = makeTestApp({ engine: { stepDelayMs: 2 } });
  const lines: string[] = [];
  const stats = new StatsLogger(new Logger("info", (l) => lines.push(l)), () => ({
    numRunning: t.scheduler.numRunning,
    numWaiting: t.scheduler.numWaiting,
    engine: t.engine,
    kv: t.scheduler.kv,
  }), 60_000);
  assert.equal(stats.line(), null, "idle: no line");
  const observer = stats.observer();
  const pending = t.app.request("/v1/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-KV-Bits": "2" },
    body: JSON.stringify({ prompt: "hello", max_tokens: 200, ignore_eos: true }),
  });
  while (t.scheduler.numRunning === 0) await new Promise((r) => setTimeout(r, 1));
  observer.onPromptDone?.({ nPrompt: 2 } as never);
  observer.onToken?.({} as never, true, 0);
  stats.tick();
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /INFO stats: running 1, waiting 0, prompt [\d.]+ tok\/s, generation [\d.]+ tok\/s, KV pool in use: 16-bit [\d.]+%, 2-bit [\d.]+%, 1-bit [\d.]+%$/,
  );
  observer.onToken?.({} as never, false, 1);
  await (await pending).json();
  stats.tick(); // idle now, but a token came since the last line: reported once
  stats.tick();
  assert.equal(lines.length, 2);
  assert.match(
    lines[1],
    /running 0, waiting 0, .*KV pool in use: 16-bit 0\.0%, 2-bit 0\.0%, 1-bit 0\.0%$/,
  );
  stats.stop();
  await t.close();
});
