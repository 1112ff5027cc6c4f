// A native engine driven through the raw C ABI (ffi/symbols.ts), for the ABI abuse tests
// (tests/helpers/abi_abuse.ts): NativeEngine would filter bad arguments before the library
// sees them. Buffers are always as large as the sizes a call claims: a library that wrongly
// accepts a call then only returns a wrong status, and any out-of-bounds access ASan reports
// is the library's own.

import { readModelSpec } from "../../models/config.ts";
import type { NsnLibrary } from "../../ffi/library.ts";
import {
  encodeEngineOptions,
  encodeModelConfig,
  encodeSampling,
  type EngineOptions,
  LAYOUT,
  writeSeqInput,
} from "../../ffi/structs.ts";
import { greedySampling, type SamplingParams } from "../../engine/types.ts";

export const DEMO = new URL("../../models/demo", import.meta.url).pathname;
type Ptr = Deno.PointerValue;
export type Status = number | Promise<number>;
export type TryCall = (name: string, call: () => Status) => Promise<void>;

export interface AbuseResult {
  name: string;
  status: number;
  error: string;
  /** What the call broke, if anything: a failing nsn_engine_check, changed cache contents. */
  damage: string;
}

export const GREEDY: SamplingParams = greedySampling({ stopIds: [1] });

export interface Input {
  seq: number;
  n: number;
  off: number;
  sample?: boolean;
  logprobs?: boolean;
  next?: number;
  // Page-table fields; by default the sequence's own pages (pagesOf) at its tracked length.
  pos0?: number;
  pages?: number[];
  nPages?: number;
  tail?: number;
  histOffset?: number;
}

/** A live engine (demo shapes, random weights) and raw-call helpers around it. */
export class RawEngine {
  readonly lib: NsnLibrary;
  readonly e: Ptr;
  readonly vocab: number;
  readonly nLayers: number;
  readonly headDim: number;
  readonly maxSeqs: number;
  readonly maxStepTokens: number;
  readonly maxPosition: number;
  nSlabs = 0;
  perSlab = [1, 1, 1]; // pages per slab: kv_bits 16, 2, 1
  /** kv_bits and length of each live sequence (the library keeps neither). */
  readonly seqs = new Map<number, { kvBits: number; len: number }>();

  private constructor(lib: NsnLibrary, e: Ptr, spec: Awaited<ReturnType<typeof readModelSpec>>) {
    this.lib = lib;
    this.e = e;
    this.vocab = spec.vocabSize;
    this.nLayers = spec.nLayers;
    this.headDim = spec.headDim;
    this.maxSeqs = 8;
    this.maxStepTokens = 256;
    this.maxPosition = spec.maxPosition;
  }

  static async create(lib: NsnLibrary, finalize = true, opts: EngineOptions = {}) {
    // The demo's shapes; a short context, so "beyond max_position" is quick to reach (ASan).
    const spec = { ...await readModelSpec(DEMO), maxPosition: 160 };
    const out = new BigUint64Array(1);
    const st = lib.symbols.nsn_engine_create(
      encodeModelConfig(spec),
      encodeEngineOptions({
        backend: "cpu",
        nThreads: 2,
        maxSeqs: 8,
        maxStepTokens: 256,
        kvPoolBytes: 8 << 20,
        debugChecks: true,
        ...opts,
      }),
      new Uint8Array(out.buffer),
    );
    lib.check(st, "nsn_engine_create");
    const raw = new RawEngine(lib, Deno.UnsafePointer.create(out[0]), spec);
    if (finalize) {
      lib.check(await lib.symbols.nsn_engine_init_random(raw.e, 1n), "init_random");
      lib.check(await lib.symbols.nsn_engine_finalize(raw.e), "finalize");
      const info = new Uint8Array(LAYOUT.nsn_engine_info.size);
      lib.check(lib.symbols.nsn_engine_get_info(raw.e, info), "get_info");
      const v = new DataView(info.buffer), F = LAYOUT.nsn_engine_info.fields;
      raw.nSlabs = Number(v.getBigUint64(F.n_slabs, true));
      raw.perSlab = [0, 1, 2].map((k) => Number(v.getBigUint64(F.pages_per_slab + 8 * k, true)));
    }
    return raw;
  }

  /**
   * The pages of slot `seq` holding `end` tokens: every slot owns nSlabs / maxSeqs slabs (its
   * tail in the first, at kv_bits 1/2), so sequences never share a page.
   */
  pagesOf(seq: number, end: number): { pages: number[]; tail: number } {
    const kvBits = this.seqs.get(seq)?.kvBits ?? 16;
    const base = seq * Math.floor(this.nSlabs / this.maxSeqs);
    if (kvBits === 16) {
      return { pages: Array.from({ length: Math.ceil(end / 64) }, (_, w) => base + w), tail: -1 };
    }
    const per = this.perSlab[kvBits === 2 ? 1 : 2];
    const pages = Array.from({ length: Math.floor(end / 64) }, (_, w) => (base + 1) * per + w);
    return { pages, tail: base };
  }

