// Automatic prefix caching and prompt sharing against the fake engine, whose pages hold token
// ids: a sequence "sees" exactly what its page table names, so a cache hit that served a wrong
// page would change its output. Every step is followed by the page-table and reference-count
// check (debugChecks). The page pool and the hash chain are tested directly too.

import assert from "node:assert/strict";
import { PagePool } from "../engine/page_pool.ts";
import { chainRoot, PrefixCache, windowHash } from "../engine/prefix_cache.ts";
import { KV_BITS, type KvBits } from "../engine/types.ts";
import { makeTestApp } from "./fake_engine.ts";
import { prompt, request, setup } from "./helpers/sched.ts";

/** Runs one request alone on `s` and returns its tokens and cached prompt tokens. */
async function runOne(
  s: ReturnType<typeof setup>["s"],
  p: number[],
  kvBits: KvBits,
  salt?: string,
) {
  const o = request(p, kvBits, 20, { cacheSalt: salt });
  const [seq] = s.submit([o.req]);
  await o.out.done;
  assert.equal(o.out.reason, "length", o.out.error?.message);
  return { tokens: o.out.tokens, cached: seq.cachedTokens };
}

Deno.test("a repeated prompt reuses its full windows, with identical output, at 16/2/1 bits", async () => {
  for (const k of KV_BITS) {
    const { e, s } = setup({}, { maxStepTokens: 48 });
    const p = prompt(200);
    const cold = await runOne(s, p, k);
    const prefilled = e.log.reduce((a, l) => a + l.tokens, 0);
    const warm = await runOne(s, p, k);
    assert.equal(cold.cached, 0);
    assert.equal(warm.cached, 192, `kv_bits ${k}`); // 3 full windows of 200 tokens
    assert.deepEqual(warm.tokens, cold.tokens, `kv_bits ${k}`);
    const second = e.log.reduce((a, l) => a + l.tokens, 0) - prefilled;
    assert.equal(second, 200 - 192 + 19, `kv_bits ${k}: tokens computed on the hit`);
    // A prompt that shares only the first window reuses only it.
    const q = [...p.slice(0, 100), ...prompt(100, 5)];
    assert.equal((await runOne(s, q, k)).cached, 64);
    await s.close();
  }
});

Deno.test("kv_bits and cache_salt separate caches; an exact multiple of 64 keeps its last token", async () => {
  const { s } = setup();
  const p = prompt(128);
  await runOne(s, p, 2);
  assert.equal((await runOne(s, p, 1)).cached, 0);
  assert.equal((await runOne(s, p, 16)).cached, 0);
  assert.equal((await runOne(s, p, 2, "tenant-a")).cached, 0);
  assert.equal((await runOne(s, p, 2, "tenant-b")).cached, 0);
  assert.equal((await runOne(s, p, 2, "tenant-a")).cached, 64); // the last token is computed
  assert.equal((await runOne(s, p, 2)).cached, 64);
  await s.close();
});

Deno.test("--no-prefix-caching recomputes every prompt", async () => {
  const { s } = setup({}, { prefixCaching: false });
  const p = prompt(200);
  await runOne(s, p, 16);
  assert.equal((await runOne(s, p, 16)).cached, 0);
  assert.equal(s.kv.prefix, null);
  await s.close();
  const t = makeTestApp({ scheduler: { prefixCaching: false } });
  const models = await (await t.app.request("/v1/models")).json();
  assert.equal(models.data[0].prefix_caching, false);
  await t.close();
});

Deno.test("n / best_of: the prompt is prefilled once and its pages shared", async () => {
  for (const k of KV_BITS) {
    const { e, s } = setup({}, { prefixCaching: false });
    const p = prompt(150);
    const outs = [0, 1, 2].map(() => request(p, k, 10, { shareWith: 0 }));
    s.submit(outs.map((o) => o.req));
    await Promise.all(outs.map((o) => o.out.done));
    for (const o of outs) assert.deepEqual(o.out.tokens, outs[0].out.tokens);
    const computed = e.log.reduce((a, l) => a + l.tokens, 0);
    // The leader prefills 150 tokens; the others only what follows their shared 2 windows.
    assert.equal(computed, 150 + 2 * (150 - 128) + 3 * 9, `kv_bits ${k}`);
    await s.close();
  }
});

