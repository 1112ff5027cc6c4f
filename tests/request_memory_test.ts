// Memory per request (issue 13 #8): one stream with n=128, 300 tokens and logprobs=20 raised
// RSS by 350-400 MB while 31 MB went over the wire, because every choice kept its whole text
// and logprobs even when streaming. Now a stream keeps only what is unsent (plus the stop-string
// look-back), and tokens x candidates x (1 + logprobs) per request is bounded (400 beyond). The
// write timeout for a client that stops reading is in tests/connections_test.ts.

import assert from "node:assert/strict";
import { CompletionRun } from "../engine/completion.ts";
import { type CompletionRequest, REQUEST_DEFAULTS } from "../engine/sampling_params.ts";
import { makeTestApp } from "./fake_engine.ts";
import { postJson as post, spawnServer } from "./helpers/server.ts";

Deno.test("n x max_tokens x logprobs beyond the bound is a 400 naming logprobs", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const big = { prompt: "Once", n: 128, max_tokens: 300, logprobs: 20 };
  const r = await post(srv.url, "/v1/completions", big);
  const j = await r.json();
  assert.equal(r.status, 400);
  assert.equal(j.error.param, "logprobs");
  // Within the bound: served.
  const ok = await post(srv.url, "/v1/completions", { ...big, n: 2, max_tokens: 4 });
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
});

Deno.test("a streaming run keeps none of the text and logprobs it has sent", async () => {
  const t = makeTestApp();
  const r = t.state.ready!;
  const req: CompletionRequest = {
    ...REQUEST_DEFAULTS,
    prompts: [[5, 6, 7]],
    promptTexts: [null],
    kvBits: 16,
    n: 4,
    bestOf: 4,
    maxTokens: 40,
    ignoreEos: true,
    logprobs: 5,
    stream: true,
  };
  const run = new CompletionRun(
    { model: r.model, scheduler: t.scheduler, tokenText: r.tokenText },
    req,
  );
  let sent = 0;
  for await (const ev of run.events()) if (ev.type === "chunk") sent += ev.chunk.text.length;
  assert(sent > 0, "the stream sent no text");
  // What a non-streaming response would assemble: nothing was kept.
  for (const c of (await run.result()).choices) {
    assert.equal(c.text, "");
    assert.deepEqual((c.logprobs as { tokens: string[] }).tokens, []);
  }
  await t.close();
});
