// loadModel(): a model name -> spec + tokenizer + a finalized NativeEngine with its weights.
//   "demo"            models/demo (the shipped tiny model)
//   "synthetic:NAME"  random weights with real shapes (models/synthetic.ts), byte tokenizer
//   any directory     an HF checkpoint: config.json, tokenizer.json, *.safetensors
// HF tensor names map to nsn.h weight slots; shapes are checked against the spec before any
// byte is uploaded, and tensors are read and uploaded one at a time to bound host memory.

import { type NsnLibrary, openLibrary } from "../ffi/library.ts";
import { NativeEngine } from "../ffi/native_engine.ts";
import type { EngineOptions } from "../ffi/structs.ts";
import { NsnDtype, NsnSlot } from "../ffi/symbols.ts";
import { type ChatTemplate, loadChatTemplate } from "./chat_template.ts";
import { ModelError, type ModelSpec, readModelSpec } from "./config.ts";
import { openSafetensors, type SafetensorsSet } from "./safetensors.ts";
import { syntheticSpec } from "./synthetic.ts";
import { ByteTokenizer, loadTokenizer, type TextTokenizer } from "./tokenizer.ts";

export const DEMO_DIR = new URL("./demo", import.meta.url).pathname;

export interface LoadOptions extends EngineOptions {
  lib?: NsnLibrary; // default: openLibrary()
  seed?: bigint; // synthetic weights
  onProgress?: (done: number, total: number, tensor: string) => void;
}

export interface LoadedModel extends Disposable {
  name: string; // as given ("demo", "synthetic:tiny", a path)
  spec: ModelSpec;
  tokenizer: TextTokenizer;
  /** null: the model has none (synthetic, the demo), so /v1/chat/completions answers 400. */
  chatTemplate: ChatTemplate | null;
  engine: NativeEngine;
  close(): void;
}

/** One weight the engine needs: where it comes from, where it goes, its shape. */
export interface WeightEntry {
  name: string; // HF tensor name
  slot: number; // nsn_weight_slot
  layer: number; // -1 for globals
  shape: number[];
}

/** Every tensor an HF checkpoint of this spec must provide, in upload order. */
export function expectedWeights(s: ModelSpec): WeightEntry[] {
  const q = s.nHeads * s.headDim;
  const kv = s.nKvHeads * s.headDim;
  const out: WeightEntry[] = [
    {
      name: "model.embed_tokens.weight",
      slot: NsnSlot.EMBED,
      layer: -1,
      shape: [s.vocabSize, s.hiddenSize],
    },
  ];
  for (let l = 0; l < s.nLayers; l++) {
    const p = `model.layers.${l}.`;
    const w = (name: string, slot: number, shape: number[]) =>
      out.push({ name: p + name, slot, layer: l, shape });
    w("input_layernorm.weight", NsnSlot.ATTN_NORM, [s.hiddenSize]);
    w("self_attn.q_proj.weight", NsnSlot.Q, [q, s.hiddenSize]);
    w("self_attn.k_proj.weight", NsnSlot.K, [kv, s.hiddenSize]);
    w("self_attn.v_proj.weight", NsnSlot.V, [kv, s.hiddenSize]);
    if (s.qkvBias) {
      w("self_attn.q_proj.bias", NsnSlot.Q_BIAS, [q]);
      w("self_attn.k_proj.bias", NsnSlot.K_BIAS, [kv]);
      w("self_attn.v_proj.bias", NsnSlot.V_BIAS, [kv]);
    }
    w("self_attn.o_proj.weight", NsnSlot.O, [s.hiddenSize, q]);
    w("post_attention_layernorm.weight", NsnSlot.MLP_NORM, [s.hiddenSize]);
    w("mlp.gate_proj.weight", NsnSlot.GATE, [s.intermediateSize, s.hiddenSize]);
    w("mlp.up_proj.weight", NsnSlot.UP, [s.intermediateSize, s.hiddenSize]);
    w("mlp.down_proj.weight", NsnSlot.DOWN, [s.hiddenSize, s.intermediateSize]);
  }
  out.push({
    name: "model.norm.weight",
    slot: NsnSlot.FINAL_NORM,
    layer: -1,
    shape: [s.hiddenSize],
  });
  if (!s.tieEmbeddings) {
    out.push({
      name: "lm_head.weight",
      slot: NsnSlot.LM_HEAD,
      layer: -1,
      shape: [s.vocabSize, s.hiddenSize],
    });
  }
  return out;
}

