// Decode speed of the CUDA backend on synthetic Llama-3-8B (random bf16 weights), measured
// through the FFI like the server calls it: median ms per step at batch 1, 4 and 32 for each
// kv_bits, next to the weight-read floor (weight bytes / 4.3 TB/s, the H200's measured copy
// rate; the embedding table counts although a decode step reads one row of it). Measured with
// the batch-1 GEMV (gemv.cu) and with cuBLAS only, side by side. A sanity bound only: the
// numbers are for the report.

import { DirectKv } from "../../engine/direct_kv.ts";
import assert from "node:assert/strict";
import type { KvBits } from "../../engine/types.ts";
import type { NsnLibrary } from "../../ffi/library.ts";
import { NativeEngine } from "../../ffi/native_engine.ts";
import { syntheticSpec } from "../../models/synthetic.ts";
import { extend, timeDecode } from "../../bench/engine_sweep.ts";
import { rng } from "../../bench/stats.ts";
import { GPU_BACKEND, gpuTest, greedyParams, KV_BITS } from "./gpu_util.ts";

async function measure(lib: NsnLibrary, label: string): Promise<string[]> {
  const spec = syntheticSpec("llama-3-8b");
  const e = NativeEngine.create(lib, spec, {
    backend: GPU_BACKEND,
    maxSeqs: 64,
    maxStepTokens: 2048,
    kvPoolBytes: 24n << 30n,
  });
  try {
    let t0 = performance.now();
    await e.initRandom(1n);
    await e.finalize();
    const info = e.info();
    const floorMs = info.weightBytes / 4.3e12 * 1e3;
    const rows = [
      `${label}: llama-3-8b on ${info.deviceName}, weights ${
        (info.weightBytes / 1e9).toFixed(2)
      } GB, init+finalize ${((performance.now() - t0) / 1e3).toFixed(1)} s, weight-read floor ${
        floorMs.toFixed(2)
      } ms/step`,
    ];
    const ctx = 512, steps = 44;
    const rand = rng(3);
    const tok = () => Math.floor(rand() * 128000);
    for (const batch of [1, 4, 32]) {
      for (const bits of KV_BITS as KvBits[]) {
        const kv = new DirectKv(e);
        const seqs = Array.from({ length: batch }, () => kv.create(bits, greedyParams(ctx)));
        t0 = performance.now();
        await extend(kv, seqs, ctx, tok);
        const prefillMs = performance.now() - t0;
        const ms = (await timeDecode(kv, seqs, steps, tok)).decodeStepMs.median;
        rows.push(
          `  batch ${String(batch).padStart(2)} kv ${String(bits).padStart(2)}: ${
            ms.toFixed(2)
          } ms/step (${(ms / floorMs).toFixed(2)}x floor), ${
            (batch * 1e3 / ms).toFixed(0)
          } tok/s; prefill ${batch}x${ctx} in ${prefillMs.toFixed(0)} ms`,
        );
        if (batch === 1) {
          assert.ok(
            ms < 10 * floorMs,
            `batch-1 decode ${ms} ms is far off the ${floorMs} ms floor`,
          );
        }
        seqs.forEach((s) => kv.free(s));
      }
    }
    return rows;
  } finally {
    e.close();
  }
}

if (GPU_BACKEND === "cuda") {
  gpuTest("cuda decode speed: synthetic llama-3-8b, batch 1, 4 and 32", async (lib) => {
    // NSN_CUDA_GEMV is read at engine creation.
    const rows = await measure(lib, "GEMV at batch 1");
    Deno.env.set("NSN_CUDA_GEMV", "0");
    try {
      rows.push(...await measure(lib, "cuBLAS only"));
    } finally {
      Deno.env.delete("NSN_CUDA_GEMV");
    }
    console.log(`decode at context 512..558:\n${rows.join("\n")}`);
  });
}
