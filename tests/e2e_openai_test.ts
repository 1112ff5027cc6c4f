// The real server (main.ts startServer) on the demo model, CPU backend, driven by the official
// `openai` npm client: what any OpenAI client sees.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../main.ts";

Deno.test("openai client against the demo model", async (t) => {
  const srv = startServer({ model: "demo", port: 0, backend: "cpu", quiet: true, maxNumSeqs: 16 });
  try {
    await srv.ready;
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0 });
    const base = { model: "demo", prompt: "Once upon a time", temperature: 0 } as const;

    let greedy = "";
    await t.step("non-streaming", async () => {
      const r = await client.completions.create({ ...base, max_tokens: 12 });
      assert.equal(r.object, "text_completion");
      assert.ok(r.id.startsWith("cmpl-"));
      assert.equal(r.choices.length, 1);
      greedy = r.choices[0].text;
      assert.ok(greedy.length > 0);
      assert.equal(r.choices[0].finish_reason, "length");
      assert.equal(r.usage?.completion_tokens, 12);
      assert.equal(r.usage?.total_tokens, r.usage!.prompt_tokens + 12);
    });

    await t.step("streaming gives the same greedy text; include_usage", async () => {
      const s = await client.completions.create({
        ...base,
        max_tokens: 12,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let usage = null;
      let finish = null;
      for await (const chunk of s) {
        if (chunk.usage) {
          usage = chunk.usage;
          assert.deepEqual(chunk.choices, []);
        }
        for (const c of chunk.choices) {
          text += c.text;
          finish = c.finish_reason ?? finish;
        }
      }
      assert.equal(text, greedy);
      assert.equal(finish, "length");
      assert.equal(usage?.completion_tokens, 12);
    });

    await t.step("n > 1 over several prompts: prompt-major indices", async () => {
      const r = await client.completions.create({
        model: "demo",
        prompt: ["The cat", "A dog"],
        n: 2,
        max_tokens: 4,
        temperature: 0.8,
        seed: 1,
      });
      assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
      assert.equal(r.usage?.completion_tokens, 16);
    });

    await t.step("stop: the text ends right before the stop string", async () => {
      const stop = greedy.slice(4, 8);
      assert.ok(stop.trim().length > 0, `usable stop string from ${JSON.stringify(greedy)}`);
      const r = await client.completions.create({ ...base, max_tokens: 12, stop: [stop] });
      assert.equal(r.choices[0].text, greedy.slice(0, greedy.indexOf(stop)));
      assert.equal(r.choices[0].finish_reason, "stop");
    });

    await t.step("echo + logprobs + max_tokens 0: the prompt scored", async () => {
      const ids = (await (await fetch(`${srv.url}/tokenize`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt: "The quick brown fox" }),
      })).json()).tokens as number[];
      const r = await client.completions.create({
        model: "demo",
        prompt: ids,
        max_tokens: 0,
        echo: true,
        logprobs: 2,
        temperature: 0,
      });
      const lp = r.choices[0].logprobs!;
      assert.equal(lp.tokens!.length, ids.length);
      assert.equal(lp.token_logprobs![0], null);
      assert.equal(lp.top_logprobs![0], null);
      for (let i = 1; i < ids.length; i++) {
        const v = lp.token_logprobs![i]!;
        assert.ok(v <= 0 && v > -50, `logprob ${v}`);
        assert.equal(lp.top_logprobs![i]![lp.tokens![i]], v);
      }
      // Token ids echo as the tokenizer decodes them, BOS included (as vLLM echoes them).
      assert.equal(r.choices[0].text, "<|bos|>The quick brown fox");
      assert.equal(lp.tokens![0], "<|bos|>");
      assert.equal(r.usage?.completion_tokens, 0);
    });

    await t.step("seed reproducibility with sampling", async () => {
      const req = { ...base, max_tokens: 10, temperature: 1, seed: 1234 };
      const a = await client.completions.create(req);
      const b = await client.completions.create(req);
      assert.equal(a.choices[0].text, b.choices[0].text);
    });

    await t.step("X-KV-Bits 16/2/1 each echoed and served", async () => {
      for (const bits of ["16", "2", "1"]) {
        const { data, response } = await client.completions
          .create({ ...base, max_tokens: 6 }, { headers: { "X-KV-Bits": bits } })
          .withResponse();
        assert.equal(response.headers.get("X-KV-Bits"), bits);
        assert.equal(data.usage?.completion_tokens, 6);
      }
    });

    await t.step("errors arrive as the SDK's typed errors", async () => {
      await assert.rejects(
        client.completions.create({ ...base, max_tokens: 5000 }),
        (e) => e instanceof OpenAI.BadRequestError && /maximum context length/.test(e.message),
      );
      await assert.rejects(
        client.completions.create({ ...base, model: "nope" }),
        (e) => e instanceof OpenAI.NotFoundError,
      );
    });
  } finally {
    await srv.shutdown();
  }
});

function spawnMain(args: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

Deno.test("CLI: bad flags exit 2, a model that cannot load exits 1", async () => {
  let out = await spawnMain(["--bogus"]).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /bogus[\s\S]*Usage:/);
  out = await spawnMain(["--kv-bits", "4"]).output();
  assert.equal(out.code, 2);
  out = await spawnMain(["--model", "/nonexistent/model", "--port", "0"]).output();
  assert.equal(out.code, 1);
  assert.match(new TextDecoder().decode(out.stderr), /failed to load[\s\S]*nonexistent/);
  out = await spawnMain(["--help"]).output();
  assert.equal(out.code, 0);
  assert.match(new TextDecoder().decode(out.stdout), /--max-step-tokens/);
});

Deno.test("CLI: SIGTERM lets an in-flight stream finish, then exits 0", async () => {
  const child = spawnMain(["--port", "0", "--backend", "cpu"]);
  const dec = new TextDecoder();
  let log = "";
  const reader = child.stderr.getReader();
  let url = "";
  while (!url) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`server exited:\n${log}`);
    log += dec.decode(value);
    url = log.match(/listening on (http:\/\/\S+)/)?.[1] ?? "";
  }
  const drain = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      log += dec.decode(value);
    }
  })();
  while (
    (await fetch(`${url}/health`).then((r) => (r.body?.cancel(), r.status), () => 0)) !== 200
  ) {
    await new Promise((r) => setTimeout(r, 100));
  }
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt: "Once", max_tokens: 100, ignore_eos: true, stream: true }),
  });
  const body = res.body!.getReader();
  await body.read(); // the stream is under way
  child.kill("SIGTERM");
  let text = "";
  for (;;) {
    const { value, done } = await body.read();
    if (done) break;
    text += dec.decode(value);
  }
  assert.ok(text.endsWith("data: [DONE]\n\n"), "the stream completed");
  assert.match(text, /"finish_reason":"length"/);
  const status = await child.status;
  await drain;
  child.stdout.cancel();
  assert.equal(status.code, 0, log);
});
