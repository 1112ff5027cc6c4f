// 32 concurrent streaming clients of mixed kv_bits against the real server on the demo model;
// some disconnect mid-stream. Every other stream must be complete and equal to the same
// request served alone (greedy), and afterwards no KV page may remain in use.

import assert from "node:assert/strict";
import { startServer } from "../main.ts";

const CLIENTS = 32;
const MAX_TOKENS = 24;
const BITS = ["16", "2", "1"];
const PROMPTS = [
  "Once upon a time",
  "The weather today",
  "In the beginning",
  "She opened the door and",
  "The history of the city",
  "He said that",
];

interface Outcome {
  text: string;
  finish: string | null;
  chunks: number;
  aborted: boolean;
  usage: { completion_tokens: number } | null;
}

async function streamOnce(url: string, i: number, abortAfter: number | null): Promise<Outcome> {
  const ac = new AbortController();
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    signal: ac.signal,
    headers: { "X-KV-Bits": BITS[i % 3], "Content-Type": "application/json" },
    body: JSON.stringify({
      prompt: PROMPTS[i % PROMPTS.length],
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("X-KV-Bits"), BITS[i % 3]);
  const out: Outcome = { text: "", finish: null, chunks: 0, aborted: false, usage: null };
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for await (const bytes of r.body!) {
      buf += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const line = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (line.startsWith(":")) continue; // a keep-alive comment
        const data = line.slice("data: ".length);
        if (data === "[DONE]") return out;
        const chunk = JSON.parse(data);
        if (chunk.usage) out.usage = chunk.usage;
        for (const c of chunk.choices) {
          out.text += c.text;
          out.finish = c.finish_reason ?? out.finish;
          out.chunks++;
        }
        if (abortAfter !== null && out.chunks >= abortAfter) {
          out.aborted = true;
          ac.abort();
          return out;
        }
      }
    }
  } catch (e) {
    if (!out.aborted) throw e;
  }
  return out;
}

async function metric(url: string, re: RegExp): Promise<number[]> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return [...text.matchAll(re)].map((m) => Number(m[1]));
}

Deno.test("32 concurrent mixed-precision streams, some aborted: the rest exact, pages freed", async () => {
  const srv = startServer({ model: "demo", port: 0, backend: "cpu", quiet: true, maxNumSeqs: 32 });
  try {
    await srv.ready;
    // References: each (prompt, kv_bits) pair alone.
    const ref = new Map<string, string>();
    for (let i = 0; i < PROMPTS.length * 3; i++) {
      const key = `${i % PROMPTS.length}/${BITS[i % 3]}`;
      if (!ref.has(key)) ref.set(key, (await streamOnce(srv.url, i, null)).text);
    }
    const outcomes = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => streamOnce(srv.url, i, i % 5 === 0 ? 3 : null)),
    );
    let aborted = 0;
    outcomes.forEach((o, i) => {
      if (i % 5 === 0) {
        assert.ok(o.aborted, `client ${i} meant to abort`);
        aborted++;
        return;
      }
      assert.equal(o.finish, "length", `client ${i}`);
      assert.equal(o.usage?.completion_tokens, MAX_TOKENS, `client ${i}`);
      assert.equal(o.text, ref.get(`${i % PROMPTS.length}/${BITS[i % 3]}`), `client ${i} text`);
    });
    assert.equal(aborted, 7);
    // Aborted sequences are freed within a step; wait for the batch to drain.
    const deadline = Date.now() + 10_000;
    while ((await metric(srv.url, /^nsn_requests_running (\d+)$/gm))[0] > 0) {
      assert.ok(Date.now() < deadline, "the batch drains");
      await new Promise((r) => setTimeout(r, 20));
    }
    const pages = await metric(srv.url, /^nsn_kv_pages_in_use\{kv_bits="\d+"\} (\d+)$/gm);
    assert.deepEqual(pages, [0, 0, 0]);
    // The disconnects cancelled their sequences rather than letting them run to max_tokens.
    const aborts = await metric(srv.url, /^nsn_sequences_finished_total\{[^}]*"abort"\} (\d+)$/gm);
    assert.equal(aborts.reduce((a, b) => a + b, 0), aborted);
    srv.state.ready!.model.engine.check();
  } finally {
    await srv.shutdown();
  }
});
