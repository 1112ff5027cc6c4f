// models/loader.ts: HF tensor names -> slots, shape and name checks (no native code needed),
// and full loads through the CPU backend: the same weights stored as F32, F16 and BF16 give
// identical logits, and tied / qkv-bias models load.

import { DirectKv } from "../engine/direct_kv.ts";
import assert from "node:assert/strict";
import { ModelError, parseModelSpec } from "../models/config.ts";
import { checkWeights, expectedWeights, loadModel, readModelDir } from "../models/loader.ts";
import { openSafetensors } from "../models/safetensors.ts";
import { TINY_CONFIG, type TinyOptions, writeTinyModel } from "./tiny_hf_model.ts";

const haveLib = Deno.env.has("NSN_LIB") ||
  await exists(new URL("../cuda/Makefile", import.meta.url).pathname);

async function exists(p: string): Promise<boolean> {
  try {
    await Deno.stat(p);
    return true;
  } catch {
    return false;
  }
}

async function withModel(opts: TinyOptions, fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "tiny_hf_" });
  try {
    await writeTinyModel(dir, opts);
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function weightError(opts: TinyOptions): Promise<string> {
  let message = "";
  await withModel(opts, async (dir) => {
    const { spec } = await readModelDir(dir);
    using st = await openSafetensors(dir);
    try {
      checkWeights(dir, spec, st);
    } catch (e) {
      assert.ok(e instanceof ModelError);
      message = e.message;
    }
  });
  return message;
}

Deno.test("expectedWeights: names, slots and shapes per family", () => {
  const llama = parseModelSpec({ config: TINY_CONFIG });
  const w = expectedWeights(llama);
  assert.equal(w.length, 2 * 9 + 3);
  assert.deepEqual(w.find((x) => x.name === "model.layers.1.self_attn.k_proj.weight"), {
    name: "model.layers.1.self_attn.k_proj.weight",
    slot: 5,
    layer: 1,
    shape: [64, 128],
  });
  assert.deepEqual(w.find((x) => x.name === "lm_head.weight")?.shape, [260, 128]);
  const qwen = parseModelSpec({
    config: { ...TINY_CONFIG, architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true },
  });
  const q = expectedWeights(qwen);
  assert.equal(q.length, 2 * 12 + 2, "3 biases per layer, no lm_head");
  assert.deepEqual(q.find((x) => x.name === "model.layers.0.self_attn.q_proj.bias")?.shape, [128]);
});

Deno.test("checkWeights: missing, misshapen and unexpected tensors are named", async () => {
  const missing = await weightError({
    edit: (l) => l.filter((t) => t.name !== "model.layers.1.mlp.up_proj.weight"),
  });
  assert.match(
    missing,
    /missing tensor model\.layers\.1\.mlp\.up_proj\.weight \(expected shape \[256,128\]\)/,
  );
  const shape = await weightError({
    edit: (l) => l.map((t) => t.name === "model.norm.weight" ? { ...t, shape: [127] } : t),
  });
  assert.match(shape, /tensor model\.norm\.weight: expected shape \[128\], got \[127\]/);
  const extra = await weightError({
    edit: (l) => [...l, { name: "model.layers.0.self_attn.o_proj.bias", shape: [128] }],
  });
  assert.match(extra, /unexpected tensors model\.layers\.0\.self_attn\.o_proj\.bias/);
  // Tied checkpoints that still store lm_head.weight load; so do old rotary caches.
  const tied = await weightError({
    config: { tie_word_embeddings: true },
    edit: (l) => [...l, { name: "lm_head.weight", shape: [260, 128] }, {
      name: "model.layers.0.self_attn.rotary_emb.inv_freq",
      shape: [32],
    }],
  });
  assert.equal(tied, "");
});

Deno.test("readModelDir: tokenizer larger than the model vocabulary is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(dir);
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...cfg, vocab_size: 258, eos_token_id: 1, bos_token_id: 0 }),
    );
    await assert.rejects(
      readModelDir(dir),
      /tokenizer\.json has 259 tokens but config\.json vocab_size is 258/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function lastLogits(dir: string): Promise<Float32Array> {
  using m = await loadModel(dir, { backend: "cpu", nThreads: 2, maxSeqs: 2, maxStepTokens: 64 });
  const kv = new DirectKv(m.engine);
  const seq = kv.create(16);
  const ids = [m.spec.bosId!, ...m.tokenizer.encode("hello there")];
  const r = await kv.step([{ seq, tokens: ids }], { topN: 0, logits: true });
  return r.logits!.slice((ids.length - 1) * m.spec.vocabSize);
}

Deno.test({
  name: "loadModel: F32, F16 and BF16 files of the same weights give the same logits",
  ignore: !haveLib,
  async fn() {
    const results: Float32Array[] = [];
    for (const dtype of ["BF16", "F16", "F32"] as const) {
      await withModel({ dtype }, async (dir) => {
        results.push(await lastLogits(dir));
      });
    }
    let worst = 0;
    for (const r of results.slice(1)) {
      for (let i = 0; i < r.length; i++) worst = Math.max(worst, Math.abs(r[i] - results[0][i]));
    }
    console.log(`worst logit difference across dtypes: ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-4);
    assert.ok(results[0].some((x) => x !== 0));
  },
});

Deno.test({
  name: "loadModel: tied embeddings + qkv bias (Qwen2) load and run",
  ignore: !haveLib,
  async fn() {
    await withModel({
      config: { architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true },
    }, async (dir) => {
      const logits = await lastLogits(dir);
      assert.ok(logits.every(Number.isFinite));
    });
  },
});

Deno.test("loadModel: errors before any native work", async () => {
  await assert.rejects(loadModel("synthetic:nope"), /unknown synthetic model "nope"/);
  await assert.rejects(loadModel("/nonexistent/model"), /tokenizer\.json/);
});
