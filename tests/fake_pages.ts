// The fake engine's KV pages: nsn_step's page-table checks (nsn.h) and pages that hold token
// ids instead of K/V, so that what a row "attends to" is exactly what its page table names.

import { EngineError, type KvBits, type SeqInput } from "../engine/types.ts";

const WINDOW = 64;

export type PageStore = Map<string, Int32Array>;

const key = (kvBits: KvBits, id: number) => `${kvBits}:${id}`;

function tablePages(kvBits: KvBits, end: number): number {
  return kvBits === 16 ? Math.ceil(end / WINDOW) : Math.floor(end / WINDOW);
}

/** nsn_step's checks of every row's page table, and that no page is written twice or read. */
export function checkPageTables(
  inputs: SeqInput[],
  kvBitsOf: (seq: number) => KvBits,
  pageIds: (kvBits: KvBits) => number,
): void {
  const bad = (msg: string) => {
    throw new EngineError("invalid", msg);
  };
  const writes = new Set<string>(), reads = new Set<string>();
  for (const inp of inputs) {
    const k = kvBitsOf(inp.seq), end = inp.pos0 + inp.tokens.length;
    if (!(inp.pos0 >= 0)) bad(`seq ${inp.seq}: pos0 ${inp.pos0}`);
    if (inp.nPages !== tablePages(k, end)) bad(`seq ${inp.seq}: n_pages ${inp.nPages} for ${end}`);
    for (let w = 0; w < inp.nPages; w++) {
      const id = inp.pages[w];
      if (!(id >= 0 && id < pageIds(k))) bad(`seq ${inp.seq}: page id ${id} out of range`);
      const set = w < Math.floor(inp.pos0 / WINDOW) ? reads : writes;
      if (set === writes && writes.has(key(k, id))) bad(`page ${k}:${id} written twice`);
      set.add(key(k, id));
    }
    if (k === 16 ? inp.tailPage !== -1 : !(inp.tailPage >= 0 && inp.tailPage < pageIds(16))) {
      bad(`seq ${inp.seq}: tail page ${inp.tailPage}`);
    }
    if (k !== 16) {
      if (writes.has(key(16, inp.tailPage))) bad(`tail ${inp.tailPage} written twice`);
      writes.add(key(16, inp.tailPage));
    }
  }
  for (const w of writes) if (reads.has(w)) bad(`page ${w} is written while another row reads it`);
}

function page(store: PageStore, kvBits: KvBits, id: number): Int32Array {
  let p = store.get(key(kvBits, id));
  if (!p) store.set(key(kvBits, id), p = new Int32Array(WINDOW).fill(-1));
  return p;
}

/** The tokens at positions [0, pos0) as the row's pages hold them (-1 where never written). */
export function readHistory(store: PageStore, kvBits: KvBits, inp: SeqInput): number[] {
  const out: number[] = [];
  const complete = Math.floor(inp.pos0 / WINDOW);
  for (let p = 0; p < inp.pos0; p++) {
    const w = Math.floor(p / WINDOW);
    const pg = kvBits === 16 || w < complete
      ? page(store, kvBits, inp.pages[w])
      : page(store, 16, inp.tailPage);
    out.push(pg[p % WINDOW]);
  }
  return out;
}

/** Writes the chunk's tokens: fp16 pages, or the tail and each window that completes. */
export function writeChunk(store: PageStore, kvBits: KvBits, inp: SeqInput): void {
  for (let j = 0; j < inp.tokens.length; j++) {
    const p = inp.pos0 + j, w = Math.floor(p / WINDOW), slot = p % WINDOW;
    if (kvBits === 16) {
      page(store, 16, inp.pages[w])[slot] = inp.tokens[j];
      continue;
    }
    const tail = page(store, 16, inp.tailPage);
    tail[slot] = inp.tokens[j];
    if (slot === WINDOW - 1) page(store, kvBits, inp.pages[w]).set(tail);
  }
}
