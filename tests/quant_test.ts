// NSNQuant on the CPU: the C++ unit tests (cuda/tests/test_quant.cpp, built here with g++), the
// standalone quantizer ABI through FFI checked against independent TS references (RoPE
// convention, exact attention), and real K/V from the demo model when it is present.

import { cacheOf, DirectKv } from "../engine/direct_kv.ts";
import assert from "node:assert/strict";
import { openLibrary } from "../ffi/library.ts";
import { DEMO_DIR, loadModel } from "../models/loader.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const NSN_E_INVALID = 1;

/** Deterministic N(0,1) samples (mulberry32 + Box-Muller); only test data. */
function gaussian(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = scale * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  }
  return out;
}

/** HF rotate_half RoPE of rows x [n][d] at positions pos0 + t (sign -1: the inverse rotation). */
function rope(x: Float32Array, d: number, theta: number, pos0: number, sign = 1): Float32Array {
  const out = new Float32Array(x);
  const h = d / 2;
  for (let t = 0; t < x.length / d; t++) {
    for (let i = 0; i < h; i++) {
      const invFreq = Math.fround(1 / Math.pow(theta, (2 * i) / d));
      const ang = Math.fround((pos0 + t) * invFreq);
      const c = Math.cos(ang), s = sign * Math.sin(ang);
      const a = x[t * d + i], b = x[t * d + i + h];
      out[t * d + i] = a * c - b * s;
      out[t * d + i + h] = b * c + a * s;
    }
  }
  return out;
}

function meanCos(a: Float32Array, b: Float32Array, d: number): number {
  let sum = 0;
  for (let t = 0; t < a.length / d; t++) {
    let ab = 0, aa = 0, bb = 0;
    for (let c = t * d; c < (t + 1) * d; c++) {
      ab += a[c] * b[c];
      aa += a[c] * a[c];
      bb += b[c] * b[c];
    }
    sum += ab / Math.sqrt(aa * bb + 1e-30);
  }
  return sum / (a.length / d);
}

/** softmax(q k^T / sqrt(d)) v in float64; k post-RoPE. */
function exactAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  d: number,
): Float64Array {
  const n = k.length / d, nq = q.length / d;
  const out = new Float64Array(nq * d);
  for (let i = 0; i < nq; i++) {
    const s = new Float64Array(n);
    for (let t = 0; t < n; t++) {
      for (let c = 0; c < d; c++) s[t] += q[i * d + c] * k[t * d + c];
      s[t] /= Math.sqrt(d);
    }
    const m = Math.max(...s);
    let l = 0;
    for (let t = 0; t < n; t++) {
      const w = Math.exp(s[t] - m);
      l += w;
      for (let c = 0; c < d; c++) out[i * d + c] += w * v[t * d + c];
    }
    for (let c = 0; c < d; c++) out[i * d + c] /= l;
  }
  return out;
}

function relL2(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let e = 0, n = 0;
  for (let i = 0; i < ref.length; i++) {
    e += (a[i] - ref[i]) ** 2;
    n += ref[i] ** 2;
  }
  return Math.sqrt(e / n);
}

