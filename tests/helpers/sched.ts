// The scheduler against the fake engine, for tests: a request whose sink collects what the
// sequence delivers, and a scheduler with debugChecks (page tables and reference counts
// verified after every step).

import { Scheduler, type SchedulerOptions } from "../../engine/scheduler.ts";
import type { FinishReason, SeqRequest } from "../../engine/sequence.ts";
import {
  greedySampling,
  type KvBits,
  type PositionLogprob,
  type SamplingParams,
} from "../../engine/types.ts";
import { FakeEngine, type FakeEngineOptions } from "../fake_engine.ts";

export function params(nPrompt: number, over: Partial<SamplingParams> = {}): SamplingParams {
  return greedySampling({ nPrompt, seed: 1n, ...over });
}

export interface Collected {
  tokens: number[];
  promptLp: PositionLogprob[];
  promptLpDelivered: number; // positions delivered, duplicates included
  reason: FinishReason | null;
  error?: Error;
  done: Promise<void>;
}

export function request(
  prompt: number[],
  kvBits: KvBits,
  maxTokens: number,
  extra: Partial<SeqRequest> = {},
): { req: SeqRequest; out: Collected } {
  let resolve!: () => void;
  const out: Collected = {
    tokens: [],
    promptLp: [],
    promptLpDelivered: 0,
    reason: null,
    done: new Promise((r) => resolve = r),
  };
  const req: SeqRequest = {
    prompt,
    kvBits,
    params: params(prompt.length),
    maxTokens,
    promptLogprobs: false,
    topN: 0,
    sink: {
      onToken: (o) => void out.tokens.push(o.token),
      onPromptLogprobs: (start, list) => {
        out.promptLpDelivered += list.length;
        list.forEach((p, i) => out.promptLp[start + i] = p);
      },
      onFinish: (reason, error) => {
        out.reason = reason;
        out.error = error;
        resolve();
      },
    },
    ...extra,
  };
  return { req, out };
}

export function setup(engine: FakeEngineOptions = {}, sched: Partial<SchedulerOptions> = {}) {
  const e = new FakeEngine(engine);
  const s = new Scheduler(e, {
    maxNumSeqs: 64,
    maxStepTokens: 512,
    maxQueue: 1024,
    maxModelLen: 4096,
    debugChecks: true,
    ...sched,
  });
  return { e, s };
}

export const prompt = (len: number, salt = 0) =>
  Array.from({ length: len }, (_, i) => 97 + (i * 7 + salt) % 26);
