// Test helper (not a test): writes a tiny HF-style checkpoint directory (config.json,
// tokenizer.json, model.safetensors) with deterministic random weights, so the loader can be
// exercised without the demo model. Values are rounded to bf16 so every dtype stores them
// exactly and the same model can be written as F32, F16 or BF16.

import { expectedWeights } from "../models/loader.ts";
import { parseModelSpec } from "../models/config.ts";
import { encodeSafetensors, type StDtype } from "../models/safetensors.ts";

/** A byte-level BPE tokenizer.json: the 256 byte symbols, two merges and one special token. */
export function byteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  let shifted = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    vocab[String.fromCodePoint(printable ? b : 256 + shifted++)] = b;
  }
  vocab["he"] = 256;
  vocab["Ġh"] = 257;
  const special = {
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
  return {
    version: "1.0",
    added_tokens: [{ id: 258, content: "<|eos|>", ...special }],
    normalizer: null,
    pre_tokenizer: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: true,
      use_regex: true,
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: ["h e", "Ġ h"],
    },
  };
}

export const TINY_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  hidden_act: "silu",
  hidden_size: 128,
  intermediate_size: 256,
  max_position_embeddings: 512,
  num_attention_heads: 2,
  num_hidden_layers: 2,
  num_key_value_heads: 1,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: false,
  vocab_size: 260,
  bos_token_id: 258,
  eos_token_id: 258,
};

export interface TinyOptions {
  dtype?: StDtype;
  config?: Record<string, unknown>; // merged over TINY_CONFIG
  /** Edits the tensor list before writing (drop, rename, reshape: the broken-file tests). */
  edit?: (tensors: { name: string; shape: number[] }[]) => { name: string; shape: number[] }[];
  /** Written as tokenizer_config.json (none by default), e.g. with a chat_template. */
  tokenizerConfig?: Record<string, unknown>;
  /** Written as chat_template.jinja (none by default). */
  chatTemplateFile?: string;
}

/** Writes the model into `dir` and returns its config. */
export async function writeTinyModel(
  dir: string,
  opts: TinyOptions = {},
): Promise<Record<string, unknown>> {
  const dtype = opts.dtype ?? "BF16";
  const config = { ...TINY_CONFIG, ...opts.config };
  const spec = parseModelSpec({ config }, dir);
  let list = expectedWeights(spec).map(({ name, shape }) => ({ name, shape }));
  if (opts.edit) list = opts.edit(list);
  let state = 12345;
  const rand = () => { // xorshift32: deterministic and fast
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const tensors = list.map(({ name, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith("norm.weight");
    const values = Array.from(
      { length: n },
      () => isNorm ? 1 + 0.1 * (rand() - 0.5) : 0.2 * (rand() - 0.5),
    );
    return { name, dtype, shape, data: encodeValues(values, dtype) };
  });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(byteLevelTokenizerJson()));
  await Deno.writeFile(`${dir}/model.safetensors`, encodeSafetensors(tensors));
  if (opts.tokenizerConfig) {
    await Deno.writeTextFile(`${dir}/tokenizer_config.json`, JSON.stringify(opts.tokenizerConfig));
  }
  if (opts.chatTemplateFile !== undefined) {
    await Deno.writeTextFile(`${dir}/chat_template.jinja`, opts.chatTemplateFile);
  }
  return config;
}

/**
 * Values rounded to bf16 first, so F32/F16/BF16 files hold the same numbers; magnitudes below
 * 1e-3 become 0, where f16 (subnormal) could not hold all 8 bf16 mantissa bits.
 */
function encodeValues(values: number[], dtype: StDtype): Uint8Array {
  const f = new DataView(new ArrayBuffer(4));
  const bf16 = (x: number) => {
    f.setFloat32(0, x);
    return f.getUint32(0) >>> 16;
  };
  const bytes = new Uint8Array(values.length * (dtype === "F32" ? 4 : 2));
  const v = new DataView(bytes.buffer);
  values.forEach((x, i) => {
    const b = Math.abs(x) < 1e-3 ? 0 : bf16(x);
    f.setUint32(0, b << 16);
    const r = f.getFloat32(0);
    if (dtype === "F32") v.setFloat32(4 * i, r, true);
    else if (dtype === "F16") v.setFloat16(2 * i, r, true);
    else v.setUint16(2 * i, b, true);
  });
  return bytes;
}
