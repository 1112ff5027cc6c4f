// Tokenization off the event loop: a Worker that holds its own copy of an HF tokenizer. Encoding
// a large prompt takes seconds of pure JS (8 MB: 5-11 s); on the main thread that froze every
// request, /health included. Requests queue in the worker in arrival order.

import { WorkerCalls } from "./worker_calls.ts";

type Json = Record<string, unknown>;

export class TokenizerThread {
  #calls: WorkerCalls;

  constructor(tokenizerJson: Json, tokenizerConfig: Json) {
    this.#calls = new WorkerCalls(new URL("./tokenizer_worker.ts", import.meta.url), {
      init: { init: { json: tokenizerJson, config: tokenizerConfig } },
      failure: (message) => new Error(`tokenizer worker failed: ${message}`),
    });
  }

  /** Token ids of `text` (no special tokens), computed on the worker thread. */
  async encode(text: string): Promise<number[]> {
    const { ids, error } = await this.#calls.call({ text });
    if (error !== undefined) throw new Error(`tokenizer: ${error}`);
    return Array.from(ids as Uint32Array);
  }

  /** Stops the worker; encodes still pending reject. Idempotent. */
  close(): void {
    this.#calls.close(new Error("the tokenizer is closed"));
  }
}
