// Tokenizers: the HF one (tokenizer.json through @huggingface/tokenizers) and a byte-level
// fallback for synthetic models, which have no tokenizer of their own. Plus the incremental
// detokenizer that streaming uses.

import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { ModelError, readJson } from "./config.ts";
import { TokenizerThread } from "./tokenizer_thread.ts";

export interface TextTokenizer {
  /** Ids the tokenizer can produce are < vocabSize (the model's vocab may be larger). */
  readonly vocabSize: number;
  /** Never adds special tokens (BOS is the caller's, per ModelSpec.addBos). */
  encode(text: string): number[];
  /** encode() off the event loop, where the tokenizer is slow enough to need it. */
  encodeOffThread?(text: string): Promise<number[]>;
  /** Frees what encodeOffThread started. */
  close?(): void;
  /** skipSpecial (default true, as vLLM) drops special tokens such as BOS/EOS. */
  decode(ids: readonly number[], skipSpecial?: boolean): string;
  /** One token as text for logprobs' `tokens`; a partial UTF-8 piece comes as "bytes:\xNN". */
  tokenText(id: number): string;
  tokenToId(token: string): number | undefined;
}

type Json = Record<string, unknown>;

export class HfTextTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  #tok: HfTokenizer;
  #cleanUp: boolean;
  #source: [Json, Json] | null; // what the worker builds its copy from, until it starts
  #thread: TokenizerThread | null = null;

  constructor(tokenizerJson: Json, tokenizerConfig: Json = {}) {
    this.#tok = new HfTokenizer(tokenizerJson, tokenizerConfig);
    this.#source = [tokenizerJson, tokenizerConfig];
    // The Python `tokenizers` library never cleans up spaces; transformers does only when the
    // config says so. tokenizers.js would default to true, so pass the setting explicitly.
    this.#cleanUp = tokenizerConfig.clean_up_tokenization_spaces === true;
    let max = -1;
    for (const id of this.#tok.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
  }

  encode(text: string): number[] {
    if (text === "") return [];
    return this.#tok.encode(text, { add_special_tokens: false }).ids;
  }

  /** The same ids as encode(), from a worker thread started on first use. */
  encodeOffThread(text: string): Promise<number[]> {
    if (text === "") return Promise.resolve([]);
    if (!this.#thread) {
      const [json, config] = this.#source!;
      this.#thread = new TokenizerThread(json, config);
      this.#source = null;
    }
    return this.#thread.encode(text);
  }

  close(): void {
    this.#thread?.close();
  }

  decode(ids: readonly number[], skipSpecial = true): string {
    if (ids.length === 0) return "";
    return this.#tok.decode([...ids], {
      skip_special_tokens: skipSpecial,
      clean_up_tokenization_spaces: this.#cleanUp,
    });
  }

  tokenText(id: number): string {
    const text = this.#tok.decode([id], {
      skip_special_tokens: false,
      clean_up_tokenization_spaces: false,
    });
    if (!text.includes("\uFFFD")) return text;
    const bytes = tokenBytes(this.#tok.id_to_token(id) ?? "");
    return bytes
      ? "bytes:" + [...bytes].map((b) => "\\x" + b.toString(16).padStart(2, "0")).join("")
      : text;
  }

  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }
}

// GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest are shifted to
// U+0100 and up. Also SentencePiece byte-fallback tokens "<0xNN>".
let byteLevel: Map<string, number> | null = null;
function tokenBytes(token: string): Uint8Array | null {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
  if (m) return new Uint8Array([parseInt(m[1], 16)]);
  if (!byteLevel) {
    byteLevel = new Map();
    let shifted = 0;
    for (let b = 0; b < 256; b++) {
      const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
      byteLevel.set(String.fromCodePoint(printable ? b : 256 + shifted++), b);
    }
  }
  const out: number[] = [];
  for (const ch of token) {
    const b = byteLevel.get(ch);
    if (b === undefined) return null;
    out.push(b);
  }
  return new Uint8Array(out);
}

