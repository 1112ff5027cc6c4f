// vLLM request extras: the ones we cannot honour are a 400 naming the field (through the
// official openai client, as clients send them), their no-op values are accepted; echo of
// token-id prompts keeps special tokens.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { BOS, makeTestApp } from "./fake_engine.ts";

function clientFor(t: ReturnType<typeof makeTestApp>): OpenAI {
  return new OpenAI({
    baseURL: "http://test/v1",
    apiKey: "unused",
    maxRetries: 0,
    fetch: async (input: string | URL | Request, init?: RequestInit) =>
      await t.app.request(String(input instanceof Request ? input.url : input), init),
  });
}

const REFUSED: [Record<string, unknown>, string][] = [
  [{ use_beam_search: true, n: 2 }, "use_beam_search"],
  [{ length_penalty: 0.5 }, "length_penalty"],
  [{ prompt_logprobs: -1 }, "prompt_logprobs"],
  [{ prompt_logprobs: 2 }, "prompt_logprobs"],
  [{ return_token_ids: true }, "return_token_ids"],
  [{ return_tokens_as_token_ids: true, logprobs: 1 }, "return_tokens_as_token_ids"],
  [{ allowed_token_ids: [1, 2] }, "allowed_token_ids"],
  [{ truncate_prompt_tokens: 4 }, "truncate_prompt_tokens"],
  [{ truncation_side: "left" }, "truncation_side"],
  [{ guided_json: { type: "object" } }, "guided_json"],
  [
    { stream: true, stream_options: { continuous_usage_stats: true } },
    "stream_options.continuous_usage_stats",
  ],
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
  }
  const noOps = {
    use_beam_search: false,
    length_penalty: 1,
    return_token_ids: false,
    return_tokens_as_token_ids: false,
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