Deno.test("cached windows nobody holds are evicted least recently used, only when needed", async () => {
  // 8 slabs: two 200-token kv_bits 16 sequences fit (4 pages each), a third evicts the first.
  const { s } = setup({ poolSlabs: 8 });
  const a = prompt(200, 1), b = prompt(200, 2), c = prompt(200, 3);
  await runOne(s, a, 16);
  await runOne(s, b, 16);
  assert.equal(s.kv.pool.pagesIdle(16), 6); // 3 full windows each stay cached
  assert.equal((await runOne(s, b, 16)).cached, 192); // b is now the most recent
  await runOne(s, c, 16); // needs 4 pages: 2 free, then a's least recently used windows go
  assert.equal((await runOne(s, b, 16)).cached, 192);
  assert.equal((await runOne(s, a, 16)).cached, 0);
  s.check();
  await s.close();
});

Deno.test("page pool: reference counts, idle pages, slabs shared by kinds; check() catches drift", () => {
  const pool = new PagePool({ nSlabs: 2, perSlab: { 16: 1, 2: 4, 1: 8 } });
  const a = pool.alloc(2), b = pool.alloc(2);
  assert.equal(Math.floor(a / 4), Math.floor(b / 4)); // same slab
  assert.equal(pool.alloc(16) >= 0, true);
  assert.equal(pool.alloc(16), -1); // both slabs taken
  pool.retain(2, a);
  assert.equal(pool.refs(2, a), 2);
  const owners: [KvBits, number][] = [[2, a], [2, a], [2, b], [16, 1 - Math.floor(a / 4)]];
  pool.check(owners, () => false);
  assert.throws(() => pool.check(owners.slice(1), () => false), /references/);
  pool.release(2, a);
  pool.release(2, a);
  assert.equal(pool.refs(2, a), -1);
  assert.throws(() => pool.release(2, a), /unreferenced/);
  pool.release(2, b);
  assert.equal(pool.pagesFreeNow(1), 8); // the slab went back to the common pool
});

Deno.test("hash chain: a window's hash depends on every earlier window, kv_bits and salt", () => {
  const t = prompt(128);
  const u = [1, ...t.slice(1)]; // window 1 holds the same tokens, after a different window 0
  const r = chainRoot(16, "");
  assert.notEqual(windowHash(windowHash(r, t, 0), t, 1), windowHash(windowHash(r, u, 0), u, 1));
  assert.notEqual(chainRoot(16, ""), chainRoot(2, ""));
  assert.notEqual(chainRoot(16, ""), chainRoot(16, "x"));
  const cache = new PrefixCache(() => 1);
  cache.register(16, "", t, 0, r, 5);
  assert.deepEqual(cache.lookup(16, "", t, 2).ids, [5]);
  assert.deepEqual(cache.lookup(16, "", [...t.slice(0, 64), 1], 2).ids, [5]);
  assert.deepEqual(cache.lookup(16, "", u, 2).ids, []);
  assert.deepEqual(cache.lookup(16, "x", t, 2).ids, []);
});

