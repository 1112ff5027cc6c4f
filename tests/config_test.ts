// models/config.ts against config.json excerpts of real checkpoints of each family, the
// rope_parameters style of newer transformers, and broken files.

import assert from "node:assert/strict";
import { ModelError, parseModelSpec, readModelSpec } from "../models/config.ts";
import { encodeModelConfig } from "../ffi/structs.ts";
import { SYNTHETIC_PRESETS, syntheticSpec } from "../models/synthetic.ts";

const LLAMA_31_8B = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: 128001,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};
const LLAMA_31_GENERATION = { bos_token_id: 128000, eos_token_id: [128001, 128008, 128009] };

const LLAMA_2_7B = {
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  vocab_size: 32000,
};

const MISTRAL_7B_V01 = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  vocab_size: 32000,
};

const QWEN2_05B = {
  architectures: ["Qwen2ForCausalLM"],
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: "silu",
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  use_sliding_window: false,
  vocab_size: 151936,
};
const QWEN2_TOKENIZER_CONFIG = {
  bos_token: null,
  eos_token: "<|endoftext|>",
  add_prefix_space: false,
};

// transformers >= 4.57 style: rope_theta inside rope_parameters; explicit head_dim.
const ROPE_PARAMETERS = {
  architectures: ["LlamaForCausalLM"],
  head_dim: 64,
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_parameters: {
    rope_type: "llama3",
    rope_theta: 500000.0,
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
  },
  tie_word_embeddings: true,
  vocab_size: 128256,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
};

Deno.test("Llama-3.1-8B: llama3 rope scaling, GQA, eos list from generation_config", () => {
  const s = parseModelSpec(
    { config: LLAMA_31_8B, generationConfig: LLAMA_31_GENERATION },
    "llama31",
  );
  assert.equal(s.architecture, "LlamaForCausalLM");
  assert.deepEqual(
    [s.vocabSize, s.hiddenSize, s.intermediateSize, s.nLayers, s.nHeads, s.nKvHeads, s.headDim],
    [128256, 4096, 14336, 32, 32, 8, 128],
  );
  assert.equal(s.maxPosition, 131072);
  assert.equal(s.ropeTheta, 500000);
  assert.deepEqual(s.rope, {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPosition: 8192,
  });
  assert.equal(s.rmsEps, 1e-5);
  assert.equal(s.tieEmbeddings, false);
  assert.equal(s.qkvBias, false);
  assert.equal(s.bosId, 128000);
  assert.deepEqual(s.eosIds, [128001, 128008, 128009]);
  assert.equal(s.addBos, true);
});

Deno.test("Llama-2-7B: MHA, default rope_theta, rope_scaling null", () => {
  const s = parseModelSpec({ config: LLAMA_2_7B, tokenizerConfig: { add_bos_token: true } });
  assert.equal(s.nKvHeads, 32);
  assert.equal(s.headDim, 128);
  assert.equal(s.ropeTheta, 10000);
  assert.equal(s.rope.type, "none");
  assert.equal(s.bosId, 1);
  assert.deepEqual(s.eosIds, [2]);
  assert.equal(s.addBos, true);
});

Deno.test("Mistral-7B-v0.1: sliding window caps the context", () => {
  const s = parseModelSpec({ config: MISTRAL_7B_V01 });
  assert.equal(s.architecture, "MistralForCausalLM");
  assert.equal(s.maxPosition, 4096);
  const v03 = parseModelSpec({ config: { ...MISTRAL_7B_V01, sliding_window: null } });
  assert.equal(v03.maxPosition, 32768);
});

Deno.test("Qwen2-0.5B: qkv bias, tied embeddings, no BOS, unused sliding window", () => {
  const s = parseModelSpec({ config: QWEN2_05B, tokenizerConfig: QWEN2_TOKENIZER_CONFIG });
  assert.equal(s.qkvBias, true);
  assert.equal(s.tieEmbeddings, true);
  assert.equal(s.headDim, 64);
  assert.equal(s.maxPosition, 32768);
  assert.equal(s.addBos, false);
  assert.deepEqual(s.eosIds, [151643]);
  const flags = new DataView(encodeModelConfig(s).buffer).getInt32(60, true);
  assert.equal(flags, 3, "tied | qkv_bias");
});

