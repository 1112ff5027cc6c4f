// vLLM's metric names on /metrics, as routers and autoscalers scrape them: scraped while
// requests run on the real server (demo model, CPU), then once everything has finished.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../main.ts";
import { ROUTERS, VLLM, VLLM_TYPES } from "../engine/vllm_names.ts";

// Over 64 tokens: the KV pool hands out pages per 64-token window, so a shorter prompt would
// hold none until its window fills.
const LONG_PROMPT = "Once upon a time there was a little dog. ".repeat(12);

/** Every sample of a scrape as `name{labels}` -> value, and each family's # TYPE. */
function parse(text: string) {
  const types = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1], t[2]);
    else if (line && !line.startsWith("#")) {
      const i = line.lastIndexOf(" ");
      samples.set(line.slice(0, i), Number(line.slice(i + 1)));
    }
  }
  return { types, samples };
}

/** The one sample of `name` (labels ignored): routers take the first series they find. */
function one(samples: Map<string, number>, name: string): { key: string; value: number } {
  const hits = [...samples].filter(([k]) => k === name || k.startsWith(`${name}{`));
  assert.equal(hits.length, 1, `${name}: ${hits.length} series`);
  return { key: hits[0][0], value: hits[0][1] };
}

Deno.test("/metrics exports vLLM's names while requests run, and usage returns to 0", async () => {
  const srv = startServer({
    model: "demo",
    port: 0,
    backend: "cpu",
    quiet: true,
    servedModelNames: ["served-a", "served-b"],
  });
  try {
    await srv.ready;
    const scrape = async () => parse(await (await fetch(`${srv.url}/metrics`)).text());
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const streams = await Promise.all([0, 1, 2].map(() =>
      client.completions.create({
        model: "served-b",
        prompt: LONG_PROMPT,
        max_tokens: 200,
        ignore_eos: true,
        stream: true,
      } as OpenAI.CompletionCreateParamsStreaming)
    ));
    const its = streams.map((s) => s[Symbol.asyncIterator]());
    for (const it of its) assert.equal((await it.next()).done, false); // every one started

    const busy = await scrape();
    for (const [name, type] of Object.entries(VLLM_TYPES)) {
      assert.equal(busy.types.get(name), type, name);
    }
    for (const name of [VLLM.running, VLLM.waiting, VLLM.kvUsage, VLLM.gpuCacheUsage]) {
      assert.match(one(busy.samples, name).key, /\{model_name="served-a"\}$/, name);
    }
    assert.equal(
      one(busy.samples, VLLM.running).value + one(busy.samples, VLLM.waiting).value,
      3,
    );
    const usage = one(busy.samples, VLLM.kvUsage).value;
    assert.ok(usage > 0 && usage <= 1, `kv usage while busy: ${usage}`);
    assert.equal(one(busy.samples, VLLM.gpuCacheUsage).value, usage);
    const config = one(busy.samples, VLLM.cacheConfig);
    assert.equal(config.value, 1);
    assert.match(config.key, /block_size="64"/);
    const blocks = /num_gpu_blocks="(\d+)"/.exec(config.key);
    assert.ok(blocks && Number(blocks[1]) > 0, config.key);
    for (const name of [VLLM.ttft, VLLM.queueTime]) {
      assert.ok(busy.samples.has(`${name}_bucket{le="+Inf",model_name="served-a"}`), name);
    }
    assert.equal(busy.samples.get(`${VLLM.ttft}_count{model_name="served-a"}`), 3);
    assert.equal(busy.samples.get(`${VLLM.queueTime}_count{model_name="served-a"}`), 3);

    for (const it of its) while (!(await it.next()).done);
    const idle = await scrape();
    assert.equal(one(idle.samples, VLLM.running).value, 0);
    assert.equal(one(idle.samples, VLLM.waiting).value, 0);
    assert.equal(one(idle.samples, VLLM.kvUsage).value, 0);
    assert.equal(one(idle.samples, VLLM.gpuCacheUsage).value, 0);
    assert.equal(one(idle.samples, VLLM.generationTokens).value, 600);
    assert.ok(one(idle.samples, VLLM.promptTokens).value >= 3 * 64);
    assert.equal(idle.samples.get(`${VLLM.e2e}_count{model_name="served-a"}`), 3);
    assert.equal(idle.samples.get(`${VLLM.tpot}_count{model_name="served-a"}`), 3 * 199);
    // Ours stay beside them, by kv_bits.
    assert.ok(idle.samples.has('nsn_kv_pages_in_use{kv_bits="16"}'));
  } finally {
    await srv.shutdown();
  }
});

Deno.test("every name a router reads that we say we export is registered, and documented", async () => {
  const exported = new Set<string>(Object.values(VLLM));
  const doc = await Deno.readTextFile(new URL("../docs/deploy.md", import.meta.url));
  for (const router of ROUTERS) {
    assert.ok(doc.includes(router.name), `docs/deploy.md names ${router.name}`);
    for (const read of router.reads) {
      assert.equal(exported.has(read.metric), read.exported, `${router.name}: ${read.metric}`);
      assert.ok(doc.includes(`\`${read.metric}\``), `docs/deploy.md names ${read.metric}`);
    }
  }
  for (const name of exported) assert.ok(doc.includes(`\`${name}\``), name);
});
