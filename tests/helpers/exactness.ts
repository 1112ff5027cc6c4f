// Greedy requests through the real scheduler over a native engine, for the exactness tests
// (tests/prefix_exactness_test.ts on the CPU, tests/gpu/cuda_prefix_test.ts on the GPU): the
// same request must give the same tokens (and, on the CPU, bitwise the same logprobs) however
// its prompt is chunked (--max-step-tokens), preempted and recomputed, or served from the
// prefix cache.

import { Scheduler } from "../../engine/scheduler.ts";
import type { SeqRequest } from "../../engine/sequence.ts";
import { greedySampling, type KvBits, type KvEngine } from "../../engine/types.ts";
import { randomTokens } from "./random_tokens.ts";

export interface Trace {
  tokens: number[];
  logprobs: number[]; // raw logprob of each generated token
  margins: number[]; // top-1 minus top-2 logprob at each step (NaN unless run with topN >= 2)
  cached: number; // prompt tokens served from the prefix cache
}

export interface SchedOptions {
  maxStepTokens: number;
  prefixCaching: boolean;
  maxNumSeqs?: number;
}

/** A scheduler over `engine` with page-table checks after every step. */
export function scheduler(engine: KvEngine, o: SchedOptions): Scheduler {
  return new Scheduler(engine, {
    maxStepTokens: o.maxStepTokens,
    maxNumSeqs: o.maxNumSeqs,
    maxQueue: 64,
    maxModelLen: 1 << 20,
    prefixCaching: o.prefixCaching,
    debugChecks: true,
  });
}

/** Submits the prompts at once (greedy, maxTokens each) and waits for all of them. */
export async function run(
  s: Scheduler,
  kvBits: KvBits,
  prompts: number[][],
  maxTokens: number,
  topN = 0,
): Promise<Trace[]> {
  const traces = prompts.map((): Trace => ({ tokens: [], logprobs: [], margins: [], cached: 0 }));
  const done: Promise<void>[] = [];
  const reqs = prompts.map((prompt, i): SeqRequest => {
    let finish!: (e?: Error) => void;
    done.push(new Promise((ok, fail) => finish = (e) => e ? fail(e) : ok()));
    return {
      prompt,
      kvBits,
      params: greedySampling({ nPrompt: prompt.length }), // no stop ids: always maxTokens
      maxTokens,
      promptLogprobs: false,
      topN,
      sink: {
        onToken: (o) => {
          traces[i].tokens.push(o.token);
          traces[i].logprobs.push(o.logprob);
          traces[i].margins.push(o.top.length >= 2 ? o.top[0].logprob - o.top[1].logprob : NaN);
        },
        onPromptLogprobs: () => {},
        onFinish: (reason, error) => finish(reason === "error" ? error : undefined),
      },
    };
  });
  const seqs = s.submit(reqs);
  await Promise.all(done);
  seqs.forEach((q, i) => traces[i].cached = q.cachedTokens);
  return traces;
}

/** Prompt ids for the demo model (its vocabulary is 4096; 0 and 1 are BOS and EOS). */
export const tokens = (n: number, seed: number) => randomTokens(n, seed, 2, 4096);