  seqCreate(kvBits: number): number {
    const out = new Int32Array(1);
    this.lib.check(this.lib.symbols.nsn_seq_create(this.e, kvBits, out), "seq_create");
    this.lib.check(
      this.lib.symbols.nsn_seq_set_sampling(
        this.e,
        out[0],
        encodeSampling(GREEDY).params,
        null,
        null,
        0,
      ),
      "set_sampling",
    );
    this.seqs.set(out[0], { kvBits, len: 0 });
    return out[0];
  }

  seqFree(seq: number): number {
    const st = this.lib.symbols.nsn_seq_free(this.e, seq);
    if (st === 0) this.seqs.delete(seq);
    return st;
  }

  seqLength(seq: number): number {
    return this.seqs.get(seq)?.len ?? 0;
  }

  /** nsn_step with every output buffer sized for the claimed counts. */
  step(
    inputs: Input[],
    tokens: number[],
    o: { nTokens?: number; topN?: number; nulls?: string[] } = {},
  ): Promise<number> {
    const nTokens = o.nTokens ?? tokens.length;
    const topN = o.topN ?? 0;
    const nulls = new Set(o.nulls ?? []);
    const seqs = new Uint8Array(Math.max(1, inputs.length) * LAYOUT.nsn_seq_input.size);
    const v = new DataView(seqs.buffer);
    const table: number[] = [];
    inputs.forEach((x, i) => {
      const pos0 = x.pos0 ?? this.seqLength(x.seq);
      const own = this.pagesOf(x.seq, pos0 + Math.max(0, x.n));
      const pages = x.pages ?? own.pages;
      writeSeqInput(v, i, {
        seq: x.seq,
        pos0,
        nTokens: x.n,
        tokenOffset: x.off,
        sample: x.sample ?? false,
        wantLogprobs: x.logprobs ?? false,
        nextToken: x.next ?? -1,
        pageOffset: table.length,
        nPages: x.nPages ?? pages.length,
        tailPage: x.tail ?? own.tail,
        historyOffset: x.histOffset ?? -1,
      });
      table.push(...pages);
    });
    const pagesBuf = Int32Array.from(table.length ? table : [0]);
    const room = Math.max(nTokens, tokens.length, 1);
    const tok = new Int32Array(room);
    tok.set(tokens);
    const top = Math.max(topN, 1) * room;
    const buf = <T>(name: string, b: T) => (nulls.has(name) ? null : b);
    const call = this.lib.symbols.nsn_step(
      buf("e", this.e),
      buf("seqs", seqs),
      inputs.length,
      buf("tokens", tok),
      nTokens,
      buf("pages", pagesBuf),
      table.length,
      buf("history", new Int32Array(1)),
      0,
      topN,
      buf("out", new Uint8Array(Math.max(1, inputs.length) * LAYOUT.nsn_seq_output.size)),
      buf("pos_logprob", new Float32Array(room)),
      buf("pos_top_ids", new Int32Array(top)),
      buf("pos_top_logprobs", new Float32Array(top)),
      null,
    );
    return Promise.resolve(call).then((st) => {
      if (st === 0) { for (const x of inputs) this.seqs.get(x.seq)!.len += x.n; }
      return st;
    });
  }

  /** Digest of the K/V the live sequences hold (layer 0, head 0): changes when any byte does. */
  kvDigest(): string {
    const parts: string[] = [];
    for (const [seq, { kvBits, len }] of this.seqs) {
      if (len === 0) continue;
      const { pages, tail } = this.pagesOf(seq, len);
      const k = new Float32Array(len * this.headDim), v = new Float32Array(len * this.headDim);
      const st = this.lib.symbols.nsn_seq_read_kv(
        this.e,
        kvBits,
        Int32Array.from(pages.length ? pages : [0]),
        pages.length,
        tail,
        len,
        0,
        0,
        0,
        len,
        k,
        v,
      );
      let h = 0;
      for (const x of [...k, ...v]) h = (Math.imul(h, 31) + Math.round(x * 4096)) | 0;
      parts.push(`${seq}:${len}:${st}:${h}`);
    }
    return parts.join(",");
  }

  check(): number {
    return this.lib.symbols.nsn_engine_check(this.e);
  }

  destroy(): void {
    this.lib.symbols.nsn_engine_destroy(this.e);
  }
}

export function lastError(lib: NsnLibrary): string {
  const p = lib.symbols.nsn_last_error();
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/** A valid prefill + decode history: three sequences of different kv_bits, > 64 tokens each. */
export async function warmUp(r: RawEngine): Promise<number[]> {
  const seqs = [r.seqCreate(16), r.seqCreate(2), r.seqCreate(1)];
  const prompt = Array.from({ length: 70 }, (_, i) => (i * 37 + 5) % r.vocab);
  const st = await r.step(
    seqs.map((seq, i) => ({ seq, n: 70, off: 70 * i, sample: true })),
    [...prompt, ...prompt, ...prompt],
  );
  r.lib.check(st, "warm-up prefill");
  for (let t = 0; t < 3; t++) {
    const dec = await r.step(seqs.map((seq, i) => ({ seq, n: 1, off: i, sample: true })), [
      7,
      8,
      9,
    ]);
    r.lib.check(dec, "warm-up decode");
  }
  return seqs;
}
