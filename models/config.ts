// HF config.json (+ generation_config.json, tokenizer_config.json) -> ModelSpec (defined with
// its invariants in model_spec.ts). The parser ends in validateSpec(), like every builder.

import {
  type Architecture,
  ModelError,
  type ModelSpec,
  NO_ROPE_SCALING,
  type RopeSpec,
  validateSpec,
} from "./model_spec.ts";

// The spec types and their checks used to live here; importers of this module still get them.
export * from "./model_spec.ts";

const ARCHITECTURES: Record<string, Architecture> = {
  LlamaForCausalLM: "LlamaForCausalLM",
  MistralForCausalLM: "MistralForCausalLM",
  Qwen2ForCausalLM: "Qwen2ForCausalLM",
};
// Used only when "architectures" is absent.
const MODEL_TYPES: Record<string, Architecture> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
};

type Json = Record<string, unknown>;

export interface ConfigFiles {
  config: unknown; // config.json
  generationConfig?: unknown; // generation_config.json
  tokenizerConfig?: unknown; // tokenizer_config.json
}

/**
 * Builds the spec from parsed JSON. `source` names the directory in errors; `tokenToId`
 * resolves tokenizer_config's bos/eos strings when config.json lacks the ids.
 */
export function parseModelSpec(
  files: ConfigFiles,
  source = ".",
  tokenToId?: (token: string) => number | undefined,
): ModelSpec {
  const file = `${source}/config.json`;
  const fail = (msg: string): never => {
    throw new ModelError(`${file}: ${msg}`);
  };
  if (!isObject(files.config)) fail("not a JSON object");
  const c = files.config as Json;

  const archs = c.architectures;
  let architecture: Architecture | undefined;
  if (Array.isArray(archs) && archs.length > 0) {
    architecture = ARCHITECTURES[String(archs[0])];
    if (!architecture) {
      fail(
        `unsupported architecture ${JSON.stringify(archs[0])} (supported: ${
          Object.keys(ARCHITECTURES).join(", ")
        })`,
      );
    }
  } else {
    architecture = MODEL_TYPES[String(c.model_type)];
    if (!architecture) {
      fail(`no "architectures" and unsupported model_type ${JSON.stringify(c.model_type)}`);
    }
  }
  const int = (key: string, fallback?: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v)) {
      fail(`"${key}" must be an integer, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  const num = (key: string, fallback: number): number => {
    const v = c[key] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v)) {
      fail(`"${key}" must be a number, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };

  const act = c.hidden_act ?? c.hidden_activation ?? "silu";
  if (act !== "silu") fail(`unsupported hidden_act ${JSON.stringify(act)} (only "silu")`);
  if (c.mlp_bias === true) fail(`"mlp_bias": true is unsupported`);
  // Llama's attention_bias also puts a bias on o_proj, which the engine has no slot for.
  if (architecture !== "Qwen2ForCausalLM" && c.attention_bias === true) {
    fail(`"attention_bias": true is unsupported for ${architecture}`);
  }

  const hiddenSize = int("hidden_size");
  const nHeads = int("num_attention_heads");
  const headDimRaw = c.head_dim ?? null;
  if (headDimRaw === null && hiddenSize % nHeads !== 0) {
    fail(
      `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${nHeads} and head_dim is absent`,
    );
  }
  const headDim = headDimRaw === null ? hiddenSize / nHeads : int("head_dim");

  const { theta, rope } = parseRope(c, fail);
  let maxPosition = int("max_position_embeddings");
  // The engine has no sliding-window attention: capping the context at the window keeps the
  // results exact (the mask would never bite) instead of silently differing from HF.
  const window = c.sliding_window;
  const usesWindow = architecture === "MistralForCausalLM" || c.use_sliding_window === true;
  if (usesWindow && typeof window === "number" && window > 0) {
    maxPosition = Math.min(maxPosition, window);
  }

  const ids = specialTokens(files, source, tokenToId);
  const spec: ModelSpec = {
    architecture: architecture!,
    vocabSize: int("vocab_size"),
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads: int("num_key_value_heads", nHeads),
    headDim,
    maxPosition,
    rmsEps: num("rms_norm_eps", 1e-6),
    ropeTheta: theta,
    rope,
    tieEmbeddings: c.tie_word_embeddings === true,
    qkvBias: architecture === "Qwen2ForCausalLM" || c.attention_bias === true,
    ...ids,
  };
  validateSpec(spec, file);
  return spec;
}

