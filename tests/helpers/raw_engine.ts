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
  /** What the call broke, if anything: a failing nsn_engine_check, changed sequence lengths. */
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
    }
    return raw;
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
    return out[0];
  }

  seqLength(seq: number): number {
    const out = new Int32Array(1);
    this.lib.check(this.lib.symbols.nsn_seq_length(this.e, seq, out), "seq_length");
    return out[0];
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
    inputs.forEach((x, i) =>
      writeSeqInput(v, i, {
        seq: x.seq,
        nTokens: x.n,
        tokenOffset: x.off,
        sample: x.sample ?? false,
        wantLogprobs: x.logprobs ?? false,
        nextToken: x.next ?? -1,
      })
    );
    const room = Math.max(nTokens, tokens.length, 1);
    const tok = new Int32Array(room);
    tok.set(tokens);
    const top = Math.max(topN, 1) * room;
    const buf = <T>(name: string, b: T) => (nulls.has(name) ? null : b);
    return this.lib.symbols.nsn_step(
      buf("e", this.e),
      buf("seqs", seqs),
      inputs.length,
      buf("tokens", tok),
      nTokens,
      topN,
      buf("out", new Uint8Array(Math.max(1, inputs.length) * LAYOUT.nsn_seq_output.size)),
      buf("pos_logprob", new Float32Array(room)),
      buf("pos_top_ids", new Int32Array(top)),
      buf("pos_top_logprobs", new Float32Array(top)),
      null,
    );
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
