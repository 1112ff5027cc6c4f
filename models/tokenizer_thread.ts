// Tokenization off the event loop: a Worker that holds its own copy of an HF tokenizer. Encoding
// a large prompt takes seconds of pure JS (8 MB: 5-11 s); on the main thread that froze every
// request, /health included. Requests queue in the worker in arrival order.

type Json = Record<string, unknown>;

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (e: Error) => void;
}

export class TokenizerThread {
  #worker: Worker;
  #pending = new Map<number, Pending>();
  #nextId = 0;
  #closed = false;

  constructor(tokenizerJson: Json, tokenizerConfig: Json) {
    this.#worker = new Worker(new URL("./tokenizer_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#worker.postMessage({ init: { json: tokenizerJson, config: tokenizerConfig } });
    this.#worker.onmessage = (e: MessageEvent) => {
      const { id, ids, error } = e.data;
      const p = this.#pending.get(id);
      this.#pending.delete(id);
      if (error !== undefined) p?.reject(new Error(`tokenizer: ${error}`));
      else p?.resolve(Array.from(ids as Uint32Array));
    };
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#failAll(new Error(`tokenizer worker failed: ${e.message}`));
    };
  }

  /** Token ids of `text` (no special tokens), computed on the worker thread. */
  encode(text: string): Promise<number[]> {
    if (this.#closed) return Promise.reject(new Error("the tokenizer is closed"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ id, text });
    });
  }

  /** Stops the worker; encodes still pending reject. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
    this.#failAll(new Error("the tokenizer is closed"));
  }

  #failAll(e: Error): void {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }
}
