// Whether the server's event loop stays responsive while some request works: the check of the
// stall tests (tokenization, JSON parsing of huge bodies).

import assert from "node:assert/strict";

/**
 * Samples /health back to back while `work` runs and asserts none was stalled by it. Tokenizing
 * on the event loop held every /health for the whole tokenization (the worst sample was the
 * work's whole duration, seconds); off the loop the worst is a few scheduling slices. On an
 * idle machine that is under 300 ms; where other processes share the cores it grows with them,
 * and so does the work: then no sample may exceed a third of the work's duration.
 */
export async function assertHealthUnstalled(url: string, work: Promise<unknown>, what: string) {
  const start = performance.now();
  let done = false;
  work.finally(() => done = true).catch(() => {});
  let worst = 0;
  let samples = 0;
  while (!done) {
    const t0 = performance.now();
    const r = await fetch(`${url}/health`);
    await r.body?.cancel();
    worst = Math.max(worst, performance.now() - t0);
    samples++;
  }
  await work;
  const took = performance.now() - start;
  assert(samples >= 3, `only ${samples} /health samples: the work ended too soon to measure`);
  console.log(
    `worst /health latency ${what}: ${worst.toFixed(0)} ms (the work: ${took.toFixed(0)} ms)`,
  );
  assert(
    worst < 300 || worst < took / 3,
    `/health took ${worst.toFixed(0)} of ${took.toFixed(0)} ms`,
  );
}