Deno.test("quantizer C++ unit tests (cuda/tests/test_quant.cpp)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsn_quant_" });
  try {
    const srcs = [...Deno.readDirSync(`${ROOT}cuda/src/quant`)]
      .filter((e) => e.name.endsWith(".cpp")).map((e) => `${ROOT}cuda/src/quant/${e.name}`).sort();
    const exe = `${dir}/test_quant`;
    const dec = new TextDecoder();
    const build = await new Deno.Command("g++", {
      args: [
        "-std=c++17",
        "-O2",
        "-Wall",
        "-Wextra",
        "-o",
        exe,
        `${ROOT}cuda/tests/test_quant.cpp`,
        ...srcs,
        `${ROOT}cuda/src/errors.cpp`,
        "-pthread",
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const buildLog = dec.decode(build.stdout) + dec.decode(build.stderr);
    assert.equal(build.code, 0, buildLog);
    assert.ok(!/warning:/.test(buildLog), buildLog);
    const run = await new Deno.Command(exe, { stdout: "piped", stderr: "piped" }).output();
    const out = dec.decode(run.stdout) + dec.decode(run.stderr);
    assert.equal(run.code, 0, out);
    console.log(out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("quantizer ABI through FFI", async (t) => {
  const lib = await openLibrary();
  const f = lib.symbols;

  await t.step("nsn_codebook returns the committed tables", async () => {
    const text = await Deno.readTextFile(`${ROOT}cuda/src/quant/codebooks.cpp`);
    for (const bits of [1, 2]) {
      const body = text.split(`kCodebook${bits}[256 * 8] = {`)[1].split("};")[0];
      const want = Float32Array.from(
        body.split("\n").map((l) => l.replace(/\/\/.*/, "")).join(" ").match(
          /-?[0-9.]+(e-?[0-9]+)?f/g,
        )!
          .map((s) => parseFloat(s)),
      );
      const got = new Float32Array(256 * 8);
      lib.check(f.nsn_codebook(bits, got), "nsn_codebook");
      assert.deepEqual(got, want);
      if (bits === 2) assert.ok(got.every((v) => v >= 0), "C2 lies in the positive orthant");
    }
  });

  await t.step("round trip: keys come back post-RoPE (HF rotate_half), quality per bits", () => {
    const d = 128, n = 128, theta = 10000, pos0 = 1000;
    const x = gaussian(n * d, 1);
    for (const bits of [1, 2]) {
      const floor = bits === 1 ? 0.8 : 0.94; // codebook ceiling: 0.823 / 0.951 (tools/gen_codebooks.ts)
      for (const isKey of [1, 0]) {
        const xh = new Float32Array(n * d);
        lib.check(f.nsn_quant_roundtrip(bits, 0, 0, d, isKey, theta, pos0, x, n, xh), "roundtrip");
        const ref = isKey ? rope(x, d, theta, pos0) : x;
        const cos = meanCos(ref, xh, d);
        assert.ok(cos > floor, `bits ${bits} key ${isKey}: cos ${cos.toFixed(4)} <= ${floor}`);
      }
    }
  });

  await t.step("attention: codes == dequantized, 16 == exact reference", async () => {
    const d = 128, nq = 4, theta = 10000;
    for (const nCtx of [100, 1000]) {
      const k = gaussian(nCtx * d, 10 + nCtx), v = gaussian(nCtx * d, 20 + nCtx);
      for (let i = 0; i < k.length; i += 16) k[i] += 6; // a large channel mean, as real keys have
      const q = gaussian(nq * d, 30, 0.5);
      const exact = exactAttention(q, rope(k, d, theta, 0), v, d);
      const o16 = new Float32Array(nq * d);
      lib.check(await f.nsn_quant_attention(16, d, theta, k, v, nCtx, q, nq, 0, o16), "attention");
      assert.ok(relL2(o16, exact) < 1e-5, `kv_bits 16 vs reference ${relL2(o16, exact)}`);
      for (const bits of [1, 2]) {
        const o0 = new Float32Array(nq * d), o1 = new Float32Array(nq * d);
        lib.check(await f.nsn_quant_attention(bits, d, theta, k, v, nCtx, q, nq, 0, o0), "mode 0");
        lib.check(await f.nsn_quant_attention(bits, d, theta, k, v, nCtx, q, nq, 1, o1), "mode 1");
        assert.ok(
          relL2(o0, o1) < 1e-5,
          `ctx ${nCtx} bits ${bits}: codes vs dequantized ${relL2(o0, o1)}`,
        );
        console.log(
          `ctx ${nCtx} ${bits}-bit: attention rel. L2 error vs exact ${
            relL2(o0, exact).toFixed(4)
          }`,
        );
      }
    }
  });

  await t.step("invalid arguments are refused with a message", async () => {
    const x = new Float32Array(64 * 128), y = new Float32Array(64 * 128);
    assert.equal(f.nsn_quant_roundtrip(2, 0, 0, 128, 0, 1e4, 0, x, 65, y), NSN_E_INVALID);
    assert.match(Deno.UnsafePointerView.getCString(f.nsn_last_error()!), /n_tokens 65/);
    assert.equal(f.nsn_quant_roundtrip(1, 0, 0, 96, 0, 1e4, 0, x, 64, y), NSN_E_INVALID);
    assert.equal(await f.nsn_quant_attention(2, 128, 1e4, x, x, 64, x, 0, 0, y), NSN_E_INVALID);
    assert.equal(f.nsn_codebook(4, y), NSN_E_INVALID);
  });
});

/** [sum |x - x^|^2, sum |x - window mean|^2]: error against the part of x that varies. */
function errVar(x: Float32Array, xh: Float32Array, d: number): [number, number] {
  let err = 0, vari = 0;
  for (let w = 0; w < x.length / (64 * d); w++) {
    const mean = new Float64Array(d);
    for (let t = w * 64; t < w * 64 + 64; t++) {
      for (let c = 0; c < d; c++) mean[c] += x[t * d + c] / 64;
    }
    for (let t = w * 64; t < w * 64 + 64; t++) {
      for (let c = 0; c < d; c++) {
        err += (x[t * d + c] - xh[t * d + c]) ** 2;
        vari += (x[t * d + c] - mean[c]) ** 2;
      }
    }
  }
  return [err, vari];
}

const demoReady = await Deno.stat(`${DEMO_DIR}/config.json`).then(() => true, () => false);

// [name, quant_method, ablation bits]
const METHODS = [
  ["NSN", 0, 0],
  ["no-norm1", 0, 1],
  ["no-shift", 0, 2],
  ["no-hadamard", 0, 4],
  ["RTN", 1, 0],
] as const;

Deno.test({
  name: "real K/V of the demo model: NSN vs ablations vs RTN",
  ignore: !demoReady,
  sanitizeResources: false,
  async fn() {
    using m = await loadModel("demo", { backend: "cpu", nThreads: 2, maxSeqs: 1 });
    const e = m.engine, spec = m.spec, d = spec.headDim;
    assert.equal(spec.rope.type, "none", "the un-RoPE below assumes plain RoPE");
    const text = await Deno.readTextFile(`${ROOT}tests/fixtures/brown_heldout.txt`);
    const ids = m.tokenizer.encode(text).slice(0, 512);
    const n = ids.length - (ids.length % 64);
    const kv = new DirectKv(e);
    const seq = kv.create(16);
    await kv.step([{ seq, tokens: ids.slice(0, n) }], { topN: 0 });
    const lib = await openLibrary();
    // key -> [sum of per-head mean cos, sum err, sum var]
    const acc = new Map<string, [number, number, number]>();
    for (let layer = 0; layer < spec.nLayers; layer++) {
      for (let h = 0; h < spec.nKvHeads; h++) {
        const { k, v } = e.readKv(cacheOf(seq), layer, h, 0, n); // exact (kv_bits 16), keys post-RoPE
        const kPre = rope(k, d, spec.ropeTheta, 0, -1);
        for (const bits of [2, 1]) {
          for (const [name, method, abl] of METHODS) {
            for (const [part, x, ref] of [["K", kPre, k], ["V", v, v]] as const) {
              const xh = new Float32Array(n * d);
              const isKey = part === "K" ? 1 : 0;
              lib.check(
                lib.symbols.nsn_quant_roundtrip(
                  bits,
                  method,
                  abl,
                  d,
                  isKey,
                  spec.ropeTheta,
                  0,
                  x,
                  n,
                  xh,
                ),
                "nsn_quant_roundtrip",
              );
              const key = `${bits}-bit ${part} ${name}`;
              const [err, vari] = errVar(ref, xh, d);
              const a = acc.get(key) ?? [0, 0, 0];
              acc.set(key, [a[0] + meanCos(ref, xh, d), a[1] + err, a[2] + vari]);
            }
          }
        }
      }
    }
    kv.free(seq);
    const heads = spec.nLayers * spec.nKvHeads;
    const cos = (key: string) => acc.get(key)![0] / heads;
    const rel = (key: string) => acc.get(key)![1] / acc.get(key)![2];
    console.log(
      [...acc.keys()].map((k) =>
        `${k.padEnd(22)} cos ${cos(k).toFixed(4)}  rel.err ${rel(k).toFixed(4)}`
      ).join("\n"),
    );
    for (const part of ["K", "V"]) {
      assert.ok(cos(`2-bit ${part} NSN`) > 0.9, `2-bit ${part}: cos ${cos(`2-bit ${part} NSN`)}`);
      assert.ok(rel(`1-bit ${part} NSN`) < rel(`1-bit ${part} RTN`), `1-bit ${part}: RTN beat NSN`);
      assert.ok(rel(`2-bit ${part} NSN`) < rel(`2-bit ${part} no-shift`), `2-bit ${part}: shift`);
    }
  },
});
