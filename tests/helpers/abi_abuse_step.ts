// The sampling and step halves of the ABI abuse (tests/helpers/abi_abuse.ts): bad sampling
// parameters and logit biases, and nsn_step batches that break the contract (counts, tiling,
// ids, page tables, null buffers, top_n, max_position), then an injected fault.

import type { SamplingParams } from "../../engine/types.ts";
import { encodeSampling, LAYOUT, writeSeqInput } from "../../ffi/structs.ts";
import { GREEDY, type RawEngine, type TryCall } from "./raw_engine.ts";

export async function abuseSampling(r: RawEngine, seq: number, freed: number, tryCall: TryCall) {
  const s = r.lib.symbols;
  const set = (p: Partial<SamplingParams>, target = seq) => () =>
    s.nsn_seq_set_sampling(r.e, target, encodeSampling({ ...GREEDY, ...p }).params, null, null, 0);
  await tryCall("set_sampling: freed seq", set({}, freed));
  await tryCall("set_sampling: seq -1", set({}, -1));
  await tryCall(
    "set_sampling: null params",
    () => s.nsn_seq_set_sampling(r.e, seq, null, null, null, 0),
  );
  const bad: [string, Partial<SamplingParams>][] = [
    ["temperature NaN", { temperature: NaN }],
    ["temperature -1", { temperature: -1 }],
    ["top_p 0", { topP: 0 }],
    ["top_p 1.5", { topP: 1.5 }],
    ["top_p NaN", { topP: NaN }],
    ["min_p 1.5", { minP: 1.5 }],
    ["min_p NaN", { minP: NaN }],
    ["presence 3", { presencePenalty: 3 }],
    ["presence NaN", { presencePenalty: NaN }],
    ["frequency -3", { frequencyPenalty: -3 }],
    ["repetition 0", { repetitionPenalty: 0 }],
    ["repetition -1", { repetitionPenalty: -1 }],
    ["repetition NaN", { repetitionPenalty: NaN }],
    ["repetition Infinity", { repetitionPenalty: Infinity }],
    ["top_k -2", { topK: -2 }],
    ["n_prompt -1", { nPrompt: -1 }],
    ["min_tokens -1", { minTokens: -1 }],
    ["stop id -1", { stopIds: [-1] }],
    ["stop id = vocab", { stopIds: [r.vocab] }],
  ];
  for (const [name, p] of bad) await tryCall(`set_sampling: ${name}`, set(p));
  for (const n of [9, -1]) {
    await tryCall(`set_sampling: n_stop_ids ${n}`, () => {
      const { params } = encodeSampling(GREEDY);
      new DataView(params.buffer).setInt32(LAYOUT.nsn_sampling.fields.n_stop_ids, n, true);
      return s.nsn_seq_set_sampling(r.e, seq, params, null, null, 0);
    });
  }
  const p = encodeSampling(GREEDY).params;
  const bias = (ids: number[], vals: number[], n = ids.length) => () =>
    s.nsn_seq_set_sampling(r.e, seq, p, Int32Array.from(ids), Float32Array.from(vals), n);
  await tryCall("logit_bias: id -1", bias([-1], [1]));
  await tryCall("logit_bias: id = vocab", bias([r.vocab], [1]));
  await tryCall("logit_bias: value NaN", bias([5], [NaN]));
  await tryCall("logit_bias: value Infinity", bias([5], [Infinity]));
  await tryCall("logit_bias: n_bias -1", bias([5], [1], -1));
  await tryCall(
    "logit_bias: null arrays",
    () => s.nsn_seq_set_sampling(r.e, seq, p, null, null, 3),
  );
}

