// main.ts options: merging (fields passed explicitly as `undefined` keep their defaults; a
// `maxNumSeqs: undefined` used to overwrite 256) and the CLI flags parseCli checks.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { DEFAULTS, parseCli, resolveOptions, startServer } from "../main.ts";

Deno.test("resolveOptions: undefined fields keep the defaults, set ones override", () => {
  const opts = resolveOptions({
    maxNumSeqs: undefined,
    maxStepTokens: undefined,
    maxQueue: 7,
    kvBits: 2,
    cors: false,
  });
  assert.equal(opts.maxNumSeqs, DEFAULTS.maxNumSeqs);
  assert.equal(opts.maxStepTokens, DEFAULTS.maxStepTokens);
  assert.equal(opts.maxQueue, 7);
  assert.equal(opts.kvBits, 2);
  assert.equal(opts.cors, false); // falsy but defined: taken as given
  assert.ok(!("maxModelLen" in opts) || opts.maxModelLen === undefined);
  assert.deepEqual(resolveOptions(), DEFAULTS);
  assert.deepEqual(resolveOptions({}), DEFAULTS);
});

Deno.test("startServer with maxNumSeqs: undefined serves a completion", async () => {
  const srv = startServer({
    port: 0,
    backend: "cpu",
    quiet: true,
    maxNumSeqs: undefined,
    maxStepTokens: undefined,
  });
  try {
    await srv.ready;
    const res = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: "hello", max_tokens: 2 }),
      signal: AbortSignal.timeout(30_000),
    });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.usage.completion_tokens, 2);
  } finally {
    await srv.shutdown();
  }
});

Deno.test("CLI: --served-model-name takes several names, --seed/--log-level/ports are checked", () => {
  const cli = parseCli([
    "--served-model-name",
    "a",
    "b",
    "--seed",
    "7",
    "--log-level",
    "warning",
    "--chat-template",
    "t.jinja",
  ]);
  assert.notEqual(cli, "help");
  assert.deepEqual(cli, {
    servedModelNames: ["a", "b"],
    seed: 7,
    logLevel: "warning",
    chatTemplate: "t.jinja",
  });
  for (
    const bad of [
      ["--port", "0x10"],
      ["--port", "65536"],
      ["--port", "8.0"],
      ["--seed", "-1"],
      ["--log-level", "loud"],
      ["--served-model-name", ""],
    ]
  ) assert.throws(() => parseCli(bad), Error, bad.join(" "));
});

Deno.test("--chat-template serves chat on a model without one; --seed makes unseeded runs repeat", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/t.jinja`;
  await Deno.writeTextFile(file, "{{ bos_token }}User: {{ messages[0].content }}\nBot:");
  const texts: string[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const srv = startServer({
        port: 0,
        backend: "cpu",
        quiet: true,
        chatTemplate: file,
        seed: 11,
        servedModelNames: ["tiny-a", "tiny-b"],
      });
      try {
        await srv.ready;
        const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "x", maxRetries: 0 });
        assert.deepEqual((await client.models.list()).data.map((m) => m.id), ["tiny-a"]);
        const chat = await client.chat.completions.create({
          model: "tiny-b",
          messages: [{ role: "user", content: "Once upon a time" }],
          max_tokens: 12,
          temperature: 1,
        });
        texts.push(chat.choices[0].message.content ?? "");
        const named = await client.completions.create({ model: "demo", prompt: "a", max_tokens: 1 })
          .then(() => null, (e) => e);
        assert.ok(named instanceof OpenAI.NotFoundError, "only the served names are accepted");
      } finally {
        await srv.shutdown();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(texts[0], texts[1], "the same --seed, the same sampled text");
  assert.ok(texts[0].length > 0);
});

Deno.test("--max-model-len beyond the model's context is an error; --threads beyond the cores warns", async () => {
  const lines: string[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const threads = navigator.hardwareConcurrency + 1;
    const srv = startServer({ port: 0, backend: "cpu", logLevel: "warning", threads });
    await srv.ready;
    await srv.shutdown();
    assert.ok(
      lines.some((l) => l.includes(`WARNING --threads ${threads} is more than this machine's`)),
      lines.join("\n"),
    );
    const long = startServer({ port: 0, backend: "cpu", quiet: true, maxModelLen: 1 << 20 });
    await assert.rejects(long.ready, /--max-model-len 1048576 is longer than the model's context/);
    await long.shutdown();
  } finally {
    console.error = orig;
  }
});