Deno.test("HTTP: usage.prompt_tokens_details.cached_tokens, n, cache_salt, prefix metrics", async () => {
  const t = makeTestApp();
  const text = "the same long system prompt ".repeat(8); // 224 tokens + BOS
  const post = async (body: Record<string, unknown>) => {
    const r = await t.app.request("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ temperature: 0, ...body }),
    });
    return { status: r.status, json: await r.json() };
  };
  const first = await post({ prompt: text, max_tokens: 2 });
  assert.equal(first.json.usage.prompt_tokens_details.cached_tokens, 0);
  const again = await post({ prompt: text, max_tokens: 2 });
  assert.equal(again.json.usage.prompt_tokens_details.cached_tokens, 192);
  assert.equal(again.json.choices[0].text, first.json.choices[0].text);
  const salted = await post({ prompt: text, max_tokens: 2, cache_salt: "tenant" });
  assert.equal(salted.json.usage.prompt_tokens_details.cached_tokens, 0);
  // n = 2 of a new prompt: counted once, and the choices share the first one's pages.
  const two = await post({ prompt: text + "again", max_tokens: 2, n: 2 });
  assert.equal(two.json.usage.prompt_tokens_details.cached_tokens, 192);
  assert.equal(two.json.choices[1].text, two.json.choices[0].text);
  for (const bad of [5, "", null, ["a"]]) {
    const r = await post({ prompt: "x", cache_salt: bad });
    if (bad === null) continue; // null means absent, as every optional field
    assert.equal(r.status, 400, JSON.stringify(bad));
    assert.equal(r.json.error.param, "cache_salt");
  }
  const metrics = await (await t.app.request("/metrics")).text();
  assert.match(metrics, /nsn_prefix_cache_hits_total\{kv_bits="16"\} (19[2-9]|[2-9]\d\d)/);
  assert.match(metrics, /nsn_prefix_cache_queries_total\{kv_bits="16"\} \d{3,}/);
  await t.close();
});

Deno.test("stress: shared prefixes, n choices, a small pool, cancels; outputs exact, pages back", async () => {
  // 120 requests over 4 system prompts, mixed kv_bits and lengths, some with 3 choices, on a
  // pool that forces preemption and eviction; the page tables and reference counts are checked
  // after every step (debugChecks). Finished requests must match a roomy, cache-less run.
  let seed = 7;
  const rand = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  const systems = [0, 1, 2, 3].map((i) => prompt(64 * (1 + i) + 10, 40 + i));
  const cases = Array.from({ length: 120 }, () => ({
    p: [...systems[rand(4)], ...prompt(rand(90), rand(1000))],
    k: KV_BITS[rand(3)],
    n: rand(4) === 0 ? 3 : 1,
    max: 5 + rand(30),
    cancel: rand(8) === 0,
  }));
  const run = async (small: boolean) => {
    const { s } = setup(
      small ? { poolSlabs: 24, stepDelayMs: 0 } : {},
      small ? { maxStepTokens: 96, prefixCaching: true } : { prefixCaching: false },
    );
    const outs = cases.map((c) => {
      const reqs = Array.from({ length: c.n }, () => request(c.p, c.k, c.max, { shareWith: 0 }));
      const seqs = s.submit(reqs.map((r) => r.req));
      if (small && c.cancel) setTimeout(() => seqs.forEach((q) => s.cancel(q)), rand(20));
      return reqs.map((r) => r.out);
    });
    await Promise.all(outs.flat().map((o) => o.done));
    const pool = s.kv.pool;
    for (const k of KV_BITS) assert.equal(pool.pagesInUse(k) - pool.pagesIdle(k), 0, `kv ${k}`);
    s.check();
    const preempted = s.preemptions;
    await s.close();
    return { outs, preempted };
  };
  const want = await run(false);
  const got = await run(true);
  assert.ok(got.preempted > 0, "the small pool never preempted");
  let compared = 0;
  cases.forEach((_c, i) => {
    got.outs[i].forEach((o, j) => {
      if (o.reason === "abort") return;
      assert.equal(o.reason, "length", `case ${i}: ${o.error?.message}`);
      assert.deepEqual(o.tokens, want.outs[i][j].tokens, `case ${i} choice ${j}`);
      compared++;
    });
  });
  assert.ok(compared > 100, `only ${compared} outputs compared`);
});
