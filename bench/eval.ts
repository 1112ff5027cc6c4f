// `deno task eval`: perplexity per KV precision under decode semantics (bench/perplexity.ts).
//
//   deno task eval [--model demo|DIR|synthetic:NAME] [--text FILE] [--ctx 512] [--windows 8]
//                  [--kv-bits 16,2,1] [--baselines rtn] [--ablations no-norm1,no-shift,no-hadamard,fp-s1,fp-mean,no-s2adj,s2-ls]
//                  [--ablation-bits 1] [--backend auto|cpu|cuda] [--threads N] [--json OUT]
//                  [--kv-error]   (adds per-layer K/V reconstruction error of the first window)
//
// Quant method and ablations are engine-wide options, so every variant gets its own engine
// (created, run, closed in turn); kv_bits is per sequence, so one engine serves all the kv_bits
// of a variant in the same batch. The "prefill" row is teacher-forced full-precision scoring:
// the no-quantization reference that the 16-bit decode row must equal.

import { parseArgs } from "node:util";
import type { KvBits } from "../engine/types.ts";
import type { EngineOptions } from "../ffi/structs.ts";
import { loadModel } from "../models/loader.ts";
import { kvReconstructionError, type LayerError } from "./kv_error.ts";
import { decodePerplexity, makeWindows, type PplResult, prefillPerplexity } from "./perplexity.ts";
import { choiceArg, intArg } from "./cli_args.ts";
import { formatTable, num, progressBar, writeJson } from "./report.ts";

export const DEFAULT_TEXT = new URL("../tests/fixtures/brown_heldout.txt", import.meta.url)
  .pathname;

const ABLATION_BITS: Record<string, number> = {
  "no-norm1": 1,
  "no-shift": 2,
  "no-hadamard": 4,
  // CPU reference only (fidelity attribution; see cuda/src/quant/README.md):
  "fp-s1": 8, // s1 in fp32 instead of 4-bit
  "fp-mean": 64, // the window mean in fp32 instead of 4-bit
  "no-s2adj": 16, // store s2, not s2'
  "s2-ls": 32, // store the least-squares scale s2 <y, y^> / |y^|^2
};

export interface EvalOptions {
  model: string;
  text: string; // the text itself (not a path)
  ctx: number;
  windows: number;
  kvBits: KvBits[];
  baselines: string[]; // "rtn"
  ablations: string[]; // "no-norm1", "no-shift+no-hadamard", ...
  ablationBits: KvBits[];
  backend: EngineOptions["backend"];
  threads?: number;
  progress?: boolean;
  /** Also measure per-layer K/V reconstruction error on the first window, per variant. */
  kvError?: boolean;
}

export interface EvalRow {
  variant: string; // "nsn", "rtn", "nsn-no-shift", "prefill"
  method: "nsn" | "rtn" | "prefill";
  ablation: string; // "" or e.g. "no-shift"
  kv_bits: KvBits;
  ppl: number;
  nll: number;
  tokens: number;
  delta_pct: number; // vs the nsn 16-bit decode row; NaN when absent
  kv_bytes_per_token: number;
  nll_by_block: number[];
}

export interface EvalReport {
  model: string;
  backend: string;
  ctx: number;
  windows: number;
  window_rule: string;
  results: EvalRow[];
  kv_error?: (LayerError & { variant: string })[];
}

interface Variant {
  name: string;
  method: "nsn" | "rtn";
  ablation: string;
  bits: KvBits[];
}

function variantsOf(o: EvalOptions): Variant[] {
  const quantized = o.kvBits.filter((b) => b !== 16);
  const out: Variant[] = [{ name: "nsn", method: "nsn", ablation: "", bits: o.kvBits }];
  for (const b of o.baselines) {
    if (b !== "rtn") throw new Error(`unknown baseline "${b}" (known: rtn)`);
    if (quantized.length) out.push({ name: "rtn", method: "rtn", ablation: "", bits: quantized });
  }
  for (const a of o.ablations) {
    for (const part of a.split("+")) {
      if (!(part in ABLATION_BITS)) {
        throw new Error(`unknown ablation "${part}" (known: ${Object.keys(ABLATION_BITS)})`);
      }
    }
    out.push({ name: `nsn-${a}`, method: "nsn", ablation: a, bits: o.ablationBits });
  }
  return out;
}

