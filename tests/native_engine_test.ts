// ffi/native_engine.ts over the real library (CPU backend) with the synthetic tiny model:
// struct round trips through the ABI, step results against the step's own full logits,
// error translation, one-call-at-a-time, fault injection and idempotent close.

import assert from "node:assert/strict";
import { DirectKv } from "../engine/direct_kv.ts";
import { EngineError, greedySampling, type KvBits, type SamplingParams } from "../engine/types.ts";
import { openLibrary } from "../ffi/library.ts";
import { loadModel } from "../models/loader.ts";

// Runs once the library's sources exist (or NSN_LIB points at a build).
const haveLib = Deno.env.has("NSN_LIB") ||
  await Deno.stat(new URL("../cuda/Makefile", import.meta.url)).then(() => true, () => false);
function nativeTest(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore: !haveLib, fn });
}

const GREEDY: SamplingParams = greedySampling();

async function tiny() {
  return await loadModel("synthetic:tiny", {
    backend: "cpu",
    nThreads: 2,
    maxSeqs: 8,
    maxStepTokens: 256,
    kvPoolBytes: 16n << 20n,
    debugChecks: true,
    seed: 7n,
  });
}

function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const x of row) max = Math.max(max, x);
  let sum = 0;
  for (const x of row) sum += Math.exp(x - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (x) => x - lse);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    if (typeof p === "function") p();
    else await p;
  } catch (e) {
    assert.ok(e instanceof EngineError, `not an EngineError: ${e}`);
    assert.ok(e.message.length > 0);
    return e.code;
  }
  return "ok";
}

nativeTest("library opens, ABI version checked, cuda availability reported", async () => {
  const lib = await openLibrary();
  assert.equal(lib.symbols.nsn_abi_version(), 2);
  assert.equal(typeof lib.cudaAvailable(), "boolean");
  assert.equal(await openLibrary(), lib, "one handle per process");
});

nativeTest("info decodes the resolved options and the fp16 KV token size", async () => {
  using m = await tiny();
  const info = m.engine.info();
  assert.equal(info.backend, "cpu");
  assert.equal(info.maxSeqs, 8);
  assert.equal(info.maxStepTokens, 256);
  assert.equal(info.kvPoolBytes, 16 << 20);
  assert.equal(info.seqsInUse, 0);
  assert.ok(info.weightBytes > 0);
  const s = m.spec;
  assert.equal(
    info.kinds[16].tokenBytes,
    s.nLayers * s.nKvHeads * 2 * s.headDim * 2,
    "K and V in fp16",
  );
  assert.ok(info.kinds[2].tokenBytes < info.kinds[16].tokenBytes / 4);
  assert.ok(info.kinds[1].tokenBytes < info.kinds[2].tokenBytes);
  assert.ok(info.kinds[16].pageBytes >= 64 * info.kinds[16].tokenBytes);
  assert.equal(info.nSlabs, Math.floor((16 << 20) / info.kinds[16].pageBytes));
  assert.equal(info.kinds[16].pagesPerSlab, 1);
  for (const k of [2, 1] as const) {
    assert.equal(
      info.kinds[k].pagesPerSlab,
      Math.floor(info.kinds[16].pageBytes / info.kinds[k].pageBytes),
    );
  }
  assert.ok(info.deviceName.length > 0, "device name decoded");
});

nativeTest("mixed-kv_bits step: sampled ids and logprobs agree with the full logits", async () => {
  using m = await tiny();
  const e = m.engine;
  const kv = new DirectKv(e);
  const V = e.vocabSize;
  const bits: KvBits[] = [16, 2, 1];
  const seqs = bits.map((b) => kv.create(b, GREEDY));
  assert.equal(e.info().seqsInUse, 3);
  const prompts = [[256, 1, 2, 3, 4], [256, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 70], [256, 100]];
  const topN = 5;
  const r = await kv.step(
    seqs.map((seq, i) => ({
      seq,
      tokens: prompts[i],
      sample: true,
      wantLogprobs: true,
      nextToken: i === 0 ? 42 : undefined,
    })),
    { topN, logits: true },
  );
  const nTok = prompts.flat().length;
  assert.equal(r.logits!.length, nTok * V);
  let offset = 0;
  let worst = 0;
  prompts.forEach((p, i) => {
    assert.equal(seqs[i].len, p.length);
    const positions = r.positions[i]!;
    assert.equal(positions.length, p.length);
    for (let j = 0; j < p.length; j++) {
      const row = r.logits!.subarray((offset + j) * V, (offset + j + 1) * V);
      const lp = logSoftmax(row);
      const pos = positions[j];
      const next = j + 1 < p.length ? p[j + 1] : (i === 0 ? 42 : -1);
      if (next >= 0) worst = Math.max(worst, Math.abs(pos.logprob - lp[next]));
      else assert.ok(Number.isNaN(pos.logprob), "unknown next token -> NaN");
      assert.equal(pos.top.length, topN);
      assert.equal(pos.top[0].id, argmax(row));
      for (let k = 1; k < topN; k++) assert.ok(pos.top[k].logprob <= pos.top[k - 1].logprob);
      for (const t of pos.top) worst = Math.max(worst, Math.abs(t.logprob - lp[t.id]));
    }
    const last = r.logits!.subarray((offset + p.length - 1) * V, (offset + p.length) * V);
    const out = r.outputs[i]!;
    assert.equal(out.token, argmax(last), `greedy sample of seq ${i}`);
    assert.equal(out.top.length, topN);
    worst = Math.max(worst, Math.abs(out.logprob - logSoftmax(last)[out.token]));
    offset += p.length;
  });
  console.log(`worst logprob error vs log_softmax(logits): ${worst.toExponential(2)}`);
  assert.ok(worst < 1e-4);

  // A decode step without logprobs: no positions, outputs only where asked.
  const d = await kv.step([{
    seq: seqs[0],
    tokens: [r.outputs[0]!.token],
    sample: true,
    wantLogprobs: false,
  }, {
    seq: seqs[1],
    tokens: [5],
    sample: false,
    wantLogprobs: false,
  }], { topN: 0 });
  assert.deepEqual(d.positions, [null, null]);
  assert.equal(d.outputs[1], null);
  assert.equal(d.outputs[0]!.top.length, 0);
  assert.equal(d.logits, undefined);
  e.check();
  for (const s of seqs) kv.free(s);
  assert.equal(e.info().seqsInUse, 0);
  assert.equal(kv.pool.slabsInUse(), 0);
});

