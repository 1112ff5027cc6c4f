// vLLM request extras through the official openai client, as clients send them: the ones we
// honour (return_token_ids, return_tokens_as_token_ids, allowed_token_ids, prompt_logprobs, truncate_prompt_tokens + truncation_side,
// stream_options.continuous_usage_stats), the ones we cannot (a 400 naming the field; their
// no-op values pass), and echo of token-id prompts keeping special tokens.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../main.ts";
import { BOS, makeTestApp } from "./fake_engine.ts";
import { clientFor } from "./helpers/openai_client.ts";

const REFUSED: [Record<string, unknown>, string][] = [
  [{ length_penalty: 0.5 }, "length_penalty"],
  [{ guided_json: { type: "object" } }, "guided_json"],
];

Deno.test("vLLM extras we cannot honour are a 400 naming the field; no-op values pass", async () => {
  const t = makeTestApp();
  const client = clientFor(t);
  for (const [extra, param] of REFUSED) {
    const err = await client.completions.create(
      { model: "fake-model", prompt: "hi", max_tokens: 1, ...extra } as never,
    ).then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.BadRequestError, `${param}: ${err}`);
    assert.equal(err.param, param);
    assert.match(err.message, new RegExp(param.replace(".", "\\.")));
    const chat = await client.chat.completions.create(
      { model: "fake-model", messages: [{ role: "user", content: "hi" }], ...extra } as never,
    ).then(() => null, (e) => e);
    assert.ok(chat instanceof OpenAI.BadRequestError, `chat ${param}: ${chat}`);
    assert.equal(chat.param, param);
  }
  const noOps = {
    use_beam_search: false,
    length_penalty: 1,
    allowed_token_ids: null,
    prompt_logprobs: null,
  };
  const r = await client.completions.create(
    { model: "fake-model", prompt: "hi", max_tokens: 2, ...noOps } as never,
  );
  assert.equal(r.choices[0].finish_reason, "length");
  await t.close();
});

Deno.test("echo of a token-id prompt keeps its special tokens, as the tokenizer decodes it", async () => {
  const t = makeTestApp();
  const client = clientFor(t);
  for (const logprobs of [undefined, 1]) {
    const r = await client.completions.create({
      model: "fake-model",
      prompt: [BOS, 258, 33],
      echo: true,
      max_tokens: 0,
      logprobs,
    });
    assert.equal(r.choices[0].text, "<s>hello!", `logprobs ${logprobs}`);
  }
  await t.close();
});

Deno.test("return_tokens_as_token_ids names logprobs tokens token_id:N", async () => {
  const t = makeTestApp();
  const r = await clientFor(t).completions.create({
    model: "fake-model",
    prompt: "hello",
    max_tokens: 3,
    logprobs: 2,
    echo: true,
    return_tokens_as_token_ids: true,
  } as never) as OpenAI.Completion;
  const lp = r.choices[0].logprobs!;
  assert.equal(lp.tokens!.length, 2 + 3);
  assert.equal(lp.tokens![0], `token_id:${BOS}`);
  for (const tok of lp.tokens!) assert.match(tok, /^token_id:\d+$/);
  for (const top of lp.top_logprobs!.slice(1)) {
    for (const k of Object.keys(top!)) assert.match(k, /^token_id:\d+$/);
  }
  await t.close();
});

Deno.test("truncate_prompt_tokens keeps the last k tokens (or the first k, side right)", async () => {
  const t = makeTestApp();
  const client = clientFor(t);
  const ask = (extra: Record<string, unknown>) =>
    client.completions.create({
      model: "fake-model",
      prompt: [BOS, 258, 33],
      echo: true,
      max_tokens: 0,
      ...extra,
    } as never) as Promise<OpenAI.Completion>;
  let r = await ask({ truncate_prompt_tokens: 2 });
  assert.equal(r.choices[0].text, "hello!");
  assert.equal(r.usage!.prompt_tokens, 2);
  r = await ask({ truncate_prompt_tokens: 2, truncation_side: "right" });
  assert.equal(r.choices[0].text, "<s>hello");
  r = await ask({ truncate_prompt_tokens: -1 });
  assert.equal(r.choices[0].text, "<s>hello!");
  // A text prompt longer than the context (2048) is served once truncated.
  const long = await client.completions.create({
    model: "fake-model",
    prompt: "x".repeat(5000),
    max_tokens: 2,
    truncate_prompt_tokens: 100,
  } as never) as OpenAI.Completion;
  assert.equal(long.usage!.prompt_tokens, 100);
  for (const bad of [{ truncate_prompt_tokens: 0 }, { truncate_prompt_tokens: 4096 }]) {
    const err = await ask(bad).then(() => null, (e) => e);
    assert.ok(err instanceof OpenAI.BadRequestError, JSON.stringify(bad));
    assert.equal(err.param, "truncate_prompt_tokens");
  }
  const side = await ask({ truncation_side: "middle" }).then(() => null, (e) => e);
  assert.equal(side?.param, "truncation_side");
  await t.close();
});

Deno.test("continuous_usage_stats: every chunk carries the usage so far", async () => {
  const t = makeTestApp();
  const s = await clientFor(t).completions.create({
    model: "fake-model",
    prompt: "hello",
    max_tokens: 4,
    stream: true,
    stream_options: { include_usage: true, continuous_usage_stats: true },
  } as never) as unknown as AsyncIterable<OpenAI.Completion>;
  const seen: number[] = [];
  let final: OpenAI.CompletionUsage | undefined;
  for await (const chunk of s) {
    assert.ok(chunk.usage, JSON.stringify(chunk));
    assert.equal(chunk.usage.prompt_tokens, 2);
    if (chunk.choices.length === 0) final = chunk.usage;
    else seen.push(chunk.usage.completion_tokens);
  }
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.deepEqual(final, {
    prompt_tokens: 2,
    completion_tokens: 4,
    total_tokens: 6,
    prompt_tokens_details: { cached_tokens: 0 },
  });
  await t.close();
});