/** Only as much text as the windows need (cut at a paragraph), so long files tokenize fast. */
function tokenizePrefix(encode: (s: string) => number[], text: string, need: number): number[] {
  let chars = need * 6 + 1024;
  for (;;) {
    if (chars >= text.length) return encode(text);
    const cut = text.indexOf("\n\n", chars);
    if (cut < 0) return encode(text);
    const ids = encode(text.slice(0, cut));
    if (ids.length >= need) return ids;
    chars *= 2;
  }
}

export async function runEval(o: EvalOptions): Promise<EvalReport> {
  const variants = variantsOf(o);
  let backend = "";
  let windows: number[][] = [];
  const rows: EvalRow[] = [];
  const kvErrors: (LayerError & { variant: string })[] = [];
  let bar: ReturnType<typeof progressBar> | null = null;
  try {
    for (const v of variants) {
      using m = await loadModel(o.model, {
        backend: o.backend,
        nThreads: o.threads,
        quantMethod: v.method,
        ablation: v.ablation.split("+").reduce((s, p) => s | (ABLATION_BITS[p] ?? 0), 0),
      });
      const info = m.engine.info();
      backend = `${info.backend} (${info.deviceName})`;
      if (windows.length === 0) {
        const bos = m.spec.addBos ? m.spec.bosId : null;
        if (o.ctx > m.spec.maxPosition) {
          throw new Error(
            `--ctx ${o.ctx} is longer than the model's context (${m.spec.maxPosition} tokens)`,
          );
        }
        const ctx = o.ctx;
        const need = (bos === null ? ctx : ctx - 1) * o.windows;
        const ids = tokenizePrefix((s) => m.tokenizer.encode(s), o.text, need);
        windows = makeWindows(ids, ctx, o.windows, bos);
        if (windows.length < o.windows) {
          console.error(
            `eval: --windows ${o.windows}: the text holds ${windows.length} full windows of ` +
              `${ctx} tokens; using ${windows.length}`,
          );
        }
        const perVariant = windows.reduce((s, w) => s + w.length - 1, 0);
        const total = perVariant * (1 + variants.reduce((s, x) => s + x.bits.length, 0));
        if (o.progress !== false) bar = progressBar("eval", total);
      }
      const onStep = (n: number) => bar?.tick(n);
      if (v.name === "nsn") {
        const r = await prefillPerplexity(m.engine, windows, 16, { onStep });
        rows.push(row("prefill", "prefill", "", 16, r, info.kinds[16].tokenBytes));
      }
      const res = await decodePerplexity(m.engine, windows, v.bits, { onStep });
      for (const [kv, r] of res) {
        rows.push(row(v.name, v.method, v.ablation, kv, r, info.kinds[kv].tokenBytes));
      }
      if (o.kvError) {
        const errs = await kvReconstructionError(m.engine, windows[0], v.bits);
        kvErrors.push(...errs.map((e) => ({ variant: v.name, ...e })));
      }
    }
  } finally {
    bar?.stop();
  }
  const base = rows.find((r) => r.variant === "nsn" && r.kv_bits === 16);
  for (const r of rows) r.delta_pct = base ? (r.ppl / base.ppl - 1) * 100 : NaN;
  return {
    model: o.model,
    backend,
    ctx: windows[0].length,
    windows: windows.length,
    window_rule: "window = [BOS] + (ctx-1) text tokens (ctx text tokens without BOS); " +
      "consecutive non-overlapping; ctx-1 predictions per window",
    results: rows,
    ...(o.kvError ? { kv_error: kvErrors } : {}),
  };
}

function row(
  variant: string,
  method: EvalRow["method"],
  ablation: string,
  kv: KvBits,
  r: PplResult,
  kvBytesPerToken: number,
): EvalRow {
  return {
    variant,
    method,
    ablation,
    kv_bits: kv,
    ppl: r.ppl,
    nll: r.nll,
    tokens: r.tokens,
    delta_pct: NaN,
    kv_bytes_per_token: kvBytesPerToken,
    nll_by_block: r.nllByBlock,
  };
}

