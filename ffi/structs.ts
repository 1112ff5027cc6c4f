// Byte layouts of the nsn.h structs and their DataView encoders/decoders. The offsets below
// follow the C rules (uint64_t fields 8-aligned, struct size rounded to its largest member);
// tests/ffi_layout_test.ts compiles a C program against nsn.h and checks every one of them.
// All values are little-endian (every target we build for is).

import type { ModelSpec } from "../models/config.ts";
import type { EngineInfo, KvKindStats, SamplingParams, TopLogprob } from "../engine/types.ts";
import {
  NSN_MAX_STOP_IDS,
  NSN_MAX_TOP_N,
  NSN_MODEL_QKV_BIAS,
  NSN_MODEL_TIED,
  NsnBackend,
  NsnRopeScaling,
} from "./symbols.ts";

const LE = true;

/** sizeof and offsetof of every field the TS side touches, keyed by the C names. */
export const LAYOUT = {
  nsn_model_config: {
    size: 64,
    fields: {
      vocab_size: 0,
      hidden_size: 4,
      intermediate_size: 8,
      n_layers: 12,
      n_heads: 16,
      n_kv_heads: 20,
      head_dim: 24,
      max_position: 28,
      rms_eps: 32,
      rope_theta: 36,
      rope_scaling: 40,
      rope_factor: 44,
      rope_low_freq_factor: 48,
      rope_high_freq_factor: 52,
      rope_original_max_position: 56,
      flags: 60,
    },
  },
  nsn_engine_options: {
    size: 40,
    fields: {
      backend: 0,
      n_threads: 4,
      max_seqs: 8,
      max_step_tokens: 12,
      kv_pool_bytes: 16, // uint64_t: 8-aligned
      device: 24,
      quant_method: 28,
      ablation: 32,
      debug_checks: 36,
    },
  },
  nsn_engine_info: {
    size: 208,
    fields: {
      backend: 0,
      max_seqs: 4,
      max_step_tokens: 8,
      n_threads: 12,
      kv_pool_bytes: 16,
      n_slabs: 24,
      page_bytes: 32, // uint64_t[3]
      pages_per_slab: 56, // uint64_t[3]
      page_ids: 80, // uint64_t[3]
      token_bytes: 104, // uint64_t[3]
      weight_bytes: 128,
      seqs_in_use: 136,
      graph_steps: 140,
      device_name: 144, // char[64]
    },
  },
  nsn_sampling: {
    size: 80,
    fields: {
      temperature: 0,
      top_p: 4,
      min_p: 8,
      presence_penalty: 12,
      frequency_penalty: 16,
      repetition_penalty: 20,
      top_k: 24,
      n_prompt: 28,
      min_tokens: 32,
      n_stop_ids: 36,
      stop_ids: 40, // int32_t[8]
      seed: 72, // uint64_t: 40 + 32 = 72 is already 8-aligned
    },
  },
  nsn_seq_input: {
    size: 48,
    fields: {
      seq: 0,
      pos0: 4,
      n_tokens: 8,
      token_offset: 12,
      sample: 16,
      want_logprobs: 20,
      next_token: 24,
      page_offset: 28,
      n_pages: 32,
      tail_page: 36,
      history_offset: 40,
      reserved: 44,
    },
  },
  nsn_seq_output: {
    size: 168,
    fields: {
      token: 0,
      logprob: 4,
      top_ids: 8, // int32_t[20]
      top_logprobs: 88, // float[20]
    },
  },
} as const;

const MC = LAYOUT.nsn_model_config.fields;
const EO = LAYOUT.nsn_engine_options.fields;
const EI = LAYOUT.nsn_engine_info.fields;
const SP = LAYOUT.nsn_sampling.fields;
const SI = LAYOUT.nsn_seq_input.fields;
const SO = LAYOUT.nsn_seq_output.fields;

/** Engine creation options (nsn_engine_options); every field optional, 0 = library default. */
export interface EngineOptions {
  backend?: "auto" | "cpu" | "cuda";
  nThreads?: number;
  maxSeqs?: number;
  maxStepTokens?: number;
  kvPoolBytes?: number | bigint;
  device?: number;
  quantMethod?: "nsn" | "rtn";
  ablation?: number; // NSN_ABL_* bits
  debugChecks?: boolean;
}

