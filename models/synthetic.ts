// Random-weight models with the shapes of real HF checkpoints, for benchmarks on machines that
// have no weights: `--model synthetic:llama-3-8b`. The engine fills the weights itself
// (nsn_engine_init_random), so nothing is read from disk. They have no tokenizer: the loader
// gives them models/tokenizer.ts ByteTokenizer (ids 0..255 = UTF-8 bytes, others "<id>").

import { ModelError, type ModelSpec, NO_ROPE_SCALING, validateSpec } from "./model_spec.ts";

type Preset = Omit<ModelSpec, "rope" | "architecture" | "qkvBias" | "addBos"> & Partial<ModelSpec>;

const LLAMA3_ROPE = {
  type: "llama3",
  lowFreqFactor: 1,
  highFreqFactor: 4,
  originalMaxPosition: 8192,
} as const;

// Meta-Llama-3-8B
const LLAMA3_8B: Preset = {
  vocabSize: 128256,
  hiddenSize: 4096,
  intermediateSize: 14336,
  nLayers: 32,
  nHeads: 32,
  nKvHeads: 8,
  headDim: 128,
  maxPosition: 8192,
  rmsEps: 1e-5,
  ropeTheta: 500000,
  tieEmbeddings: false,
  bosId: 128000,
  eosIds: [128001],
};

// Values copied from each model's config.json (shapes, eps, theta, special ids).
const PRESETS: Record<string, Preset> = {
  "llama-3-8b": LLAMA3_8B,
  // Llama-3.1-8B: as above with llama3 rope scaling and a 128K context
  "llama-3.1-8b": { ...LLAMA3_8B, maxPosition: 131072, rope: { ...LLAMA3_ROPE, factor: 8 } },
  // Llama-3.2-1B
  "llama-3.2-1b": {
    vocabSize: 128256,
    hiddenSize: 2048,
    intermediateSize: 8192,
    nLayers: 16,
    nHeads: 32,
    nKvHeads: 8,
    headDim: 64,
    maxPosition: 131072,
    rmsEps: 1e-5,
    ropeTheta: 500000,
    rope: { ...LLAMA3_ROPE, factor: 32 },
    tieEmbeddings: true,
    bosId: 128000,
    eosIds: [128001],
  },
  // Llama-2-7b-hf
  "llama-2-7b": {
    vocabSize: 32000,
    hiddenSize: 4096,
    intermediateSize: 11008,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 32,
    headDim: 128,
    maxPosition: 4096,
    rmsEps: 1e-5,
    ropeTheta: 10000,
    tieEmbeddings: false,
    bosId: 1,
    eosIds: [2],
  },
  // Mistral-7B-v0.3 (no sliding window, unlike v0.1)
  "mistral-7b": {
    architecture: "MistralForCausalLM",
    vocabSize: 32768,
    hiddenSize: 4096,
    intermediateSize: 14336,
    nLayers: 32,
    nHeads: 32,
    nKvHeads: 8,
    headDim: 128,
    maxPosition: 32768,
    rmsEps: 1e-5,
    ropeTheta: 1000000,
    tieEmbeddings: false,
    bosId: 1,
    eosIds: [2],
  },
  // Qwen2.5-0.5B (Qwen2 architecture: q/k/v bias, tied embeddings, no BOS)
  "qwen2-0.5b": {
    architecture: "Qwen2ForCausalLM",
    qkvBias: true,
    vocabSize: 151936,
    hiddenSize: 896,
    intermediateSize: 4864,
    nLayers: 24,
    nHeads: 14,
    nKvHeads: 2,
    headDim: 64,
    maxPosition: 32768,
    rmsEps: 1e-6,
    ropeTheta: 1000000,
    tieEmbeddings: true,
    bosId: null,
    eosIds: [151643],
  },
  // For tests: small enough for the CPU backend, GQA 2:1, two KV windows fit many times.
  "tiny": {
    vocabSize: 512,
    hiddenSize: 256,
    intermediateSize: 512,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 64,
    maxPosition: 2048,
    rmsEps: 1e-5,
    ropeTheta: 10000,
    tieEmbeddings: false,
    bosId: 256,
    eosIds: [257],
  },
};

export const SYNTHETIC_PRESETS: readonly string[] = Object.keys(PRESETS);

/** The spec of preset `name` (as in "synthetic:NAME"). */
export function syntheticSpec(name: string): ModelSpec {
  const p = PRESETS[name];
  if (!p) {
    throw new ModelError(
      `unknown synthetic model "${name}" (presets: ${SYNTHETIC_PRESETS.join(", ")})`,
    );
  }
  const spec: ModelSpec = {
    architecture: "LlamaForCausalLM",
    rope: NO_ROPE_SCALING,
    qkvBias: false,
    addBos: p.bosId !== null,
    ...p,
  };
  validateSpec(spec, `synthetic:${name}`);
  return spec;
}