export function formatEval(rep: EvalReport): string {
  const head = `model ${rep.model} | ${rep.backend} | ctx ${rep.ctx} | ${rep.windows} windows`;
  const table = formatTable(
    ["variant", "kv_bits", "ppl", "delta vs 16-bit", "tokens", "KV bytes/token"],
    rep.results.map((r) => [
      r.variant === "prefill" ? "prefill (teacher-forced, no quant)" : r.variant,
      String(r.kv_bits),
      num(r.ppl, 4),
      Number.isFinite(r.delta_pct) ? `${r.delta_pct >= 0 ? "+" : ""}${num(r.delta_pct, 2)}%` : "-",
      String(r.tokens),
      String(r.kv_bytes_per_token),
    ]),
  );
  if (!rep.kv_error?.length) return `${head}\n${table}`;
  const errTable = formatTable(
    ["variant", "kv_bits", "layer", "K rel err", "V rel err", "K cos", "V cos"],
    rep.kv_error.map((e) => [
      e.variant,
      String(e.kvBits),
      String(e.layer),
      num(e.kRelErr, 4),
      num(e.vRelErr, 4),
      num(e.kCos, 4),
      num(e.vCos, 4),
    ]),
  );
  return `${head}\n${table}\n\nKV reconstruction error (first window, encoded tokens)\n${errTable}`;
}

function list(s: string): string[] {
  return s.split(",").map((x) => x.trim()).filter((x) => x !== "" && x !== "none");
}

export function parseKvBits(s: string): KvBits[] {
  const bits = list(s);
  if (bits.length === 0) throw new Error(`kv bits: give at least one of 16, 2, 1`);
  return bits.map((x) => {
    const n = Number(x);
    if (n !== 16 && n !== 2 && n !== 1) throw new Error(`kv bits must be 16, 2 or 1, got "${x}"`);
    return n as KvBits;
  });
}

async function main(args: string[]): Promise<void> {
  const { values: f } = parseArgs({
    args,
    options: {
      model: { type: "string", default: "demo" },
      text: { type: "string", default: DEFAULT_TEXT },
      ctx: { type: "string", default: "512" },
      windows: { type: "string", default: "8" },
      "kv-bits": { type: "string", default: "16,2,1" },
      baselines: { type: "string", default: "" },
      ablations: { type: "string", default: "" },
      "ablation-bits": { type: "string", default: "1" },
      backend: { type: "string", default: "auto" },
      threads: { type: "string" },
      json: { type: "string" },
      "kv-error": { type: "boolean", default: false },
      "no-progress": { type: "boolean", default: false },
      help: { type: "boolean", short: "h" },
    },
  });
  if (f.help) {
    console.log(
      "deno task eval [--model demo|DIR|synthetic:NAME] [--text FILE] [--ctx 512] [--windows 8]\n" +
        "  [--kv-bits 16,2,1] [--baselines rtn] [--ablations no-norm1,no-shift,no-hadamard,fp-s1,fp-mean,no-s2adj,s2-ls]\n" +
        "  [--ablation-bits 1] [--backend auto|cpu|cuda] [--threads N] [--json OUT] [--kv-error]\n" +
        "  [--no-progress]\n\n" +
        "Perplexity of the model over --windows windows of --ctx tokens of --text, with the KV\n" +
        "cache at each --kv-bits (16 = fp16), plus RTN baselines and NSN ablations if asked.\n" +
        "The progress bar goes to stderr; --no-progress leaves it out (logs, CI).",
    );
    return;
  }
  const backend = choiceArg("backend", f.backend, ["auto", "cpu", "cuda"] as const);
  const rep = await runEval({
    model: f.model,
    text: await Deno.readTextFile(f.text),
    ctx: intArg("ctx", f.ctx, 2)!,
    windows: intArg("windows", f.windows, 1)!,
    kvBits: parseKvBits(f["kv-bits"]),
    baselines: list(f.baselines),
    ablations: list(f.ablations),
    ablationBits: parseKvBits(f["ablation-bits"]),
    backend,
    threads: intArg("threads", f.threads, 1),
    kvError: f["kv-error"],
    progress: !f["no-progress"],
  });
  console.log(formatEval(rep));
  if (f.json) await writeJson(f.json, rep);
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`eval: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