function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function encodeModelConfig(spec: ModelSpec): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(LAYOUT.nsn_model_config.size);
  const v = view(buf);
  v.setInt32(MC.vocab_size, spec.vocabSize, LE);
  v.setInt32(MC.hidden_size, spec.hiddenSize, LE);
  v.setInt32(MC.intermediate_size, spec.intermediateSize, LE);
  v.setInt32(MC.n_layers, spec.nLayers, LE);
  v.setInt32(MC.n_heads, spec.nHeads, LE);
  v.setInt32(MC.n_kv_heads, spec.nKvHeads, LE);
  v.setInt32(MC.head_dim, spec.headDim, LE);
  v.setInt32(MC.max_position, spec.maxPosition, LE);
  v.setFloat32(MC.rms_eps, spec.rmsEps, LE);
  v.setFloat32(MC.rope_theta, spec.ropeTheta, LE);
  v.setInt32(MC.rope_scaling, NsnRopeScaling[spec.rope.type], LE);
  v.setFloat32(MC.rope_factor, spec.rope.factor, LE);
  v.setFloat32(MC.rope_low_freq_factor, spec.rope.lowFreqFactor, LE);
  v.setFloat32(MC.rope_high_freq_factor, spec.rope.highFreqFactor, LE);
  v.setInt32(MC.rope_original_max_position, spec.rope.originalMaxPosition, LE);
  const flags = (spec.tieEmbeddings ? NSN_MODEL_TIED : 0) | (spec.qkvBias ? NSN_MODEL_QKV_BIAS : 0);
  v.setInt32(MC.flags, flags, LE);
  return buf;
}

export function encodeEngineOptions(o: EngineOptions): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(LAYOUT.nsn_engine_options.size);
  const v = view(buf);
  v.setInt32(EO.backend, NsnBackend[o.backend ?? "auto"], LE);
  v.setInt32(EO.n_threads, o.nThreads ?? 0, LE);
  v.setInt32(EO.max_seqs, o.maxSeqs ?? 0, LE);
  v.setInt32(EO.max_step_tokens, o.maxStepTokens ?? 0, LE);
  v.setBigUint64(EO.kv_pool_bytes, BigInt(o.kvPoolBytes ?? 0), LE);
  v.setInt32(EO.device, o.device ?? 0, LE);
  v.setInt32(EO.quant_method, o.quantMethod === "rtn" ? 1 : 0, LE);
  v.setInt32(EO.ablation, o.ablation ?? 0, LE);
  v.setInt32(EO.debug_checks, o.debugChecks ? 1 : 0, LE);
  return buf;
}

export function newEngineInfoBuffer(): Uint8Array<ArrayBuffer> {
  return new Uint8Array(LAYOUT.nsn_engine_info.size);
}

export function decodeEngineInfo(buf: Uint8Array): EngineInfo {
  const v = view(buf);
  const u64 = (off: number) => Number(v.getBigUint64(off, LE));
  const kind = (i: number): KvKindStats => ({
    pageBytes: u64(EI.page_bytes + 8 * i),
    pagesPerSlab: u64(EI.pages_per_slab + 8 * i),
    tokenBytes: u64(EI.token_bytes + 8 * i),
  });
  const nameBytes = buf.subarray(EI.device_name, EI.device_name + 64);
  const nul = nameBytes.indexOf(0);
  return {
    backend: v.getInt32(EI.backend, LE) === NsnBackend.cuda ? "cuda" : "cpu",
    deviceName: new TextDecoder().decode(nul < 0 ? nameBytes : nameBytes.subarray(0, nul)),
    maxSeqs: v.getInt32(EI.max_seqs, LE),
    maxStepTokens: v.getInt32(EI.max_step_tokens, LE),
    kvPoolBytes: u64(EI.kv_pool_bytes),
    nSlabs: u64(EI.n_slabs),
    weightBytes: u64(EI.weight_bytes),
    seqsInUse: v.getInt32(EI.seqs_in_use, LE),
    graphSteps: v.getInt32(EI.graph_steps, LE),
    kinds: { 16: kind(0), 2: kind(1), 1: kind(2) },
  };
}

