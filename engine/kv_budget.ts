// KV memory accounting for the scheduler, in the native allocator's own unit: the arena is cut
// into slabs of one fp16 page, and a slab holds floor(slab / page) pages of one kind, so a
// 1-bit page costs about 1/13 of a slab and a 16-bit page a whole one. A sequence's pages
// come from engine.pagesNeeded(kvBits, 0, n): the footprint of an n-token sequence, whatever
// its history. Exactness is not required: the engine's "oom" is the backstop.

import { EngineError, type EngineInfo, KV_BITS, type KvBits, type KvEngine } from "./types.ts";
import type { Sequence } from "./sequence.ts";

interface Chunked {
  seq: Sequence;
  chunk: number;
}

type Pages = Record<KvBits, number>;

export class KvBudget {
  readonly nSlabs: number;
  /** Slabs kept free at admission so running decodes can grow before anyone is preempted. */
  readonly reserve: number;
  readonly perSlab: Pages;
  #engine: KvEngine;
  #cache = new Map<number, readonly [number, number]>();
  #capacity: Pages;

  constructor(engine: KvEngine, info: EngineInfo, maxModelLen: number) {
    this.#engine = engine;
    const slab = info.kinds[16].pageBytes;
    this.perSlab = { 16: 1, 2: 1, 1: 1 };
    for (const k of KV_BITS) {
      const page = info.kinds[k].pageBytes;
      this.perSlab[k] = slab > 0 && page > 0 ? Math.max(1, Math.floor(slab / page)) : 1;
    }
    this.nSlabs = slab > 0 ? Math.floor(info.kvPoolBytes / slab) : 0;
    this.reserve = Math.min(Math.max(1, Math.floor(this.nSlabs * 0.01)), this.nSlabs);
    // Computed now, while no step is in flight: routes ask for it at any time.
    this.#capacity = { 16: 0, 2: 0, 1: 0 };
    for (const k of KV_BITS) this.#capacity[k] = this.#maxTokens(k, maxModelLen);
  }

  /** Whether every running sequence, after this step's chunks, fits in the pool. */
  fits(running: readonly Sequence[], plan: readonly Chunked[]): boolean {
    const chunk = new Map(plan.map((p) => [p.seq, p.chunk]));
    const pages: Pages = { 16: 0, 2: 0, 1: 0 };
    for (const s of running) this.#add(pages, s.kvBits, s.numComputed + (chunk.get(s) ?? 0));
    return this.slabs(pages) <= this.nSlabs;
  }

  /**
   * Whether `seq` may start: every running sequence's whole history plus one token, and the
   * newcomer's, fit below the reserve. Counting whole prompts keeps a long chunked prefill
   * from being preempted halfway by the prefills admitted after it.
   */
  canAdmit(running: readonly Sequence[], seq: Sequence): boolean {
    const pages: Pages = { 16: 0, 2: 0, 1: 0 };
    for (const s of running) this.#add(pages, s.kvBits, s.tokens.length + 1);
    this.#add(pages, seq.kvBits, seq.tokens.length + 1);
    return this.slabs(pages) <= this.nSlabs - this.reserve;
  }

  /** Whether `seq` could start on an otherwise empty pool. */
  fitsAlone(seq: Sequence): boolean {
    return seq.tokens.length + 1 <= this.#capacity[seq.kvBits];
  }

  /** Most tokens one sequence of this kind can hold (capped by max_model_len). */
  capacityTokens(kvBits: KvBits): number {
    return this.#capacity[kvBits];
  }

  tooLarge(seq: Sequence): EngineError {
    return new EngineError(
      "oom",
      `the KV cache pool cannot hold this sequence (${seq.tokens.length} tokens at kv_bits ` +
        `${seq.kvBits}; at most ${this.#capacity[seq.kvBits]} tokens fit)`,
    );
  }

  /** Slabs a set of pages occupies (partial slabs rounded up per kind). */
  slabs(pages: Pages): number {
    let n = 0;
    for (const k of KV_BITS) n += Math.ceil(pages[k] / this.perSlab[k]);
    return n;
  }

  #add(pages: Pages, kvBits: KvBits, nTokens: number): void {
    const [quant, fp16] = this.#footprint(kvBits, nTokens);
    pages[kvBits] += quant;
    pages[16] += fp16;
  }

  #footprint(kvBits: KvBits, nTokens: number): readonly [number, number] {
    const key = nTokens * 32 + kvBits;
    let v = this.#cache.get(key);
    if (!v) {
      const p = this.#engine.pagesNeeded(kvBits, 0, nTokens);
      v = [p.quant, p.fp16] as const;
      if (this.#cache.size > 1 << 16) this.#cache.clear();
      this.#cache.set(key, v);
    }
    return v;
  }

  #maxTokens(kvBits: KvBits, maxModelLen: number): number {
    const limit = this.nSlabs - this.reserve;
    const ok = (n: number) => {
      const pages: Pages = { 16: 0, 2: 0, 1: 0 };
      this.#add(pages, kvBits, n);
      return this.slabs(pages) <= limit;
    };
    if (ok(maxModelLen)) return maxModelLen;
    let lo = 0; // fits
    let hi = maxModelLen; // does not fit
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (ok(mid)) lo = mid;
      else hi = mid;
    }
    return lo;
  }
}