export async function abuseStep(r: RawEngine, live: number[], tryCall: TryCall) {
  const [a, b, c] = live;
  const V = r.vocab;
  const M = r.maxStepTokens;
  const step = (name: string, ...args: Parameters<RawEngine["step"]>) =>
    tryCall(`step: ${name}`, () => r.step(...args));
  await step("n_seqs 0", [], [5]);
  await step("null seqs", [{ seq: a, n: 1, off: 0 }], [5], { nulls: ["seqs"] });
  await step("null tokens", [{ seq: a, n: 1, off: 0 }], [5], { nulls: ["tokens"] });
  await step(
    `n_tokens ${M + 1} > max_step_tokens`,
    [{ seq: a, n: M + 1, off: 0 }],
    new Array(M + 1).fill(5),
  );
  await step("n_tokens 0", [{ seq: a, n: 0, off: 0 }], [], { nTokens: 0 });
  await step("n_tokens -1", [{ seq: a, n: 1, off: 0 }], [5], { nTokens: -1 });
  await step("chunk n_tokens 0", [{ seq: a, n: 0, off: 0 }, { seq: b, n: 1, off: 0 }], [5]);
  await step("chunk n_tokens -1", [{ seq: a, n: -1, off: 0 }], [5]);
  await step("chunks shorter than n_tokens", [{ seq: a, n: 1, off: 0 }], [5, 6]);
  await step("chunk past n_tokens", [{ seq: a, n: 2, off: 0 }], [5], { nTokens: 1 });
  await step("overlapping chunks", [{ seq: a, n: 2, off: 0 }, { seq: b, n: 2, off: 1 }], [
    5,
    6,
    7,
    8,
  ]);
  await step("gap between chunks", [{ seq: a, n: 1, off: 0 }, { seq: b, n: 1, off: 2 }], [5, 6, 7]);
  await step("token_offset -1", [{ seq: a, n: 1, off: -1 }], [5]);
  await step("token_offset 2^31-1", [{ seq: a, n: 1, off: 2 ** 31 - 1 }], [5]);
  await step("same seq twice", [{ seq: a, n: 1, off: 0 }, { seq: a, n: 1, off: 1 }], [5, 6]);
  await step("seq -1", [{ seq: -1, n: 1, off: 0 }], [5]);
  await step("seq max_seqs", [{ seq: r.maxSeqs, n: 1, off: 0 }], [5]);
  for (const t of [-1, V, 2 ** 31 - 1]) {
    await step(`token ${t}`, [{ seq: a, n: 2, off: 0 }, { seq: c, n: 1, off: 2 }], [5, t, 6]);
  }
  await step("top_n 21", [{ seq: a, n: 1, off: 0, sample: true }], [5], { topN: 21 });
  await step("top_n -1", [{ seq: a, n: 1, off: 0, sample: true }], [5], { topN: -1 });
  await step("sample with null out", [{ seq: a, n: 1, off: 0, sample: true }], [5], {
    nulls: ["out"],
  });
  await step("logprobs with null pos_logprob", [{ seq: b, n: 2, off: 0, logprobs: true }], [5, 6], {
    nulls: ["pos_logprob"],
  });
  await step("top logprobs with null top arrays", [{ seq: b, n: 2, off: 0, logprobs: true }], [
    5,
    6,
  ], {
    topN: 5,
    nulls: ["pos_top_ids", "pos_top_logprobs"],
  });
  await step("next_token -2", [{ seq: b, n: 1, off: 0, logprobs: true, next: -2 }], [5]);
  await step("next_token = vocab", [{ seq: b, n: 1, off: 0, logprobs: true, next: V }], [5]);
  // Page tables (b is 2-bit, a 16-bit): every id checked against the arena, counts exact, no
  // page written by two rows or written while another row reads it, history in range.
  const lenA = r.seqLength(a);
  const pa = r.pagesOf(a, lenA + 1);
  const ids16 = r.nSlabs, ids2 = r.nSlabs * r.perSlab[1];
  await step("page id = arena pages", [{
    seq: a,
    n: 1,
    off: 0,
    pages: [...pa.pages.slice(0, -1), ids16],
  }], [5]);
  await step("page id -1", [{ seq: a, n: 1, off: 0, pages: [...pa.pages.slice(0, -1), -1] }], [5]);
  await step("page id 2^31-1", [{ seq: b, n: 1, off: 0, pages: [2 ** 31 - 1] }], [5]);
  await step("2-bit page id past the arena", [{ seq: b, n: 1, off: 0, pages: [ids2] }], [5]);
  await step("n_pages one short", [{ seq: a, n: 1, off: 0, nPages: pa.pages.length - 1 }], [5]);
  await step("n_pages one more", [{ seq: a, n: 1, off: 0, pages: [...pa.pages, 0] }], [5]);
  await step("n_pages -1", [{ seq: a, n: 1, off: 0, nPages: -1 }], [5]);
  await step("pages past n_pages", [{ seq: a, n: 1, off: 0, nPages: 2 ** 30 }], [5]);
  await step("tail at kv_bits 16", [{ seq: a, n: 1, off: 0, tail: 0 }], [5]);
  await step("no tail at kv_bits 2", [{ seq: b, n: 1, off: 0, tail: -1 }], [5]);
  await step("tail past the arena", [{ seq: b, n: 1, off: 0, tail: ids16 }], [5]);
  await step("pos0 -1", [{ seq: a, n: 1, off: 0, pos0: -1 }], [5]);
  await step("history_offset 5 of none", [{ seq: a, n: 1, off: 0, histOffset: 5 }], [5]);
  await step("history_offset -2", [{ seq: a, n: 1, off: 0, histOffset: -2 }], [5]);
  await step(
    "one page written by two rows",
    [{ seq: a, n: 1, off: 0 }, { seq: b, n: 1, off: 1, tail: pa.pages[pa.pages.length - 1] }],
    [5, 6],
  );
  await step(
    "a page written while another row reads it",
    [{ seq: a, n: 1, off: 0 }, {
      seq: b,
      n: 1,
      off: 1,
      tail: pa.pages[0],
    }],
    [5, 6],
  );
  await tryCall("step: sample 2", () => {
    const seqs = new Uint8Array(LAYOUT.nsn_seq_input.size);
    const v = new DataView(seqs.buffer);
    const own = r.pagesOf(a, r.seqLength(a) + 1);
    writeSeqInput(v, 0, {
      seq: a,
      pos0: r.seqLength(a),
      nTokens: 1,
      tokenOffset: 0,
      sample: true,
      wantLogprobs: false,
      nextToken: -1,
      pageOffset: 0,
      nPages: own.pages.length,
      tailPage: own.tail,
      historyOffset: -1,
    });
    v.setInt32(LAYOUT.nsn_seq_input.fields.sample, 2, true);
    const out = new Uint8Array(LAYOUT.nsn_seq_output.size);
    return r.lib.symbols.nsn_step(
      r.e,
      seqs,
      1,
      new Int32Array([5]),
      1,
      Int32Array.from(own.pages),
      own.pages.length,
      null,
      0,
      0,
      out,
      null,
      null,
      null,
      null,
    );
  });
  // Past max_position: fill one sequence up to the limit first (valid steps), then one more.
  const len = r.seqLength(c);
  const maxPos = r.maxPosition;
  for (let at = len; at < maxPos;) {
    const n = Math.min(M, maxPos - at);
    r.lib.check(
      await r.step([{ seq: c, n, off: 0 }], new Array(n).fill(9)),
      "fill to max_position",
    );
    at += n;
  }
  await step("beyond max_position", [{ seq: c, n: 1, off: 0, sample: true }], [5]);
  // An injected fault fails the step and changes nothing.
  r.lib.check(r.lib.symbols.nsn_engine_inject_fault(r.e, 1), "inject_fault");
  await step("injected fault", [{ seq: a, n: 1, off: 0, sample: true }], [5]);
}
