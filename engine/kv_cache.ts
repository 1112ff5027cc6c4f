// The scheduler's KV cache manager (nano-vllm's BlockManager): each sequence's page table over
// the PagePool, prefix-cache hits at admission, sharing a prompt between the choices of one
// request, and registering every window a step completes. Admission is exact: a sequence is
// admitted only when the pages of its whole history are really taken from the pool.
//
// A sequence of `end` cached tokens holds, as nsn.h's nsn_seq_input describes:
//   kv_bits 16:  ceil(end / 64) fp16 pages, one per window;
//   kv_bits 1/2: floor(end / 64) encoded pages, one per complete window, and one fp16 tail
//                page (taken at admission, kept while the sequence runs).

import { PagePool } from "./page_pool.ts";
import { chainRoot, PrefixCache, WINDOW } from "./prefix_cache.ts";
import type { Sequence } from "./sequence.ts";
import { EngineError, type EngineInfo, KV_BITS, type KvBits } from "./types.ts";

/** Pages of the sequence's own kind a cache of `end` tokens uses (the tail not counted). */
export function tablePages(kvBits: KvBits, end: number): number {
  return kvBits === 16 ? Math.ceil(end / WINDOW) : Math.floor(end / WINDOW);
}

export interface CacheLookup {
  queried: number; // prompt tokens looked up
  hit: number; // tokens served from the cache
}

export class KvCache {
  readonly pool: PagePool;
  readonly prefix: PrefixCache | null;
  #capacity: Record<KvBits, number> = { 16: 0, 2: 0, 1: 0 };

  constructor(info: EngineInfo, prefixCaching: boolean, maxModelLen: number) {
    const perSlab = { 16: 1, 2: 1, 1: 1 } as Record<KvBits, number>;
    for (const k of KV_BITS) perSlab[k] = Math.max(1, info.kinds[k].pagesPerSlab);
    this.pool = new PagePool({ nSlabs: info.nSlabs, perSlab });
    this.prefix = prefixCaching ? new PrefixCache((k, id) => this.pool.refs(k, id)) : null;
    this.pool.cache = this.prefix;
    const n = info.nSlabs;
    this.#capacity[16] = Math.min(maxModelLen, n * WINDOW);
    for (const k of [2, 1] as const) {
      const windows = n > 0 ? (n - 1) * perSlab[k] : 0;
      this.#capacity[k] = Math.min(maxModelLen, n > 0 ? windows * WINDOW + WINDOW - 1 : 0);
    }
  }

  /** Most tokens one sequence of this kind can hold on an empty pool (and max_model_len). */
  capacityTokens(kvBits: KvBits): number {
    return this.#capacity[kvBits];
  }

  /**
   * Takes the pages of `seq`'s whole history, reusing its leader's prompt pages (n / best_of)
   * or cached windows first; false (nothing taken) when the pool cannot hold it now. Sets
   * seq.numComputed to the tokens that need no prefill.
   */
  admit(seq: Sequence): CacheLookup | false {
    const k = seq.kvBits, n = seq.tokens.length;
    // At least the last token is computed: its logits give the next token. Prompt logprobs
    // need every prompt position computed.
    const maxWindows = seq.promptLogprobs && seq.promptLogprobsDone < seq.nPrompt - 1
      ? 0
      : Math.floor((n - 1) / WINDOW);
    let shared: number[] = [];
    let hashes: number[] = [];
    let lookup: CacheLookup = { queried: 0, hit: 0 };
    const leader = seq.leader;
    if (leader && leader.status === "running" && leader.slot >= 0) {
      const w = Math.min(maxWindows, Math.floor(leader.numComputed / WINDOW));
      shared = leader.pages.slice(0, w);
      hashes = leader.hashes.slice(0, Math.min(w, leader.hashes.length));
    } else if (this.prefix && maxWindows > 0) {
      ({ ids: shared, hashes } = this.prefix.lookup(k, seq.salt, seq.tokens, maxWindows));
      lookup = { queried: n, hit: shared.length * WINDOW };
    }
    for (const id of shared) this.pool.retain(k, id);
    const need: Record<KvBits, number> = { 16: 0, 2: 0, 1: 0 };
    need[k] += tablePages(k, n) - shared.length;
    if (k !== 16) need[16] += 1; // the tail
    const got = this.pool.allocMany(need);
    if (!got) {
      for (const id of shared) this.pool.release(k, id);
      return false;
    }
    seq.pages = [...shared, ...got[k]];
    seq.tail = k === 16 ? -1 : got[16][0];
    seq.hashes = hashes;
    seq.numComputed = shared.length * WINDOW;
    return lookup;
  }

  /** Takes the pages `seq` needs to hold `end` tokens; false when the pool is full. */
  grow(seq: Sequence, end: number): boolean {
    const want = tablePages(seq.kvBits, end);
    while (seq.pages.length < want) {
      const id = this.pool.alloc(seq.kvBits);
      if (id < 0) return false;
      seq.pages.push(id);
    }
    return true;
  }

  /** Returns every page of `seq` (cached ones stay in the cache, idle). */
  release(seq: Sequence): void {
    this.pool.releaseTable(seq);
    seq.hashes = [];
  }

  /** Registers the windows of `seq` that are complete and written, after a step. */
  commit(seq: Sequence): void {
    if (!this.prefix) return;
    const complete = Math.floor(seq.numComputed / WINDOW);
    const root = chainRoot(seq.kvBits, seq.salt);
    for (let w = seq.hashes.length; w < complete; w++) {
      const parent = w === 0 ? root : seq.hashes[w - 1];
      const id = seq.pages[w];
      seq.hashes.push(this.prefix.register(seq.kvBits, seq.salt, seq.tokens, w, parent, id));
    }
  }

  /** Page tables of `running` against the pool's reference counts, and the cache's idle list. */
  check(running: readonly Sequence[]): void {
    const owners: [KvBits, number][] = [];
    for (const s of running) {
      for (const id of s.pages) owners.push([s.kvBits, id]);
      if (s.tail >= 0) owners.push([16, s.tail]);
      if (
        s.pages.length < tablePages(s.kvBits, s.numComputed) || (s.kvBits !== 16) !== (s.tail >= 0)
      ) {
        throw new EngineError("internal", `sequence ${s.id}: page table too short or tail wrong`);
      }
    }
    this.pool.check(owners, (k, id) => this.prefix?.cached(k, id) ?? false);
    const idle = this.prefix?.checkIdle();
    if (idle) throw new EngineError("internal", `prefix cache: ${idle}`);
  }
}
