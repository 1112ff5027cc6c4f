// The KV page pool: the one owner of every page of the native arena (which only checks the
// ids a step names). The arena is cut into slabs of one fp16 page; a slab serves one kind at a
// time and holds perSlab[kind] pages of it (1 fp16 page, about 6-14 quantized pages), so the
// kinds trade memory at slab granularity and never fragment each other. Page id i of a kind
// lives in slab floor(i / perSlab[kind]), the native library's rule (nsn.h).
//
// Each page has a reference count: the sequences whose page tables hold it. A page whose count
// drops to zero is freed, unless the prefix cache holds it: then it stays, idle, until the
// cache evicts it (least recently used first) because someone needs the memory.

import { EngineError, KV_BITS, type KvBits } from "./types.ts";

export interface PoolGeometry {
  nSlabs: number;
  perSlab: Record<KvBits, number>;
}

/** What the pool asks of the prefix cache when it runs out of pages. */
export interface IdleCache {
  /** The last reference to (kind, id) went: true when the cache keeps the page, idle. */
  keep(kvBits: KvBits, id: number): boolean;
  /** Drops the least recently used idle page from the cache; false when none is idle. */
  evictOne(): { kvBits: KvBits; id: number } | null;
}

export class PagePool {
  readonly geometry: PoolGeometry;
  cache: IdleCache | null = null;
  #slabKind: Int8Array; // [nSlabs] kind index (KV_BITS order) or -1 = free slab
  #slabUsed: Int32Array; // [nSlabs] pages of the slab in use (referenced or cached)
  #freeSlabs: number[] = []; // stack, lowest slab on top
  #partial = new Map<KvBits, Set<number>>(); // slabs of a kind with a free page
  #refs = new Map<KvBits, Int32Array>(); // [nSlabs * perSlab] references; -1 = free page
  #inUse: Record<KvBits, number> = { 16: 0, 2: 0, 1: 0 };
  #idle: Record<KvBits, number> = { 16: 0, 2: 0, 1: 0 }; // in use, no reference: cached

  constructor(geometry: PoolGeometry) {
    this.geometry = geometry;
    const n = geometry.nSlabs;
    this.#slabKind = new Int8Array(n).fill(-1);
    this.#slabUsed = new Int32Array(n);
    for (let s = n - 1; s >= 0; s--) this.#freeSlabs.push(s);
    for (const k of KV_BITS) {
      this.#partial.set(k, new Set());
      this.#refs.set(k, new Int32Array(n * geometry.perSlab[k]).fill(-1));
    }
  }

  /** Pages of a kind taken (referenced or idle in the cache). */
  pagesInUse(kvBits: KvBits): number {
    return this.#inUse[kvBits];
  }

  /** Pages of a kind that no sequence references, kept by the prefix cache. */
  pagesIdle(kvBits: KvBits): number {
    return this.#idle[kvBits];
  }