function parseRope(c: Json, fail: (m: string) => never): { theta: number; rope: RopeSpec } {
  // transformers >= 4.57 folds rope_theta into rope_parameters; older configs keep both apart.
  const params = c.rope_parameters ?? c.rope_scaling ?? null;
  if (params !== null && !isObject(params)) {
    fail(`"rope_parameters"/"rope_scaling" must be an object or null`);
  }
  const p = (params ?? {}) as Json;
  const theta = p.rope_theta ?? c.rope_theta ?? 10000;
  if (typeof theta !== "number" || !(theta > 0)) {
    fail(`rope_theta must be a positive number, got ${JSON.stringify(theta)}`);
  }
  const type = p.rope_type ?? p.type ?? "default";
  const need = (key: string): number => {
    const v = p[key];
    if (typeof v !== "number" || !Number.isFinite(v)) {
      fail(`rope ${type}: "${key}" must be a number, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  let rope: RopeSpec;
  if (type === "default") rope = NO_ROPE_SCALING;
  else if (type === "linear") rope = { ...NO_ROPE_SCALING, type: "linear", factor: need("factor") };
  else if (type === "llama3") {
    rope = {
      type: "llama3",
      factor: need("factor"),
      lowFreqFactor: need("low_freq_factor"),
      highFreqFactor: need("high_freq_factor"),
      originalMaxPosition: need("original_max_position_embeddings"),
    };
  } else {
    fail(`unsupported rope type ${JSON.stringify(type)} (supported: default, linear, llama3)`);
  }
  return { theta: theta as number, rope: rope! };
}

function specialTokens(
  files: ConfigFiles,
  source: string,
  tokenToId?: (token: string) => number | undefined,
): { bosId: number | null; eosIds: number[]; addBos: boolean } {
  const c = files.config as Json;
  const g = isObject(files.generationConfig) ? files.generationConfig as Json : {};
  const t = isObject(files.tokenizerConfig) ? files.tokenizerConfig as Json : undefined;
  const ids = (v: unknown, what: string): number[] => {
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    for (const x of list) {
      if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
        throw new ModelError(
          `${source}: ${what} must be a token id or a list of them, got ${JSON.stringify(v)}`,
        );
      }
    }
    return list as number[];
  };
  const fromTokenizer = (key: string): number[] => {
    const tok = tokenText(t?.[key]);
    const id = tok === undefined ? undefined : tokenToId?.(tok);
    return id === undefined ? [] : [id];
  };
  const bos = [
    ...ids(g.bos_token_id, "generation_config.json bos_token_id"),
    ...ids(c.bos_token_id, "config.json bos_token_id"),
    ...fromTokenizer("bos_token"),
  ];
  // generation_config's list (e.g. Llama-3.1 instruct's end-of-turn ids) first, then the rest.
  const eos = [
    ...ids(g.eos_token_id, "generation_config.json eos_token_id"),
    ...ids(c.eos_token_id, "config.json eos_token_id"),
    ...fromTokenizer("eos_token"),
  ];
  const bosId = bos[0] ?? null;
  // Without an explicit add_bos_token, tokenizer_config's bos_token says whether one is used
  // (Qwen2 sets it to null and never prepends one although config.json has a bos id).
  let addBos: boolean;
  if (typeof t?.add_bos_token === "boolean") addBos = t.add_bos_token;
  else if (t !== undefined) addBos = tokenText(t.bos_token) !== undefined;
  else addBos = bosId !== null;
  return { bosId, eosIds: [...new Set(eos)], addBos: addBos && bosId !== null };
}

// tokenizer_config writes special tokens as a string or an AddedToken object {content}.
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof (v as Json).content === "string") return (v as Json).content as string;
  return undefined;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads <dir>/config.json, generation_config.json and tokenizer_config.json (both optional). */
export async function readModelSpec(
  dir: string,
  tokenToId?: (token: string) => number | undefined,
): Promise<ModelSpec> {
  const config = await readJson(`${dir}/config.json`, true);
  const generationConfig = await readJson(`${dir}/generation_config.json`, false);
  const tokenizerConfig = await readJson(`${dir}/tokenizer_config.json`, false);
  return parseModelSpec({ config, generationConfig, tokenizerConfig }, dir, tokenToId);
}

/** Parses a JSON file; a missing optional file gives undefined, anything else a ModelError. */
export async function readJson(path: string, required: boolean): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (!required && e instanceof Deno.errors.NotFound) return undefined;
    throw new ModelError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}
