// A huge tokenization does not stall other requests (issue 13 #3): an 8 MB /tokenize body used
// to delay /health by 5-11 s, because tokenization ran on the event loop. Also the size limits:
// a /tokenize prompt or a request's prompts beyond them is a clear 400, before any work.

import assert from "node:assert/strict";
import { assertHealthUnstalled } from "./helpers/health_stall.ts";
import { assertErrorShape, postJson as post, spawnServer } from "./helpers/server.ts";

// Words the demo tokenizer merges poorly: slow per character, as real text is.
const TEXT = "Zebra quixotic, jumps; 42 über naïve fjord! ";

function repeat(chars: number): string {
  return TEXT.repeat(Math.ceil(chars / TEXT.length)).slice(0, chars);
}

Deno.test("/health answers promptly while a 1M-character /tokenize runs", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const work = post(srv.url, "/tokenize", { prompt: repeat(1_000_000) }).then(async (r) => {
    assert.equal(r.status, 200);
    assert((await r.json()).count > 100_000);
  });
  await assertHealthUnstalled(srv.url, work, "during a 1M-character /tokenize");
});

Deno.test("/health answers promptly while a completion with many prompts tokenizes", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const prompts = Array.from({ length: 200 }, (_, i) => `${i} ${repeat(3_000)}`);
  const work = post(srv.url, "/v1/completions", { prompt: prompts, max_tokens: 0 })
    .then(async (r) => assert.equal(r.status, 200, await r.text()));
  await assertHealthUnstalled(srv.url, work, "while 200 x 3 KB prompts tokenize");
});

Deno.test("prompts beyond the size limits are a 400 naming prompt", async () => {
  await using srv = await spawnServer({ debugChecks: false });
  const cases: [string, unknown][] = [
    ["/tokenize", { prompt: repeat(3 << 20) }],
    ["/v1/completions", { prompt: Array.from({ length: 600 }, () => repeat(8_000)) }],
  ];
  for (const [path, body] of cases) {
    const t0 = performance.now();
    const r = await post(srv.url, path, body);
    const err = assertErrorShape(await r.json(), path);
    assert.equal(r.status, 400, `${path}: ${err.message}`);
    assert.equal(err.param, "prompt");
    assert.match(String(err.message), /characters/);
    console.log(`${path}: refused in ${(performance.now() - t0).toFixed(0)} ms: ${err.message}`);
  }
});
