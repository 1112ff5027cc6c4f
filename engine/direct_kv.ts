// Driving a KvEngine without the scheduler (benchmarks, perplexity, tests): each DirectSeq
// owns its pages from a private PagePool (no prefix cache, no sharing), its length and its
// tokens, and step() turns chunks into SeqInputs with page tables and commits them after the
// engine ran. The serving path uses the scheduler's KvCache instead.

import { tablePages } from "./kv_cache.ts";
import { PagePool } from "./page_pool.ts";
import {
  EngineError,
  greedySampling,
  KV_BITS,
  type KvBits,
  type KvEngine,
  type SamplingParams,
  type SeqInput,
  type StepOptions,
  type StepResult,
} from "./types.ts";

export interface DirectSeq {
  readonly slot: number;
  readonly kvBits: KvBits;
  len: number; // tokens in the cache
  tokens: number[]; // [len] every token fed
  pages: number[];
  tail: number; // kv_bits 1/2: fp16 tail page
}

export interface DirectChunk {
  seq: DirectSeq;
  tokens: ArrayLike<number>;
  sample?: boolean;
  wantLogprobs?: boolean;
  nextToken?: number;
}

/** A cache as nsn_seq_read_kv takes it. */
export function cacheOf(s: DirectSeq) {
  return {
    kvBits: s.kvBits,
    pages: s.pages.slice(0, tablePages(s.kvBits, s.len)),
    tail: s.tail,
    len: s.len,
  };
}

export class DirectKv {
  readonly engine: KvEngine;
  readonly pool: PagePool;

  constructor(engine: KvEngine) {
    this.engine = engine;
    const info = engine.info();
    const perSlab = { 16: 1, 2: 1, 1: 1 } as Record<KvBits, number>;
    for (const k of KV_BITS) perSlab[k] = Math.max(1, info.kinds[k].pagesPerSlab);
    this.pool = new PagePool({ nSlabs: info.nSlabs, perSlab });
  }

  /** A sequence slot with greedy sampling (or `params`). */
  create(kvBits: KvBits, params: SamplingParams = greedySampling()): DirectSeq {
    const slot = this.engine.createSeq(kvBits);
    try {
      this.engine.setSampling(slot, params);
    } catch (e) {
      this.engine.freeSeq(slot);
      throw e;
    }
    return { slot, kvBits, len: 0, tokens: [], pages: [], tail: -1 };
  }

  /** Whether `n` sequences of `len` tokens at kvBits fit the whole pool at once. */
  fits(kvBits: KvBits, len: number, n: number): boolean {
    const per = this.pool.geometry.perSlab[kvBits];
    const slabs = kvBits === 16
      ? n * tablePages(16, len)
      : Math.ceil((n * tablePages(kvBits, len)) / per) + n;
    return slabs <= this.pool.geometry.nSlabs;
  }

  /** One engine step over these chunks; the sequences grow only when it succeeds. */
  async step(chunks: DirectChunk[], opts: StepOptions): Promise<StepResult> {
    const inputs: SeqInput[] = chunks.map((c) => this.#input(c));
    const r = await this.engine.step(inputs, opts);
    for (const c of chunks) {
      for (let i = 0; i < c.tokens.length; i++) c.seq.tokens.push(c.tokens[i]);
      c.seq.len += c.tokens.length;
    }
    return r;
  }

  /** Returns the pages and the slot. */
  free(s: DirectSeq): void {
    this.pool.releaseTable(s);
    this.engine.freeSeq(s.slot);
  }

  #input(c: DirectChunk): SeqInput {
    const s = c.seq, end = s.len + c.tokens.length;
    const take = (k: KvBits) => {
      const id = this.pool.alloc(k);
      if (id < 0) throw new EngineError("oom", `KV pool full (kv_bits ${k}, ${end} tokens)`);
      return id;
    };
    if (s.kvBits !== 16 && s.tail < 0) s.tail = take(16);
    while (s.pages.length < tablePages(s.kvBits, end)) s.pages.push(take(s.kvBits));
    return {
      seq: s.slot,
      pos0: s.len,
      tokens: c.tokens,
      pages: s.pages,
      nPages: tablePages(s.kvBits, end),
      tailPage: s.tail,
      history: s.tokens,
      sample: c.sample ?? false,
      wantLogprobs: c.wantLogprobs ?? false,
      nextToken: c.nextToken,
    };
  }
}