/** nsn_sampling plus the logit bias arrays passed next to it. */
export function encodeSampling(p: SamplingParams): {
  params: Uint8Array<ArrayBuffer>;
  biasIds: Int32Array<ArrayBuffer>;
  biasValues: Float32Array<ArrayBuffer>;
} {
  if (p.stopIds.length > NSN_MAX_STOP_IDS) {
    throw new RangeError(`at most ${NSN_MAX_STOP_IDS} stop ids, got ${p.stopIds.length}`);
  }
  const params = new Uint8Array(LAYOUT.nsn_sampling.size);
  const v = view(params);
  v.setFloat32(SP.temperature, p.temperature, LE);
  v.setFloat32(SP.top_p, p.topP, LE);
  v.setFloat32(SP.min_p, p.minP, LE);
  v.setFloat32(SP.presence_penalty, p.presencePenalty, LE);
  v.setFloat32(SP.frequency_penalty, p.frequencyPenalty, LE);
  v.setFloat32(SP.repetition_penalty, p.repetitionPenalty, LE);
  v.setInt32(SP.top_k, p.topK, LE);
  v.setInt32(SP.n_prompt, p.nPrompt, LE);
  v.setInt32(SP.min_tokens, p.minTokens, LE);
  v.setInt32(SP.n_stop_ids, p.stopIds.length, LE);
  p.stopIds.forEach((id, i) => v.setInt32(SP.stop_ids + 4 * i, id, LE));
  v.setBigUint64(SP.seed, BigInt.asUintN(64, p.seed), LE);
  const biasIds = new Int32Array(p.logitBias.size);
  const biasValues = new Float32Array(p.logitBias.size);
  let i = 0;
  for (const [id, value] of p.logitBias) {
    biasIds[i] = id;
    biasValues[i++] = value;
  }
  return { params, biasIds, biasValues };
}

export interface SeqInputRecord {
  seq: number;
  pos0: number;
  nTokens: number;
  tokenOffset: number;
  sample: boolean;
  wantLogprobs: boolean;
  nextToken: number; // -1 unknown
  pageOffset: number;
  nPages: number;
  tailPage: number; // -1 at kv_bits 16
  historyOffset: number; // -1 = no history passed
}

/** Writes element i of an nsn_seq_input array. */
export function writeSeqInput(v: DataView, i: number, r: SeqInputRecord): void {
  const base = i * LAYOUT.nsn_seq_input.size;
  v.setInt32(base + SI.seq, r.seq, LE);
  v.setInt32(base + SI.pos0, r.pos0, LE);
  v.setInt32(base + SI.n_tokens, r.nTokens, LE);
  v.setInt32(base + SI.token_offset, r.tokenOffset, LE);
  v.setInt32(base + SI.sample, r.sample ? 1 : 0, LE);
  v.setInt32(base + SI.want_logprobs, r.wantLogprobs ? 1 : 0, LE);
  v.setInt32(base + SI.next_token, r.nextToken, LE);
  v.setInt32(base + SI.page_offset, r.pageOffset, LE);
  v.setInt32(base + SI.n_pages, r.nPages, LE);
  v.setInt32(base + SI.tail_page, r.tailPage, LE);
  v.setInt32(base + SI.history_offset, r.historyOffset, LE);
  v.setInt32(base + SI.reserved, 0, LE);
}

/** Reads element i of an nsn_seq_output array; topN <= NSN_MAX_TOP_N entries of the top list. */
export function readSeqOutput(
  v: DataView,
  i: number,
  topN: number,
): { token: number; logprob: number; top: TopLogprob[] } {
  const base = i * LAYOUT.nsn_seq_output.size;
  const top: TopLogprob[] = [];
  for (let k = 0; k < Math.min(topN, NSN_MAX_TOP_N); k++) {
    top.push({
      id: v.getInt32(base + SO.top_ids + 4 * k, LE),
      logprob: v.getFloat32(base + SO.top_logprobs + 4 * k, LE),
    });
  }
  return {
    token: v.getInt32(base + SO.token, LE),
    logprob: v.getFloat32(base + SO.logprob, LE),
    top,
  };
}
