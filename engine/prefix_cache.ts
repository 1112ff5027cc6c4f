// Automatic prefix caching (as vLLM's): every complete 64-token window of a sequence is
// identified by a hash chain over (kv_bits, cache_salt, the tokens of this and every earlier
// window), and its page (an fp16 page at kv_bits 16, an encoded page at 1/2: sharing either is
// exact) is registered under that hash. A new sequence reuses every leading window found for
// its kv_bits and prefills only the rest. Pages nobody references stay cached, idle, and are
// evicted least recently used first, only when the pool needs pages. The entries keep their
// tokens and parent, so a hash collision can never serve the wrong page.

import type { IdleCache } from "./page_pool.ts";
import type { KvBits } from "./types.ts";

export const WINDOW = 64;

/** KV cache events for routers (vLLM's BlockStored / BlockRemoved). */
export interface KvEventSink {
  stored(kvBits: KvBits, hashes: number[], parent: number | null, tokens: number[]): void;
  removed(kvBits: KvBits, hashes: number[]): void;
}

interface Entry {
  hash: number;
  parent: number; // hash of the previous window, or the chain's root
  kvBits: KvBits;
  salt: string;
  tokens: number[]; // [64]
  id: number; // page id of kind kvBits
}

// 53-bit hashes from two 32-bit lanes (FNV-1a style mixing with multiply-xorshift).
function mix(h1: number, h2: number, x: number): [number, number] {
  h1 = Math.imul(h1 ^ x, 2654435761);
  h2 = Math.imul(h2 ^ x, 1597334677);
  return [h1, h2];
}

function finish(h1: number, h2: number): number {
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return 4294967296 * (2097151 & h2) + (h1 >>> 0);
}

/** The hash a chain starts from: kv_bits and the salt, so they never share a window. */
export function chainRoot(kvBits: KvBits, salt: string): number {
  let h: [number, number] = [0x811c9dc5 ^ kvBits, 0x01000193];
  for (let i = 0; i < salt.length; i++) h = mix(h[0], h[1], salt.charCodeAt(i));
  return finish(...mix(h[0], h[1], salt.length));
}

/** The hash of window `w` of `tokens`, given the hash before it. */
export function windowHash(parent: number, tokens: readonly number[], w: number): number {
  let h: [number, number] = [parent >>> 0, Math.floor(parent / 4294967296)];
  for (let i = w * WINDOW; i < (w + 1) * WINDOW; i++) h = mix(h[0], h[1], tokens[i]);
  return finish(h[0], h[1]);
}

function sameTokens(e: Entry, tokens: readonly number[], w: number): boolean {
  for (let i = 0; i < WINDOW; i++) if (e.tokens[i] !== tokens[w * WINDOW + i]) return false;
  return true;
}

const pageKey = (kvBits: KvBits, id: number) => id * 32 + kvBits;

export class PrefixCache implements IdleCache {
  events: KvEventSink | null = null;
  #byHash = new Map<number, Entry>();
  #byPage = new Map<number, Entry>();
  #idle = new Map<number, Entry>(); // page key -> entry, least recently used first
  #refs: (kvBits: KvBits, id: number) => number;

  /** `refs` reads the pool's reference count of a page. */
  constructor(refs: (kvBits: KvBits, id: number) => number) {
    this.#refs = refs;
  }

  get size(): number {
    return this.#byHash.size;
  }

  keep(kvBits: KvBits, id: number): boolean {
    const e = this.#byPage.get(pageKey(kvBits, id));
    if (e) this.#idle.set(pageKey(kvBits, id), e);
    return e !== undefined;
  }

  evictOne(): { kvBits: KvBits; id: number } | null {
    const first = this.#idle.entries().next();
    if (first.done) return null;
    const [key, e] = first.value;
    this.#idle.delete(key);
    this.#byPage.delete(key);
    this.#byHash.delete(e.hash);
    this.events?.removed(e.kvBits, [e.hash]);
    return { kvBits: e.kvBits, id: e.id };
  }

  /**
   * Pages of the leading windows of `tokens` that are cached, at most `maxWindows`, walking
   * the chain, with their hashes. The caller takes a reference to each (pool.retain) at once.
   */
  lookup(
    kvBits: KvBits,
    salt: string,
    tokens: readonly number[],
    maxWindows: number,
  ): { ids: number[]; hashes: number[] } {
    const ids: number[] = [], hashes: number[] = [];
    let parent = chainRoot(kvBits, salt);
    for (let w = 0; w < maxWindows; w++) {
      const h = windowHash(parent, tokens, w);
      const e = this.#byHash.get(h);
      if (!e || e.kvBits !== kvBits || e.salt !== salt || e.parent !== parent) break;
      if (!sameTokens(e, tokens, w)) break;
      this.#idle.delete(pageKey(kvBits, e.id)); // referenced again: not evictable
      ids.push(e.id);
      hashes.push(h);
      parent = h;
    }
    return { ids, hashes };
  }

  /** Whether a page is registered in the cache. */
  cached(kvBits: KvBits, id: number): boolean {
    return this.#byPage.has(pageKey(kvBits, id));
  }

  /**
   * Registers window w of a sequence (complete and written) under its hash; `parent` is the
   * hash of window w-1 (or the root). Returns the window's hash. A window already cached
   * (computed twice concurrently) keeps its first page.
   */
  register(
    kvBits: KvBits,
    salt: string,
    tokens: readonly number[],
    w: number,
    parent: number,
    id: number,
  ): number {
    const h = windowHash(parent, tokens, w);
    if (this.#byHash.has(h) || this.#byPage.has(pageKey(kvBits, id))) return h;
    const e: Entry = {
      hash: h,
      parent,
      kvBits,
      salt,
      tokens: tokens.slice(w * WINDOW, (w + 1) * WINDOW),
      id,
    };
    this.#byHash.set(h, e);
    this.#byPage.set(pageKey(kvBits, id), e);
    const root = chainRoot(kvBits, salt);
    this.events?.stored(kvBits, [h], parent === root ? null : parent, e.tokens);
    return h;
  }

  /** Whether every idle page is cached and unreferenced (for the invariant check). */
  checkIdle(): string | null {
    for (const [key, e] of this.#idle) {
      if (this.#byPage.get(key) !== e) return `idle page ${e.kvBits}:${e.id} is not cached`;
      if (this.#refs(e.kvBits, e.id) !== 0) return `idle page ${e.kvBits}:${e.id} is referenced`;
    }
    for (const [key, e] of this.#byPage) {
      if (this.#refs(e.kvBits, e.id) === 0 && !this.#idle.has(key)) {
        return `cached page ${e.kvBits}:${e.id} is unreferenced but not evictable`;
      }
    }
    return null;
  }
}
