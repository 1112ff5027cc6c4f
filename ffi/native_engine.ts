// NativeEngine: the KvEngine backed by libnsn. Owns one native engine handle. The library's
// rule is one call at a time per engine, and a nonblocking step runs on another thread, so
// every method refuses to run while a step is in flight (info() answers from a snapshot).

import {
  EngineError,
  type EngineInfo,
  type KvBits,
  type KvEngine,
  type SamplingParams,
  type SeqInput,
  type StepOptions,
  type StepResult,
} from "../engine/types.ts";
import type { ModelSpec } from "../models/config.ts";
import type { NsnLibrary } from "./library.ts";
import {
  decodeEngineInfo,
  encodeEngineOptions,
  encodeModelConfig,
  encodeSampling,
  type EngineOptions,
  newEngineInfoBuffer,
} from "./structs.ts";
import { StepBuffers } from "./step_buffers.ts";
import { NSN_OK } from "./symbols.ts";

type Handle = NonNullable<Deno.PointerValue>;

export class NativeEngine implements KvEngine, Disposable {
  readonly vocabSize: number;
  readonly maxPosition: number;
  readonly spec: ModelSpec;
  #lib: NsnLibrary;
  #handle: Handle | null;
  #inFlight: Promise<unknown> | null = null;
  #closeRequested = false;
  #buffers: StepBuffers | null = null;
  #lastInfo: EngineInfo | null = null;
  #i32 = new Int32Array(2); // out-params of the small synchronous calls

  private constructor(lib: NsnLibrary, handle: Handle, spec: ModelSpec) {
    this.#lib = lib;
    this.#handle = handle;
    this.spec = spec;
    this.vocabSize = spec.vocabSize;
    this.maxPosition = spec.maxPosition;
  }

  /** Creates the native engine (no weights yet: load them, or initRandom(), then finalize()). */
  static create(lib: NsnLibrary, spec: ModelSpec, options: EngineOptions = {}): NativeEngine {
    const out = new BigUint64Array(1);
    const status = lib.symbols.nsn_engine_create(
      encodeModelConfig(spec),
      encodeEngineOptions(options),
      new Uint8Array(out.buffer),
    );
    lib.check(status, "nsn_engine_create");
    const handle = Deno.UnsafePointer.create(out[0]);
    if (handle === null) {
      throw new EngineError("internal", "nsn_engine_create returned a null engine");
    }
    return new NativeEngine(lib, handle, spec);
  }