  /** Pages of a kind allocatable now without evicting (if no other kind takes a slab first). */
  pagesFreeNow(kvBits: KvBits): number {
    const per = this.geometry.perSlab[kvBits];
    let partialFree = 0;
    for (const s of this.#partial.get(kvBits)!) partialFree += per - this.#slabUsed[s];
    return partialFree + this.#freeSlabs.length * per;
  }

  /** Slabs serving any kind. */
  slabsInUse(): number {
    return this.geometry.nSlabs - this.#freeSlabs.length;
  }

  /** References to a page (-1 when free, 0 when idle in the cache). */
  refs(kvBits: KvBits, id: number): number {
    return this.#refs.get(kvBits)![id] ?? -1;
  }

  /** A new page with one reference, evicting idle cached pages if needed; -1 when full. */
  alloc(kvBits: KvBits): number {
    for (;;) {
      const id = this.#take(kvBits);
      if (id >= 0) return id;
      const ev = this.cache?.evictOne();
      if (!ev) return -1;
      this.freeIdle(ev.kvBits, ev.id);
    }
  }

  /** Allocates `n` pages of each kind in `need`, all or none. */
  allocMany(need: Record<KvBits, number>): Record<KvBits, number[]> | null {
    const got: Record<KvBits, number[]> = { 16: [], 2: [], 1: [] };
    for (const k of KV_BITS) {
      for (let i = 0; i < need[k]; i++) {
        const id = this.alloc(k);
        if (id < 0) {
          for (const j of KV_BITS) for (const p of got[j]) this.release(j, p);
          return null;
        }
        got[k].push(id);
      }
    }
    return got;
  }

  /** One more reference to a page in use (sharing, or a cache hit on an idle page). */
  retain(kvBits: KvBits, id: number): void {
    const refs = this.#refs.get(kvBits)!;
    if (!(refs[id] >= 0)) throw new EngineError("internal", `retain of free page ${kvBits}:${id}`);
    if (refs[id]++ === 0) this.#idle[kvBits]--;
  }

  /** Drops a reference; at zero the page is freed unless the cache keeps it (idle). */
  release(kvBits: KvBits, id: number): void {
    const refs = this.#refs.get(kvBits)!;
    if (!(refs[id] > 0)) {
      throw new EngineError("internal", `release of unreferenced ${kvBits}:${id}`);
    }
    if (--refs[id] > 0) return;
    if (this.cache?.keep(kvBits, id)) this.#idle[kvBits]++;
    else this.#free(kvBits, id);
  }

  /** Drops a page table's references: its pages of kind kvBits and its fp16 tail (or -1). */
  releaseTable(table: { kvBits: KvBits; pages: number[]; tail: number }): void {
    for (const id of table.pages) this.release(table.kvBits, id);
    if (table.tail >= 0) this.release(16, table.tail);
    table.pages = [];
    table.tail = -1;
  }

  /** Frees an idle page the cache dropped (reference count 0). */
  freeIdle(kvBits: KvBits, id: number): void {
    if (this.#refs.get(kvBits)![id] !== 0) {
      throw new EngineError("internal", `page ${kvBits}:${id} is not idle`);
    }
    this.#idle[kvBits]--;
    this.#free(kvBits, id);
  }

  #take(kvBits: KvBits): number {
    const per = this.geometry.perSlab[kvBits];
    const partial = this.#partial.get(kvBits)!;
    let slab: number;
    if (partial.size > 0) slab = partial.values().next().value!;
    else {
      const s = this.#freeSlabs.pop();
      if (s === undefined) return -1;
      slab = s;
      this.#slabKind[slab] = KV_BITS.indexOf(kvBits);
      partial.add(slab);
    }
    const refs = this.#refs.get(kvBits)!;
    let id = slab * per;
    while (refs[id] >= 0) id++; // a partial slab has a free page
    refs[id] = 1;
    this.#inUse[kvBits]++;
    if (++this.#slabUsed[slab] === per) partial.delete(slab);
    return id;
  }

  #free(kvBits: KvBits, id: number): void {
    const per = this.geometry.perSlab[kvBits];
    const slab = Math.floor(id / per);
    this.#refs.get(kvBits)![id] = -1;
    this.#inUse[kvBits]--;
    const partial = this.#partial.get(kvBits)!;
    if (--this.#slabUsed[slab] === 0) {
      // An empty slab returns to the common pool so another kind can use its memory.
      partial.delete(slab);
      this.#slabKind[slab] = -1;
      this.#freeSlabs.push(slab);
    } else partial.add(slab);
  }

  /**
   * Verifies the slabs and that every page's reference count equals the references in
   * `owners` (each page table entry once), idle pages being exactly the cached unreferenced
   * ones. Throws EngineError("internal") naming the first problem.
   */
  check(owners: Iterable<[KvBits, number]>, cached: (kvBits: KvBits, id: number) => boolean): void {
    const fail = (msg: string) => {
      throw new EngineError("internal", `page pool: ${msg}`);
    };
    const counted = new Map<KvBits, Int32Array>();
    for (const k of KV_BITS) counted.set(k, new Int32Array(this.#refs.get(k)!.length));
    for (const [k, id] of owners) {
      if (!(id >= 0 && id < counted.get(k)!.length)) fail(`page id ${k}:${id} out of range`);
      counted.get(k)![id]++;
    }
    const used = new Int32Array(this.geometry.nSlabs);
    for (const k of KV_BITS) {
      const refs = this.#refs.get(k)!, per = this.geometry.perSlab[k];
      let inUse = 0, idle = 0;
      for (let id = 0; id < refs.length; id++) {
        const slab = Math.floor(id / per);
        const want = counted.get(k)![id];
        if (refs[id] < 0) {
          if (want > 0) fail(`free page ${k}:${id} is in ${want} page tables`);
          continue;
        }
        if (this.#slabKind[slab] !== KV_BITS.indexOf(k)) {
          fail(`page ${k}:${id} in use in slab ${slab} of kind index ${this.#slabKind[slab]}`);
        }
        if (refs[id] !== want) {
          fail(`page ${k}:${id} counts ${refs[id]} references, tables ${want}`);
        }
        if (refs[id] === 0 && !cached(k, id)) fail(`page ${k}:${id} is idle but not cached`);
        if (refs[id] === 0) idle++;
        inUse++;
        used[slab]++;
      }
      if (inUse !== this.#inUse[k]) {
        fail(`kind ${k}: ${inUse} pages in use, counted ${this.#inUse[k]}`);
      }
    }
    const free = new Set(this.#freeSlabs);
    if (free.size !== this.#freeSlabs.length) fail("a slab is on the free list twice");
    for (let s = 0; s < this.geometry.nSlabs; s++) {
      if (used[s] !== this.#slabUsed[s]) {
        fail(`slab ${s} counts ${this.#slabUsed[s]}, has ${used[s]}`);
      }
      const kind = this.#slabKind[s];
      if ((kind < 0) !== free.has(s) || (kind < 0 && used[s] > 0)) {
        fail(`slab ${s} free-list mismatch`);
      }
      if (kind >= 0) {
        const k = KV_BITS[kind];
        const partial = used[s] < this.geometry.perSlab[k];
        if (partial !== this.#partial.get(k)!.has(s)) fail(`slab ${s} has a wrong partial mark`);
      }
    }
  }
}
