// A deterministic KvEngine for tests of the scheduler and the routes: tokens come from a hash
// of the history (and the seed when sampling). The history is read back from the pages each
// step names, like the native engine's attention: a page holds the token ids written to it,
// so a wrong page table, a shared page overwritten or a bad cache hit changes the output. It
// checks page tables as nsn_step does (counts, id ranges, no page written twice or while read)
// and refuses calls while a step is in flight. Also: a byte-level tokenizer with a few
// multi-character pieces, and makeTestApp() wiring both into the real app.

import type { ServingModel } from "../engine/model.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import { Scheduler, type SchedulerOptions } from "../engine/scheduler.ts";
import {
  EngineError,
  type EngineInfo,
  KV_BITS,
  type KvBits,
  type KvEngine,
  type PositionLogprob,
  type SamplingParams,
  type SeqInput,
  type SeqOutput,
  type StepOptions,
  type StepResult,
  type TopLogprob,
} from "../engine/types.ts";
import { createApp } from "../routes/app.ts";
import { AppState, type ServerConfig } from "../routes/state.ts";
import { checkPageTables, readHistory, writeChunk } from "./fake_pages.ts";

export const BOS = 256;
export const EOS = 257;
// Multi-character pieces after the 256 byte tokens and BOS/EOS: stop strings can span them.
export const PIECES = ["hello", " world", "ab", "cd", "STOP", "<|end|>", "é", " the", "ing"];
export const VOCAB = 258 + PIECES.length;
const WINDOW = 64;

function hash(...xs: number[]): number {
  let h = 2166136261;
  for (const x of xs) {
    h ^= x & 0xffff;
    h = Math.imul(h, 16777619);
    h ^= x >>> 16;
    h = Math.imul(h, 16777619);
  }
  return (h ^ (h >>> 15)) >>> 0;
}

function histHash(tokens: readonly number[], upto: number): number {
  let h = 7;
  for (let i = 0; i < upto; i++) h = hash(h, tokens[i]);
  return h;
}

export class FakeTokenizer implements TextTokenizer {
  readonly vocabSize = VOCAB;
  #enc = new TextEncoder();
  #dec = new TextDecoder(); // non-fatal: bad bytes become U+FFFD, like real decoders

