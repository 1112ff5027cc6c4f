// Calls of the C ABI (nsn.h) that break its contract: null handles, wrong sizes, out-of-range
// ids, slots, layers and kv_bits, batches that do not tile, freed and double-freed sequences,
// top_n 21, NaN sampling parameters, page ids outside the arena or written twice. Each must
// return a non-OK status with a message, change nothing (nsn_engine_check passes, the K/V the
// live sequences hold stay byte for byte) and crash nothing.
// Shared by tests/abi_safety_test.ts (release library) and tests/helpers/asan_driver.ts (the
// same calls under AddressSanitizer).

import { readModelSpec } from "../../models/config.ts";
import { encodeEngineOptions, encodeModelConfig, type EngineOptions } from "../../ffi/structs.ts";
import { LAYOUT } from "../../ffi/structs.ts";
import { NSN_OK, NsnSlot } from "../../ffi/symbols.ts";
import { abuseSampling, abuseStep } from "./abi_abuse_step.ts";
import { type AbuseResult, DEMO, lastError, RawEngine, type Status } from "./raw_engine.ts";

export { type AbuseResult, lastError, RawEngine, warmUp } from "./raw_engine.ts";

/** Runs every abusive call; `r` must hold the three sequences of warmUp(). */
export async function runAbuse(r: RawEngine, live: number[]): Promise<AbuseResult[]> {
  const { lib } = r;
  const s = lib.symbols;
  const results: AbuseResult[] = [];
  const tryCall = async (name: string, call: () => Status) => {
    const before = r.kvDigest();
    const status = await call();
    const error = status === NSN_OK ? "" : lastError(lib);
    let damage = r.check() === NSN_OK ? "" : `nsn_engine_check: ${lastError(lib)}`;
    if (status !== NSN_OK && r.kvDigest() !== before) damage += ` K/V ${before} -> ${r.kvDigest()}`;
    results.push({ name, status, error, damage });
  };
  const all = async (prefix: string, cases: [string, () => Status][]) => {
    for (const [name, call] of cases) await tryCall(`${prefix}: ${name}`, call);
  };
  const [a, b] = live;
  const V = r.vocab;
  const i32 = () => new Int32Array(1);

  // Engine creation: bad config, bad options, null pointers. An engine created by mistake is
  // destroyed at once (and the case fails).
  const spec = await readModelSpec(DEMO);
  const create = (cfg: Partial<typeof spec>, opts: Uint8Array<ArrayBuffer>) => () => {
    const out = new BigUint64Array(1);
    const st = s.nsn_engine_create(encodeModelConfig({ ...spec, ...cfg }), opts, out);
    if (st === NSN_OK) s.nsn_engine_destroy(Deno.UnsafePointer.create(out[0]));
    return st;
  };
  const cpu = (o: EngineOptions = {}) => encodeEngineOptions({ backend: "cpu", ...o });
  const cfg = (c: Partial<typeof spec>) => create(c, cpu());
  await all("create", [
    ["vocab 0", cfg({ vocabSize: 0 })],
    ["hidden -1", cfg({ hiddenSize: -1 })],
    ["layers 0", cfg({ nLayers: 0 })],
    ["heads 0", cfg({ nHeads: 0 })],
    ["kv heads 3 of 4", cfg({ nKvHeads: 3 })],
    ["kv heads > heads", cfg({ nKvHeads: 8 })],
    ["head_dim 96", cfg({ headDim: 96 })],
    ["head_dim -128", cfg({ headDim: -128 })],
    ["max_position 0", cfg({ maxPosition: 0 })],
    ["rms_eps NaN", cfg({ rmsEps: NaN })],
    ["rope_theta 0", cfg({ ropeTheta: 0 })],
    ["rope_theta NaN", cfg({ ropeTheta: NaN })],
    ["threads -1", create({}, cpu({ nThreads: -1 }))],
    ["max_seqs -1", create({}, cpu({ maxSeqs: -1 }))],
    ["max_step_tokens -5", create({}, cpu({ maxStepTokens: -5 }))],
    ["ablation 128", create({}, cpu({ ablation: 128 }))],
    ["backend 9", create({}, patched(cpu(), "backend", 9))],
    ["quant_method 5", create({}, patched(cpu(), "quant_method", 5))],
    ["debug_checks 2", create({}, patched(cpu(), "debug_checks", 2))],
    ["null cfg", () => s.nsn_engine_create(null, cpu(), new Uint8Array(8))],
    ["null out", () => s.nsn_engine_create(encodeModelConfig(spec), cpu(), null)],
  ]);
  if (!lib.cudaAvailable()) {
    await tryCall(
      "create: cuda without a GPU",
      create({}, encodeEngineOptions({ backend: "cuda" })),
    );
  }

  // Weights, on a fresh engine that is not finalized yet.
  const fresh = await RawEngine.create(lib, false);
  const H = spec.hiddenSize;
  const data = new Float32Array(V * H + 16);
  const w = (slot: number, layer: number, dtype: number, n: number | bigint, buf = data) => () =>
    s.nsn_engine_set_weight(fresh.e, slot, layer, dtype, buf, BigInt(n));
  const { EMBED, FINAL_NORM: NORM, ATTN_NORM, Q_BIAS, LM_HEAD } = NsnSlot;
  await all("set_weight", [
    ["null engine", () => s.nsn_engine_set_weight(null, EMBED, -1, 0, data, BigInt(V * H))],
    ["slot -1", w(-1, -1, 0, H)],
    ["slot 15", w(15, -1, 0, H)],
    ["slot 1000", w(1000, 0, 0, H)],
    ["layer -2", w(ATTN_NORM, -2, 0, H)],
    ["layer n_layers", w(ATTN_NORM, spec.nLayers, 0, H)],
    ["per-layer slot, layer -1", w(ATTN_NORM, -1, 0, H)],
    ["dtype 3", w(NORM, -1, 3, H)],
    ["dtype -1", w(NORM, -1, -1, H)],
    ["n_elements + 1", w(EMBED, -1, 0, V * H + 1)],
    ["n_elements - 1", w(EMBED, -1, 0, V * H - 1)],
    ["n_elements 0", w(NORM, -1, 0, 0)],
    ["n_elements 2^63", w(NORM, -1, 0, 1n << 63n)],
    ["null data", () => s.nsn_engine_set_weight(fresh.e, NORM, -1, 0, null, BigInt(H))],
    ["q bias without qkv_bias", w(Q_BIAS, 0, 0, spec.nHeads * spec.headDim)],
    ["lm_head on a tied model", w(LM_HEAD, -1, 0, V * H)],
  ]);
  await all("before finalize", [
    ["step", () => fresh.step([{ seq: 0, n: 1, off: 0 }], [5])],
    ["seq_create", () => s.nsn_seq_create(fresh.e, 16, i32())],
    ["finalize without weights", () => s.nsn_engine_finalize(fresh.e)],
  ]);
  fresh.destroy();

  // Null engine everywhere, and calls in the wrong state.
  await all("null engine", [
    ["init_random", () => s.nsn_engine_init_random(null, 1n)],
    ["finalize", () => s.nsn_engine_finalize(null)],
    ["get_info", () => s.nsn_engine_get_info(null, new Uint8Array(LAYOUT.nsn_engine_info.size))],
    ["check", () => s.nsn_engine_check(null)],
    ["inject_fault", () => s.nsn_engine_inject_fault(null, 1)],
    ["seq_create", () => s.nsn_seq_create(null, 16, i32())],
    ["seq_free", () => s.nsn_seq_free(null, 0)],
    [
      "read_kv",
      () => s.nsn_seq_read_kv(null, 16, i32(), 1, -1, 1, 0, 0, 0, 1, kvBuf(r), kvBuf(r)),
    ],
    ["step", () => r.step([{ seq: a, n: 1, off: 0 }], [5], { nulls: ["e"] })],
  ]);
  await all("state", [
    ["get_info: null out", () => s.nsn_engine_get_info(r.e, null)],
    ["inject_fault: -1 steps", () => s.nsn_engine_inject_fault(r.e, -1)],
    ["finalize twice", () => s.nsn_engine_finalize(r.e)],
    ["init_random after finalize", () => s.nsn_engine_init_random(r.e, 2n)],
  ]);
  s.nsn_engine_destroy(null); // documented as fine

  // Sequences: kv_bits, ids, freed and double-freed slots, all slots taken.
  for (const kv of [0, 3, 4, 8, 32, -1, 17, 2 ** 31 - 1]) {
    await tryCall(`seq_create: kv_bits ${kv}`, () => s.nsn_seq_create(r.e, kv, i32()));
  }
  await tryCall("seq_create: null out", () => s.nsn_seq_create(r.e, 16, null));
  for (const id of [-1, r.maxSeqs, 1 << 30, -(2 ** 31)]) {
    await tryCall(`seq_free: seq ${id}`, () => s.nsn_seq_free(r.e, id));
  }
  const extra: number[] = [];
  for (let i = live.length; i < r.maxSeqs; i++) extra.push(r.seqCreate(16));
  await tryCall("seq_create: every slot taken", () => s.nsn_seq_create(r.e, 16, i32()));
  for (const x of extra) lib.check(r.seqFree(x), "free");
  const freed = extra[0];
  await all("freed seq", [
    ["double free", () => s.nsn_seq_free(r.e, freed)],
    ["step", () => r.step([{ seq: freed, n: 1, off: 0, sample: true }], [5])],
  ]);

  await abuseSampling(r, a, freed, tryCall);
  await abuseStep(r, live, tryCall);
  // Reading the cache back.
  const lenB = r.seqLength(b), own = r.pagesOf(b, lenB);
  const table =
    (o: { kv?: number; pages?: number[]; n?: number; tail?: number; len?: number }) =>
    (layer: number, head: number, start: number, count: number) =>
    () => {
      const pages = Int32Array.from(o.pages ?? own.pages);
      const n = o.n ?? (o.pages ?? own.pages).length;
      const len = o.len ?? lenB;
      return s.nsn_seq_read_kv(
        r.e,
        o.kv ?? 2,
        pages,
        n,
        o.tail ?? own.tail,
        len,
        layer,
        head,
        start,
        count,
        kvBuf(r),
        kvBuf(r),
      );
    };
  const kv = table({});
  await all("read_kv", [
    ["kv_bits 3", table({ kv: 3 })(0, 0, 0, 1)],
    ["page id past the arena", table({ pages: [r.nSlabs * r.perSlab[1]] })(0, 0, 0, 1)],
    ["page id -1", table({ pages: [-1] })(0, 0, 0, 1)],
    ["n_pages too many", table({ pages: [...own.pages, 0], n: own.pages.length + 1 })(0, 0, 0, 1)],
    ["tail past the arena", table({ tail: r.nSlabs })(0, 0, 0, 1)],
    ["len -1", table({ len: -1 })(0, 0, 0, 1)],
    ["layer -1", kv(-1, 0, 0, 1)],
    ["layer n_layers", kv(r.nLayers, 0, 0, 1)],
    ["kv_head 2", kv(0, 2, 0, 1)],
    ["kv_head -1", kv(0, -1, 0, 1)],
    ["start -1", kv(0, 0, -1, 1)],
    ["count -1", kv(0, 0, 0, -1)],
    ["past the end", kv(0, 0, lenB - 2, 10)],
    ["count 2^31-1", kv(0, 0, 1, 2 ** 31 - 1)],
    [
      "null outputs",
      () =>
        s.nsn_seq_read_kv(
          r.e,
          2,
          Int32Array.from(own.pages),
          own.pages.length,
          own.tail,
          lenB,
          0,
          0,
          0,
          1,
          null,
          null,
        ),
    ],
  ]);

  // The standalone quantizer entry points.
  const x = new Float32Array(128 * 128);
  const q = (kvb: number, m: number, hd: number, n: number, xb: Float32Array | null = x) => () =>
    s.nsn_quant_roundtrip(kvb, m, 0, hd, 1, 1e4, 0, xb, n, new Float32Array(128 * 256));
  const att = (kvb: number, hd: number, nCtx: number, nQ: number, mode: number) => () =>
    s.nsn_quant_attention(kvb, hd, 1e4, x, x, nCtx, x, nQ, mode, new Float32Array(4 * 256));
  await all("quant", [
    ["roundtrip kv_bits 3", q(3, 0, 128, 64)],
    ["roundtrip method 9", q(2, 9, 128, 64)],
    ["roundtrip head_dim 96", q(2, 0, 96, 64)],
    ["roundtrip 63 tokens", q(2, 0, 128, 63)],
    ["roundtrip -64 tokens", q(1, 0, 128, -64)],
    ["roundtrip null x", q(1, 0, 128, 64, null)],
    ["attention kv_bits 3", att(3, 128, 64, 1, 0)],
    ["attention head_dim 96", att(2, 96, 64, 1, 0)],
    ["attention n_ctx 0", att(2, 128, 0, 1, 0)],
    ["attention n_q 0", att(2, 128, 64, 0, 0)],
    ["attention mode 2", att(1, 128, 64, 1, 2)],
    [
      "attention null inputs",
      () => s.nsn_quant_attention(2, 128, 1e4, null, null, 64, null, 1, 0, null),
    ],
    ["codebook bits 3", () => s.nsn_codebook(3, new Float32Array(2048))],
    ["codebook bits 0", () => s.nsn_codebook(0, new Float32Array(2048))],
    ["codebook null out", () => s.nsn_codebook(1, null)],
  ]);

  return results;
}

function kvBuf(r: RawEngine): Float32Array<ArrayBuffer> {
  return new Float32Array(256 * r.headDim);
}

function patched(
  buf: Uint8Array<ArrayBuffer>,
  field: "backend" | "quant_method" | "debug_checks",
  v: number,
) {
  new DataView(buf.buffer).setInt32(LAYOUT.nsn_engine_options.fields[field], v, true);
  return buf;
}
