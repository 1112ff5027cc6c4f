// The leak check of the load and soak tests: a server repeating the same work must not keep
// growing. RSS samples taken after identical rounds still move with GC timing, and on a loaded
// machine the warm-up stretches over several rounds (measured: +26 MiB over three rounds under
// a second test run, then flat), so a growth past the bound alone is not a leak.

import assert from "node:assert/strict";

/**
 * `rss` holds the server's RSS in MiB after each measured round. Growth from the first sample
 * to the last under `bound` passes. Otherwise `more()` runs two more rounds (returning the RSS
 * after each) and the last must stay within `margin` MiB of the highest sample before them: a
 * leak keeps growing, noise and a late warm-up do not.
 */
export async function assertRssSettles(
  rss: number[],
  bound: number,
  more: () => Promise<number>,
  margin = 16,
): Promise<void> {
  const list = () => rss.map((r) => r.toFixed(1)).join(", ");
  const growth = rss[rss.length - 1] - rss[0];
  console.log(`RSS after each round: ${list()} MiB; growth ${growth.toFixed(1)} (< ${bound})`);
  if (growth < bound) return;
  const high = Math.max(...rss);
  for (let i = 0; i < 2; i++) rss.push(await more());
  const last = rss[rss.length - 1];
  console.log(
    `two more rounds: ${list()} MiB; last ${last.toFixed(1)} vs highest ${high.toFixed(1)}`,
  );
  assert(last < high + margin, `server RSS keeps growing: ${list()} MiB`);
}
