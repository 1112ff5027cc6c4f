// What the serving core needs from a loaded model: the engine, the tokenizer and the few
// special-token facts. main.ts builds it from models/loader.ts's LoadedModel; tests build one
// around tests/fake_engine.ts, so routes/ and engine/ run without native code or model files.

import type { ChatTemplate } from "../models/chat_template.ts";
import type { TextTokenizer } from "../models/tokenizer.ts";
import type { KvEngine } from "./types.ts";

export interface ServingModel {
  /** The id clients send as `model` and see in /v1/models. */
  id: string;
  /** Other names accepted as `model` (the path given on the command line, ...). */
  aliases: string[];
  engine: KvEngine;
  tokenizer: TextTokenizer;
  bosId: number | null;
  /** Prepend bosId to text prompts (the tokenizer itself never adds special tokens). */
  addBos: boolean;
  /** Any of these ends a sequence unless ignore_eos. */
  eosIds: number[];
  /** Renders /v1/chat/completions messages; absent or null: the model has no template. */
  chatTemplate?: ChatTemplate | null;
  /** Unix seconds, for /v1/models `created`. */
  created: number;
}

/**
 * Token ids of a text prompt; with addSpecial, BOS first when the model uses one. Off the event
 * loop when the tokenizer can do that: a long prompt must not stall every other request.
 */
export async function encodePrompt(
  m: ServingModel,
  text: string,
  addSpecial: boolean,
): Promise<number[]> {
  const tok = m.tokenizer;
  const ids = tok.encodeOffThread ? await tok.encodeOffThread(text) : tok.encode(text);
  if (addSpecial && m.addBos && m.bosId !== null) ids.unshift(m.bosId);
  return ids;
}
