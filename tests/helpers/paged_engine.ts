// A NativeEngine driven by sequence slot, as tests that compare backends like to: each slot's
// pages come from a DirectKv (engine/direct_kv.ts), so a test names a slot and its chunk and
// the page tables follow. Used by the GPU tests (tests/gpu/), which step two engines in lockstep.

import { cacheOf, DirectKv, type DirectSeq } from "../../engine/direct_kv.ts";
import type {
  EngineInfo,
  KvBits,
  SamplingParams,
  StepOptions,
  StepResult,
} from "../../engine/types.ts";
import type { NativeEngine } from "../../ffi/native_engine.ts";

export interface SlotChunk {
  seq: number; // slot
  tokens: ArrayLike<number>;
  sample: boolean;
  wantLogprobs: boolean;
  nextToken?: number;
}

export class PagedEngine {
  readonly native: NativeEngine;
  readonly kv: DirectKv;
  #seqs = new Map<number, DirectSeq>();

  constructor(native: NativeEngine) {
    this.native = native;
    this.kv = new DirectKv(native);
  }

  get vocabSize(): number {
    return this.native.vocabSize;
  }

  get spec() {
    return this.native.spec;
  }

  info(): EngineInfo {
    return this.native.info();
  }

  createSeq(kvBits: KvBits): number {
    const s = this.kv.create(kvBits);
    this.#seqs.set(s.slot, s);
    return s.slot;
  }

  setSampling(slot: number, params: SamplingParams): void {
    this.native.setSampling(slot, params);
  }

  seq(slot: number): DirectSeq {
    const s = this.#seqs.get(slot);
    if (!s) throw new Error(`no sequence in slot ${slot}`);
    return s;
  }

  seqLength(slot: number): number {
    return this.seq(slot).len;
  }

  step(chunks: SlotChunk[], opts: StepOptions): Promise<StepResult> {
    return this.kv.step(chunks.map((c) => ({ ...c, seq: this.seq(c.seq) })), opts);
  }

  readKv(slot: number, layer: number, kvHead: number, start: number, count: number) {
    return this.native.readKv(cacheOf(this.seq(slot)), layer, kvHead, start, count);
  }

  freeSeq(slot: number): void {
    this.kv.free(this.seq(slot));
    this.#seqs.delete(slot);
  }

  check(): void {
    this.native.check();
  }

  injectFault(n: number): void {
    this.native.injectFault(n);
  }

  close(): void {
    this.native.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