/** Reads <dir>/tokenizer.json (+ tokenizer_config.json when present). */
export async function loadTokenizer(dir: string): Promise<HfTextTokenizer> {
  const json = await readJson(`${dir}/tokenizer.json`, false);
  if (json === undefined) {
    throw new ModelError(
      `${dir}/tokenizer.json: missing (a sentencepiece tokenizer.model alone is not supported)`,
    );
  }
  const config = await readJson(`${dir}/tokenizer_config.json`, false) ?? {};
  try {
    return new HfTextTokenizer(json as Json, config as Json);
  } catch (e) {
    throw new ModelError(
      `${dir}/tokenizer.json: cannot build the tokenizer (${(e as Error).message})`,
    );
  }
}

/**
 * For synthetic models (random weights, no files): ids 0..255 are the UTF-8 bytes, any other
 * id decodes to "<id>". Text round-trips exactly; model outputs are noise either way.
 */
export class ByteTokenizer implements TextTokenizer {
  constructor(readonly vocabSize: number) {
    if (vocabSize < 256) {
      throw new ModelError(`byte tokenizer needs a vocabulary of >= 256, got ${vocabSize}`);
    }
  }

  encode(text: string): number[] {
    return [...new TextEncoder().encode(text)];
  }

  decode(ids: readonly number[]): string {
    let out = "";
    let bytes: number[] = [];
    const flush = () => {
      out += new TextDecoder().decode(new Uint8Array(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (id >= 0 && id < 256) bytes.push(id);
      else {
        flush();
        out += `<${id}>`;
      }
    }
    flush();
    return out;
  }

  tokenText(id: number): string {
    if (id >= 0x20 && id < 0x7f) return String.fromCharCode(id);
    if (id >= 0 && id < 256) return `bytes:\\x${id.toString(16).padStart(2, "0")}`;
    return `<${id}>`;
  }

  tokenToId(token: string): number | undefined {
    const bytes = new TextEncoder().encode(token);
    if (bytes.length === 1) return bytes[0];
    const m = /^<(\d+)>$/.exec(token);
    return m && Number(m[1]) < this.vocabSize ? Number(m[1]) : undefined;
  }
}

/**
 * Streaming detokenizer. Text is emitted only once it is stable: decode() over a short window
 * of earlier tokens must grow and must not end in U+FFFD (an incomplete UTF-8 / byte-level
 * character), so a multi-byte character split over tokens comes out whole. The window starts
 * a few tokens back so decoders that strip a leading space only do so at the true start.
 */
export class IncrementalDetokenizer {
  #tok: TextTokenizer;
  #ids: number[];
  #prefix: number; // window start
  #read: number; // tokens before this are emitted
  #skipSpecial: boolean;

  /**
   * `context`: tokens before the first pushed one (the prompt tail), for correct spacing.
   * `skipSpecial`: false writes special tokens out (an echoed prompt), true drops them.
   */
  constructor(tok: TextTokenizer, context: readonly number[] = [], skipSpecial = true) {
    this.#tok = tok;
    this.#skipSpecial = skipSpecial;
    this.#ids = context.slice(-6);
    this.#read = this.#ids.length;
    this.#prefix = Math.max(this.#read - 5, 0);
  }

  /** Adds one token; returns the newly stable text ("" when held back). */
  push(id: number): string {
    this.#ids.push(id);
    return this.#emit(false);
  }

  /** End of stream: returns whatever is held back, incomplete characters included. */
  flush(): string {
    return this.#emit(true);
  }

  #emit(final: boolean): string {
    const before = this.#tok.decode(this.#ids.slice(this.#prefix, this.#read), this.#skipSpecial);
    const now = this.#tok.decode(this.#ids.slice(this.#prefix), this.#skipSpecial);
    if (now.length <= before.length || (!final && now.endsWith("\uFFFD"))) return "";
    this.#prefix = this.#read;
    this.#read = this.#ids.length;
    // Keep the buffer short: only the window is ever decoded again.
    if (this.#prefix > 64) {
      this.#ids = this.#ids.slice(this.#prefix);
      this.#read -= this.#prefix;
      this.#prefix = 0;
    }
    return now.slice(before.length);
  }
}
