// Continuous batching over a KvEngine. Every step packs the running decodes (one token each)
// and then chunks of pending prefills into one engine.step() under a token budget; sequences
// of every kv_bits share the step. Exactly one step is in flight; engine calls (createSeq,
// freeSeq) happen only between steps, because the native engine refuses them while a step
// runs. The scheduler owns the KV pages (kv_cache.ts): admission is FCFS and exact (a sequence
// starts only when the pages of its whole history are taken, cached prefix windows reused);
// when a running sequence cannot grow, the newest running one is preempted: its pages go back
// (its complete windows stay in the prefix cache), it is re-queued at the front with its
// generated tokens and later recomputed, invisibly to its client.

import { EngineError, type KvBits, type KvEngine, type StepResult } from "./types.ts";
import { type CacheLookup, KvCache } from "./kv_cache.ts";
import { asError, QueueFullError, ShutdownError } from "./scheduler_errors.ts";
import { type FinishReason, type SeqRequest, Sequence } from "./sequence.ts";
import {
  deliverPromptLogprobs,
  planChunk,
  type Planned,
  planRunning,
  toInput,
  topNOf,
} from "./step_plan.ts";

export { QueueFullError, ShutdownError } from "./scheduler_errors.ts";

export interface SchedulerOptions {
  /** Running sequences at most; default: as many as the KV pool holds (and engine slots). */
  maxNumSeqs?: number;
  maxStepTokens: number; // tokens per step (clamped to the engine's limit)
  maxQueue: number; // waiting sequences before submit() refuses
  maxModelLen: number; // a sequence stops with "length" here
  /** Automatic prefix caching (default on). */
  prefixCaching?: boolean;
  /** Verify page tables and reference counts after every step (tests; slow). */
  debugChecks?: boolean;
}

/** Timing hooks for metrics; all optional, all synchronous. */
export interface SchedulerObserver {
  /** A waiting sequence joins the running batch (again after a preemption). */
  onAdmit?(seq: Sequence): void;
  onPromptDone?(seq: Sequence): void;
  onToken?(seq: Sequence, first: boolean, sinceLast: number): void;
  onFinish?(seq: Sequence, reason: FinishReason): void;
  onPreempt?(seq: Sequence): void;
  /** A prefix-cache lookup at admission (tokens queried and found). */
  onCacheLookup?(seq: Sequence, lookup: CacheLookup): void;
}

// Steps that resolve without passing through the event loop (the fake engine, or very short
// native steps) must not starve HTTP: a zero timer armed before each step has to fire before
// the next one starts. A step that takes longer than a timer tick pays nothing for it.
const yieldTick = () => new Promise<void>((r) => setTimeout(r, 0));

export class Scheduler {
  readonly opts: Required<SchedulerOptions>;
  readonly kv: KvCache;
  #engine: KvEngine;
  #observer: SchedulerObserver;
  #waiting: Sequence[] = [];
  #running: Sequence[] = []; // admission order: the last one is the newest
  #inFlight = false;
  #closed = false;
  #wake: (() => void) | null = null;
  #loop: Promise<void> | null = null;
  #idle: (() => void)[] = [];
  #rotate = 0; // decodes take turns when there are more than a step holds
  steps = 0;
  preemptions = 0;

  constructor(engine: KvEngine, opts: SchedulerOptions, observer: SchedulerObserver = {}) {
    const info = engine.info();
    this.#engine = engine;
    this.#observer = observer;
    const maxStepTokens = Math.max(1, Math.min(opts.maxStepTokens, info.maxStepTokens));
    this.opts = {
      ...opts,
      maxNumSeqs: Math.max(1, Math.min(opts.maxNumSeqs ?? Infinity, info.maxSeqs)),
      maxStepTokens,
      maxModelLen: Math.min(opts.maxModelLen, engine.maxPosition),
      prefixCaching: opts.prefixCaching ?? true,
      debugChecks: opts.debugChecks ?? false,
    };
    this.kv = new KvCache(info, this.opts.prefixCaching, this.opts.maxModelLen);
  }

  get numRunning(): number {
    return this.#running.length;
  }

  get numWaiting(): number {
    return this.#waiting.length;
  }

