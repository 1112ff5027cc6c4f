// ModelSpec, the one TS description of a model, and its invariants. It mirrors
// nsn_model_config (ffi/structs.ts encodes it) plus the special-token facts the server needs.
// Every builder (models/config.ts from config.json, models/synthetic.ts from presets) goes
// through validateSpec().

export type Architecture = "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM";

export interface RopeSpec {
  type: "none" | "llama3" | "linear";
  factor: number; // llama3 / linear
  lowFreqFactor: number; // llama3
  highFreqFactor: number; // llama3
  originalMaxPosition: number; // llama3
}

export interface ModelSpec {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  maxPosition: number; // longest sequence the engine accepts (tokens)
  rmsEps: number;
  ropeTheta: number;
  rope: RopeSpec;
  tieEmbeddings: boolean; // lm_head shares embed_tokens
  qkvBias: boolean; // q/k/v projections carry a bias (Qwen2)
  bosId: number | null;
  eosIds: number[]; // any of them ends a sequence; may be empty
  addBos: boolean; // prepend bosId to prompts (encode() never adds special tokens)
}

/** A model file that cannot be used; the message names the file and the problem. */
export class ModelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelError";
  }
}

export const NO_ROPE_SCALING: RopeSpec = {
  type: "none",
  factor: 1,
  lowFreqFactor: 1,
  highFreqFactor: 1,
  originalMaxPosition: 0,
};

/** The invariants every ModelSpec satisfies; throws ModelError naming `source`. */
export function validateSpec(s: ModelSpec, source: string): void {
  const fail = (msg: string): never => {
    throw new ModelError(`${source}: ${msg}`);
  };
  const positive = {
    vocab_size: s.vocabSize,
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.nLayers,
    num_attention_heads: s.nHeads,
    num_key_value_heads: s.nKvHeads,
    head_dim: s.headDim,
    max_position_embeddings: s.maxPosition,
  };
  for (const [k, v] of Object.entries(positive)) {
    if (!Number.isInteger(v) || v <= 0 || v > 2 ** 31 - 1) {
      fail(`${k} must be a positive int32, got ${v}`);
    }
  }
  if (s.nHeads % s.nKvHeads !== 0) {
    fail(`num_attention_heads ${s.nHeads} is not a multiple of num_key_value_heads ${s.nKvHeads}`);
  }
  if (s.headDim % 2 !== 0) fail(`head_dim ${s.headDim} must be even (RoPE rotates pairs)`);
  if (!(s.rmsEps > 0)) fail(`rms_norm_eps must be > 0, got ${s.rmsEps}`);
  if (!(s.ropeTheta > 0)) fail(`rope_theta must be > 0, got ${s.ropeTheta}`);
  const r = s.rope;
  if (r.type !== "none" && !(r.factor > 0)) fail(`rope factor must be > 0, got ${r.factor}`);
  if (r.type === "llama3") {
    if (!(r.lowFreqFactor > 0 && r.highFreqFactor > r.lowFreqFactor)) {
      fail(
        `llama3 rope needs 0 < low_freq_factor < high_freq_factor, got ${r.lowFreqFactor}, ${r.highFreqFactor}`,
      );
    }
    if (!(Number.isInteger(r.originalMaxPosition) && r.originalMaxPosition > 0)) {
      fail(`llama3 rope needs original_max_position_embeddings > 0, got ${r.originalMaxPosition}`);
    }
  }
  for (const id of [s.bosId ?? 0, ...s.eosIds]) {
    if (id < 0 || id >= s.vocabSize) {
      fail(`special token id ${id} outside the vocabulary (${s.vocabSize})`);
    }
  }
}