nativeTest("page tables are checked at the ABI: ids, counts, no page written twice", async () => {
  using m = await tiny();
  const e = m.engine;
  const info = e.info();
  const a = e.createSeq(16), b = e.createSeq(2);
  e.setSampling(a, GREEDY);
  e.setSampling(b, GREEDY);
  const row = (over: Record<string, unknown>) => ({
    seq: a,
    pos0: 0,
    tokens: [1, 2, 3],
    pages: [0],
    nPages: 1,
    tailPage: -1,
    sample: false,
    wantLogprobs: false,
    ...over,
  });
  const step = (rows: ReturnType<typeof row>[]) => codeOf(e.step(rows, { topN: 0 }));
  assert.equal(
    await step([row({ pages: [info.nSlabs], nPages: 1 })]),
    "invalid",
    "id past the arena",
  );
  assert.equal(await step([row({ pages: [-1] })]), "invalid", "negative id");
  assert.equal(await step([row({ pages: [0, 1], nPages: 2 })]), "invalid", "3 tokens take 1 page");
  assert.equal(await step([row({ tailPage: 3 })]), "invalid", "no tail at kv_bits 16");
  assert.equal(
    await step([row({ seq: b, pages: [], nPages: 0 })]),
    "invalid",
    "2-bit needs a tail",
  );
  // Page 0 is a's, and b's tail: two rows write it.
  const both = [row({}), row({ seq: b, pages: [], nPages: 0, tailPage: 0 })];
  assert.equal(await step(both), "invalid", "one page written by two rows");
  // b reads a 2-bit page that a row of the same kind writes.
  const c = e.createSeq(2);
  e.setSampling(c, GREEDY);
  const reads = row({ seq: b, pos0: 64, tokens: [1], pages: [5], nPages: 1, tailPage: 1 });
  const writes = row({
    seq: c,
    pos0: 60,
    tokens: [1, 2, 3, 4],
    pages: [5],
    nPages: 1,
    tailPage: 2,
  });
  assert.equal(await step([reads, writes]), "invalid", "a page written while another row reads it");
  assert.equal(await step([row({})]), "ok", "the valid row runs");
  e.check();
});

nativeTest("errors: native statuses become EngineError codes with the native message", async () => {
  using m = await tiny();
  const e = m.engine;
  assert.notEqual(await codeOf(() => e.createSeq(4 as KvBits)), "ok");
  assert.equal(await codeOf(() => e.freeSeq(12345)), "invalid");
  const kv = new DirectKv(e);
  const s = kv.create(16);
  assert.equal(
    await codeOf(
      kv.step([{ seq: s, tokens: [999999], sample: true }], { topN: 0 }),
    ),
    "invalid",
  );
  assert.equal(
    await codeOf(kv.step([{ seq: s, tokens: [1], sample: true }], { topN: 21 })),
    "invalid",
  );
  assert.equal(s.len, 0, "failed steps change nothing");
  try {
    e.freeSeq(12345);
  } catch (err) {
    assert.match((err as Error).message, /^nsn_seq_free: /);
  }
});

nativeTest(
  "one native call at a time; fault injection; close is idempotent and deferred",
  async () => {
    const m = await tiny();
    const e = m.engine;
    const kv = new DirectKv(e);
    const s = kv.create(2, GREEDY);
    const first = kv.step([{ seq: s, tokens: [1, 2, 3], sample: true }], { topN: 0 });
    // Every call below is made synchronously while `first` is in flight: any await could let
    // the (fast) native step finish first.
    const createCode = codeOf(() => e.createSeq(16));
    const seqsDuringStep = e.info().seqsInUse;
    const secondCode = codeOf(kv.step([{ seq: s, tokens: [4], sample: true }], { topN: 0 }));
    assert.equal(await createCode, "state");
    assert.equal(await secondCode, "state");
    assert.equal(seqsDuringStep, 1, "info() answers from the snapshot during a step");
    await first;

    e.injectFault(1);
    assert.equal(
      await codeOf(kv.step([{ seq: s, tokens: [4], sample: true }], { topN: 0 })),
      "internal",
    );
    assert.equal(s.len, 3);
    await kv.step([{ seq: s, tokens: [4], sample: true }], { topN: 0 });
    assert.equal(s.len, 4);

    const pending = kv.step([{ seq: s, tokens: [5], sample: true }], { topN: 0 });
    e.close(); // with a step in flight: the handle goes once it settles
    e.close();
    await pending;
    assert.equal(await codeOf(() => e.createSeq(16)), "state");
    m.close();
  },
);
