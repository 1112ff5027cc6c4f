// Output helpers shared by eval and bench: aligned text tables, the vLLM-style result block,
// the progress bar (stderr, so stdout stays a clean report) and the JSON/SVG writers.

import cliProgress from "cli-progress";
import process from "node:process";
import type { Summary } from "./stats.ts";

/** Formats a number for a table: fixed decimals, "-" for NaN/undefined. */
export function num(v: number | undefined, digits = 2): string {
  if (v === undefined || !Number.isFinite(v)) return "-";
  return v.toFixed(digits);
}

/** Right-aligns numeric-looking cells, left-aligns the rest; header underlined. */
export function formatTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const isNum = (s: string) => /^[-+]?[\d.,]+(%|x)?$|^-$/.test(s);
  const line = (cells: string[]) =>
    cells.map((c, i) => (isNum(c) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ")
      .trimEnd();
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join(
    "\n",
  );
}

/** Key/value block laid out like `vllm bench serve` prints it ({:<40} {:<10}). */
export function vllmBlock(
  title: string,
  lines: ([string, string | number] | string)[],
): string {
  const out = [` ${title} `.padStart(25 + (title.length + 2) / 2, "=").padEnd(50, "=")];
  for (const l of lines) {
    if (typeof l === "string") {
      out.push(` ${l} `.padStart(25 + (l.length + 2) / 2, "-").padEnd(50, "-"));
    } else out.push(`${(l[0] + ":").padEnd(40)} ${typeof l[1] === "number" ? num(l[1]) : l[1]}`);
  }
  out.push("=".repeat(50));
  return out.join("\n");
}

/** The Mean / Median / P99 lines of one latency metric, as vLLM prints them. */
export function latencyLines(
  title: string,
  label: string,
  s: Summary,
): ([string, number] | string)[] {
  return [
    title,
    [`Mean ${label} (ms)`, s.mean],
    [`Median ${label} (ms)`, s.median],
    [`P99 ${label} (ms)`, s.p99],
  ];
}

export interface Progress {
  tick(n?: number): void;
  stop(): void;
}

/** A cli-progress bar on stderr; silent when stderr is not a terminal (CI logs, tests). */
export function progressBar(label: string, total: number): Progress {
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {value}/{total} | ETA {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    tick: (n = 1) => bar.increment(n),
    stop: () => bar.stop(),
  };
}

/** Writes pretty JSON, creating the parent folder. */
export async function writeJson(path: string, value: unknown): Promise<void> {
  await ensureParent(path);
  await Deno.writeTextFile(path, JSON.stringify(value, null, 2) + "\n");
}

/** foo/bar.json -> foo/bar.svg: the chart lies next to the raw numbers. */
export function svgPathFor(jsonPath: string): string {
  return jsonPath.replace(/\.json$/i, "") + ".svg";
}

export async function writeText(path: string, text: string): Promise<void> {
  await ensureParent(path);
  await Deno.writeTextFile(path, text);
}

async function ensureParent(path: string): Promise<void> {
  const i = path.lastIndexOf("/");
  if (i > 0) await Deno.mkdir(path.slice(0, i), { recursive: true });
}
