// The host buffers of nsn_step: allocated once per engine from the resolved max_seqs /
// max_step_tokens (the page tables and histories grow as needed) and reused by every step (the
// engine keeps one step in flight, and keeps them referenced, so they outlive any native
// call). pack() writes a batch of KvEngine SeqInputs into them; collect() turns what the
// library wrote back into a StepResult.

import {
  EngineError,
  type PositionLogprob,
  type SeqInput,
  type SeqOutput,
  type StepResult,
} from "../engine/types.ts";
import { LAYOUT, readSeqOutput, writeSeqInput } from "./structs.ts";
import { NSN_MAX_TOP_N } from "./symbols.ts";

export interface PackedStep {
  nSeqs: number;
  nTokens: number;
  anySample: boolean; // pass `out`
  anyLogprobs: boolean; // pass the per-position arrays
  nPages: number; // entries of pages[] used
  nHistory: number; // entries of history[] used
}

function grown(a: Int32Array<ArrayBuffer>, need: number): Int32Array<ArrayBuffer> {
  if (need <= a.length) return a;
  const b = new Int32Array(Math.max(need, 2 * a.length));
  b.set(a);
  return b;
}

export class StepBuffers {
  readonly seqs: Uint8Array<ArrayBuffer>; // [max_seqs] nsn_seq_input
  readonly tokens: Int32Array<ArrayBuffer>; // [max_step_tokens]
  pages: Int32Array<ArrayBuffer> = new Int32Array(1024); // every row's page table
  history: Int32Array<ArrayBuffer> = new Int32Array(1024); // earlier tokens of penalized rows
  readonly out: Uint8Array<ArrayBuffer>; // [max_seqs] nsn_seq_output
  readonly posLogprob: Float32Array<ArrayBuffer>; // [max_step_tokens]
  readonly posTopIds: Int32Array<ArrayBuffer>; // [max_step_tokens][top_n <= 20]
  readonly posTopLogprobs: Float32Array<ArrayBuffer>; // [max_step_tokens][top_n <= 20]
  readonly maxSeqs: number;
  #seqsView: DataView;
  #outView: DataView;

  constructor(maxSeqs: number, maxStepTokens: number) {
    this.maxSeqs = maxSeqs;
    this.seqs = new Uint8Array(maxSeqs * LAYOUT.nsn_seq_input.size);
    this.tokens = new Int32Array(maxStepTokens);
    this.out = new Uint8Array(maxSeqs * LAYOUT.nsn_seq_output.size);
    this.posLogprob = new Float32Array(maxStepTokens);
    this.posTopIds = new Int32Array(maxStepTokens * NSN_MAX_TOP_N);
    this.posTopLogprobs = new Float32Array(maxStepTokens * NSN_MAX_TOP_N);
    this.#seqsView = new DataView(this.seqs.buffer);
    this.#outView = new DataView(this.out.buffer);
  }

  /** Concatenates the chunks into tokens[] and fills seqs[]; checks the TS-side limits. */
  pack(inputs: SeqInput[], topN: number): PackedStep {
    if (!Number.isInteger(topN) || topN < 0 || topN > NSN_MAX_TOP_N) {
      throw new EngineError("invalid", `topN must be 0..${NSN_MAX_TOP_N}, got ${topN}`);
    }
    if (inputs.length === 0) throw new EngineError("invalid", "step with no sequences");
    if (inputs.length > this.maxSeqs) {
      throw new EngineError(
        "invalid",
        `step of ${inputs.length} sequences exceeds max_seqs ${this.maxSeqs}`,
      );
    }
    let nTokens = 0, nPages = 0, nHistory = 0;
    let anySample = false;
    let anyLogprobs = false;
    for (const inp of inputs) {
      nPages += inp.nPages;
      nHistory += inp.history?.length ?? 0;
    }
    this.pages = grown(this.pages, nPages);
    this.history = grown(this.history, nHistory);
    nPages = 0;
    nHistory = 0;
    inputs.forEach((inp, i) => {
      const n = inp.tokens.length;
      if (n < 1) throw new EngineError("invalid", `sequence ${inp.seq}: step input has no tokens`);
      if (nTokens + n > this.tokens.length) {
        throw new EngineError(
          "invalid",
          `step of more than max_step_tokens (${this.tokens.length}) tokens`,
        );
      }
      for (let j = 0; j < n; j++) this.tokens[nTokens + j] = inp.tokens[j];
      if (inp.nPages > inp.pages.length) {
        throw new EngineError("invalid", `sequence ${inp.seq}: page table shorter than nPages`);
      }
      for (let j = 0; j < inp.nPages; j++) this.pages[nPages + j] = inp.pages[j];
      const hist = inp.history;
      if (hist) { for (let j = 0; j < hist.length; j++) this.history[nHistory + j] = hist[j]; }
      writeSeqInput(this.#seqsView, i, {
        seq: inp.seq,
        pos0: inp.pos0,
        nTokens: n,
        tokenOffset: nTokens,
        sample: inp.sample,
        wantLogprobs: inp.wantLogprobs,
        nextToken: inp.nextToken ?? -1,
        pageOffset: nPages,
        nPages: inp.nPages,
        tailPage: inp.tailPage,
        historyOffset: hist ? nHistory : -1,
      });
      nTokens += n;
      nPages += inp.nPages;
      nHistory += hist?.length ?? 0;
      anySample ||= inp.sample;
      anyLogprobs ||= inp.wantLogprobs;
    });
    return { nSeqs: inputs.length, nTokens, anySample, anyLogprobs, nPages, nHistory };
  }

  /** Reads the results of the step packed from `inputs`. */
  collect(inputs: SeqInput[], topN: number, logits: Float32Array | null): StepResult {
    const outputs: (SeqOutput | null)[] = [];
    const positions: (PositionLogprob[] | null)[] = [];
    let offset = 0;
    inputs.forEach((inp, i) => {
      const n = inp.tokens.length;
      outputs.push(inp.sample ? readSeqOutput(this.#outView, i, topN) : null);
      if (inp.wantLogprobs) {
        const list: PositionLogprob[] = [];
        for (let j = 0; j < n; j++) {
          const t = offset + j;
          // The library cannot know what follows the last position unless told.
          const unknown = j === n - 1 && (inp.nextToken === undefined || inp.nextToken < 0);
          const top = [];
          for (let k = 0; k < topN; k++) {
            top.push({
              id: this.posTopIds[t * topN + k],
              logprob: this.posTopLogprobs[t * topN + k],
            });
          }
          list.push({ logprob: unknown ? NaN : this.posLogprob[t], top });
        }
        positions.push(list);
      } else positions.push(null);
      offset += n;
    });
    return logits ? { outputs, positions, logits } : { outputs, positions };
  }
}
