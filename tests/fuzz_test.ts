// Seeded fuzzing of /v1/completions over the fake engine. (1) Random bodies, valid and not:
// never a 500, errors always in OpenAI's shape, successes always well-formed. (2) Random
// token scripts (multi-character pieces, UTF-8 split over byte tokens) against random stop
// strings: the text never contains a stop, is cut right before one, and streaming agrees.

import assert from "node:assert/strict";
import { EOS, FakeTokenizer, makeTestApp, PIECES } from "./fake_engine.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20240601);

function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)];
  return { next, int, pick };
}

// deno-lint-ignore no-explicit-any
type Json = any;

const FIELD_VALUES: Record<string, unknown[]> = {
  prompt: ["hi", ["a", "b"], [97, 98], [[97], [98, 99]], "", [], [1e9], 5, null, ["x", 1], "é€"],
  max_tokens: [0, 1, 3, null, -1, "2", 1.5, 100000],
  temperature: [0, 0.7, 2, null, -1, 3, "x"],
  top_p: [1, 0.5, 0, 1.2, null],
  n: [1, 2, 3, 0, 200, null, "2"],
  best_of: [null, 1, 2, 4, 0],
  stream: [false, true, null, "true"],
  stream_options: [null, { include_usage: true }, { include_usage: "x" }, 3],
  logprobs: [null, 0, 1, 5, 21, -1, true],
  echo: [false, true, null, 1],
  stop: [null, "a", ["a", "b"], ["", "x"], [1], ["a", "b", "c", "d", "e"], ""],
  presence_penalty: [0, 1, -2, 2.5, null],
  frequency_penalty: [0, -1, 3, null],
  logit_bias: [null, {}, { "97": 5 }, { "97": 200 }, { x: 1 }, []],
  seed: [null, 0, 42, -7, 1.5, "s"],
  top_k: [null, -1, 0, 5, -3],
  min_p: [null, 0, 0.1, 2],
  repetition_penalty: [null, 1, 1.3, 0, -1],
  min_tokens: [null, 0, 2, -1],
  ignore_eos: [null, true, "no"],
  suffix: [null, "x"],
  model: [null, "fake-model", "fake", "other", 3],
  user: [null, "u", 7],
  unknown_thing: [1, "x", { a: 1 }],
};

function checkSuccess(body: Json, j: Json, nPrompts: number) {
  const n = body.n ?? 1;
  assert.equal(j.object, "text_completion");
  assert.equal(j.choices.length, nPrompts * n);
  j.choices.forEach((c: Json, i: number) => {
    assert.equal(c.index, i);
    assert.ok(c.finish_reason === "stop" || c.finish_reason === "length");
    assert.equal(typeof c.text, "string");
    if (c.logprobs !== null) {
      const lp = c.logprobs;
      const len = lp.tokens.length;
      for (const k of ["token_logprobs", "top_logprobs", "text_offset"]) {
        assert.equal(lp[k].length, len, k);
      }
      for (let t = 1; t < len; t++) assert.ok(lp.text_offset[t] >= lp.text_offset[t - 1]);
    }
  });
  assert.equal(j.usage.total_tokens, j.usage.prompt_tokens + j.usage.completion_tokens);
}

Deno.test(`fuzz: random request bodies (seed ${SEED})`, async () => {
  const r = rng(SEED);
  const t = makeTestApp();
  const fields = Object.keys(FIELD_VALUES);
  for (let iter = 0; iter < 300; iter++) {
    const body: Json = {};
    for (const f of fields) if (f === "prompt" || r.next() < 0.3) body[f] = r.pick(FIELD_VALUES[f]);
    const res = await t.app.request("/v1/completions", {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        ...(r.next() < 0.1 ? { "X-KV-Bits": r.pick(["1", "2", "16", "3", ""]) } : {}),
      },
      body: JSON.stringify(body),
    });
    const where = `iteration ${iter}: ${JSON.stringify(body)}`;
    assert.ok([200, 400, 404].includes(res.status), `${where} -> ${res.status}`);
    if (res.status !== 200) {
      const j = await res.json();
      assert.deepEqual(
        Object.keys(j.error).slice(0, 4),
        ["message", "type", "param", "code"],
        where,
      );
      continue;
    }
    if (body.stream === true) {
      const text = await res.text();
      assert.ok(text.endsWith("data: [DONE]\n\n"), where);
      continue;
    }
    const p = body.prompt;
    const nPrompts = typeof p === "string" || typeof p[0] === "number" ? 1 : p.length;
    checkSuccess(body, await res.json(), nPrompts);
  }
  await t.close();
});

const SCRIPT_TOKENS = [97, 98, 99, 32, 10, 83, 84, 79, 80, 0xc3, 0xa9, 0xe2, 0x82, 0xac];
const tok = new FakeTokenizer();

Deno.test(`fuzz: stop strings over random token scripts (seed ${SEED})`, async () => {
  const r = rng(SEED + 1);
  const scripts = new Map<string, number[]>();
  const t = makeTestApp({
    engine: {
      nextToken: (h, p, nOut) => scripts.get(h.slice(0, p.nPrompt).join(","))![nOut] ?? EOS,
    },
  });
  const cases = Array.from({ length: 120 }, (_, i) => {
    const ids = Array.from(
      { length: r.int(1, 24) },
      () => r.next() < 0.3 ? 258 + r.int(0, PIECES.length - 1) : r.pick(SCRIPT_TOKENS),
    );
    const full = tok.decode(ids);
    const stops = Array.from({ length: r.int(1, 3) }, () => {
      if (r.next() < 0.7 && full.length > 0) {
        const a = r.int(0, full.length - 1);
        return full.slice(a, a + r.int(1, 5));
      }
      return r.pick(["STOP", "ab", "é", "€x", "\n", "zz"]);
    });
    const prompt = [i]; // a unique one-token prompt keys the script
    scripts.set(String(i), ids);
    return { prompt, ids, full, stops };
  });
  const runOne = async (c: typeof cases[number]) => {
    const body = { prompt: c.prompt, max_tokens: 40, stop: c.stops };
    const res = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const j = await res.json();
    const text: string = j.choices[0].text;
    const sres = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, stream: true }),
    });
    const streamed = (await sres.text()).split("\n\n").filter((b) => b && b !== "data: [DONE]")
      .map((b) => JSON.parse(b.slice(6)).choices[0].text).join("");
    const where = `${JSON.stringify(c.full)} stops ${JSON.stringify(c.stops)} -> ${
      JSON.stringify(text)
    }`;
    assert.equal(streamed, text, `streaming differs: ${where}`);
    assert.equal(j.choices[0].finish_reason, "stop", where);
    const stops = c.stops.filter((s) => s.length > 0);
    for (const s of stops) assert.ok(!text.includes(s), `contains a stop: ${where}`);
    if (stops.some((s) => c.full.includes(s))) {
      assert.ok(stops.some((s) => c.full.startsWith(text + s)), `not cut before a stop: ${where}`);
    } else {
      assert.equal(text, c.full, where);
    }
  };
  for (let i = 0; i < cases.length; i += 20) await Promise.all(cases.slice(i, i + 20).map(runOne));
  await t.close();
});