// Present in some checkpoints, not needed: old rotary caches, a duplicate of tied embeddings.
const IGNORED = /^(model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq|lm_head\.weight)$/;

/** Checks names and shapes of every tensor against the spec; throws one error listing problems. */
export function checkWeights(dir: string, spec: ModelSpec, st: SafetensorsSet): WeightEntry[] {
  const want = expectedWeights(spec);
  const problems: string[] = [];
  for (const w of want) {
    const t = st.tensors.get(w.name);
    if (!t) problems.push(`missing tensor ${w.name} (expected shape [${w.shape}])`);
    else if (t.shape.join(",") !== w.shape.join(",")) {
      problems.push(`tensor ${w.name}: expected shape [${w.shape}], got [${t.shape}]`);
    }
  }
  const known = new Set(want.map((w) => w.name));
  const unknown = [...st.tensors.keys()].filter((n) => !known.has(n) && !IGNORED.test(n));
  if (unknown.length > 0) {
    const more = unknown.length > 5 ? ` and ${unknown.length - 5} more` : "";
    problems.push(`unexpected tensors ${unknown.slice(0, 5).join(", ")}${more}`);
  }
  if (problems.length > 0) {
    const more = problems.length > 10 ? `\n  ... ${problems.length - 10} more` : "";
    throw new ModelError(
      `${dir}: weights do not match config.json:\n  ${problems.slice(0, 10).join("\n  ")}${more}`,
    );
  }
  return want;
}

/** Spec and tokenizer of a model directory, without weights or an engine. */
export async function readModelDir(
  dir: string,
): Promise<{ spec: ModelSpec; tokenizer: TextTokenizer }> {
  const stat = await Deno.stat(dir).catch(() => null);
  if (!stat?.isDirectory) {
    throw new ModelError(
      `${dir}: not a model directory (expected config.json, tokenizer.json, *.safetensors)`,
    );
  }
  const tokenizer = await loadTokenizer(dir);
  const spec = await readModelSpec(dir, (t) => tokenizer.tokenToId(t));
  if (tokenizer.vocabSize > spec.vocabSize) {
    throw new ModelError(
      `${dir}: tokenizer.json has ${tokenizer.vocabSize} tokens but config.json vocab_size is ${spec.vocabSize}`,
    );
  }
  return { spec, tokenizer };
}

export async function loadModel(name: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const { lib: givenLib, seed, onProgress, ...engineOptions } = options;
  const synthetic = name.startsWith("synthetic:") ? name.slice("synthetic:".length) : null;
  const dir = name === "demo" ? DEMO_DIR : name;

  let spec: ModelSpec;
  let tokenizer: TextTokenizer;
  let chatTemplate: ChatTemplate | null = null;
  let st: SafetensorsSet | null = null;
  let weights: WeightEntry[] = [];
  if (synthetic !== null) {
    spec = syntheticSpec(synthetic);
    tokenizer = new ByteTokenizer(spec.vocabSize);
  } else {
    ({ spec, tokenizer } = await readModelDir(dir));
    const text = (id: number | undefined) => id === undefined ? undefined : tokenizer.tokenText(id);
    chatTemplate = await loadChatTemplate(dir, {
      bos: text(spec.bosId ?? undefined),
      eos: text(spec.eosIds[0]),
    });
    st = await openSafetensors(dir);
  }
  try {
    if (st) weights = checkWeights(dir, spec, st);
    const lib = givenLib ?? await openLibrary();
    const engine = NativeEngine.create(lib, spec, engineOptions);
    try {
      if (st) await uploadWeights(engine, st, weights, onProgress);
      else await engine.initRandom(seed ?? 0n);
      await engine.finalize();
    } catch (e) {
      engine.close();
      throw e;
    }
    const close = () => {
      tokenizer.close?.();
      engine.close();
    };
    return { name, spec, tokenizer, chatTemplate, engine, close, [Symbol.dispose]: close };
  } finally {
    st?.close();
  }
}

async function uploadWeights(
  engine: NativeEngine,
  st: SafetensorsSet,
  weights: WeightEntry[],
  onProgress?: (done: number, total: number, tensor: string) => void,
): Promise<void> {
  for (const [i, w] of weights.entries()) {
    const t = st.get(w.name);
    const data = await st.read(w.name);
    const n = w.shape.reduce((a, b) => a * b, 1);
    await engine.setWeight(w.slot, w.layer, NsnDtype[t.dtype], data, n);
    onProgress?.(i + 1, weights.length, w.name);
  }
}
