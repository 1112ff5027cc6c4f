// Calls to a module Worker that answers each message with a reply carrying the same id: the
// reply settles that call's promise. Shared by the tokenizer thread (models/tokenizer_thread.ts)
// and the JSON body parser (routes/json_body.ts), the two kinds of work kept off the event loop.

/** A worker's reply: the id of the call it answers, and whatever the worker sends with it. */
export type Reply = { id: number } & Record<string, unknown>;

export interface WorkerCallsOptions {
  /** Posted before any call (e.g. what the worker builds its state from). */
  init?: unknown;
  /** The error each pending call rejects with when the worker throws. */
  failure: (message: string) => Error;
  /** After a failure has rejected the pending calls. */
  onFailure?: () => void;
}

export class WorkerCalls {
  readonly #worker: Worker;
  #pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  #nextId = 0;
  #closed: Error | null = null;

  constructor(url: URL, opts: WorkerCallsOptions) {
    this.#worker = new Worker(url, { type: "module" });
    if (opts.init !== undefined) this.#worker.postMessage(opts.init);
    this.#worker.onmessage = (e: MessageEvent) => {
      const reply = e.data as Reply;
      const p = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      p?.resolve(reply);
    };
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#rejectAll(opts.failure(e.message));
      opts.onFailure?.();
    };
  }

  /** Calls awaiting their reply. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Posts `msg` with a fresh id (`transfer` moves those buffers); resolves with the reply. */
  call(msg: Record<string, unknown>, transfer: Transferable[] = []): Promise<Reply> {
    if (this.#closed) return Promise.reject(this.#closed);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...msg, id }, transfer);
    });
  }

  /** Stops the worker; pending and later calls reject with `err`. Idempotent. */
  close(err: Error): void {
    if (this.#closed) return;
    this.#closed = err;
    this.#worker.terminate();
    this.#rejectAll(err);
  }

  #rejectAll(e: Error): void {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }
}
