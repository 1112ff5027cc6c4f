// CI smoke test of `deno task bench`: a tiny serving run (in-process server, demo model, CPU)
// and a tiny engine sweep finish and report only positive figures. Plus the pure helpers the
// figures rest on (percentiles as numpy computes them, the SVG chart).

import assert from "node:assert/strict";
import { parseBenchArgs, runBench } from "../bench/bench.ts";
import { formatServe, formatSweep } from "../bench/bench_report.ts";
import { renderLineChart } from "../bench/chart_svg.ts";
import type { SweepPoint } from "../bench/engine_sweep.ts";
import type { ServeRun } from "../bench/serve_sweep.ts";
import { percentileSorted, summarize } from "../bench/stats.ts";

Deno.test("stats: numpy-style linear percentiles", () => {
  const s = summarize([4, 1, 3, 2]);
  assert.equal(s.mean, 2.5);
  assert.equal(s.median, 2.5);
  assert.ok(Math.abs(s.p99 - 3.97) < 1e-12);
  assert.ok(Math.abs(s.std - Math.sqrt(1.25)) < 1e-12);
  assert.equal(percentileSorted([7], 99), 7);
  assert.ok(Number.isNaN(summarize([]).mean));
});

Deno.test("chart: one path per series with two or more points, escaped labels", () => {
  const svg = renderLineChart({
    title: "a < b",
    xLabel: "x",
    yLabel: "y",
    series: [
      { name: "16-bit", points: [{ x: 1, y: 10 }, { x: 4, y: 30 }] },
      { name: "1-bit", points: [{ x: 1, y: 12 }, { x: 4, y: NaN }] },
    ],
  });
  assert.ok(svg.startsWith("<svg") && svg.trimEnd().endsWith("</svg>"));
  assert.equal(svg.match(/<path /g)?.length, 1);
  assert.ok(svg.includes("a &lt; b"));
});

function assertPositive(what: string, v: number): void {
  assert.ok(Number.isFinite(v) && v > 0, `${what} = ${v}, expected a positive number`);
}

Deno.test({
  name: "bench: tiny serving run on the demo model (shared prefix), every figure positive",
  sanitizeResources: false, // native library and server sockets are process-wide
  sanitizeOps: false,
  async fn() {
    const args = parseBenchArgs([
      "--backend=cpu",
      "--input-len=80",
      "--prefix-len=70",
      "--output-len=6",
      "--num-prompts=3",
      "--concurrency=1,3",
      "--no-progress",
    ]);
    const out = await runBench(args);
    console.log(out.text);
    const runs = out.json.runs as ServeRun[];
    assert.equal(runs.length, 3 * 2);
    for (const { result: r, kvBytesPerToken } of runs) {
      const at = `kv ${r.kvBits} conc ${r.concurrency}`;
      assert.equal(r.failed, 0, `${at}: ${r.errors.join("; ")}`);
      assert.equal(r.completed, 3);
      assert.equal(r.totalOutput, 3 * 6, `${at}: output tokens`);
      // One at a time, the 2nd and 3rd prompt find the shared first window cached.
      if (r.concurrency === 1) assert.equal(r.prefixHitRate, (2 * 64) / (3 * 80), at);
      for (
        const [k, v] of Object.entries({
          durationS: r.durationS,
          requestThroughput: r.requestThroughput,
          outputThroughput: r.outputThroughput,
          totalTokenThroughput: r.totalTokenThroughput,
          peakOutputThroughput: r.peakOutputThroughput,
          peakConcurrentRequests: r.peakConcurrentRequests,
          kvBytesPerToken,
          ...Object.fromEntries(
            (["ttft", "tpot", "itl", "e2el"] as const).flatMap((m) =>
              (["mean", "median", "p99"] as const).map((s) => [`${m}.${s}`, r[m][s]])
            ),
          ),
        })
      ) assertPositive(`${at}: ${k}`, v);
    }
    assert.ok(out.svg.includes("<path "));
    assert.ok(formatServe(runs).includes("Serving Benchmark Result"));
  },
});

Deno.test({
  name: "bench --engine: tiny sweep on the demo model, every figure positive",
  sanitizeResources: false,
  async fn() {
    const args = parseBenchArgs([
      "--engine",
      "--backend=cpu",
      "--batches=1,2",
      "--contexts=70",
      "--decode-steps=2",
      "--no-progress",
    ]);
    const out = await runBench(args);
    console.log(out.text);
    const points = out.json.points as SweepPoint[];
    assert.equal(points.length, 3 * 2);
    for (const p of points) {
      const at = `kv ${p.kvBits} batch ${p.batch}`;
      assert.equal(p.status, "ok", at);
      for (
        const [k, v] of Object.entries({
          decodeTokPerS: p.decodeTokPerS,
          prefillTokPerS: p.prefillTokPerS,
          stepMs: p.decodeStepMs.mean,
          maxBatch: p.maxBatch,
          kvBytesPerToken: p.kvBytesPerToken,
        })
      ) assertPositive(`${at}: ${k}`, v);
    }
    // The capacity win: quantized pages let more sequences of the same length fit the pool.
    const byKv = (kv: number) => points.find((p) => p.kvBits === kv)!.maxBatchByMemory;
    assert.ok(
      byKv(1) > byKv(16) && byKv(2) > byKv(16),
      `max batch 16/2/1: ${byKv(16)}/${byKv(2)}/${byKv(1)}`,
    );
    assert.ok(formatSweep(points).includes("decode tok/s"));
  },
});
