// Text and SVG renderings of the two benchmarks: the vLLM-style result block and a summary
// table per serving run, a table per engine sweep point, and one chart for each.

import { renderLineChart } from "./chart_svg.ts";
import type { SweepPoint } from "./engine_sweep.ts";
import { formatTable, latencyLines, num, vllmBlock } from "./report.ts";
import type { LoadResult } from "./serve_load.ts";
import type { ServeRun } from "./serve_sweep.ts";

// ---- serving ---------------------------------------------------------------------------------

export function formatServe(runs: ServeRun[]): string {
  const blocks = runs.map(({ result: r, kvBytesPerToken }) => {
    const conc = Number.isFinite(r.concurrency) ? String(r.concurrency) : "inf";
    return vllmBlock(`Serving Benchmark Result (X-KV-Bits: ${r.kvBits})`, [
      ["Successful requests", String(r.completed)],
      ["Failed requests", String(r.failed)],
      ["Maximum request concurrency", conc],
      ...(Number.isFinite(r.requestRate)
        ? [["Request rate (req/s)", r.requestRate] as [string, number]]
        : []),
      ["Benchmark duration (s)", r.durationS],
      ["Total input tokens", String(r.totalInput)],
      ["Prefix cache hit rate (%)", num(100 * r.prefixHitRate, 1)],
      ["Total generated tokens", String(r.totalOutput)],
      ["Request throughput (req/s)", r.requestThroughput],
      ["Output token throughput (tok/s)", r.outputThroughput],
      ["Peak output token throughput (tok/s)", r.peakOutputThroughput],
      ["Peak concurrent requests", String(r.peakConcurrentRequests)],
      ["Peak running sequences (server)", num(r.peakRunningSeqs, 0)],
      ["Total token throughput (tok/s)", r.totalTokenThroughput],
      ["KV bytes per token", num(kvBytesPerToken, 0)],
      ...latencyLines("Time to First Token", "TTFT", r.ttft),
      ...latencyLines("Time per Output Token (excl. 1st token)", "TPOT", r.tpot),
      ...latencyLines("Inter-token Latency", "ITL", r.itl),
      ...latencyLines("End-to-end Latency", "E2EL", r.e2el),
    ]);
  });
  const table = formatTable(
    [
      "kv",
      "conc",
      "ok/fail",
      "req/s",
      "out tok/s",
      "total tok/s",
      "TTFT ms mean/med/p99",
      "TPOT ms mean/med/p99",
      "ITL ms mean/med/p99",
      "E2EL ms mean/med/p99",
      "peak run",
      "KV B/tok",
    ],
    runs.map(({ result: r, kvBytesPerToken }) => {
      const s3 = (x: LoadResult["ttft"]) =>
        `${num(x.mean, 1)}/${num(x.median, 1)}/${num(x.p99, 1)}`;
      return [
        String(r.kvBits),
        Number.isFinite(r.concurrency) ? String(r.concurrency) : "inf",
        `${r.completed}/${r.failed}`,
        num(r.requestThroughput, 2),
        num(r.outputThroughput, 1),
        num(r.totalTokenThroughput, 1),
        s3(r.ttft),
        s3(r.tpot),
        s3(r.itl),
        s3(r.e2el),
        `${r.peakConcurrentRequests}/${num(r.peakRunningSeqs, 0)}`,
        num(kvBytesPerToken, 0),
      ];
    }),
  );
  return `${blocks.join("\n\n")}\n\n${table}\n(peak run = client in flight / server running)`;
}

export function serveChart(runs: ServeRun[], title: string): string {
  const kinds = [...new Set(runs.map((r) => r.result.kvBits))];
  return renderLineChart({
    title,
    xLabel: "max concurrency",
    yLabel: "output tokens/s",
    series: kinds.map((kv) => ({
      name: `${kv}-bit KV`,
      points: runs.filter((r) => r.result.kvBits === kv).map((r) => ({
        x: r.result.concurrency,
        y: r.result.outputThroughput,
      })),
    })),
  });
}

// ---- engine sweep ----------------------------------------------------------------------------

export function formatSweep(points: SweepPoint[]): string {
  const note = "prefill tok/s: the group's prefill of its largest batch; max batch: sequences " +
    "of the longest length that fit the KV pool, capped by max seqs (pool: uncapped)";
  return note + "\n" + formatTable(
    [
      "kv",
      "context",
      "batch",
      "status",
      "ctx at decode",
      "decode tok/s",
      "step ms mean/med/p99",
      "prefill tok/s",
      "max batch",
      "max batch (pool)",
      "KV B/tok",
    ],
    points.map((p) => [
      String(p.kvBits),
      String(p.context),
      String(p.batch),
      p.status,
      num(p.decodeContext, 0),
      num(p.decodeTokPerS, 1),
      p.status === "ok"
        ? `${num(p.decodeStepMs.mean, 2)}/${num(p.decodeStepMs.median, 2)}/${
          num(p.decodeStepMs.p99, 2)
        }`
        : "-",
      num(p.prefillTokPerS, 0),
      String(p.maxBatch),
      String(p.maxBatchByMemory),
      String(p.kvBytesPerToken),
    ]),
  );
}

export function sweepChart(points: SweepPoint[], title: string): string {
  const keys = [...new Set(points.map((p) => `${p.kvBits}|${p.context}`))];
  return renderLineChart({
    title,
    xLabel: "batch size",
    yLabel: "decode tokens/s",
    series: keys.map((k) => {
      const [kv, ctx] = k.split("|").map(Number);
      const contexts = [...new Set(points.map((p) => p.context))];
      return {
        name: `${kv}-bit, ctx ${ctx}`,
        color: [16, 2, 1].indexOf(kv),
        dash: contexts.indexOf(ctx) % 2 === 1,
        points: points.filter((p) => p.kvBits === kv && p.context === ctx).map((p) => ({
          x: p.batch,
          y: p.decodeTokPerS,
        })),
      };
    }),
  });
}
