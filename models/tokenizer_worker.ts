// The worker side of models/tokenizer_thread.ts: builds the same HfTextTokenizer from the
// tokenizer.json it is sent, then answers {id, text} with {id, ids} (or {id, error}), one at a
// time, so a huge prompt stalls only this thread and never the server's event loop.

/// <reference lib="deno.worker" />

import { HfTextTokenizer } from "./tokenizer.ts";

let tok: HfTextTokenizer | null = null;

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.init) {
    tok = new HfTextTokenizer(m.init.json, m.init.config);
    return;
  }
  try {
    const ids = Uint32Array.from(tok!.encode(m.text));
    self.postMessage({ id: m.id, ids }, [ids.buffer]);
  } catch (err) {
    self.postMessage({ id: m.id, error: err instanceof Error ? err.message : String(err) });
  }
};