Deno.test("rope_parameters style with explicit head_dim", () => {
  const s = parseModelSpec({ config: ROPE_PARAMETERS });
  assert.equal(s.ropeTheta, 500000);
  assert.equal(s.rope.type, "llama3");
  assert.equal(s.rope.factor, 32);
  assert.equal(s.headDim, 64);
  assert.deepEqual(s.eosIds, [128001, 128008, 128009]);
  const def = parseModelSpec({
    config: { ...ROPE_PARAMETERS, rope_parameters: { rope_type: "default", rope_theta: 1e6 } },
  });
  assert.equal(def.ropeTheta, 1e6);
  assert.equal(def.rope.type, "none");
});

Deno.test("linear rope scaling and the legacy 'type' key", () => {
  const s = parseModelSpec({
    config: { ...LLAMA_2_7B, rope_scaling: { type: "linear", factor: 2 } },
  });
  assert.equal(s.rope.type, "linear");
  assert.equal(s.rope.factor, 2);
});

Deno.test("bos/eos from tokenizer_config strings when config.json has no ids", () => {
  const config = { ...LLAMA_2_7B, bos_token_id: undefined, eos_token_id: undefined };
  const vocab: Record<string, number> = { "<s>": 1, "</s>": 2 };
  const s = parseModelSpec(
    { config, tokenizerConfig: { bos_token: { content: "<s>" }, eos_token: "</s>" } },
    "x",
    (t) => vocab[t],
  );
  assert.equal(s.bosId, 1);
  assert.deepEqual(s.eosIds, [2]);
  assert.equal(s.addBos, true);
});

function rejects(config: unknown, pattern: RegExp) {
  assert.throws(() => parseModelSpec({ config }, "/m"), (e: unknown) => {
    assert.ok(e instanceof ModelError, `not a ModelError: ${e}`);
    assert.match(e.message, /^\/m\/config\.json: /);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("broken or unsupported configs fail naming the file and the problem", () => {
  rejects([], /not a JSON object/);
  rejects(
    { ...LLAMA_2_7B, architectures: ["GPT2LMHeadModel"] },
    /unsupported architecture "GPT2LMHeadModel"/,
  );
  rejects({ ...LLAMA_2_7B, architectures: undefined, model_type: "gemma" }, /model_type "gemma"/);
  rejects({ ...LLAMA_2_7B, hidden_size: undefined }, /"hidden_size" must be an integer/);
  rejects({ ...LLAMA_2_7B, num_attention_heads: 30 }, /not divisible/);
  rejects({ ...LLAMA_2_7B, num_key_value_heads: 5 }, /not a multiple of num_key_value_heads 5/);
  rejects(
    { ...LLAMA_2_7B, rope_scaling: { rope_type: "yarn", factor: 4 } },
    /unsupported rope type "yarn"/,
  );
  rejects(
    { ...LLAMA_2_7B, rope_scaling: { rope_type: "dynamic", factor: 4 } },
    /unsupported rope type/,
  );
  rejects(
    { ...LLAMA_2_7B, rope_scaling: { rope_type: "llama3", factor: 8 } },
    /"low_freq_factor" must be a number/,
  );
  rejects({ ...LLAMA_2_7B, hidden_act: "gelu" }, /unsupported hidden_act "gelu"/);
  rejects({ ...LLAMA_2_7B, attention_bias: true }, /attention_bias/);
  rejects({ ...LLAMA_2_7B, eos_token_id: 40000 }, /special token id 40000 outside the vocabulary/);
  rejects({ ...LLAMA_2_7B, rms_norm_eps: "1e-5" }, /"rms_norm_eps" must be a number/);
  rejects(
    { ...LLAMA_2_7B, max_position_embeddings: 0 },
    /max_position_embeddings must be a positive int32/,
  );
});

Deno.test("readModelSpec: missing and malformed files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(readModelSpec(dir), /config\.json: cannot read/);
    await Deno.writeTextFile(`${dir}/config.json`, "{ nope");
    await assert.rejects(readModelSpec(dir), /config\.json: invalid JSON/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(QWEN2_05B));
    await Deno.writeTextFile(
      `${dir}/tokenizer_config.json`,
      JSON.stringify(QWEN2_TOKENIZER_CONFIG),
    );
    const s = await readModelSpec(dir);
    assert.equal(s.addBos, false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("synthetic presets build valid specs", () => {
  for (const name of SYNTHETIC_PRESETS) syntheticSpec(name);
  assert.equal(syntheticSpec("llama-3-8b").nKvHeads, 8);
  assert.throws(() => syntheticSpec("gpt-5"), /unknown synthetic model "gpt-5"/);
});