  /** Uploads one tensor; data holds nElements values of dtype (NsnDtype), converted natively. */
  async setWeight(
    slot: number,
    layer: number,
    dtype: number,
    data: Uint8Array<ArrayBuffer>,
    nElements: number,
  ) {
    const h = this.#enter("setWeight");
    await this.#track(
      this.#lib.symbols.nsn_engine_set_weight(h, slot, layer, dtype, data, BigInt(nElements)),
      "nsn_engine_set_weight",
    );
  }

  async initRandom(seed: bigint): Promise<void> {
    const h = this.#enter("initRandom");
    await this.#track(
      this.#lib.symbols.nsn_engine_init_random(h, BigInt.asUintN(64, seed)),
      "nsn_engine_init_random",
    );
  }

  /** Checks that every weight is present and allocates the KV arena. */
  async finalize(): Promise<void> {
    const h = this.#enter("finalize");
    await this.#track(this.#lib.symbols.nsn_engine_finalize(h), "nsn_engine_finalize");
  }

  info(): EngineInfo {
    // The native counters must not be read while a step runs; the last snapshot is close enough
    // for metrics and admission estimates.
    if (this.#inFlight && this.#lastInfo) return this.#lastInfo;
    const h = this.#enter("info");
    const buf = newEngineInfoBuffer();
    this.#lib.check(this.#lib.symbols.nsn_engine_get_info(h, buf), "nsn_engine_get_info");
    this.#lastInfo = decodeEngineInfo(buf);
    return this.#lastInfo;
  }

  createSeq(kvBits: KvBits): number {
    const h = this.#enter("createSeq");
    this.#lib.check(this.#lib.symbols.nsn_seq_create(h, kvBits, this.#out32()), "nsn_seq_create");
    return this.#i32[0];
  }

  freeSeq(seq: number): void {
    const h = this.#enter("freeSeq");
    this.#lib.check(this.#lib.symbols.nsn_seq_free(h, seq), "nsn_seq_free");
  }

  setSampling(seq: number, params: SamplingParams): void {
    const h = this.#enter("setSampling");
    const { params: p, biasIds, biasValues } = encodeSampling(params);
    const n = biasIds.length;
    const status = this.#lib.symbols.nsn_seq_set_sampling(
      h,
      seq,
      p,
      n ? biasIds : null,
      n ? biasValues : null,
      n,
    );
    this.#lib.check(status, "nsn_seq_set_sampling");
  }

  async step(inputs: SeqInput[], opts: StepOptions): Promise<StepResult> {
    const h = this.#enter("step");
    const b = this.#stepBuffers();
    const topN = opts.topN;
    const p = b.pack(inputs, topN);
    const logits = opts.logits ? new Float32Array(p.nTokens * this.vocabSize) : null;
    const withTop = p.anyLogprobs && topN > 0;
    const call = this.#lib.symbols.nsn_step(
      h,
      b.seqs,
      p.nSeqs,
      b.tokens,
      p.nTokens,
      b.pages,
      p.nPages,
      b.history,
      p.nHistory,
      topN,
      p.anySample ? b.out : null,
      p.anyLogprobs ? b.posLogprob : null,
      withTop ? b.posTopIds : null,
      withTop ? b.posTopLogprobs : null,
      logits,
    );
    await this.#track(call, "nsn_step");
    // `b` and `logits` stayed referenced by this frame, so they outlived the native call (and
    // a close() during the step, which drops this.#buffers, cannot pull `b` away).
    return b.collect(inputs, topN, logits);
  }

  /** Verifies native invariants (the sequence slots). */
  check(): void {
    const h = this.#enter("check");
    this.#lib.check(this.#lib.symbols.nsn_engine_check(h), "nsn_engine_check");
  }

  /** Makes the next nSteps steps fail with an internal error (fault-injection tests). */
  injectFault(nSteps: number): void {
    const h = this.#enter("injectFault");
    this.#lib.check(
      this.#lib.symbols.nsn_engine_inject_fault(h, nSteps),
      "nsn_engine_inject_fault",
    );
  }

  /**
   * K (post-RoPE) and V of tokens [start, start+count) of one layer / kv head, [count][head_dim],
   * of a cache of `len` tokens with this page table (nsn_seq_input's rule) and tail.
   */
  readKv(
    cache: { kvBits: KvBits; pages: ArrayLike<number>; tail: number; len: number },
    layer: number,
    kvHead: number,
    start: number,
    count: number,
  ): { k: Float32Array; v: Float32Array } {
    const h = this.#enter("readKv");
    const k = new Float32Array(count * this.spec.headDim);
    const v = new Float32Array(count * this.spec.headDim);
    const pages = Int32Array.from(cache.pages);
    const status = this.#lib.symbols.nsn_seq_read_kv(
      h,
      cache.kvBits,
      pages,
      pages.length,
      cache.tail,
      cache.len,
      layer,
      kvHead,
      start,
      count,
      k,
      v,
    );
    this.#lib.check(status, "nsn_seq_read_kv");
    return { k, v };
  }

  /** Idempotent. With a step in flight, the handle is destroyed once that step settles. */
  close(): void {
    if (this.#closeRequested) return;
    this.#closeRequested = true;
    if (this.#inFlight) this.#inFlight.finally(() => this.#destroy()).catch(() => {});
    else this.#destroy();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #destroy(): void {
    if (this.#handle === null) return;
    this.#lib.symbols.nsn_engine_destroy(this.#handle);
    this.#handle = null;
    this.#buffers = null;
  }

  #enter(what: string): Handle {
    if (this.#closeRequested || this.#handle === null) {
      throw new EngineError("state", `${what}: engine is closed`);
    }
    if (this.#inFlight) {
      throw new EngineError("state", `${what}: a native call is in flight (one at a time)`);
    }
    return this.#handle;
  }

  async #track(call: Promise<number>, what: string): Promise<void> {
    this.#inFlight = call;
    let status: number;
    try {
      status = await call;
    } finally {
      this.#inFlight = null;
    }
    // A busy scheduler starts the next step at once, so metrics scraped meanwhile read this
    // snapshot: take it after every call, or they would show the pool as it was when idle.
    if (status === NSN_OK && !this.#closeRequested) this.info();
    this.#lib.check(status, what);
  }

  #out32(): Uint8Array<ArrayBuffer> {
    return new Uint8Array(this.#i32.buffer, 0, 4);
  }

  #stepBuffers(): StepBuffers {
    if (!this.#buffers) {
      const { maxSeqs, maxStepTokens } = this.info();
      this.#buffers = new StepBuffers(maxSeqs, maxStepTokens);
    }
    return this.#buffers;
  }
}
