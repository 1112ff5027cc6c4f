// The contract between the serving core (engine/, routes/) and whatever runs the model:
// ffi/native_engine.ts (the C++/CUDA library) in production, tests/fake_engine.ts in tests.

/** KV precision of one sequence: 16 = fp16 (no quantization), 2 / 1 = NSNQuant bits. */
export type KvBits = 16 | 2 | 1;
export const KV_BITS: readonly KvBits[] = [16, 2, 1];

/** Per-sequence sampling parameters, set once when the sequence is created. */
export interface SamplingParams {
  temperature: number; // 0 = greedy
  topP: number; // 1 = off
  topK: number; // 0 = off
  minP: number; // 0 = off
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number; // 1 = off
  nPrompt: number; // tokens at positions < nPrompt are the prompt (for penalties)
  minTokens: number; // stopIds are banned until this many output tokens exist
  stopIds: number[]; // EOS and other stop token ids (<= 8)
  seed: bigint; // sampling stream; token at position p uses hash(seed, p)
  logitBias: Map<number, number>;
}

/** One sequence's part of a step: its chunk and its page table (nsn.h nsn_seq_input). */
export interface SeqInput {
  seq: number;
  pos0: number; // tokens already in the cache: the chunk takes positions pos0..
  tokens: ArrayLike<number>; // appended at positions pos0..
  pages: ArrayLike<number>; // page table; its first nPages entries are passed
  nPages: number; // kv_bits 16: ceil(end / 64); 1/2: floor(end / 64), end = pos0 + tokens
  tailPage: number; // kv_bits 1/2: fp16 tail page; -1 at kv_bits 16
  history?: ArrayLike<number>; // tokens [0, pos0), needed when sampling has penalties
  sample: boolean; // sample one token after the last position
  wantLogprobs: boolean; // logprob of the following token (+ top-N) at every position
  nextToken?: number; // the token after the chunk, when wantLogprobs (else the last one is NaN)
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface SeqOutput {
  token: number;
  logprob: number; // raw model logprob of the sampled token
  top: TopLogprob[]; // top-N of the raw distribution, N = StepOptions.topN
}

export interface PositionLogprob {
  logprob: number; // of the following token; NaN when unknown
  top: TopLogprob[];
}

export interface StepResult {
  /** Per input, in order: the sampled token when sample was set, else null. */
  outputs: (SeqOutput | null)[];
  /** Per input: per position of its chunk when wantLogprobs was set, else null. */
  positions: (PositionLogprob[] | null)[];
  /** [n_tokens][vocab] full logits, only when StepOptions.logits (tests). */
  logits?: Float32Array;
}

export interface StepOptions {
  topN: number; // 0..20
  logits?: boolean;
}

export interface KvKindStats {
  pageBytes: number; // one page = 64 tokens x all layers
  pagesPerSlab: number; // pages of this kind in one slab (= one fp16 page of arena)
  tokenBytes: number; // exact KV bytes per token, all layers
}

export interface EngineInfo {
  backend: "cpu" | "cuda";
  deviceName: string;
  maxSeqs: number;
  maxStepTokens: number;
  kvPoolBytes: number;
  nSlabs: number; // the arena in slabs of one fp16 page; page ids: see nsn.h
  weightBytes: number;
  seqsInUse: number;
  /** CUDA backend: decode steps whose layer loop ran as a CUDA graph (0 on the CPU backend). */
  graphSteps: number;
  kinds: Record<KvBits, KvKindStats>;
}

/** Error from the engine; `code` mirrors the native status. */
export class EngineError extends Error {
  constructor(
    readonly code:
      | "invalid"
      | "oom"
      | "unsupported"
      | "backend"
      | "no_device"
      | "state"
      | "internal",
    message: string,
  ) {
    super(message);
    this.name = "EngineError";
  }
}

/** What the scheduler needs from a model runner. One step in flight at a time. */
export interface KvEngine {
  readonly vocabSize: number;
  readonly maxPosition: number;
  info(): EngineInfo;
  createSeq(kvBits: KvBits): number;
  freeSeq(seq: number): void;
  setSampling(seq: number, params: SamplingParams): void;
  step(inputs: SeqInput[], opts: StepOptions): Promise<StepResult>;
  /** Verifies native invariants (sequence slots); throws EngineError. */
  check(): void;
  close(): void;
}

/** Greedy decoding with every penalty off: what tools and tests use when they only score. */
export function greedySampling(over: Partial<SamplingParams> = {}): SamplingParams {
  return {
    temperature: 0,
    topP: 1,
    topK: 0,
    minP: 0,
    presencePenalty: 0,
    frequencyPenalty: 0,
    repetitionPenalty: 1,
    nPrompt: 0,
    minTokens: 0,
    stopIds: [],
    seed: 0n,
    logitBias: new Map(),
    ...over,
  };
}

/** Whether sampling reads the earlier tokens (so a step must pass the history). */
export function hasPenalty(p: SamplingParams): boolean {
  return p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
}