Deno.test("return_token_ids: prompt_token_ids and token_ids, whole or per chunk", async () => {
  const t = makeTestApp();
  const client = clientFor(t);
  const body = {
    model: "fake-model",
    prompt: "hello!",
    max_tokens: 5,
    temperature: 0,
    return_token_ids: true,
  };
  const whole = await client.completions.create(body as never) as OpenAI.Completion;
  // deno-lint-ignore no-explicit-any
  const c = whole.choices[0] as any;
  assert.deepEqual(c.prompt_token_ids, [BOS, 258, 33]);
  assert.equal(c.token_ids.length, 5);
  const s = await client.completions.create(
    { ...body, stream: true } as never,
  ) as unknown as AsyncIterable<OpenAI.Completion>;
  // deno-lint-ignore no-explicit-any
  const chunks: any[] = [];
  for await (const chunk of s) chunks.push(...chunk.choices);
  assert.deepEqual(chunks[0].prompt_token_ids, [BOS, 258, 33]);
  assert.ok(chunks.slice(1).every((x) => x.prompt_token_ids === undefined));
  assert.deepEqual(chunks.flatMap((x) => x.token_ids), c.token_ids);
  assert.equal(chunks.map((x) => x.text).join(""), whole.choices[0].text);
  const chat = await client.chat.completions.create(
    {
      model: "fake-model",
      messages: [{ role: "user", content: "hi" }],
      return_token_ids: true,
    } as never,
  ).then(() => null, (e) => e);
  assert.equal(chat?.param, "return_token_ids");
  await t.close();
});

Deno.test("allowed_token_ids: the demo model samples only those tokens; a bad list is a 400", async () => {
  const srv = startServer({ model: "demo", port: 0, backend: "cpu", quiet: true });
  try {
    await srv.ready;
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "x", maxRetries: 0 });
    const allowed = [70, 80, 90, 1000];
    const r = await client.completions.create({
      model: "demo",
      prompt: "Once upon a time",
      max_tokens: 24,
      temperature: 1.5,
      ignore_eos: true,
      allowed_token_ids: allowed,
      logit_bias: { "90": 5 },
      return_token_ids: true,
    } as never) as OpenAI.Completion;
    // deno-lint-ignore no-explicit-any
    const ids: number[] = (r.choices[0] as any).token_ids;
    assert.equal(ids.length, 24);
    assert.ok(ids.every((id) => allowed.includes(id)), JSON.stringify(ids));
    for (const bad of [[], [1e9], "70"]) {
      const err = await client.completions.create(
        { model: "demo", prompt: "a", max_tokens: 1, allowed_token_ids: bad } as never,
      ).then(() => null, (e) => e);
      assert.equal(err?.param, "allowed_token_ids", JSON.stringify(bad));
    }
  } finally {
    await srv.shutdown();
  }
});

Deno.test("prompt_logprobs on the demo model: the echo's logprobs, in vLLM's shape", async () => {
  const srv = startServer({ model: "demo", port: 0, backend: "cpu", quiet: true });
  try {
    await srv.ready;
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "x", maxRetries: 0 });
    const base = { model: "demo", prompt: "The quick brown fox", temperature: 0 };
    const echo = await client.completions.create({
      ...base,
      max_tokens: 0,
      echo: true,
      logprobs: 3,
    });
    const lp = echo.choices[0].logprobs!;
    const r = await client.completions.create(
      { ...base, max_tokens: 2, prompt_logprobs: 3, return_token_ids: true } as never,
    ) as OpenAI.Completion;
    // deno-lint-ignore no-explicit-any
    const c = r.choices[0] as any;
    const ids: number[] = c.prompt_token_ids;
    assert.equal(c.prompt_logprobs.length, ids.length);
    assert.equal(c.prompt_logprobs[0], null);
    for (let i = 1; i < ids.length; i++) {
      const entry = c.prompt_logprobs[i];
      const own = entry[ids[i]];
      assert.ok(Math.abs(own.logprob - lp.token_logprobs![i]!) < 1e-4, `position ${i}`);
      assert.equal(own.decoded_token, lp.tokens![i]);
      const ranked = Object.values(entry) as { rank: number | null; logprob: number }[];
      assert.ok(ranked.length >= 3 && ranked.length <= 4, JSON.stringify(entry));
      for (const v of ranked) if (v.rank === 1) assert.ok(v.logprob >= own.logprob);
      if (own.rank !== null) assert.ok(own.rank >= 1 && own.rank <= 3);
    }
    const s = await client.completions.create(
      { ...base, max_tokens: 3, prompt_logprobs: 1, stream: true } as never,
    ) as unknown as AsyncIterable<OpenAI.Completion>;
    // deno-lint-ignore no-explicit-any
    const chunks: any[] = [];
    for await (const chunk of s) chunks.push(...chunk.choices);
    assert.equal(chunks[0].prompt_logprobs.length, ids.length);
    assert.ok(chunks.slice(1).every((x) => x.prompt_logprobs === undefined));
    for (const bad of [-1, 21, 1.5]) {
      const err = await client.completions.create({ ...base, prompt_logprobs: bad } as never)
        .then(() => null, (e) => e);
      assert.equal(err?.param, "prompt_logprobs", String(bad));
    }
  } finally {
    await srv.shutdown();
  }
});