  encode(text: string): number[] {
    const ids: number[] = [];
    let i = 0;
    outer: while (i < text.length) {
      for (let p = 0; p < PIECES.length; p++) {
        if (text.startsWith(PIECES[p], i)) {
          ids.push(258 + p);
          i += PIECES[p].length;
          continue outer;
        }
      }
      const cp = text.codePointAt(i)!;
      const ch = String.fromCodePoint(cp);
      for (const b of this.#enc.encode(ch)) ids.push(b);
      i += ch.length;
    }
    return ids;
  }

  decode(ids: readonly number[], skipSpecial = true): string {
    const bytes: number[] = [];
    for (const id of ids) {
      if (id < 256) bytes.push(id);
      else if (id === BOS || id === EOS) {
        if (!skipSpecial) bytes.push(...this.#enc.encode(id === BOS ? "<s>" : "</s>"));
      } else bytes.push(...this.#enc.encode(PIECES[id - 258] ?? ""));
    }
    return this.#dec.decode(new Uint8Array(bytes));
  }

  tokenText(id: number): string {
    if (id >= 0x80 && id < 256) return `bytes:\\x${id.toString(16)}`;
    return this.decode([id], false);
  }

  tokenToId(token: string): number | undefined {
    if (token === "<s>") return BOS;
    if (token === "</s>") return EOS;
    const p = PIECES.indexOf(token);
    if (p >= 0) return 258 + p;
    return token.length === 1 && token.charCodeAt(0) < 0x80 ? token.charCodeAt(0) : undefined;
  }
}

export interface FakeEngineOptions {
  maxSeqs?: number;
  maxStepTokens?: number;
  maxPosition?: number;
  /** Pool size in slabs (one fp16 page of 64 tokens each). */
  poolSlabs?: number;
  /** Per step, to keep steps in flight for a while (cancellation tests). */
  stepDelayMs?: number;
  /** Overrides the hash-based choice of the next token (history = prompt + generated). */
  nextToken?: (history: readonly number[], params: SamplingParams, nOutput: number) => number;
}

interface FakeSeq {
  kvBits: KvBits;
  tokens: number[]; // the history of the last step, read back from its pages
  params: SamplingParams | null;
}

const PER_SLAB: Record<KvBits, number> = { 16: 1, 2: 6, 1: 13 };
const SLAB_BYTES = 64 * 4096;

export class FakeEngine implements KvEngine {
  readonly vocabSize = VOCAB;
  readonly maxPosition: number;
  readonly opts: Required<Omit<FakeEngineOptions, "nextToken">>;
  readonly nextTokenFn?: FakeEngineOptions["nextToken"];
  seqs = new Map<number, FakeSeq>();
  /** Every step's inputs, for assertions on batching. */
  log: { seqs: number; tokens: number; kinds: KvBits[]; samples: number }[] = [];
  /** Token ids per page, key `${kvBits}:${id}` (the tail pages are kind 16). */
  pageTokens = new Map<string, Int32Array>();
  #nextSlot = 0;
  #freeSlots: number[] = [];
  #inFlight = false;
  #faults = 0;
  #closed = false;

  constructor(opts: FakeEngineOptions = {}) {
    this.opts = {
      maxSeqs: opts.maxSeqs ?? 64,
      maxStepTokens: opts.maxStepTokens ?? 2048,
      maxPosition: opts.maxPosition ?? 4096,
      poolSlabs: opts.poolSlabs ?? 4096,
      stepDelayMs: opts.stepDelayMs ?? 0,
    };
    this.maxPosition = this.opts.maxPosition;
    this.nextTokenFn = opts.nextToken;
  }

  /** Makes the next n steps fail with an internal error. */
  injectFault(n: number): void {
    this.#faults = n;
  }

  info(): EngineInfo {
    const kinds = {} as EngineInfo["kinds"];
    for (const k of KV_BITS) {
      kinds[k] = {
        pageBytes: Math.floor(SLAB_BYTES / PER_SLAB[k]),
        pagesPerSlab: PER_SLAB[k],
        tokenBytes: Math.floor(SLAB_BYTES / PER_SLAB[k] / WINDOW),
      };
    }
    return {
      backend: "cpu",
      deviceName: "fake",
      maxSeqs: this.opts.maxSeqs,
      maxStepTokens: this.opts.maxStepTokens,
      kvPoolBytes: this.opts.poolSlabs * SLAB_BYTES,
      nSlabs: this.opts.poolSlabs,
      weightBytes: 0,
      seqsInUse: this.seqs.size,
      graphSteps: 0,
      kinds,
    };
  }

  #enter(what: string): void {
    if (this.#closed) throw new EngineError("state", `${what}: engine is closed`);
    if (this.#inFlight) throw new EngineError("state", `${what}: a step is in flight`);
  }

  createSeq(kvBits: KvBits): number {
    this.#enter("createSeq");
    if (this.seqs.size >= this.opts.maxSeqs) throw new EngineError("oom", "no free sequence slot");
    const slot = this.#freeSlots.pop() ?? this.#nextSlot++;
    this.seqs.set(slot, { kvBits, tokens: [], params: null });
    return slot;
  }

  freeSeq(seq: number): void {
    this.#enter("freeSeq");
    if (!this.seqs.delete(seq)) throw new EngineError("invalid", `freeSeq: no sequence ${seq}`);
    this.#freeSlots.push(seq);
  }

  setSampling(seq: number, params: SamplingParams): void {
    this.#enter("setSampling");
    const s = this.seqs.get(seq);
    if (!s) throw new EngineError("invalid", `setSampling: no sequence ${seq}`);
    s.params = params;
  }

  /** The fake's distribution: the preferred token gets -0.25, others spread below. */
  logprobOf(tokens: readonly number[], upto: number, t: number): number {
    const h = histHash(tokens, upto);
    if (t === this.#preferred(h)) return -0.25;
    return -2 - (hash(h, t) % 1000) / 250;
  }

  #preferred(h: number): number {
    const letters = " abcdefghijklmnopqrstuvwxyz";
    return letters.charCodeAt(h % letters.length);
  }

  #top(tokens: readonly number[], upto: number, n: number): TopLogprob[] {
    const h = histHash(tokens, upto);
    const ids = [this.#preferred(h)];
    for (let i = 1; ids.length < n; i++) {
      const t = hash(h, i) % VOCAB;
      if (!ids.includes(t)) ids.push(t);
    }
    return ids.slice(0, n).map((id) => ({ id, logprob: this.logprobOf(tokens, upto, id) }))
      .sort((a, b) => b.logprob - a.logprob);
  }

  #sample(s: FakeSeq): number {
    const p = s.params!;
    const nOut = s.tokens.length - p.nPrompt;
    let t: number;
    if (this.nextTokenFn) t = this.nextTokenFn(s.tokens, p, nOut);
    else {
      const h = histHash(s.tokens, s.tokens.length);
      // Greedy takes the preferred token; sampling mixes in the seed and the position.
      t = p.temperature === 0
        ? this.#preferred(h)
        : this.#preferred(hash(h, Number(p.seed & 0xffffffffn), s.tokens.length));
    }
    for (const [id, bias] of p.logitBias) if (bias >= 100) t = id;
    if (nOut < p.minTokens && p.stopIds.includes(t)) t = 32;
    return t;
  }

  async step(inputs: SeqInput[], opts: StepOptions): Promise<StepResult> {
    this.#enter("step");
    if (inputs.length === 0) throw new EngineError("invalid", "step with no sequences");
    const total = inputs.reduce((a, i) => a + i.tokens.length, 0);
    if (total > this.opts.maxStepTokens) throw new EngineError("invalid", "too many tokens");
    if (inputs.length > this.opts.maxSeqs) throw new EngineError("invalid", "too many seqs");
    const listed = new Set<number>();
    for (const inp of inputs) {
      const s = this.seqs.get(inp.seq);
      if (!s || !s.params) throw new EngineError("invalid", `step: bad sequence ${inp.seq}`);
      if (listed.has(inp.seq)) throw new EngineError("invalid", `sequence ${inp.seq} twice`);
      if (inp.tokens.length < 1) throw new EngineError("invalid", "empty chunk");
      if (inp.pos0 + inp.tokens.length > this.maxPosition) {
        throw new EngineError("invalid", "past max position");
      }
      listed.add(inp.seq);
    }
    checkPageTables(
      inputs,
      (seq) => this.seqs.get(seq)!.kvBits,
      (k) => this.opts.poolSlabs * PER_SLAB[k],
    );
    this.#inFlight = true;
    try {
      // Resolve through a macrotask, like a nonblocking FFI call.
      await new Promise((r) => setTimeout(r, this.opts.stepDelayMs));
    } finally {
      this.#inFlight = false;
    }
    if (this.#faults > 0) {
      this.#faults--;
      throw new EngineError("internal", "injected fault");
    }
    this.log.push({
      seqs: inputs.length,
      tokens: total,
      kinds: inputs.map((i) => this.seqs.get(i.seq)!.kvBits),
      samples: inputs.filter((i) => i.sample).length,
    });
    const outputs: (SeqOutput | null)[] = [];
    const positions: (PositionLogprob[] | null)[] = [];
    for (const inp of inputs) {
      const s = this.seqs.get(inp.seq)!;
      const start = inp.pos0;
      s.tokens = readHistory(this.pageTokens, s.kvBits, inp);
      for (let j = 0; j < inp.tokens.length; j++) s.tokens.push(inp.tokens[j]);
      writeChunk(this.pageTokens, s.kvBits, inp);
      if (inp.wantLogprobs) {
        const list: PositionLogprob[] = [];
        for (let j = 0; j < inp.tokens.length; j++) {
          const pos = start + j;
          const next = j + 1 < inp.tokens.length ? inp.tokens[j + 1] : inp.nextToken;
          list.push({
            logprob: next === undefined ? NaN : this.logprobOf(s.tokens, pos + 1, next),
            top: this.#top(s.tokens, pos + 1, opts.topN),
          });
        }
        positions.push(list);
      } else positions.push(null);
      if (inp.sample) {
        const t = this.#sample(s);
        outputs.push({
          token: t,
          logprob: this.logprobOf(s.tokens, s.tokens.length, t),
          top: this.#top(s.tokens, s.tokens.length, opts.topN),
        });
      } else outputs.push(null);
    }
    return { outputs, positions };
  }

  check(): void {
    for (const [slot, s] of this.seqs) {
      if (s.tokens.length > this.maxPosition) {
        throw new EngineError("internal", `sequence ${slot} too long`);
      }
    }
  }

  close(): void {
    this.#closed = true;
  }
}

export interface TestAppOptions {
  engine?: FakeEngineOptions;
  scheduler?: Partial<SchedulerOptions>;
  config?: Partial<ServerConfig>;
}

/** The real app over a FakeEngine; `close()` stops the scheduler loop. */
export function makeTestApp(opts: TestAppOptions = {}) {
  const engine = new FakeEngine(opts.engine);
  const tokenizer = new FakeTokenizer();
  const model: ServingModel = {
    id: "fake-model",
    aliases: ["fake"],
    engine,
    tokenizer,
    bosId: BOS,
    addBos: true,
    eosIds: [EOS],
    created: 1700000000,
  };
  const state = new AppState(opts.config);
  const scheduler = new Scheduler(
    engine,
    { maxNumSeqs: 64, maxStepTokens: 512, maxQueue: 1024, maxModelLen: 2048, ...opts.scheduler },
    state.metrics.observer(),
  );
  state.setReady(model, scheduler);
  const app = createApp(state);
  return {
    app,
    state,
    engine,
    scheduler,
    tokenizer,
    close: () => scheduler.close(),
  };
}