  /**
   * Queues all sequences of one request, or none (QueueFullError). `continuation`: more work of
   * a request the queue already took (a beam search's later rounds), which a full queue must
   * not fail halfway through.
   */
  submit(reqs: SeqRequest[], continuation = false): Sequence[] {
    if (this.#closed) throw new ShutdownError();
    const waiting = this.#waiting.length;
    // An empty queue takes any request, so a large n never becomes unservable.
    if (!continuation && waiting > 0 && waiting + reqs.length > this.opts.maxQueue) {
      throw new QueueFullError(1);
    }
    const seqs = reqs.map((r) => new Sequence(r));
    reqs.forEach((r, i) => {
      if (r.shareWith !== undefined && r.shareWith !== i) {
        seqs[i].leader = seqs[r.shareWith] ?? null;
      }
    });
    this.#waiting.push(...seqs);
    this.#ensureLoop();
    this.#wake?.();
    return seqs;
  }

  /** Client went away: the sequence is freed before the next step (at once when idle). */
  cancel(seq: Sequence): void {
    if (seq.status === "finished") return;
    seq.cancelled = true;
    if (seq.status === "waiting" || !this.#inFlight) this.#finish(seq, "abort");
  }

  /** Resolves when nothing is running or waiting. */
  drain(): Promise<void> {
    if (this.#running.length === 0 && this.#waiting.length === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  /** Fails what is left (ShutdownError) and stops the loop; the caller closes the engine. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#wake?.();
    await this.#loop;
    const left = [...this.#running, ...this.#waiting];
    for (const s of left) this.#finish(s, "error", new ShutdownError());
  }

  #ensureLoop(): void {
    if (this.#loop) return;
    this.#loop = this.#run()
      .catch((e) => {
        // A bug, not an engine failure: fail everyone rather than leave clients hanging.
        console.error("scheduler loop failed:", e);
        for (const s of [...this.#running, ...this.#waiting]) this.#finish(s, "error", asError(e));
      })
      .finally(() => this.#loop = null);
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      this.#reap();
      if (this.#running.length === 0 && this.#waiting.length === 0) {
        for (const r of this.#idle.splice(0)) r();
        await new Promise<void>((r) => this.#wake = r);
        this.#wake = null;
        continue;
      }
      const plan = this.#plan();
      if (plan.length === 0) continue; // #plan failed a request that can never fit
      const tick = yieldTick();
      let result: StepResult;
      this.#inFlight = true;
      try {
        result = await this.#engine.step(plan.map(toInput), { topN: topNOf(plan) });
      } catch (e) {
        this.#inFlight = false;
        this.#stepFailed(plan, e);
        await tick;
        continue;
      }
      this.#inFlight = false;
      this.steps++;
      this.#apply(plan, result);
      if (this.opts.debugChecks) this.check();
      await tick;
    }
  }

  /** Frees sequences cancelled while a step was in flight. */
  #reap(): void {
    for (const s of this.#running.filter((s) => s.cancelled)) this.#finish(s, "abort");
  }

  /** Chooses this step's chunks and takes their pages, preempting when the pool is full. */
  #plan(): Planned[] {
    for (;;) {
      const plan = planRunning(this.#running, this.opts.maxStepTokens, this.#rotate++);
      if (plan.every((p) => this.kv.grow(p.seq, p.start + p.chunk))) {
        this.#admit(plan);
        return plan;
      }
      const victim = this.#running[this.#running.length - 1];
      if (this.#running.length === 1) {
        this.#finish(victim, "error", this.#tooLarge(victim));
        return [];
      }
      this.#preempt(victim);
    }
  }

  #admit(plan: Planned[]): void {
    let left = this.opts.maxStepTokens - plan.reduce((a, p) => a + p.chunk, 0);
    while (left > 0 && this.#waiting.length > 0 && this.#running.length < this.opts.maxNumSeqs) {
      const seq = this.#waiting[0];
      if (seq.tokens.length + 1 > this.kv.capacityTokens(seq.kvBits)) {
        this.#finish(seq, "error", this.#tooLarge(seq));
        continue;
      }
      // n / best_of: the other choices start once the first has its prompt in the cache.
      const leader = seq.leader;
      if (leader?.status === "running" && leader.numComputed < leader.nPrompt) break;
      const lookup = this.kv.admit(seq);
      if (!lookup) break; // FCFS: nobody overtakes the head
      try {
        seq.slot = this.#engine.createSeq(seq.kvBits);
        this.#engine.setSampling(seq.slot, seq.params);
      } catch (e) {
        this.#finish(seq, "error", asError(e)); // returns its pages
        continue;
      }
      if (seq.preemptions === 0) seq.cachedTokens = seq.numComputed;
      if (lookup.queried > 0) this.#observer.onCacheLookup?.(seq, lookup);
      this.#waiting.shift();
      seq.status = "running";
      this.#running.push(seq);
      this.#observer.onAdmit?.(seq);
      const n = Math.min(seq.pending, left);
      plan.push(planChunk(seq, n));
      left -= n;
    }
  }

  #apply(plan: Planned[], result: StepResult): void {
    const now = performance.now();
    plan.forEach((p, i) => {
      p.seq.numComputed += p.chunk;
      if (p.seq.status !== "running") return;
      this.kv.commit(p.seq); // its complete windows join the prefix cache
      if (p.seq.cancelled) return;
      try {
        this.#applyOne(p, result, i, now);
      } catch (e) {
        this.#finish(p.seq, "error", asError(e)); // a failing sink fails only its sequence
      }
    });
  }

  #applyOne(p: Planned, result: StepResult, i: number, now: number): void {
    const seq = p.seq;
    deliverPromptLogprobs(p, result.positions[i]);
    if (seq.numComputed >= seq.nPrompt && !seq.promptCounted) {
      seq.promptCounted = true;
      this.#observer.onPromptDone?.(seq);
    }
    if (!p.sample) {
      if (seq.pending === 0) this.#finish(seq, "length"); // max_tokens 0: prompt only
      return;
    }
    const out = result.outputs[i];
    if (!out) {
      this.#finish(seq, "error", new EngineError("internal", "step returned no sampled token"));
      return;
    }
    const first = seq.numGenerated === 0;
    seq.tokens.push(out.token);
    this.#observer.onToken?.(seq, first, first ? now - seq.arrival : now - seq.lastTokenTime);
    seq.lastTokenTime = now;
    const stopNow = seq.sink.onToken(out) === true;
    if (stopNow || seq.params.stopIds.includes(out.token)) this.#finish(seq, "stop");
    else if (seq.numGenerated >= seq.maxTokens) this.#finish(seq, "length");
    else if (seq.tokens.length >= this.opts.maxModelLen) this.#finish(seq, "length");
  }

  #stepFailed(plan: Planned[], e: unknown): void {
    // A failed step may have left these sequences' own pages half-written (never a shared or
    // cached page: a step writes only windows past what it had): fail only them.
    const err = asError(e);
    for (const p of plan) if (p.seq.status === "running") this.#finish(p.seq, "error", err);
  }

  #preempt(seq: Sequence): void {
    this.#release(seq);
    seq.status = "waiting";
    seq.numComputed = 0;
    seq.preemptions++;
    this.preemptions++;
    this.#observer.onPreempt?.(seq);
    this.#running.splice(this.#running.indexOf(seq), 1);
    this.#waiting.unshift(seq);
  }

  #release(seq: Sequence): void {
    this.kv.release(seq);
    if (seq.slot < 0) return;
    const slot = seq.slot;
    seq.slot = -1;
    try {
      this.#engine.freeSeq(slot);
    } catch (e) {
      console.error(`freeSeq(${slot}) failed:`, e);
    }
  }

  #finish(seq: Sequence, reason: FinishReason, error?: Error): void {
    if (seq.status === "finished") return;
    this.#release(seq);
    const list = seq.status === "running" ? this.#running : this.#waiting;
    const i = list.indexOf(seq);
    if (i >= 0) list.splice(i, 1);
    seq.status = "finished";
    this.#observer.onFinish?.(seq, reason);
    try {
      seq.sink.onFinish(reason, error);
    } catch (e) {
      console.error("sequence sink failed:", e);
    }
  }

  /** Tokens one sequence of this kind can hold at most (pool size and max_model_len). */
  capacityTokens(kvBits: KvBits): number {
    return this.kv.capacityTokens(kvBits);
  }

  /** Verifies the page tables against the pool's reference counts, and the engine's state. */
  check(): void {
    this.kv.check(this.#running);
    this.#engine.check();
  }

  #tooLarge(seq: Sequence): EngineError {
    return new EngineError(
      "oom",
      `the KV cache pool cannot hold this sequence (${seq.tokens.length} tokens at kv_bits ` +
        `${seq.kvBits}; at most ${this.kv.capacityTokens(seq.kvBits)} tokens fit)`,
    );
  }
}
